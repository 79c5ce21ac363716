"""python launch.py report PATH... [--gpus N --seq-len L --global-batch-size B --peak-tflops T]

PATH is a run dir (plan.json), a sweep dir (run dirs as subfolders) or a folder / file holding
only a raw training log (HF-Trainer stdout or XTuner vis_data); for a raw log the flags say
what the log cannot (for a run dir they override plan.json / config.yaml). Writes report.md,
metrics.csv and PNG plots (loss.png, tgs.png, mfu.png) into the one PATH given (the common
parent of several), and adds the metrics to each ended run's summary.json (atomically, keeping
existing keys).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from launcher.config.convert import lenient
from launcher.config.spec import BenchmarkSpec, HwSpec, ModelSpec
from launcher.contract import Plan, Summary
from launcher.flops import ALL_TRAINABLE, check_countable
from launcher.report.collect import LogError, load
from launcher.report.collect.metrics import Metrics, compute
from launcher.report.columns import TGS_HEADER, fmt, render_csv, summary_figures, table
from launcher.report.compare import label_rows, markdown, run_settings
from launcher.report.sections import report_section
from launcher.report.verdict import Verdict, verdict
from launcher.rundir import RunDir


@dataclass(slots=True)
class Row:
    name: str
    path: Path
    kind: str = "-"
    nodes: int | None = None
    gpus_per_node: int | None = None
    world_size: int | None = None
    per_device_batch: int | None = None
    accum: int | None = None
    global_batch: int | None = None
    zero_stage: int | None = None
    hw: str | None = None
    metrics: Metrics | None = None
    verdict: Verdict = field(default_factory=lambda: Verdict(None, "no log"))
    records: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  # launcher.report.compare
    label: str = ""  # the settings that differ from the other runs reported with it

    @property
    def config_label(self) -> str:
        return f"{self.name}: {self.label}" if self.label else self.name


@dataclass(frozen=True, slots=True, kw_only=True)
class Overrides:
    gpus: int | None = None
    seq_len: int | None = None
    global_batch_size: int | None = None
    peak_tflops: float | None = None


def discover(paths: Sequence[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(kind, path) per run: kind "run" for a run dir, "log" for a raw log. Raises ValueError
    naming every path that does not exist."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise ValueError("no such file or folder: " + ", ".join(missing))
    out: list[tuple[str, Path]] = []
    for p in map(Path, paths):
        runs = RunDir.under(p) if p.is_dir() else []
        # keep the path as given (relative stays relative): report.md shows it
        out += [("run", p if r.root == p.absolute() else p / r.root.name) for r in runs] or [
            ("log", p)
        ]
    return out


@dataclass(frozen=True, slots=True)
class RunConfig:
    """A run's config.yaml: as written (the settings runs are compared on) and typed
    (launcher.config.spec) for what report computes with."""

    settings: dict[str, Any] = field(default_factory=dict)
    model: ModelSpec | None = None
    hw: HwSpec | None = None
    benchmark: BenchmarkSpec = field(default_factory=BenchmarkSpec)

    @classmethod
    def read(cls, run: RunDir) -> RunConfig:
        """Typed the way the launcher read it (OmegaConf: 0.30e9 is a number); an old run's
        config that lacks newer settings still reads (their defaults fill in)."""
        if not run.config_yaml.is_file():
            return cls()
        import yaml
        from omegaconf import OmegaConf

        text = run.config_yaml.read_text()
        raw = yaml.safe_load(text) or {}
        typed = OmegaConf.to_container(OmegaConf.create(text)) if raw else {}
        model, hw = typed.get("model"), typed.get("hw")
        return cls(
            settings=raw,
            model=lenient(ModelSpec, model, "model") if model else None,
            hw=lenient(HwSpec, hw, "hw") if hw else None,
            benchmark=lenient(BenchmarkSpec, typed.get("benchmark"), "benchmark"),
        )


def analyse(kind: str, path: Path, ov: Overrides) -> Row:
    """One table row: the run's shape (plan.json or flags), its log's metrics and verdict."""
    row = Row(name=path.name if path.is_dir() else path.stem, path=path)
    cfg = RunConfig()
    infeasible = False
    seq_len = ov.seq_len
    row.world_size, row.global_batch = ov.gpus, ov.global_batch_size
    if kind == "run":
        run = RunDir(path)
        plan, cfg = Plan.load(run.root), RunConfig.read(run)
        d = plan.derived
        row.nodes, row.gpus_per_node = d.nodes, d.gpus_per_node
        row.world_size = ov.gpus or d.world_size
        row.per_device_batch = d.per_device_batch_size
        row.accum = d.gradient_accumulation_steps
        row.global_batch = ov.global_batch_size or d.global_batch_size
        row.zero_stage, row.hw = plan.zero_stage, plan.hw
        seq_len = ov.seq_len or plan.seq_len
        row.settings = run_settings(cfg.settings, row)
        ended = run.summary() or {}
        if str(ended.get("action", "")).startswith("point infeasible"):
            # the point's verdict whatever its log shows (an OOM mid-run still logged steps)
            infeasible = True
            row.notes.append(f"infeasible, not retried: {ended.get('reason')}")
    peak = ov.peak_tflops or (cfg.hw and cfg.hw.peak_tflops)
    target = cfg.benchmark.target
    model = cfg.model
    dims = None
    if model is not None:
        try:
            dims = check_countable(model.flops_dims)
        except ValueError as e:
            row.notes.append(f"no MFU: {e}")
    elif kind == "log":
        row.notes.append("no MFU: a bare log does not say the model's dims")
    try:
        log = load(path)
    except LogError as e:
        row.notes.append(str(e).replace("\n", " "))
        return row
    row.kind, row.records = log.kind, log.records
    row.notes += log.warnings
    row.metrics = compute(
        log.records,
        gpus=row.world_size,
        seq_len=seq_len,
        global_batch_size=row.global_batch,
        summary=log.summary,
        dims=dims,
        trainable=model.trainable if model is not None else ALL_TRAINABLE,
        peak_tflops=peak,
        min_steps=int(target.get("tgs_window_steps", 15)),
    )
    row.notes += row.metrics.notes
    row.verdict = verdict(target, log.records, hw=row.hw, train_hours=row.metrics.train_hours)
    if infeasible:
        row.verdict = Verdict(False, "infeasible as configured (out of memory)")
    return row


def render_markdown(rows: Sequence[Row], plots: Sequence[str], differ: Sequence[str] = ()) -> str:
    """The report table, notes per run, and links to the plots (paths relative to report.md)."""
    out = io.StringIO()
    out.write("# Training report\n\n")
    out.write(table(rows))
    out.write(markdown(rows, differ) + "\n## Notes\n\n")
    for r in rows:
        m = r.metrics
        bits = [f"log: {r.kind}"]
        if m:
            bits += m.throughput_notes
            if m.sps is not None:
                bits.append(f"SPS/TPS (seed 004's definition) over {m.sps_window}")
            if m.mfu_basis:
                bits.append(f"model FLOPs from {m.mfu_basis}")
            if m.xtuner_tflops is not None:
                bits.append(f"XTuner's own tflops {m.xtuner_tflops:.1f} (hardware FLOPs, not MFU)")
            if m.data_time_share is not None:
                bits.append(f"data loading {m.data_time_share * 100:.1f}% of step time")
            if m.image_tokens_per_sec_per_device is not None:
                bits.append(
                    f"image/text tokens/s/device {m.image_tokens_per_sec_per_device:.1f} / "
                    f"{fmt(m.text_tokens_per_sec_per_device, '.1f')}"
                )
        bits.append(f"verdict: {r.verdict.reason}")
        bits += r.notes
        out.write(f"- **{r.name}**: " + "; ".join(bits) + "\n")
    if plots:
        out.write("\n## Plots\n\n" + "".join(f"![{p}]({p})\n" for p in plots))
    return out.getvalue()


def plot(rows: Sequence[Row], out_dir: Path) -> list[str]:
    """loss.png (every run's loss curve), tgs.png and mfu.png (bars per configuration).
    Returns the names written; a chart with nothing to show is not written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    curves = [(r, [(x["step"], x["loss"]) for x in r.records if "loss" in x]) for r in rows]
    curves = [(r, c) for r, c in curves if c]
    if curves:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for r, c in curves:
            ax.plot([s for s, _ in c], [v for _, v in c], label=r.config_label, linewidth=1.2)
        ax.set(xlabel="step", ylabel="loss", title="Training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "loss.png", dpi=100)
        plt.close(fig)
        written.append("loss.png")
    for name, get, unit in (
        ("tgs", lambda m: m.tgs, TGS_HEADER),
        ("mfu", lambda m: m.mfu * 100 if m.mfu is not None else None, "MFU (%)"),
    ):
        bars = [
            (r.config_label, v) for r in rows if r.metrics and (v := get(r.metrics)) is not None
        ]
        if not bars:
            continue
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(bars) + 2), 4.5))
        ax.bar(range(len(bars)), [v for _, v in bars], color="tab:blue")
        ax.set_xticks(
            range(len(bars)), [lab for lab, _ in bars], rotation=30, ha="right", fontsize=8
        )
        ax.set(ylabel=unit, title=f"{unit} per configuration")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=100)
        plt.close(fig)
        written.append(f"{name}.png")
    return written


OUTCOME_KEYS = frozenset(f.name for f in fields(Summary))


def update_summary(row: Row) -> bool:
    """Add the metrics to a run dir's summary.json; False when the run has not ended.

    The node's outcome keys (contract.Summary: `steps`, `final_loss`, ...) stay as the node
    wrote them; report fills one in only where the node did not (a run from before it did)."""
    if row.metrics is None:
        return False
    run = RunDir(row.path)
    node = run.summary() or {}
    figures = summary_figures(row).items()
    return run.update_summary({k: v for k, v in figures if k not in OUTCOME_KEYS or k not in node})


def report(
    paths: Sequence[str | os.PathLike],
    *,
    gpus: int | None = None,
    seq_len: int | None = None,
    global_batch_size: int | None = None,
    peak_tflops: float | None = None,
    out_dir: str | os.PathLike | None = None,
    plots: bool = True,
) -> tuple[Path, list[Row]]:
    """Write report.md, metrics.csv and plots; return (report.md path, rows)."""
    found = discover(paths)
    ov = Overrides(
        gpus=gpus, seq_len=seq_len, global_batch_size=global_batch_size, peak_tflops=peak_tflops
    )
    rows = [analyse(kind, p, ov) for kind, p in found]
    if not any(row.records for row in rows):
        why = "; ".join(
            f"{row.path}: {'; '.join(n for n in row.notes if not n.startswith('no MFU')) or 'no training log'}"
            for row in rows
        )
        raise ValueError(f"nothing to report, nothing written ({why})")
    if out_dir is None:
        dirs = [
            Path(p).absolute() if Path(p).is_dir() else Path(p).absolute().parent for p in paths
        ]
        out_dir = Path(os.path.commonpath(dirs))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for (kind, _), row in zip(found, rows, strict=True):
        if kind == "run" and not update_summary(row):
            row.notes.append("summary.json not updated (the run has not ended)")
    differ = label_rows(rows)
    written = plot(rows, out) if plots else []
    nodes = report_section([p for (kind, p) in found if kind == "run"])  # "Nodes", official edits
    (out / "report.md").write_text(render_markdown(rows, written, differ) + nodes)
    (out / "metrics.csv").write_text(render_csv(rows))
    return out / "report.md", rows


def main(args: Any) -> int:
    """Entry for `python launch.py report` (args from launcher.submit.jobctl's parser)."""
    import sys

    try:
        md, rows = report(
            args.paths,
            gpus=args.gpus,
            seq_len=args.seq_len,
            global_batch_size=args.global_batch_size,
            peak_tflops=args.peak_tflops,
        )
    except ValueError as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    text = md.read_text()
    print(text[: text.index("\n## Notes")])
    print(
        f"[report] {md}, {md.parent / 'metrics.csv'}; plots: "
        + ", ".join(
            str(md.parent / p)
            for p in ("loss.png", "tgs.png", "mfu.png")
            if (md.parent / p).exists()
        )
    )
    return 0
