"""Start-up shim of the official InternVL trainer's env (.venv-internvl, official_env/make_env.sh).

Python imports `sitecustomize` at start-up; this one changes nothing in the official code. It
only fills gaps of a CPU machine, each hooked to the import of the module it concerns:

* PyPI's torchvision is a CUDA build whose C++ ops cannot load into a CPU torch, and its
  `_meta_registrations` then fails on `register_fake("torchvision::nms")` at import time. Only
  when the ops did not load, the two schemas it needs are declared (the official code uses
  only `torchvision.transforms`; calling nms still fails loudly).
* DeepSpeed JIT-builds its ops into torch's shared extension cache: TORCH_EXTENSIONS_DIR
  defaults to a folder inside this env, so another env's DeepSpeed never loads this one's build.
* Without CUDA, DeepSpeed's shm-comm op (a C++ build of about a minute, serving only
  `inference_all_reduce`) is marked incompatible, DeepSpeed's own no-op path, as our trainer
  does (internvl_chat/train/distributed.py: skip_cpu_shm_build).

* DeepSpeed 0.14.4 predates torch's `weights_only=True` default of `torch.load`, and its own
  checkpoints (optimizer states pickling `LossScaler`, ...) are refused on resume ("Weights
  only load failed"): TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, torch's switch back to the old
  default where a caller does not choose, for the run's own checkpoints.

On a CUDA machine with a matching torchvision only the cache path and the load default apply.
VLM_OFFICIAL_SHIM=0 switches the shim off.
"""

import importlib.abc
import importlib.util
import os
import sys

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


def _patch_deepspeed_ops(ops):
    import torch

    if not torch.cuda.is_available():
        ops.__compatible_ops__["deepspeed_shm_comm"] = False


_PATCHES = {
    "torchvision.extension": _patch_torchvision_extension,
    "deepspeed.ops": _patch_deepspeed_ops,
}


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


if os.environ.get("VLM_OFFICIAL_SHIM", "1") != "0":
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    sys.meta_path.insert(0, _PatchOnImport())
