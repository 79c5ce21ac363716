"""After a short real training run on the synthetic shapes data, `chat` answers better."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from internvl_chat.tokenizer import COLOURS, SHAPES

sys.path.insert(0, str(Path(__file__).parent))
from test_train_deepspeed import _args, _ds_config, _train  # noqa: E402


def _questions(data: Path) -> list[tuple[Path, str, str]]:
    out = []
    for line in (data / "eval.jsonl").read_text().splitlines():
        row = json.loads(line)
        if not isinstance(row.get("image"), str):
            continue  # multi-image and text-only samples
        q, a = (t["value"] for t in row["conversations"][:2])
        out.append((data / row["image"], q.replace("<image>\n", ""), a))
    return out


def _score(model_dir: Path, questions) -> tuple[int, int, list]:
    """(exact answers, answers of the asked kind: a colour for a colour question, ...)."""
    from PIL import Image

    from internvl_chat.tools.chat import Chat

    chat = Chat(str(model_dir))
    exact = kind = 0
    answers = []
    for image, q, a in questions:
        with Image.open(image) as im:
            got = chat.ask(im, q, max_new_tokens=6)
        answers.append(got)
        exact += got == a
        kind += got in (COLOURS if "colour" in q else SHAPES)
    return exact, kind, answers


@pytest.mark.slow
def test_chat_answers_the_synthetic_questions_better_after_training(tmp_path):
    from internvl_chat.tools.make_synthetic import make_synthetic
    from internvl_chat.tools.make_tiny import make_tiny

    data = tmp_path / "data"
    make_synthetic(data, num_samples=200, num_eval=32, seed=0)
    model = make_tiny(tmp_path / "tiny", "original", "internlm2", seed=0)
    args = _args(
        tmp_path, data, model,
        per_device_train_batch_size=8, max_steps=80, learning_rate=1e-3, warmup_ratio=0.03,
        save_steps=1000, logging_steps=10, system_message="Answer.",
        deepspeed=str(_ds_config(tmp_path / "ds8.json", 2, 1, 8)),
    )  # fmt: skip
    _train(tmp_path, args)
    questions = _questions(data)
    assert len(questions) >= 20
    before = _score(model, questions)
    after = _score(Path(args["output_dir"]), questions)
    print(f"before: {before[0]} exact, {before[1]} of the asked kind, e.g. {before[2][:4]}")
    print(f"after:  {after[0]} exact, {after[1]} of the asked kind, e.g. {after[2][:4]}")
    assert after[1] >= 0.9 * len(questions) > before[1]
    assert after[0] >= before[0]
