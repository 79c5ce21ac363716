"""Every `python launch.py ...` command in README.md runs as written (dry runs where it would
submit), the site overrides it shows are accepted verbatim, and the verbs never stay silent."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from internvl_chat.data.templates import SampleError, get_template, normalize_conversation

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def launch(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args], cwd=cwd, capture_output=True, text=True
    )


def readme_commands() -> list[str]:
    """`python launch.py ...` from code blocks and inline code, as the shell would split them."""
    spans = re.findall(r"`([^`\n]+)`", README) + re.findall(r"```bash\n(.*?)```", README, re.S)
    out = []
    for span in spans:
        for line in span.splitlines():
            line = line.split("  #")[0].strip()
            if "launch.py" in line and "python" in line:
                out.append(line[line.index("launch.py") + len("launch.py") :].strip())
    return out


def site_overrides() -> list[str]:
    """The inline `key=value` examples of the paragraphs on site specifics and node requests."""
    start = README.index("Site specifics:")
    text = README[start : README.index("### Run directory")]
    spans = re.findall(r"`([^`\n]+=[^`\n]*)`", text)
    return [s for s in spans if "..." not in s and not s.startswith("python")]


def expand(command: str, run_dir: Path) -> list[list[str]]:
    """One argv per alternative (status|logs|cancel), placeholders filled, `...` dropped."""
    argvs = [[]]
    for word in shlex.split(command):
        if word in ("...", "PATH...") or word.endswith("..."):
            word = word[:-3]
            if not word:
                continue
        word = word.replace("DIR", str(run_dir)).replace("PATH", str(run_dir))
        alts = word.split("|") if "|" in word and "=" not in word else [word]
        argvs = [a + [alt] for a in argvs for alt in alts]
    return argvs


def test_the_readme_has_commands_to_run():
    commands = readme_commands()
    assert len(commands) >= 5, commands
    assert {"cluster.setup='[module load cuda, source /env/bin/activate]'",
            "cluster.sbatch_extra='{quotatype: reserved}'"} <= set(site_overrides())  # fmt: skip


def test_every_readme_command_runs_as_written(tmp_path: Path):
    seed_dir = tmp_path / "seed"
    r = launch("model=internvl_20b", "hw=a800", "nodes=4", "dry_run=true", f"run_dir={seed_dir}")
    assert r.returncode == 0, r.stderr
    n = 0
    for command in readme_commands():
        for argv in expand(command, seed_dir):
            n += 1
            if argv and argv[0] in ("status", "logs", "cancel", "report", "resume"):
                r = launch(*argv)
                # on a dry-run dir: status says PLANNED; the others say why there is nothing to do
                want = 0 if argv[0] == "status" else {"report": 2, "resume": 2}.get(argv[0], 1)
                assert r.returncode == want, f"{argv}: {r.stdout}{r.stderr}"
                assert (r.stdout + r.stderr).strip(), f"{argv} printed nothing"
                continue
            if any(a in ("--help", "--cfg", "-c") for a in argv):
                r = launch(*argv)
                assert r.returncode == 0 and r.stdout.strip(), f"{argv}: {r.stderr}"
                continue
            extra = [f"run_dir={tmp_path}/run{n}", "dry_run=true"]
            if "-m" in argv:
                extra = ["dry_run=true", f"hydra.sweep.dir={tmp_path}/sweep{n}"]
            r = launch(*[a for a in argv if not a.startswith(("run_dir=", "dry_run="))], *extra)
            assert r.returncode == 0, f"python launch.py {command}\n{r.stdout}\n{r.stderr}"
            assert "dry run" in r.stdout or "[sweep]" in r.stdout or "planned" in r.stdout, r.stdout
    assert n >= 8


def test_site_overrides_in_the_readme_work_verbatim(tmp_path: Path):
    overrides = [w for s in site_overrides() for w in shlex.split(s)]
    r = launch("model=internvl_20b", "hw=a800", "nodes=4", "dry_run=true",
               f"run_dir={tmp_path}/run", *overrides)  # fmt: skip
    assert r.returncode == 0, r.stderr
    sbatch = (tmp_path / "run" / "sbatch.sh").read_text()
    assert "#SBATCH --quotatype=reserved\n" in sbatch
    assert "\nmodule load cuda\nsource /env/bin/activate\n" in sbatch
    assert " /env/bin/python -u -m submitit" in sbatch  # the env setup activates runs the job
    assert "[launch] network: NCCL_SOCKET_IFNAME=ib0 NCCL_IB_HCA=mlx5_0" in r.stdout


def test_help_and_cfg_behave_as_in_any_hydra_app():
    h = launch("--help")
    assert h.returncode == 0 and "powered by Hydra" not in h.stdout
    for word in ("status|logs|cancel|report", "dry_run=true", "--cfg job"):
        assert word in h.stdout
    for group in ("model", "data", "parallelism", "hw", "cluster", "benchmark"):
        assert re.search(rf"^  {group} +\w", h.stdout, re.M), group
    assert "base" not in h.stdout.split("Config groups")[1].split("Top-level")[0]
    for flags in (["--cfg", "job"], ["-c", "job"], ["--cfg=job"]):
        r = launch(*flags, "hw=a800")
        assert r.returncode == 0, r.stderr
        assert "name: a800" in r.stdout and "devices_per_node: 8" in r.stdout


@pytest.mark.parametrize(
    "arg,hint",
    [("run_dir=/tmp/a(1)", "run_dir=\"'/tmp/a(1)'\""), ("run_dir=/tmp/a,b", "add -m"),
     ("run_dir=/tmp/it's", 'run_dir="\\"/tmp/it\'s\\""')],
)  # fmt: skip
def test_unquoted_special_characters_say_how_to_quote(arg: str, hint: str):
    r = launch("dry_run=true", arg)
    assert r.returncode == 2 and "quote it as one value" in r.stderr and hint in r.stderr, r.stderr


def test_verbs_say_why_they_did_nothing(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = launch("report", str(empty))
    assert r.returncode == 2 and "nothing to report" in r.stderr
    assert list(empty.iterdir()) == []  # nothing written
    for verb in ("logs", "cancel", "status"):
        r = launch(verb, str(tmp_path / "nope"))
        assert r.returncode == 1 and "no such file or folder" in r.stderr, (verb, r.stderr)
    file = tmp_path / "file"
    file.touch()
    r = launch("dry_run=true", f"run_dir={file}")
    assert r.returncode == 2 and "is a file, not a folder" in r.stderr
    assert "not empty" not in r.stderr


def test_a_leading_only_gpt_turn_is_named_as_such():
    convo = [{"from": "gpt", "value": "hello"}, {"from": "human", "value": "hi"}]
    with pytest.raises(
        SampleError, match="starts with its only gpt turn, which the internlm2-chat"
    ):
        normalize_conversation(convo, get_template("internlm2-chat"), 0, False)
