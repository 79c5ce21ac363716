"""Token ids and labels the OFFICIAL InternVL preprocessing gives for tests/expected/official_tokens/samples.json.

`.venv/bin/python tests/tools/gen_official_tokens.py --internvl-root DIR --revision pin|head|head_gpt_oss`

DIR is an OpenGVLab/InternVL checkout (or a copy holding at least
``internvl_chat/internvl/{conversation.py,train/dataset.py,train/constants.py}``); nothing of
it is vendored here. Its preprocess functions are imported and called with the project's
tiny tokenizers (``internvl_chat.tokenizer.save_tiny_tokenizer``, the same objects our
pipeline uses). Only imports those functions never use are stubbed when missing or broken
(torchvision, cv2, imageio, decord); the tokenisation and masking code runs as written.

``head_gpt_oss`` is the second tree of the newest commit, ``internvl_chat_gpt_oss/``, from
which InternVL3.5 (Qwen3) is fine-tuned: the same ``preprocess_internvl2_5``, but its
finetune script also tags untagged image lists.

The per-sample steps of the official ``LazySupervisedDataset`` (internvl_chat_finetune.py at
764fdc9 for pin and 2410d1d for head and head_gpt_oss:
choose the preprocess function by template, prepend ``"<image>\\n"`` to the first entry of a
single-image sample, the multi-image path with ``num_image``, the text-only path, and
HEAD's ``</img>`` count asserts) live in that training script, which imports the whole model
stack; they are mirrored in :func:`official_sample` line for line.

``--source TEXT`` records what DIR is (e.g. the commit) in the JSON's ``source`` field.
Writes tests/expected/official_tokens/<revision>.json (``--out`` to change): per case
(sample x template + tokenizer) either ``input_ids`` + ``labels``, or ``all_masked`` (the
official code trains on nothing: its "tokenization mismatch" path), or ``rejected`` (it
raises, and the official dataset resamples another index). Run once per revision; the
checked-in files record the command and the source commits (SOURCE.txt in DIR, if any).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.machinery
import json
import sys
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXPECTED = REPO / "tests" / "expected" / "official_tokens"
TOKENS_PER_TILE = 4  # the tiny models: 56 px tiles, patch 14, pixel shuffle 0.5
MAX_LENGTH = 4096
# (template, tiny tokenizer family) pairs, as the shipped checkpoints pair them; internvl2_5
# is checked with a BOS-less (Qwen2) and a BOS-adding (InternLM2.5) tokenizer, and with the
# Qwen2.5 (InternVL2.5/3) and Qwen3 (InternVL3.5) added tokens (tests/tools/chatml_tokenizers.py).
PAIRS = {
    "pin": [("internlm2-chat", "internlm2"), ("Hermes-2", "qwen2"), ("phi3-chat", "phi3")],
    "head": [
        ("internlm2-chat", "internlm2"),
        ("Hermes-2", "qwen2"),
        ("phi3-chat", "phi3"),
        ("internvl2_5", "qwen2"),
        ("internvl2_5", "internlm2"),
        ("internvl2_5", "qwen2_5"),
        ("internvl2_5", "qwen3"),
    ],
    # InternVL3.5 (Qwen3) trains from the second tree, internvl_chat_gpt_oss/, at 2410d1d
    "head_gpt_oss": [("internvl2_5", "qwen3")],
}
TREES = {"pin": "internvl_chat", "head": "internvl_chat", "head_gpt_oss": "internvl_chat_gpt_oss"}
PREPROCESS = {
    "Hermes-2": "preprocess_mpt",
    "internlm2-chat": "preprocess_internlm",
    "phi3-chat": "preprocess_phi3",
    "internvl2_5": "preprocess_internvl2_5",
}


def stub_unused_imports() -> None:
    """Empty stand-ins for modules dataset.py imports at top level but preprocessing never
    touches (image transforms, video readers)."""
    for name in ("torchvision", "cv2", "imageio", "decord"):
        try:
            importlib.import_module(name)
            continue
        except Exception:  # missing, or broken (PyPI's CUDA torchvision on a CPU torch)
            sys.modules.pop(name, None)
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules[name] = mod
        if name == "torchvision":
            transforms = types.ModuleType("torchvision.transforms")
            functional = types.ModuleType("torchvision.transforms.functional")
            for sub in (transforms, functional):
                sub.__spec__ = importlib.machinery.ModuleSpec(sub.__name__, None)
            functional.InterpolationMode = types.SimpleNamespace(BICUBIC="bicubic")
            transforms.functional = functional
            mod.transforms = transforms
            sys.modules["torchvision.transforms"] = transforms
            sys.modules["torchvision.transforms.functional"] = functional
        if name == "decord":
            mod.VideoReader = object


def load_official(root: Path, revision: str = "head"):
    """The official ``internvl.train.dataset`` module from ROOT/<tree of revision>. The
    gpt_oss tree takes its templates from ``internvl.model.internvl_chat.conversation``,
    whose package __init__ imports the whole model: the packages are registered bare so
    only conversation.py runs, and its ceph reader (mmengine) is stubbed."""
    tree = root / TREES[revision]
    sys.path.insert(0, str(tree))
    stub_unused_imports()
    if revision == "head_gpt_oss":
        for name in ("internvl", "internvl.model", "internvl.model.internvl_chat"):
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(tree.joinpath(*name.split(".")))]
            sys.modules[name] = pkg
        s3 = types.ModuleType("internvl.utils.s3_fileio")  # its ceph client needs mmengine
        s3.Client = object
        sys.modules["internvl.utils.s3_fileio"] = s3
    return importlib.import_module("internvl.train.dataset")


def tokenizers(tmp: Path) -> dict:
    """The tiny tokenizers by family, loaded as our pipeline loads them."""
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(Path(__file__).parent))
    from chatml_tokenizers import FAMILIES, save_chatml_tokenizer

    from internvl_chat.tokenizer import load_tokenizer, save_tiny_tokenizer

    paths = {fam: save_tiny_tokenizer(tmp / fam, fam) for fam in ("internlm2", "qwen2", "phi3")}
    paths.update({fam: save_chatml_tokenizer(tmp / fam, fam) for fam in FAMILIES})
    return {fam: load_tokenizer(path, model_max_length=MAX_LENGTH) for fam, path in paths.items()}


def official_sample(ds, revision: str, template: str, sample: dict, tok) -> dict:
    """One sample through the official per-sample steps (LazySupervisedDataset.__getitem__
    -> multi_modal_get_item / multi_modal_multi_image_get_item / pure_text_get_item)."""
    preprocess = getattr(ds, PREPROCESS[template])
    item = copy.deepcopy({k: sample[k] for k in ("conversations", "image") if k in sample})
    tiles = sample["tiles"]

    # PIN passes one int (num_image_token * num_patches), HEAD a list per image
    def tokens(n):
        return TOKENS_PER_TILE * n if revision == "pin" else [TOKENS_PER_TILE * n]

    end_id = tok.convert_tokens_to_ids("</img>")
    # the gpt_oss tree tags the first entry, or the second when the first VALUE is "system"
    first = int(item["conversations"][0]["value"] == "system") if revision == "head_gpt_oss" else 0
    if "image" in item and len(item["image"]) != 0:
        if revision == "pin":  # pin knows one image only: a list fails right here
            item["image"].startswith("s3://")
        if isinstance(item["image"], list):
            if (
                revision == "head_gpt_oss"
                and "<image>" not in item["conversations"][first]["value"]
            ):
                tags = "<image>\n" * len(item["image"])  # the gpt_oss tree tags lists too
                item["conversations"][first]["value"] = tags + item["conversations"][first]["value"]
            ret = preprocess(
                template, [copy.deepcopy(item["conversations"])], tok,
                [TOKENS_PER_TILE * n for n in tiles], group_by_length=True,
                ds_name="samples", num_image=len(item["image"]),
            )  # fmt: skip
            n = int((ret["input_ids"][0] == end_id).sum())
            assert n == len(item["image"]), "image tokens are truncated, this dataset is samples"
        else:
            if "<image>" not in item["conversations"][first]["value"]:
                value = item["conversations"][first]["value"]
                item["conversations"][first]["value"] = "<image>\n" + value
            ret = preprocess(
                template, [copy.deepcopy(item["conversations"])], tok, tokens(tiles[0]),
                group_by_length=True, ds_name="samples",
            )  # fmt: skip
            if revision != "pin":
                n = int((ret["input_ids"][0] == end_id).sum())
                assert n == 1, "image tokens are truncated, this dataset is samples"
    else:
        ret = preprocess(
            template, [copy.deepcopy(item["conversations"])], tok, tokens(1), text_only=True,
            group_by_length=True, ds_name="samples",
        )  # fmt: skip
    ids = [int(x) for x in ret["input_ids"][0]]
    labels = [int(x) for x in ret["labels"][0]]
    if all(x == -100 for x in labels):
        return {"all_masked": True, "input_ids": ids}
    return {"input_ids": ids, "labels": labels}


def generate(root: Path, revision: str, source_text: str | None = None, toks=None) -> dict:
    """The official result of every case; ``toks`` (family -> tokenizer) replaces our tiny
    tokenizers, and only the pairs of its families are run."""
    samples = json.loads((EXPECTED / "samples.json").read_text(encoding="utf-8"))
    source = root / "SOURCE.txt"
    out = {
        "revision": revision,
        "command": (
            f".venv/bin/python tests/tools/gen_official_tokens.py --internvl-root DIR "
            f"--revision {revision}"
        ),
        "source": source_text
        or (source.read_text(encoding="utf-8") if source.exists() else "a git checkout"),
        "tokens_per_tile": TOKENS_PER_TILE,
        "max_length": MAX_LENGTH,
        "cases": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        toks = toks or tokenizers(Path(tmp))
        ds = load_official(root, revision)
        for template, family in [p for p in PAIRS[revision] if p[1] in toks]:
            for sample in samples:
                try:
                    result = official_sample(ds, revision, template, sample, toks[family])
                except Exception as e:  # the official dataset catches everything and resamples
                    result = {"rejected": f"{type(e).__name__}: {e}"}
                out["cases"].append(
                    {"sample": sample["name"], "template": template, "tokenizer": family, **result}
                )
    return out


def dump(data: dict) -> str:
    """One case per line, so a regenerated file diffs readably."""
    head = {k: v for k, v in data.items() if k != "cases"}
    lines = json.dumps(head, indent=1, ensure_ascii=False)[:-2]
    cases = ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in data["cases"])
    return f'{lines},\n "cases": [\n{cases}\n ]\n}}\n'


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--internvl-root", required=True, type=Path)
    p.add_argument("--revision", required=True, choices=sorted(PAIRS))
    p.add_argument("--out", type=Path)
    p.add_argument("--source", help="what DIR is (recorded in the JSON's source field)")
    a = p.parse_args(argv)
    data = generate(a.internvl_root, a.revision, a.source)
    out = a.out or EXPECTED / f"{a.revision}.json"
    out.write_text(dump(data), encoding="utf-8")
    kinds = [("rejected" in c) * "rejected" or ("all_masked" in c) * "all_masked" or "tokens"
             for c in data["cases"]]  # fmt: skip
    print(f"wrote {out}: {len(kinds)} cases, " + ", ".join(
        f"{kinds.count(k)} {k}" for k in ("tokens", "all_masked", "rejected")))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
