"""The official preprocessing again, with the tokenizer classes the official script loads, in the
transformers it was written for; compared with tests/expected/official_tokens/<revision>.json.

    .venv/bin/python tests/tools/check_official_tokenizers.py write DIR
    ENV/bin/python tests/tools/check_official_tokenizers.py compare DIR --internvl-root ROOT --revision pin|head

gen_official_tokens.py calls the official preprocess functions with OUR tokenizer objects
(tokenizers-backed, transformers 5). The official script instead loads
``AutoTokenizer.from_pretrained(path, add_eos_token=False, trust_remote_code=True,
use_fast=False)``: the remote-code slow ``InternLM2Tokenizer`` and the slow
``Qwen2Tokenizer``, under transformers 4.37. This tool shows the saved files do not depend on
that difference.

``write`` (in .venv) saves the tiny InternLM2 / Qwen2 / Qwen2.5 / Qwen3 tokenizers into DIR
with the files the slow classes read (``vocab.json`` + ``merges.txt``; merges as strings for
tokenizers 0.15). ``compare`` runs in an environment with transformers 4.37.2, tokenizers
0.15.1, sentencepiece 0.1.99, numpy 1.26 and torch (no torchvision needed); it copies the
InternLM2 remote code from ROOT/internvl_chat/internvl/model/internlm2/ into DIR/internlm2
(the checkout's own file, at run time), adds InternVL's tokens as the script does (none may
be new), and prints how many cases agree. Cases the official code rejects agree when both
reject (the exception text differs between versions). Phi-3 has no slow tokenizer files in
the tiny family and is skipped. Exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gen_official_tokens as gen  # noqa: E402

FAMILIES = ("internlm2", "qwen2", "qwen2_5", "qwen3")


def write(out: Path) -> None:
    sys.path.insert(0, str(gen.REPO))
    from chatml_tokenizers import save_chatml_tokenizer

    from internvl_chat.tokenizer import save_tiny_tokenizer

    shutil.rmtree(out, ignore_errors=True)
    for fam in FAMILIES:
        save = save_tiny_tokenizer if fam in ("internlm2", "qwen2") else save_chatml_tokenizer
        path = save(out / fam, fam)
        if fam == "internlm2":
            continue
        tok = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
        tok["model"]["merges"] = merges
        tok["model"].pop("ignore_merges", None)  # unknown to tokenizers 0.15
        (path / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), "utf-8")
        (path / "vocab.json").write_text(json.dumps(tok["model"]["vocab"], ensure_ascii=False))
        (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    print(f"wrote {', '.join(FAMILIES)} tokenizers to {out}")


def official_tokenizers(tok_dir: Path, root: Path) -> dict:
    from transformers import AutoTokenizer

    remote = root / "internvl_chat" / "internvl" / "model" / "internlm2"
    shutil.copy(remote / "tokenization_internlm2.py", tok_dir / "internlm2")
    toks = {}
    for fam in FAMILIES:
        tok = AutoTokenizer.from_pretrained(
            str(tok_dir / fam), add_eos_token=False, trust_remote_code=True, use_fast=False
        )
        tok.model_max_length = gen.MAX_LENGTH
        tokens = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>",
                  "<box>", "</box>"]  # fmt: skip
        new = tok.add_tokens(tokens, special_tokens=True)
        assert new == 0, f"{fam}: {new} InternVL tokens were missing"
        toks[fam] = tok
        print(f"{fam}: {type(tok).__name__}", file=sys.stderr)
    return toks


def compare(tok_dir: Path, root: Path, revision: str) -> int:
    toks = official_tokenizers(tok_dir, root)
    data = gen.generate(root, revision, toks=toks)
    saved = json.loads((gen.EXPECTED / f"{revision}.json").read_text(encoding="utf-8"))
    by_key = {(c["sample"], c["template"], c["tokenizer"]): c for c in saved["cases"]}
    diff = []
    for case in data["cases"]:
        want = by_key[(case["sample"], case["template"], case["tokenizer"])]
        if case != want and not ("rejected" in case and "rejected" in want):
            diff.append(f"{case['template']} {case['tokenizer']} {case['sample']}")
    print(f"{revision}: {len(data['cases']) - len(diff)} of {len(data['cases'])} cases agree")
    for d in diff:
        print(f"  differs: {d}")
    return 1 if diff else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("verb", choices=["write", "compare"])
    p.add_argument("dir", type=Path)
    p.add_argument("--internvl-root", type=Path)
    p.add_argument("--revision", choices=sorted(gen.PAIRS))
    a = p.parse_args(argv)
    if a.verb == "write":
        write(a.dir)
        return 0
    if not (a.internvl_root and a.revision):
        p.error("compare needs --internvl-root and --revision")
    return compare(a.dir, a.internvl_root, a.revision)


if __name__ == "__main__":
    sys.exit(main())
