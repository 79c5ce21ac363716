"""The files a real checkpoint of the original layout carries beside our tiny tokenizer, so
the official InternVL code (transformers 4.37 / tokenizers 0.15) loads a `make_tiny` model as is.

- InternLM2: the tokenizer is remote code (`tokenization_internlm2.py`, named by the
  tokenizer config's auto_map). It is taken at run time from the user's InternVL checkout
  (`internvl_chat/internvl/model/internlm2/`), never kept in this repository.
- Qwen2 and Qwen3: `vocab.json` + `merges.txt` (what the slow Qwen2Tokenizer reads: both
  official trees default to use_fast_tokenizer=False), and `tokenizer.json`'s merges as "a b"
  strings: tokenizers 0.15 cannot read the list form newer versions write.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

REMOTE_CODE = ("tokenization_internlm2.py", "tokenization_internlm2_fast.py")


def internlm2_remote_code(internvl_root: str | Path) -> Path:
    return Path(internvl_root) / "internvl_chat" / "internvl" / "model" / "internlm2"


def add_original_files(out: Path, llm: str, internvl_root: str | Path | None) -> list[str]:
    """Write them into the checkpoint folder `out`; returns the names written."""
    written = []
    if llm == "internlm2" and internvl_root is not None:
        src = internlm2_remote_code(internvl_root)
        if not (src / REMOTE_CODE[0]).is_file():
            raise ValueError(f"--internvl-root: no {REMOTE_CODE[0]} under {src}")
        for name in REMOTE_CODE:
            if (src / name).is_file():
                shutil.copyfile(src / name, out / name)
                written.append(name)
    tokenizer_json = out / "tokenizer.json"
    if llm in ("qwen2", "qwen3") and tokenizer_json.is_file():
        tok = json.loads(tokenizer_json.read_text())
        model = tok["model"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        model["merges"] = merges
        tokenizer_json.write_text(json.dumps(tok, ensure_ascii=False, indent=2) + "\n")
        vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
        (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n")
        (out / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges))
        written += ["vocab.json", "merges.txt", "tokenizer.json"]
    return written


def main(argv: list[str] | None = None) -> int:
    """python -m internvl_chat.tools.tiny_original CKPT --llm internlm2|qwen2|qwen3 [--internvl-root R]

    Adds the files to a checkpoint make_tiny wrote earlier (a shared cache of tiny models)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--llm", default="internlm2")
    p.add_argument("--internvl-root")
    a = p.parse_args(argv)
    try:
        names = add_original_files(Path(a.checkpoint), a.llm, a.internvl_root)
    except (ValueError, OSError) as e:
        print(f"tiny_original: {e}", file=sys.stderr)
        return 2
    print(f"tiny_original: wrote {', '.join(names) or 'nothing'} into {a.checkpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
