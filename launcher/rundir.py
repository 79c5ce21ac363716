"""The run directory: one object owns its layout; everyone else asks it for paths."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class RunDir:
    root: Path

    def __init__(self, root: str | os.PathLike[str]):
        object.__setattr__(self, "root", Path(root).absolute())

    @classmethod
    def under(cls, path: str | os.PathLike[str]) -> list[RunDir]:
        """`path` itself if it is a run dir (it holds plan.json), else the run dirs directly
        under it (a sweep dir), in natural order (2 before 10)."""
        path = Path(path)
        if cls(path).plan_json.is_file():
            return [cls(path)]
        found = [cls(p) for p in path.glob("*") if cls(p).plan_json.is_file()]
        return sorted(found, key=lambda r: _natural(r.root.name))

    # what the plan writes
    @property
    def config_yaml(self) -> Path:
        return self.root / "config.yaml"

    @property
    def overrides_yaml(self) -> Path:
        """The command line as given and the overrides Hydra applied (launcher.config.settings)."""
        return self.root / "overrides.yaml"

    @property
    def launch_log(self) -> Path:
        """What planning and submitting printed, for a sweep point (its stdout is one line)."""
        return self.root / "logs" / "launch.log"

    @property
    def plan_json(self) -> Path:
        return self.root / "plan.json"

    @property
    def sbatch_sh(self) -> Path:
        return self.root / "sbatch.sh"

    @property
    def job_sh(self) -> Path:
        return self.root / "job.sh"

    @property
    def deepspeed_json(self) -> Path:
        return self.root / "deepspeed.json"

    @property
    def meta_json(self) -> Path:
        return self.root / "meta.json"

    @property
    def eval_meta_json(self) -> Path:
        return self.root / "meta_eval.json"

    @property
    def train_args_json(self) -> Path:
        return self.root / "train_args.json"

    @property
    def xtuner_config(self) -> Path:
        return self.root / "xtuner_config.py"

    @property
    def code_dir(self) -> Path:
        """The code the nodes run (launcher.snapshot), copied at submit."""
        return self.root / "code"

    @property
    def mindspeed_dir(self) -> Path:
        """engine=mindspeed: data.json, model.json and convert.sh."""
        return self.root / "mindspeed"

    @property
    def mindspeed_data_json(self) -> Path:
        return self.mindspeed_dir / "data.json"

    @property
    def mindspeed_model_json(self) -> Path:
        return self.mindspeed_dir / "model.json"

    @property
    def mindspeed_convert_sh(self) -> Path:
        return self.mindspeed_dir / "convert.sh"

    @property
    def mindspeed_latest_iteration(self) -> Path:
        """engine=mindspeed: Megatron's record of the newest checkpoint in output/."""
        return self.output_dir / "latest_checkpointed_iteration.txt"

    def mindspeed_mm_dir(self, split_tag: str) -> Path:
        """engine=mindspeed: weights converted with that split (default model.mindspeed_mm_dir)."""
        return self.mindspeed_dir / f"mm-{split_tag}"

    @property
    def xtuner_base_dir(self) -> Path:
        """engine=xtuner: the base configs the rendered config inherits, copied as they were."""
        return self.root / "xtuner_base"

    @property
    def xtuner_resume_config(self) -> Path:
        """A requeued XTuner attempt: xtuner_config.py plus resume=True, load_from=<newest>."""
        return self.root / "xtuner_resume.py"

    @property
    def train_args_resume_json(self) -> Path:
        """A requeued official-engine attempt: train_args.json plus resume_from_checkpoint."""
        return self.root / "train_args.resume.json"

    # what dispatch and the nodes write
    @property
    def job_json(self) -> Path:
        return self.root / "job.json"

    @property
    def submitit_dir(self) -> Path:
        return self.root / "submitit"

    def submission_sh(self, job_id: str) -> Path:
        """The batch script submitit submitted for job `job_id` (compared with sbatch.sh)."""
        return self.submitit_dir / f"{job_id}_submission.sh"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def node_log(self, node_rank: int) -> Path:
        return self.logs_dir / f"node{node_rank}.log"

    def node_logs(self) -> list[Path]:
        """Every node's log that exists, by node rank."""
        found = [p for p in self.logs_dir.glob("node*.log") if p.stem[4:].isdigit()]
        return sorted(found, key=lambda p: int(p.stem[4:]))

    def node_exit(self, node_rank: int) -> Path:
        return self.logs_dir / f"node{node_rank}.exit.json"

    def node_steps(self, node_rank: int) -> Path:
        """One JSON line per optimizer step from the node's local rank 0: its compute time
        (launcher.node.nodecheck's straggler detector reads them)."""
        return self.logs_dir / f"node{node_rank}.steps.jsonl"

    def node_preflight_dir(self, node_rank: int) -> Path:
        """torchrun's per-rank logs of the node pre-flight on one node (--log-dir)."""
        return self.logs_dir / f"node{node_rank}-preflight"

    @property
    def preflight_json(self) -> Path:
        """The node pre-flight's figures and verdict (internvl_chat.tools.node_check, node 0)."""
        return self.root / "preflight.json"

    def node_ranks_dir(self, node_rank: int) -> Path:
        """torchrun's per-rank stdout/stderr files of one node (--log-dir)."""
        return self.logs_dir / f"node{node_rank}-ranks"

    @property
    def dispatch_log(self) -> Path:
        """cluster=local in the background: the job script's own output."""
        return self.logs_dir / "dispatch.log"

    @property
    def convert_log(self) -> Path:
        """engine=xtuner: the checkpoint conversion's output."""
        return self.logs_dir / "convert.log"

    def data_ok(self, index: int) -> Path:
        """Node 0's data pre-flight of meta file `index` passed (a prepare step's marker)."""
        return self.logs_dir / f"data-ok-{index}"

    def summary_attempt_json(self, restart: int) -> Path:
        """summary.json of requeued attempt `restart` (0 = the first), set aside for the next."""
        return self.logs_dir / f"summary.attempt-{restart}.json"

    @property
    def mlruns_dir(self) -> Path:
        """tracking=mlflow without a tracking URI: the run's own file store."""
        return self.root / "mlruns"

    @property
    def prepared_marker(self) -> Path:
        return self.logs_dir / "prepared"

    @property
    def control_dir(self) -> Path:
        return self.root / "control"

    @property
    def stop_file(self) -> Path:
        """Its existence asks every rank to save at the next step boundary and exit 75."""
        return self.control_dir / "stop"

    @property
    def requeues_jsonl(self) -> Path:
        """One JSON line per requeue: when, why, the step saved, what the next attempt resumes."""
        return self.logs_dir / "requeues.jsonl"

    def requeues(self) -> list[dict[str, Any]]:
        if not self.requeues_jsonl.exists():
            return []
        lines = self.requeues_jsonl.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def add_requeue(self, event: dict[str, Any]) -> None:
        self.requeues_jsonl.parent.mkdir(parents=True, exist_ok=True)
        with self.requeues_jsonl.open("a") as f:
            f.write(json.dumps(event, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    @property
    def resumes_jsonl(self) -> Path:
        """One JSON line per `launch.py resume`: the attempt it starts, from which step, the
        overrides, and how the attempt before it ended (its files are in attempt_dir)."""
        return self.logs_dir / "resumes.jsonl"

    def resumes(self) -> list[dict[str, Any]]:
        if not self.resumes_jsonl.exists():
            return []
        lines = self.resumes_jsonl.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def add_resume(self, event: dict[str, Any]) -> None:
        self.resumes_jsonl.parent.mkdir(parents=True, exist_ok=True)
        with self.resumes_jsonl.open("a") as f:
            f.write(json.dumps(event, sort_keys=True) + "\n")

    def attempt_dir(self, attempt: int) -> Path:
        """What attempt `attempt` (1 = the first job) left when a resume started the next:
        job.json, summary.json, requeues.jsonl, exit records, plan files the resume changed."""
        return self.logs_dir / f"attempt-{attempt}"

    def attempt(self) -> int:
        """Which attempt the run is on: 1, plus one per resume."""
        return 1 + len(self.resumes())

    def requeues_total(self) -> int:
        """Requeues over every attempt: the earlier ones' (resumes.jsonl) and this one's."""
        return len(self.requeues()) + sum(r.get("requeues", 0) for r in self.resumes())

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def xtuner_last_checkpoint(self) -> Path:
        """engine=xtuner: the file where mmengine names the newest checkpoint."""
        return self.output_dir / "last_checkpoint"

    @property
    def hf_dir(self) -> Path:
        """engine=xtuner: the final checkpoint converted to a loadable folder."""
        return self.output_dir / "hf"

    @property
    def metrics_jsonl(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

    # reading and writing
    def read_json(self, path: Path) -> Any:
        return json.loads(path.read_text())

    def metrics(self) -> list[dict[str, Any]]:
        """The per-step records of metrics.jsonl (none before the first step). Read while the
        run writes it, a last line without its newline yet is not a record yet."""
        if not self.metrics_jsonl.exists():
            return []
        text = self.metrics_jsonl.read_text()
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            lines.pop()
        return [json.loads(line) for line in lines if line.strip()]

    def summary(self) -> dict[str, Any] | None:
        return self.read_json(self.summary_json) if self.summary_json.exists() else None

    def relative(self, path: Path) -> str:
        """A run-dir path as the run-dir-relative name a plan's `files` uses."""
        return path.relative_to(self.root).as_posix()

    # summary.json: written only here. The node writes the outcome (write_summary), report
    # adds figures (update_summary); each merges into what is there, neither removes a key.
    def write_summary(self, outcome: dict[str, Any]) -> None:
        """The job's outcome (status, reason, ...), written atomically, keeping other keys."""
        write_json_atomic(self.summary_json, {**(self.summary() or {}), **outcome})

    def update_summary(self, figures: dict[str, Any]) -> bool:
        """Add figures to an ended run's summary.json; False (nothing written) before it ended."""
        current = self.summary()
        if current is None:
            return False
        write_json_atomic(self.summary_json, {**current, **figures})
        return True

    def materialize(self, files: dict[str, str], code: Mapping[str, bytes] | None = None) -> None:
        """Write `files` (relative name -> text) into a staging folder, then rename it into place.

        Either the whole planned run dir appears, or nothing does. An existing *empty* run dir
        (Hydra creates one per sweep job) is replaced. `code` (launcher.snapshot: relative path
        -> bytes; default a snapshot taken now) goes to code/, what the nodes run.
        """
        from launcher.snapshot import REPO, take

        if code is None:
            code = take(REPO).files
        self.root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.partial-", dir=self.root.parent))
        try:
            for name, text in [*files.items(), *((f"code/{k}", v) for k, v in code.items())]:
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(text) if isinstance(text, bytes) else target.write_text(text)
            (staging / "logs").mkdir(exist_ok=True)
            if self.root.is_dir() and not any(self.root.iterdir()):
                self.root.rmdir()
            os.rename(staging, self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


@dataclass(frozen=True, slots=True)
class SweepDir:
    """A sweep's folder: one run dir per point, and the sweep's own records."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]):
        object.__setattr__(self, "root", Path(root))

    @property
    def sweep_jsonl(self) -> Path:
        """One JSON line per point: its overrides, run dir and how planning it went."""
        return self.root / "sweep.jsonl"

    @property
    def multirun_yaml(self) -> Path:
        """Hydra's record of the sweep: the composed defaults plus the command line."""
        return self.root / "multirun.yaml"

    def point(self, name: str) -> Path:
        """The run dir of the point named `name`."""
        return self.root / name


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _natural(name: str) -> tuple:
    return (0, int(name), "") if name.isdigit() else (1, 0, name)
