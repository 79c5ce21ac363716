"""Failure classes from logs (launcher.report.collect.failure): one fixture per class, real line formats."""

from pathlib import Path

import pytest

from launcher.report.collect.failure import CLASSES, classify, classify_submit_error

FIX = Path(__file__).parent / "fixtures" / "logs" / "failures"

EXPECTED = {
    "oom_cuda.log": ("oom_cuda", "CUDA out of memory. Tried to allocate 1.53 GiB"),
    "oom_npu.log": ("oom_npu", "NPU out of memory"),
    "oom_host.log": ("oom_host", "oom_kill event in StepId=41.0"),
    "collective_timeout.log": ("collective_timeout", "Watchdog caught collective operation"),
    "collective_timeout_gloo.log": ("collective_timeout", "Timed out waiting 30000ms"),
    "node_failure.log": ("node_failure", "DUE TO NODE FAILURE"),
    "node_failure_srun.log": ("node_failure", "Connection closed by peer"),
    "hardware_xid.log": ("hardware_error", "NVRM: Xid (PCI:0000:b3:00): 79"),
    "hardware_ecc.log": ("hardware_error", "uncorrectable ECC error"),
    "submit_partition.log": ("submit_error", "Invalid partition name specified"),
    "submit_gres.log": ("submit_error", "Invalid generic resource (gres)"),
    "submit_account.log": ("submit_error", "Invalid account"),
    "data_error.log": ("data_error", "cannot build the training data"),
    "xtuner_exit0.log": ("xtuner_exit0", "JSONDecodeError"),
    "time_limit.log": ("time_limit", "DUE TO TIME LIMIT"),
    "preempted.log": ("preempted", "DUE TO PREEMPTION"),
    "user_cancel.log": ("user_cancel", "CANCELLED AT 2026-12-03T08:05:40 ***"),
    "disk_full.log": ("disk_full", "No space left on device"),
    "output_unwritable.log": ("output_unwritable", "Permission denied"),
    "training_error.log": ("training_error", "ZeroDivisionError: division by zero"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_gets_its_class_and_quotes_the_line(name):
    cls, quote = EXPECTED[name]
    found = classify({f"logs/{name}": (FIX / name).read_text()})
    assert found is not None, name
    assert found.failure_class == cls, found
    assert quote in found.reason and "\n" not in found.reason
    assert found.reason.startswith(cls.replace("_", " "))


def test_every_class_has_a_fixture():
    assert {c for c, _ in EXPECTED.values()} == set(CLASSES)


def test_a_finished_log_is_no_failure():
    assert classify({"node0.log": (FIX / "completed.log").read_text()}) is None


def test_root_cause_outranks_its_consequence():
    # the OOM'd rank makes rank 0's all-reduce time out: the OOM is the reason
    found = classify({"node0.log": (FIX / "oom_cuda.log").read_text()})
    assert found.failure_class == "oom_cuda" and found.infeasible
    # across sources too: node 1's OOM explains node 0's closed connection
    found = classify(
        {
            "logs/node0.log": (FIX / "node_failure_srun.log").read_text(),
            "logs/node1.log": (FIX / "oom_host.log").read_text(),
        }
    )
    assert found.failure_class == "oom_host" and found.source == "logs/node1.log"


def test_a_peers_traceback_outranks_the_closed_connection_it_causes():
    found = classify(
        {
            "logs/node0.log": (FIX / "node_failure_srun.log").read_text(),
            "logs/node1.log": (FIX / "training_error.log").read_text(),
        }
    )
    assert found.failure_class == "training_error" and "ZeroDivisionError" in found.reason


def test_slurms_node_failure_outranks_the_collective_timeout_it_causes():
    """node2 frozen (its slurmd and processes stopped): rank 0's gloo collective times out,
    then Slurm declares node2 down. The lost node is the cause, and it is named."""
    found = classify({"submitit/83_0_log.out": (FIX / "node_stop.log").read_text()})
    assert found.failure_class == "node_failure" and found.node == "node2", found
    assert "Node failure on node2" in found.reason


def test_node_is_named():
    found = classify({"submitit/41_0_log.out": (FIX / "node_failure_srun.log").read_text()})
    assert found.failure_class == "node_failure"
    found = classify({"submitit/41_0_log.out": "srun: error: node2: task 1: Killed\n"})
    assert found.node == "node2" and "node2" in found.reason
    found = classify({"logs/node1.log": "[default1]:RuntimeError: Connection reset by peer\n"})
    assert found.node == "node rank 1"


def test_exit_status_is_the_last_resort():
    found = classify({"node0.log": "nothing useful\n"}, returncodes={"node 1": -9})
    assert found.failure_class == "training_error" and "killed by signal 9" in found.reason
    assert classify({"node0.log": "fine\n"}, returncodes={"node 0": 0}) is None


def test_submit_error_from_sbatch_stderr():
    err = (FIX / "submit_gres.log").read_text().splitlines()[-1]
    assert classify_submit_error(err).failure_class == "submit_error"
    odd = classify_submit_error("sbatch: something new went wrong\n")
    assert odd.failure_class == "submit_error" and "something new" in odd.reason


def test_a_checkpoint_write_refused_by_a_read_only_mount_is_output_unwritable(
    tmp_path, monkeypatch
):
    """torch.save's zip writer says only "PytorchStreamWriter failed writing file": the
    trainer reads the mount flags, and the line it logs classifies as output_unwritable."""
    import os

    from internvl_chat.train.checkpointing import _write_failure

    class RO:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda _: RO)
    err = RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed "
                       "writing file data/0: file write failed")  # fmt: skip
    why = _write_failure(err, tmp_path)
    assert why == "Read-only file system"
    line = f"[default0]:[train] error: cannot write checkpoint {tmp_path}/checkpoint-6: {why}\n"
    found = classify({"logs/node0.log": line})
    assert found.failure_class == "output_unwritable" and "checkpoint-6" in found.reason
