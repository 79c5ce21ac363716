"""Live progress of a run, read from its run dir alone (metrics.jsonl, plan.json, job.json):
step/total, loss, throughput, ETA, stalls; `status --watch`, `logs -f`, and the runs table.

Pure reading: nothing here writes to a run dir, and the clock is passed in where it matters.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from launcher.rundir import RunDir

STALL_FACTOR = 5
"""No step for this many median step times: the run is flagged as stalled."""

TIMING_WINDOW = 20
"""Throughput and step time are the medians over this many last steps (the first step,
which carries start-up costs, left out)."""


def _plan(run: RunDir) -> dict[str, Any]:
    return json.loads(run.plan_json.read_text()) if run.plan_json.exists() else {}


def _job(run: RunDir) -> dict[str, Any]:
    return json.loads(run.job_json.read_text()) if run.job_json.exists() else {}


def total_steps(run: RunDir, plan: dict[str, Any]) -> int | None:
    """max_steps of the run (train_args.json's for our engines, else plan.json's)."""
    if run.train_args_json.exists():
        steps = json.loads(run.train_args_json.read_text()).get("max_steps")
        if isinstance(steps, int) and steps > 0:
            return steps
    steps = plan.get("max_steps")
    return steps if isinstance(steps, int) and steps > 0 else None


def live(run: RunDir, now: float | None = None) -> dict[str, Any]:
    """The figures of a run as it stands: step, total, percent, loss, tokens/s (non-padding,
    the whole job), TGS (per device), step time, elapsed, ETA, seconds since the last step,
    stall (no step for STALL_FACTOR x the median step time), attempt and requeues."""
    now = time.time() if now is None else now
    plan, job = _plan(run), _job(run)
    rows = run.metrics()
    total = total_steps(run, plan)
    step = rows[-1].get("step") if rows else None
    timed = (rows[1:] or rows)[-TIMING_WINDOW:]
    step_times = [r["step_time"] for r in timed if r.get("step_time")]
    tps = [r["tokens_per_sec"] for r in timed if r.get("tokens_per_sec")]
    step_time = statistics.median(step_times) if step_times else None
    tokens_per_sec = statistics.median(tps) if tps else None
    world = plan.get("world_size") or 1
    since = now - run.metrics_jsonl.stat().st_mtime if rows else None
    submitted = job.get("submitted")
    out = {
        "step": step,
        "total": total,
        "percent": 100.0 * step / total if step is not None and total else None,
        "loss": rows[-1].get("loss") if rows else None,
        "tokens_per_sec": tokens_per_sec,
        "tgs": tokens_per_sec / world if tokens_per_sec is not None else None,
        "step_time": step_time,
        "elapsed_s": now - submitted if submitted else None,
        "eta_s": (total - step) * step_time if total and step is not None and step_time else None,
        "since_last_step_s": since,
        "stalled": bool(step_time and since is not None and since > STALL_FACTOR * step_time),
        "attempt": run.attempt(),
        "requeues": run.requeues_total(),
    }
    return out


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def progress_lines(run: RunDir, now: float | None = None) -> list[str]:
    """The lines `status` prints under a running job's own line."""
    p = live(run, now)
    step = "-" if p["step"] is None else str(p["step"])
    if p["total"]:
        step += (
            f"/{p['total']} ({p['percent']:.0f}%)" if p["percent"] is not None else f"/{p['total']}"
        )
    line = (
        f"step {step}  loss {_num(p['loss'], '.4f')}  "
        f"{_num(p['tokens_per_sec'], '.0f')} tokens/s  TGS {_num(p['tgs'], '.1f')}  "
        f"elapsed {duration(p['elapsed_s'])}  ETA {duration(p['eta_s'])}  "
        f"last step {_num(p['since_last_step_s'], '.0f')} s ago  "
        f"attempt {p['attempt']}  requeues {p['requeues']}"
    )
    lines = [line]
    if p["stalled"]:
        lines.append(
            f"WARNING: stalled? no step for {p['since_last_step_s']:.0f} s, "
            f"{STALL_FACTOR}x the median step time is {STALL_FACTOR * p['step_time']:.1f} s; "
            f"python launch.py logs {run.root} -f"
        )
    return lines


TABLE_HEAD = ("run", "state", "steps", "loss", "TGS", "started", "duration")


def runs_table(runs: list[RunDir], state: Callable[[RunDir], str], now: float | None = None) -> str:
    """One row per run, newest first: name, state, steps, loss, TGS, started (its first
    attempt's submission), duration (from then until it ended, or now)."""
    now = time.time() if now is None else now
    rows = []
    for run in runs:
        job, summary = _job(run), run.summary() or {}
        p = live(run, now)
        first = run.attempt_dir(1) / "job.json"  # a resumed run started with attempt 1
        started = (json.loads(first.read_text()) if first.exists() else job).get("submitted")
        dur = summary.get("ended", now) - started if started else None
        steps = "-" if p["step"] is None else str(p["step"])
        steps += f"/{p['total']}" if p["total"] else ""
        tgs = summary.get("tgs", p["tgs"])
        when = datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M") if started else "-"
        row = (run.root.name, state(run), steps, _num(p["loss"], ".4f"), _num(tgs, ".1f"), when,
               duration(dur) if started else "-")  # fmt: skip
        rows.append((started or run.plan_json.stat().st_mtime, row))
    rows.sort(key=lambda r: r[0], reverse=True)
    table = [TABLE_HEAD, *(r for _, r in rows)]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(TABLE_HEAD))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table
    )


def watch(render: Callable[[], tuple[str, bool]], interval: float, out=None) -> int:
    """Print render()'s text every `interval` s until it says everything ended (or Ctrl-C):
    in place on a terminal (ANSI clear), as plain appended blocks otherwise."""
    out = out or sys.stdout
    tty = out.isatty()
    try:
        while True:
            text, ended = render()
            if tty:
                out.write("\x1b[H\x1b[2J")
            else:
                out.write(f"--- {time.strftime('%H:%M:%S')}\n")
            out.write(text.rstrip("\n") + "\n")
            out.flush()
            if ended:
                return 0
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


def follow(
    log: Path, lines: int, running: Callable[[], bool], poll_s: float = 0.5, out=None
) -> int:
    """`tail -n lines -f log` until the job ended and the log stopped growing."""
    out = out or sys.stdout
    while not log.exists():
        if not running():
            out.write(f"{log}: no log, and the job is not running\n")
            return 1
        time.sleep(poll_s)
    data = log.read_bytes()
    tail = data.decode(errors="replace").splitlines(keepends=True)[-lines:] if lines else []
    out.write("".join(tail))
    out.flush()
    pos = len(data)
    with log.open("rb") as f:
        f.seek(pos)
        try:
            while True:
                chunk = f.read()
                if chunk:
                    out.write(chunk.decode(errors="replace"))
                    out.flush()
                    continue
                if not running():
                    rest = f.read()  # what the last moment wrote
                    out.write(rest.decode(errors="replace"))
                    out.flush()
                    return 0
                time.sleep(poll_s)
        except KeyboardInterrupt:
            return 0
