"""Slurm partitions as sinfo reports them, and what a job asks compared with one.

`read_partition(name, sinfo_text)` turns `sinfo -h -o FORMAT` lines into one `Partition`
(nodes summed over sinfo's per-state lines, the smallest node's CPUs, memory and GRES), or an
`Unknown` listing the partitions that exist. `compare(spec, req, part)` is pure: the time
limit that applies (DefaultTime without --time, which is often much shorter than MaxTime) and
every request the partition cannot satisfy. launcher.plan.site runs sinfo and calls both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from launcher.config.spec import JobSpec, Problem
from launcher.node.rendezvous import slurm_minutes

# partition | MaxTime | DefaultTime | CPUs | memory MB | nodes | GRES | job size (nodes)
SINFO_FORMAT = "%P|%l|%L|%c|%m|%D|%G|%s"

__all__ = ["SINFO_FORMAT", "Partition", "Unknown", "slurm_minutes"]


@dataclass(frozen=True, slots=True)
class Partition:
    """One Slurm partition as sinfo reports it (the smallest node where nodes differ)."""

    name: str
    time_limit: str
    """MaxTime, sinfo's text: infinite, 1-00:00:00, 4:00:00, 30:00."""
    cpus: int | None
    mem_mb: int | None
    nodes: int | None
    default_time: str = "n/a"
    """DefaultTime: what a job without --time gets (n/a: MaxTime)."""
    gres: str | None = None
    """GRES of its nodes, e.g. gpu:a800:8 (None: none)."""
    max_job_nodes: int | None = None
    """The most nodes one job may use (sinfo's job size), None: no limit."""

    @property
    def time_limit_min(self) -> int | None:
        """MaxTime in minutes, or None for no limit."""
        return slurm_minutes(self.time_limit)

    @property
    def applies(self) -> str:
        """The limit a job without --time gets: DefaultTime if set, else MaxTime."""
        return self.time_limit if slurm_minutes(self.default_time) is None else self.default_time

    @property
    def applies_min(self) -> int | None:
        return slurm_minutes(self.applies)


@dataclass(frozen=True, slots=True)
class Unknown:
    """sinfo answered, and the partition asked for is not among `listed`."""

    name: str | None
    listed: tuple[str, ...]


def _int(text: str) -> int | None:
    m = re.match(r"\d+", text)
    return int(m.group()) if m else None


def _gres_count(gres: str, kind: str) -> int | None:
    """How many `kind` devices (gpu, npu) one GRES string of sinfo offers; None: none."""
    counts = [
        _int(item.split("(")[0].rsplit(":", 1)[-1])
        for item in gres.split(",")
        if item.split(":")[0] == kind
    ]
    counts = [c for c in counts if c is not None]
    return min(counts) if counts else None


def read_partition(name: str | None, sinfo_text: str) -> Partition | Unknown:
    """The named partition (or the default one, marked * by sinfo) from sinfo's lines."""
    rows: list[list[str]] = []
    listed: list[str] = []
    for line in sinfo_text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 8:
            continue
        part = fields[0].rstrip("*")
        listed += [part] if part not in listed else []
        if part == name or (name is None and fields[0].endswith("*")):
            rows.append([part, *fields[1:]])
    if not rows:
        return Unknown(name, tuple(listed))
    cpus = [c for r in rows if (c := _int(r[3])) is not None]
    mem = [m for r in rows if (m := _int(r[4])) is not None]
    gres = [g for r in rows if (g := r[6]) and g != "(null)"]
    size = rows[0][7].rpartition("-")[2]
    return Partition(
        name=rows[0][0],
        time_limit=rows[0][1],
        default_time=rows[0][2],
        cpus=min(cpus) if cpus else None,
        mem_mb=min(mem) if mem else None,
        nodes=sum(_int(r[5]) or 0 for r in rows),
        gres=gres[0] if len(gres) == len(rows) else None,
        max_job_nodes=_int(size),
    )


def time_line(part: Partition, time_min: int | None) -> str:
    """The plan's `time limit:` line: the limit that applies, and where it comes from."""
    if time_min is not None:
        return f"cluster.time_min={time_min} (partition {part.name} allows {part.time_limit})"
    if slurm_minutes(part.default_time) is not None:
        return (
            f"partition {part.name}'s DefaultTime {part.default_time} (no --time; its MaxTime "
            f"is {part.time_limit}: set cluster.time_min for more), from sinfo"
        )
    return f"partition {part.name}'s ({part.time_limit}, from sinfo)"


def compare(
    spec: JobSpec, cpus: int | None, mem_gb: float | None, part: Partition
) -> list[Problem]:
    """Every request the partition cannot satisfy (each names the setting to change)."""
    out = []
    c, hw = spec.cluster, spec.hw
    most = part.time_limit_min
    if c.time_min is not None and most is not None and c.time_min > most:
        out.append(
            Problem(
                "cluster.time_min",
                f"{c.time_min} min exceeds partition {part.name}'s limit {part.time_limit} "
                f"({most} min); the job would never start (null uses the partition's limit)",
            )
        )
    if part.nodes is not None and spec.nodes > part.nodes:
        out.append(
            Problem("nodes", f"{spec.nodes} nodes, but partition {part.name} has {part.nodes}")
        )
    elif part.max_job_nodes is not None and spec.nodes > part.max_job_nodes:
        out.append(
            Problem(
                "nodes",
                f"{spec.nodes} nodes, but partition {part.name} allows {part.max_job_nodes} per job",
            )
        )
    if cpus and part.cpus is not None and cpus > part.cpus:
        out.append(
            Problem(
                "hw.cpus_per_node",
                f"asks {cpus} CPUs per node; partition {part.name}'s nodes have {part.cpus} (sinfo)",
            )
        )
    if mem_gb and part.mem_mb is not None and mem_gb * 1024 > part.mem_mb:
        setting = "cluster.mem_gb" if c.mem_gb is not None else "hw.node_mem_gb"
        out.append(
            Problem(
                setting,
                f"asks {mem_gb:g} GB per node; partition {part.name}'s nodes have "
                f"{part.mem_mb / 1024:.0f} GB (sinfo); lower it, or cluster.mem_gb=0 for all of it",
            )
        )
    if hw.gres:
        kind = hw.gres.split(":")[0]
        have = _gres_count(part.gres, kind) if part.gres else None
        if have is None or have < hw.devices_per_node:
            offered = part.gres or "no GRES"
            out.append(
                Problem(
                    "hw.gres",
                    f"asks {hw.gres} per node; partition {part.name}'s nodes offer {offered} "
                    "(sinfo); pick a partition with them, or hw.gres=null if the site does not "
                    "ask for devices by GRES",
                )
            )
    return out


def unknown_problem(unknown: Unknown) -> Problem:
    names = ", ".join(unknown.listed) or "none"
    if unknown.name is None:
        return Problem(
            "cluster.partition", f"this cluster has no default partition; sinfo lists: {names}"
        )
    return Problem(
        "cluster.partition",
        f"{unknown.name!r} is not a partition of this cluster; sinfo lists: {names}",
    )
