"""CPU compatibility shim for the XTuner 0.2.0 environment (installed by make_env.sh).

Python imports `sitecustomize` at start-up; this one does nothing until `torch` (or
`torchvision.extension`) is imported, then fills the gaps that stop XTuner without CUDA:

* `torch.cpu.is_bf16_supported()` is called by XTuner (`get_torch_device()` is `torch.cpu`
  there) but absent in current torch: defined to return False, only where it is missing.
* mmengine's `_init_dist_pytorch` calls `torch.cuda.set_device(local_rank)` unconditionally:
  it becomes a no-op while CUDA is unavailable and calls the original otherwise.
* PyPI's torchvision is a CUDA build whose C++ ops cannot load into a CPU torch, and its
  `_meta_registrations` then fails on `register_fake("torchvision::nms")` at import time
  (xtuner.dataset imports torchvision for its transforms). Only when the ops did not load, the
  two schemas it needs are declared; calling nms/qnms still fails loudly (no kernel).

On a CUDA machine with a matching torchvision all three change nothing.
Set VLM_XTUNER_SHIM=0 to switch the shim off.
"""

import importlib.abc
import importlib.util
import os
import sys


def _patch_torch(torch):
    cpu = getattr(torch, "cpu", None)
    if cpu is not None and not hasattr(cpu, "is_bf16_supported"):
        cpu.is_bf16_supported = lambda including_emulation=True: False

    original_set_device = torch.cuda.set_device

    def set_device(device):
        if not torch.cuda.is_available():
            return None
        return original_set_device(device)

    set_device.__wrapped__ = original_set_device
    torch.cuda.set_device = set_device


_TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_libraries = []  # a torch.library.Library unregisters its definitions when collected


def _patch_torchvision_extension(extension):
    if extension._has_ops():
        return
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    for schema in _TORCHVISION_SCHEMAS:
        lib.define(schema)
    _libraries.append(lib)


_PATCHES = {"torch": _patch_torch, "torchvision.extension": _patch_torchvision_extension}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs a patch right after the named module has executed."""

    def __init__(self):
        self._busy = set()

    def find_spec(self, fullname, path, target=None):
        patch = _PATCHES.get(fullname)
        if patch is None or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.discard(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if os.environ.get("VLM_XTUNER_SHIM", "1") != "0":
    sys.meta_path.insert(0, _PatchOnImport())
