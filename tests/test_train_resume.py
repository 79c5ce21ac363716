# ruff: noqa: F811  (the assets fixture is imported and then requested by name)
"""Stop, save and resume of `internvl_chat.train`: the checkpoint marker rule, the metrics
file, and real torchrun runs (2 processes, ZeRO-2, CPU) that are stopped or find corrupt
checkpoints and must continue exactly as the uninterrupted run.

Tolerance: none. On CPU in fp32 with gloo, a resumed run recomputes the same floating-point
operations on the same samples with the same random numbers (drop_path is on, so the RNG
restore matters), so its per-step losses, lrs, grad norms and token counts equal the
uninterrupted run's exactly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_deepspeed import REPO, _args, _ds_config, assets  # noqa: F401

from internvl_chat.train.checkpointing import checkpoint_problem, prune, scan, write_marker
from internvl_chat.train.metrics import truncate_metrics

COMPARED = ("step", "loss", "lr", "grad_norm", "tokens", "image_tokens", "samples")

# ---------------------------------------------------------------- the rules (no torch run)


def _fake_checkpoint(out: Path, step: int, files: dict[str, bytes], marker: bool = True) -> Path:
    ck = out / f"checkpoint-{step}"
    for rel, data in files.items():
        (ck / rel).parent.mkdir(parents=True, exist_ok=True)
        (ck / rel).write_bytes(data)
    if marker:
        write_marker(ck, step)
    return ck


def test_a_checkpoint_is_valid_only_with_a_marker_that_matches_its_files(tmp_path):
    files = {"ds/model.pt": b"x" * 100, "trainer_state.json": b"{}"}
    good = _fake_checkpoint(tmp_path, 2, files)
    assert json.loads((good / "COMPLETE.json").read_text()) == {
        "step": 2, "files": {"ds/model.pt": 100, "trainer_state.json": 2}}  # fmt: skip
    assert checkpoint_problem(good, 2) is None

    half = _fake_checkpoint(tmp_path, 4, files, marker=False)
    assert checkpoint_problem(half, 4) == "no COMPLETE.json (half-written)"
    short = _fake_checkpoint(tmp_path, 6, files)
    (short / "ds/model.pt").write_bytes(b"x" * 40)
    assert checkpoint_problem(short, 6) == "ds/model.pt has 40 bytes, COMPLETE.json lists 100"
    gone = _fake_checkpoint(tmp_path, 8, files)
    (gone / "trainer_state.json").unlink()
    assert checkpoint_problem(gone, 8) == "trainer_state.json is missing"
    moved = _fake_checkpoint(tmp_path, 10, files)
    assert "says step 10" in checkpoint_problem(moved, 12)
    (moved / "COMPLETE.json").write_text('{"step": 10, "fil')
    assert "not valid JSON" in checkpoint_problem(moved, 10)
    (tmp_path / "checkpoint-12.tmp-99").mkdir()  # a save in progress is not a checkpoint

    valid, invalid = scan(tmp_path)
    assert valid == [(2, good)]
    assert [p.name for p, _ in invalid] == [
        "checkpoint-10", "checkpoint-4", "checkpoint-6", "checkpoint-8"]  # fmt: skip


def test_save_total_limit_never_removes_the_newest_valid_checkpoint(tmp_path):
    files = {"a.bin": b"1234"}
    for step in (2, 4, 6):
        _fake_checkpoint(tmp_path, step, files)
    _fake_checkpoint(tmp_path, 3, files, marker=False)  # older than the newest: a leftover
    _fake_checkpoint(tmp_path, 8, files, marker=False)  # newer: not ours to remove
    prune(tmp_path, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-6", "checkpoint-8"]
    prune(tmp_path, 0)  # a zero limit still keeps the newest
    assert (tmp_path / "checkpoint-6").is_dir()


def test_metrics_are_cut_back_to_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in range(1, 6)]
    path.write_text("\n".join(lines) + '\n{"step": 6, "lo')  # cut short by a crash
    assert truncate_metrics(path, 3) == 3
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]
    assert truncate_metrics(tmp_path / "absent.jsonl", 3) == 0


# ---------------------------------------------------------------- real runs


def _tiny_args(tmp: Path, assets, **over) -> dict:  # noqa: F811
    """6 steps of 2 ranks x 2 samples, checkpoints every 2 steps, drop_path on (uses the RNG)."""
    data, models = assets
    common = {"per_device_train_batch_size": 2, "max_steps": 6, "save_steps": 2,
            "save_total_limit": 3, "drop_path_rate": 0.1, "stop_file": str(tmp / "stop"),
            "deepspeed": str(_ds_config(tmp / "ds_2proc.json", 2, 2, 2))}  # fmt: skip
    return _args(tmp, data, models[("internlm2", "original")], **{**common, **over})


def _run(tmp: Path, args: dict, on_line=None) -> tuple[int, str, str]:
    """torchrun with 2 processes; ``on_line(line, proc)`` sees rank 0's stdout as it comes."""
    path = tmp / "train_args.json"
    path.write_text(json.dumps(args))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "internvl_chat.train", str(path)]  # fmt: skip
    err_path = tmp / "stderr.txt"
    with open(err_path, "w") as err:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                             start_new_session=True)  # fmt: skip
        out = []
        try:
            for line in p.stdout:
                out.append(line)
                if on_line:
                    on_line(line, p)
            p.wait(timeout=300)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return p.returncode, "".join(out), err_path.read_text()


def _metrics(args: dict) -> list[dict]:
    return [json.loads(x) for x in Path(args["metrics_file"]).read_text().splitlines()]


def _same(a: list[dict], b: list[dict]) -> None:
    assert [{k: m[k] for k in COMPARED} for m in b] == [{k: m[k] for k in COMPARED} for m in a]


@pytest.fixture(scope="module")
def uninterrupted(assets, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    args = _tiny_args(tmp, assets)
    rc, out, err = _run(tmp, args)
    assert rc == 0, out[-3000:] + err[-3000:]
    metrics = _metrics(args)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    return metrics, Path(args["output_dir"])


@pytest.mark.slow
def test_stop_file_saves_exits_75_and_the_resumed_run_matches_the_uninterrupted_one(
    assets,
    uninterrupted,
    tmp_path,
):
    full, _ = uninterrupted
    args = _tiny_args(tmp_path, assets)
    stop = Path(args["stop_file"])

    def request_stop(line: str, proc) -> None:
        if line.startswith("{'loss'"):  # step 1 done: ask for a stop while the run goes on
            stop.touch()

    rc, out, err = _run(tmp_path, args, request_stop)
    said = re.findall(r"\[train\] stop requested: saved checkpoint-(\d+) at step (\d+); "
                      r"exiting for requeue", out)  # fmt: skip
    assert len(said) == 1 and said[0][0] == said[0][1], out[-3000:] + err[-3000:]
    k = int(said[0][0])
    assert 1 <= k < 6
    # torchrun exits 1 when its workers fail; each worker's own status is 75.
    assert rc != 0 and len(re.findall(r"exitcode\s*:\s*75 \(pid", err)) == 2, err[-3000:]
    out_dir = Path(args["output_dir"])
    assert checkpoint_problem(out_dir / f"checkpoint-{k}", k) is None
    assert sorted(p.name for p in out_dir.glob("checkpoint-*.tmp-*")) == []
    assert [m["step"] for m in _metrics(args)] == list(range(1, k + 1))

    stop.unlink()  # the launcher clears the request before the next attempt
    rc, out, err = _run(tmp_path, args)
    assert rc == 0, out[-3000:] + err[-3000:]
    assert f"[train] resuming from {out_dir / f'checkpoint-{k}'} (step {k})" in out
    _same(full, _metrics(args))  # every step once, each as in the uninterrupted run
    runs = list((out_dir / "runs").iterdir())
    assert len(runs) == 1 and len(list(runs[0].glob("events.out.tfevents.*"))) == 2


@pytest.mark.slow
def test_truncated_and_unloadable_newest_checkpoints_are_skipped_for_the_one_before(
    assets,
    uninterrupted,
    tmp_path,
):
    full, full_out = uninterrupted
    args = _tiny_args(tmp_path, assets)
    out_dir = Path(args["output_dir"])
    out_dir.mkdir()
    for step in (2, 4, 6):
        shutil.copytree(full_out / f"checkpoint-{step}", out_dir / f"checkpoint-{step}")
    shutil.copy(full_out.parent / "metrics.jsonl", args["metrics_file"])  # steps 1..6
    states = "ds/mp_rank_00_model_states.pt"
    six = out_dir / "checkpoint-6" / states
    size = six.stat().st_size
    os.truncate(six, size // 2)  # a save cut short: the marker's sizes catch it
    four = out_dir / "checkpoint-4" / states
    four.write_bytes(b"\0" * four.stat().st_size)  # right size, unreadable: loading fails

    rc, out, err = _run(tmp_path, args)
    assert rc == 0, out[-3000:] + err[-3000:]
    assert (f"[train] skipping {out_dir / 'checkpoint-6'}: {states} has {size // 2} bytes, "
            f"COMPLETE.json lists {size}") in out  # fmt: skip
    assert f"[train] skipping {out_dir / 'checkpoint-4'}: loading failed" in out
    assert f"[train] resuming from {out_dir / 'checkpoint-2'} (step 2)" in out
    _same(full, _metrics(args))
    assert [step for step, _ in scan(out_dir)[0]] == [2, 4, 6]  # rewritten, valid again


@pytest.mark.slow
def test_a_full_disk_names_the_checkpoint_and_keeps_the_one_before(assets, uninterrupted, tmp_path):
    _, full_out = uninterrupted
    size = sum(f.stat().st_size for f in (full_out / "checkpoint-2").rglob("*") if f.is_file())
    small = tmp_path / "small"
    small.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={int(size * 1.5)}", "tmpfs", str(small)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out_dir = small / "output"
        args = _tiny_args(tmp_path, assets, output_dir=str(out_dir))
        rc, out, err = _run(tmp_path, args)
        assert rc != 0
        line = (f"[train] error: cannot write checkpoint {out_dir / 'checkpoint-4'}: "
                "No space left on device")  # fmt: skip
        assert line in err, err[-3000:]
        assert [step for step, _ in scan(out_dir)[0]] == [2]  # the one before is intact
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def _worker_pid(agent_pid: int, rank: int) -> int:
    """The pid of torchrun's worker with ``RANK=rank`` (a child of the agent)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == agent_pid and f"RANK={rank}".encode() in env:
            return int(proc.name)
    raise AssertionError(f"no worker with RANK={rank} under pid {agent_pid}")


@pytest.mark.slow
def test_sigusr1_to_one_rank_makes_every_rank_save_the_same_step(assets, tmp_path):
    args = _tiny_args(tmp_path, assets, save_steps=100)
    sent = []

    def signal_rank_1(line: str, proc) -> None:
        if line.startswith("{'loss'") and not sent:
            os.kill(_worker_pid(proc.pid, 1), signal.SIGUSR1)
            sent.append(line)

    rc, out, err = _run(tmp_path, args, signal_rank_1)
    said = re.findall(r"\[train\] stop requested: saved checkpoint-(\d+) at step \1;", out)
    assert len(said) == 1, out[-3000:] + err[-3000:]
    assert len(re.findall(r"exitcode\s*:\s*75 \(pid", err)) == 2, err[-3000:]
    k = int(said[0])
    out_dir = Path(args["output_dir"])
    assert [step for step, _ in scan(out_dir)[0]] == [k]
    marker = json.loads((out_dir / f"checkpoint-{k}" / "COMPLETE.json").read_text())
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(marker["files"])
