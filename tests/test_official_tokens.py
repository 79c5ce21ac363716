"""Our tokens and labels against the official InternVL preprocessing, at both revisions.

The expected files (tests/expected/official_tokens/{pin,head,head_gpt_oss}.json; the last is
the InternVL3.5 tree, checked with our ``head``) were produced ONCE from the
official code by tests/tools/gen_official_tokens.py (its docstring and the files' "command" /
"source" fields say how and from which commits). For every case (sample x template + tiny
tokenizer) our pipeline must either give byte-identical input_ids and labels, or refuse the
sample where the official code would not train it (it raises and resamples, masks every
label, or drops the image tokens). Known deliberate differences are listed in KNOWN with the
reason; docs/DIFFERENCES.md explains each.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from internvl_chat.data.config import DataConfig
from internvl_chat.data.meta import conversation_of, encode_conversation
from internvl_chat.data.templates import SampleDropped, SampleError
from internvl_chat.tokenizer import load_tokenizer, save_tiny_tokenizer

sys.path.insert(0, str(Path(__file__).parent / "tools"))
from chatml_tokenizers import FAMILIES as CHATML_FAMILIES  # noqa: E402
from chatml_tokenizers import save_chatml_tokenizer  # noqa: E402

EXPECTED = Path(__file__).parent / "expected" / "official_tokens"
SAMPLES = {s["name"]: s for s in json.loads((EXPECTED / "samples.json").read_text("utf-8"))}
# (revision, template, tokenizer, sample) -> (what we do, why)
KNOWN = {
    **{
        (rev, t, fam, "multi_image"): ("tokens", "multi-image exists only at HEAD; we read it as HEAD does")
        for rev, t, fam in [("pin", "internlm2-chat", "internlm2"), ("pin", "Hermes-2", "qwen2"), ("pin", "phi3-chat", "phi3")]
    },
    **{
        (rev, t, fam, "list_one_tagged"): ("tokens", "a one-image list is HEAD's multi-image path; we read it as HEAD does")
        for rev, t, fam in [("pin", "internlm2-chat", "internlm2"), ("pin", "Hermes-2", "qwen2"), ("pin", "phi3-chat", "phi3")]
    },
    **{
        (rev, "phi3-chat", "phi3", s): ("tokens", "phi3-chat multi-turn: the official offsets assume the slow tokenizer's extra leading '▁'; with a tokenizers-backed one it masks the whole sample, we supervise every answer")
        for rev in ("pin", "head") for s in ("multi_turn", "whitespace_text")
    },
    **{
        (rev, "internvl2_5", fam, "leading_gpt"): ("refused", "the official code glues '<image>\\n' onto the leading answer and supervises that literal text")
        for rev, fam in [("head", "qwen2"), ("head", "internlm2"), ("head", "qwen2_5"), ("head", "qwen3"), ("head_gpt_oss", "qwen3")]
    },
    ("head_gpt_oss", "internvl2_5", "qwen3", "list_one_untagged"): ("refused", "the InternVL3.5 tree tags untagged image lists; we follow internvl_chat/, which rejects them"),
    **{
        (rev, "internlm2-chat", "internlm2", s): ("tokens", "a last human turn: the official internlm2-chat code supervises it as if it were an answer; we supervise the answers only")
        for rev in ("pin", "head") for s in ("ends_on_human", "ends_on_human_image")
    },
    **{
        (rev, "internvl2_5", fam, s): ("refused", "a null value: the official internvl2_5 code trains the literal text 'None'")
        for rev, fam in [("head", "qwen2"), ("head", "internlm2"), ("head", "qwen2_5"), ("head", "qwen3"), ("head_gpt_oss", "qwen3")]
        for s in ("null_answer", "null_question")
    },
}  # fmt: skip


def cases(revision: str):
    data = json.loads((EXPECTED / f"{revision}.json").read_text("utf-8"))
    return [
        pytest.param(revision, c, id=f"{revision}-{c['template']}-{c['tokenizer']}-{c['sample']}")
        for c in data["cases"]
    ]


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    root = tmp_path_factory.mktemp("official_tokens")
    data = json.loads((EXPECTED / "head.json").read_text("utf-8"))
    paths = {fam: save_tiny_tokenizer(root / fam, fam) for fam in ("internlm2", "qwen2", "phi3")}
    paths.update({fam: save_chatml_tokenizer(root / fam, fam) for fam in CHATML_FAMILIES})
    return {
        fam: load_tokenizer(path, model_max_length=data["max_length"])
        for fam, path in paths.items()
    }


def ours(revision: str, case: dict, tok) -> dict:
    sample = SAMPLES[case["sample"]]
    revision = "pin" if revision == "pin" else "head"  # head_gpt_oss: the InternVL3.5 tree
    cfg = DataConfig(conv_style=case["template"], internvl_revision=revision, max_seq_length=4096,
                     force_image_size=56, patch_size=14, down_sample_ratio=0.5)  # fmt: skip
    assert cfg.num_image_token == 4
    try:
        _, system, turns = conversation_of(sample, cfg)
        enc = encode_conversation(system, turns, sample["tiles"], cfg, tok)
    except (SampleError, SampleDropped) as e:
        return {"refused": str(e)}
    return {"input_ids": enc.input_ids, "labels": enc.labels}


def official_kind(case: dict, tok) -> str:
    if "rejected" in case:
        return "rejected"
    if "all_masked" in case:
        return "all_masked"
    tiles = SAMPLES[case["sample"]]["tiles"]
    n_context = case["input_ids"].count(tok.convert_tokens_to_ids("<IMG_CONTEXT>"))
    if n_context != 4 * sum(tiles):
        return "no_image_tokens"  # PIN has no assert: the model would zero the batch loss
    return "tokens"


@pytest.mark.parametrize(("revision", "case"), cases("pin") + cases("head") + cases("head_gpt_oss"))
def test_matches_official(toks, revision, case):
    tok = toks[case["tokenizer"]]
    got = ours(revision, case, tok)
    kind = official_kind(case, tok)
    key = (revision, case["template"], case["tokenizer"], case["sample"])
    if key in KNOWN:
        want, why = KNOWN[key]
        assert ("refused" not in got) == (want == "tokens"), (why, got)
        if kind == "tokens" and want == "tokens":
            same = got == {"input_ids": case["input_ids"], "labels": case["labels"]}
            assert not same, f"{key} now matches the official code: drop it from KNOWN"
        return
    if kind == "tokens":
        assert "refused" not in got, f"we refuse what the official code trains: {got['refused']}"
        want = json.dumps({"input_ids": case["input_ids"], "labels": case["labels"]})
        assert json.dumps(got) == want  # byte for byte
    else:
        assert "refused" in got, f"official: {kind} ({case.get('rejected', '')}); we train it"


def test_every_sample_and_template_is_covered():
    for revision, pairs in (("pin", 3), ("head", 7), ("head_gpt_oss", 1)):
        data = json.loads((EXPECTED / f"{revision}.json").read_text("utf-8"))
        assert len(data["cases"]) == pairs * len(SAMPLES)
        assert data["revision"] == revision and "gen_official_tokens.py" in data["command"]


def test_tools_take_revision_and_system_message(tmp_path, capsys):
    """inspect / validate_data render what a run at that revision would train."""
    from internvl_chat.prompts import SYSTEM_MESSAGES
    from internvl_chat.tools import inspect, validate_data

    model = save_tiny_tokenizer(tmp_path / "model", "internlm2")
    (model / "config.json").write_text(json.dumps({"template": "internlm2-chat", "force_image_size": 56, "vision_config": {"patch_size": 14}}))  # fmt: skip
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]})
        + "\n" + json.dumps({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": ""}]}) + "\n"
    )  # fmt: skip
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"d": {"root": ".", "annotation": "a.jsonl", "repeat_time": 1}}))
    tok = load_tokenizer(model)
    for revision in ("pin", "head"):
        assert (
            inspect.main([str(meta), "--model", str(model), "--json", "--revision", revision]) == 0
        )
        out = json.loads(capsys.readouterr().out)
        assert out["system_message"] == SYSTEM_MESSAGES[revision]["internlm2-chat"]
        assert SYSTEM_MESSAGES[revision]["internlm2-chat"] in tok.decode(out["input_ids"])
    assert (
        inspect.main([str(meta), "--model", str(model), "--json", "--system-message", "Hi."]) == 0
    )
    assert "system\nHi.<|im_end|>" in tok.decode(json.loads(capsys.readouterr().out)["input_ids"])
    # the empty answer: the pinned preprocess_internlm fails on it, HEAD trains nothing on it
    assert validate_data.main([str(meta), "--model", str(model), "--revision", "pin"]) == 1
    assert "a.jsonl:2: empty gpt value" in capsys.readouterr().out
    assert validate_data.main([str(meta), "--model", str(model), "--revision", "head"]) == 1
    assert "a.jsonl:2: dropped in training: no supervised token" in capsys.readouterr().out


def test_refusals_name_file_and_line(tmp_path, capsys, caplog):
    """Issue 19's differences, through validate_data, inspect and the dataset build: a lone
    surrogate (value or image path) and a null value are file:line problems (no TypeError);
    '</s>' in an internlm2-chat answer is refused (the official code masks the whole sample);
    literal <img>/</img> text and a last human turn are trained."""
    from internvl_chat.data.dataset import build_train_dataset
    from internvl_chat.tools import inspect, validate_data

    model = save_tiny_tokenizer(tmp_path / "model", "internlm2")
    (model / "config.json").write_text(json.dumps({"template": "internlm2-chat", "force_image_size": 56, "vision_config": {"patch_size": 14}}))  # fmt: skip
    q, a = {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}
    rows = [
        {"conversations": [q, a]},
        {"conversations": [{"from": "human", "value": "Q \ud800"}, a]},
        {"conversations": [q, a], "image": "x\udfff.png"},
        {"conversations": [q, {"from": "gpt", "value": None}]},
        {"conversations": [q, {"from": "gpt", "value": "red</s>blue"}]},
        {"conversations": [{"from": "human", "value": "Say <img>"}, {"from": "gpt", "value": "</img>"}]},
        {"conversations": [q, a, q]},
    ]  # fmt: skip
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"d": {"root": ".", "annotation": "a.jsonl", "repeat_time": 1}}))
    ann = tmp_path / "a.jsonl"
    want = {
        2: r"conversations[0].value is not valid Unicode: lone surrogate \ud800 at character 2",
        3: "is not valid Unicode (a lone surrogate)",
        4: "conversations[1].value is null",
        5: "gpt turn 1 contains '</s>': the official internlm2-chat code masks the whole sample",
    }
    assert validate_data.main([str(meta), "--model", str(model)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(want), out
    for got, (line, reason) in zip(out, want.items(), strict=True):
        assert got.startswith(f"{ann}:{line}: ") and reason in got, (line, got)
    tok = load_tokenizer(model)
    for index in range(len(rows)):
        rc = inspect.main([str(meta), "--model", str(model), "--index", str(index), "--json"])
        io = capsys.readouterr()
        if index + 1 in want:
            assert rc == 1 and io.err.startswith(f"error: {ann}:{index + 1}: "), io.err
            assert want[index + 1] in io.err
        else:
            assert rc == 0, io.err
            sample = json.loads(io.out)
            text = tok.decode(sample["input_ids"])
            assert ("Say <img>" in text) == (index == 5) and sample["num_image_tokens"] == 0
    cfg = validate_data.settings(model, max_bad_sample_ratio=1.0)
    with caplog.at_level("WARNING"):
        ds = build_train_dataset(meta, tok, cfg)
    assert len(ds) == 3 and ds.stats["d"]["skipped"] == 4
    for line, reason in want.items():
        assert f"{ann}:{line}: skipped sample: " in caplog.text and reason in caplog.text


def test_chatml_tokenizers_carry_the_real_added_tokens(toks):
    """The tiny Qwen2.5 / Qwen3 tokenizers: the families' added tokens right after the BPE
    vocabulary (22 / 26 of them), InternVL's after those, <think> one non-special token."""
    for fam, n_added in (("qwen2_5", 22), ("qwen3", 26)):
        tok = toks[fam]
        first = tok.convert_tokens_to_ids("<|endoftext|>")
        assert tok.convert_tokens_to_ids("<img>") == first + n_added
        assert tok.convert_tokens_to_ids("<|im_end|>") == first + 2 == tok.eos_token_id
        assert tok.pad_token == "<|endoftext|>" and tok.bos_token is None
    think = toks["qwen3"]("<think>\nx</think>", add_special_tokens=False)["input_ids"]
    assert toks["qwen3"].convert_tokens_to_ids("<think>") == think[0]
    assert "<think>" not in toks["qwen3"].all_special_tokens
    assert len(toks["qwen2_5"]("<think>", add_special_tokens=False)["input_ids"]) > 1
