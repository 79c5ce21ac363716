"""Every figure `report` writes, declared once: report.md's table, metrics.csv and the keys it
adds to summary.json all come from COLUMNS.

A metric is one `Column` here: its key (the CSV field and the summary.json key), how to get
the value from a report row, and, when report.md's table shows it, its header, its format and
its place in the table (`at`: the table sorts by it; the CSV keeps the order of COLUMNS).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from launcher.report.make import Row


@dataclass(frozen=True, slots=True, kw_only=True)
class Column:
    key: str
    """The metrics.csv field, and the summary.json key when `summary`."""
    value: Callable[[Row], Any]
    header: str | None = None
    """report.md's column title; None: not in the table."""
    at: int = 0
    """Where the table shows it (ascending); only with a header."""
    fmt: str = ""
    """format() spec of the table cell ("-" for None)."""
    cell: Callable[[Row], str] | None = None
    """A table cell that is more than one formatted value."""
    csv: bool = True
    summary: bool = False
    """Added to an ended run's summary.json."""

    def text(self, row: Row) -> str:
        if self.cell is not None:
            return self.cell(row)
        x = self.value(row)
        return "-" if x is None else format(x, self.fmt)


def _metric(name: str) -> Callable[[Row], Any]:
    return lambda r: getattr(r.metrics, name, None)


def fmt(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _shape(r: Row) -> str:
    if r.nodes and r.gpus_per_node:
        return f"{r.nodes} x {r.gpus_per_node}"
    return f"? x ? ({r.world_size})" if r.world_size else "-"


def _mfu(r: Row) -> str:
    m = r.metrics
    return fmt(m.mfu * 100 if m and m.mfu is not None else None, ".1f") + (
        "%" if m and m.mfu else ""
    )


def _step_times(r: Row) -> str:
    m = r.metrics
    return f"{fmt(m and m.step_time_p50, '.2f')} / {fmt(m and m.step_time_p95, '.2f')}"


TGS_HEADER = "TGS (samples/s x seq_len / devices)"

COLUMNS: tuple[Column, ...] = (
    Column(key="run", value=lambda r: r.name, header="run", at=10),
    Column(key="log", value=lambda r: r.kind),
    Column(key="nodes", value=lambda r: r.nodes, header="nodes x gpus", at=20, cell=_shape),
    Column(key="gpus_per_node", value=lambda r: r.gpus_per_node),
    Column(key="world_size", value=lambda r: r.world_size),
    Column(key="per_device_batch", value=lambda r: r.per_device_batch, header="per-device batch", at=30, fmt="d"),
    Column(key="accum", value=lambda r: r.accum, header="accum", at=40, fmt="d"),
    Column(key="global_batch", value=lambda r: r.global_batch, header="global batch", at=50, fmt="d"),
    Column(key="zero_stage", value=lambda r: r.zero_stage, header="zero", at=60, fmt="d"),
    Column(key="hw", value=lambda r: r.hw),
    Column(key="steps", value=_metric("steps"), header="steps", at=70, fmt="d", summary=True),
    Column(key="final_loss", value=_metric("final_loss"), header="final loss", at=80, fmt=".4f", summary=True),
    Column(key="tgs", value=_metric("tgs"), header=TGS_HEADER, at=90, fmt=".1f", summary=True),
    Column(key="tgs_reason", value=_metric("tgs_reason"), csv=False, summary=True),
    Column(key="tgs_steps", value=_metric("tgs_steps")),
    Column(key="tgs_definition", value=_metric("tgs_definition"), summary=True),
    Column(key="tokens_per_sec_per_device", value=_metric("tokens_per_sec_per_device"), header="real tokens/s/device", at=100, fmt=".1f", summary=True),
    Column(key="tokens_per_sec_per_device_source", value=_metric("tokens_per_sec_per_device_source"), summary=True),
    Column(key="image_tokens_per_sec_per_device", value=_metric("image_tokens_per_sec_per_device")),
    Column(key="text_tokens_per_sec_per_device", value=_metric("text_tokens_per_sec_per_device")),
    Column(key="sps", value=_metric("sps"), header="SPS", at=110, fmt=".2f", summary=True),
    Column(key="sps_window", value=_metric("sps_window"), summary=True),
    Column(key="tps_per_device", value=_metric("tps_per_device"), header="TPS/device", at=120, fmt=".1f", summary=True),
    Column(key="step_time_p50", value=_metric("step_time_p50"), header="step p50/p95 (s)", at=140, cell=_step_times, summary=True),
    Column(key="step_time_p95", value=_metric("step_time_p95"), summary=True),
    Column(key="peak_mem_gb", value=_metric("peak_mem_gb"), header="peak mem (GB)", at=150, fmt=".1f", summary=True),
    Column(key="tflops_per_device", value=_metric("tflops_per_device"), summary=True),
    Column(key="mfu", value=_metric("mfu"), header="MFU", at=130, cell=_mfu, summary=True),
    Column(key="xtuner_tflops", value=_metric("xtuner_tflops")),
    Column(key="data_time_share", value=_metric("data_time_share"), summary=True),
    Column(key="verdict", value=lambda r: r.verdict.label, header="verdict", at=160, summary=True),
    Column(key="verdict_reason", value=lambda r: r.verdict.reason, csv=False, summary=True),
)  # fmt: skip


def table(rows: Sequence[Row]) -> str:
    """report.md's main table: the columns with a header, by `at`."""
    shown = sorted((c for c in COLUMNS if c.header), key=lambda c: c.at)
    lines = ["| " + " | ".join(c.header or "" for c in shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(c.text(r) for c in shown) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv_value(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return format(x, ".6g")
    return str(x)


def render_csv(rows: Sequence[Row]) -> str:
    """metrics.csv: one line per row, every column with a CSV field."""
    fields = [c for c in COLUMNS if c.csv]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.key for c in fields])
    for r in rows:
        w.writerow([_csv_value(c.value(r)) for c in fields])
    return buf.getvalue()


def summary_figures(row: Row) -> dict[str, Any]:
    """What `report` adds to an ended run's summary.json."""
    return {c.key: c.value(row) for c in COLUMNS if c.summary}
