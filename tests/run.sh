#!/usr/bin/env bash
# bash tests/run.sh [pytest args] — the whole test suite: builds .venv if needed, starts the
# local 2-node Slurm cluster (slurm/local_cluster.sh) where Slurm is installed, runs pytest.
# Examples: bash tests/run.sh;  bash tests/run.sh tests/test_slurm_cluster.py;  bash tests/run.sh -m "not slow"
# Exit status is pytest's, except that "no tests collected" (5) is reported as a failure too.
# Under CI=true a Slurm that cannot start fails the run (and the slurm tests) instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s.%N)
phase_start=$t0
phase() {  # NAME: report the time since the previous phase ended
  local now
  now=$(date +%s.%N)
  awk -v name="$1" -v a="$phase_start" -v b="$now" 'BEGIN { printf "[tests/run.sh] %-7s %7.1f s\n", name, b - a }'
  phase_start=$now
}

# Slurm (slurm-wlm, munge) and python3-venv come from Debian when missing and we may install.
packages=()
command -v slurmctld >/dev/null || packages+=(slurm-wlm munge)
python3 -c 'import ensurepip' 2>/dev/null || packages+=(python3-venv)
if [[ ${#packages[@]} -gt 0 ]]; then
  sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo -n)
  if [[ $(id -u) == 0 ]] || sudo -n true 2>/dev/null; then
    echo "[tests/run.sh] installing ${packages[*]} (apt-get)"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq </dev/null
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${packages[@]}" </dev/null >/dev/null
  fi
fi
phase apt

bash setup.sh
# The login-node env (requirements-launcher.txt alone, no torch): test_launcher_env.py launches
# from it, and a full run below repeats the `launcher` tests inside it.
bash setup.sh --launcher
phase venv

# XTuner's own environment (.venv-xtuner: xtuner 0.2.0, transformers 4.48.0, mmengine 0.10.6)
# for the tests marked `xtuner`. VLM_SKIP_XTUNER_ENV=1 skips building it (those tests then skip,
# or fail under CI=true).
if [[ ${VLM_SKIP_XTUNER_ENV:-} != 1 ]]; then
  bash xtuner_cfgs/make_env.sh
fi
phase xtuner

# The official InternVL trainer's environment (.venv-internvl: transformers 4.37.2, deepspeed
# 0.14.4) for the tests marked `official`. VLM_SKIP_OFFICIAL_ENV=1 skips building it (those tests
# then skip, or fail under CI=true).
if [[ ${VLM_SKIP_OFFICIAL_ENV:-} != 1 ]]; then
  bash setup.sh --official
fi
phase official

if command -v slurmctld >/dev/null && command -v slurmd >/dev/null; then
  # A cluster that was already up (another session's) is left running; one we start, we stop.
  if ! bash slurm/local_cluster.sh status >/dev/null 2>&1 && [[ ${VLM_KEEP_SLURM:-} != 1 ]]; then
    trap 'bash slurm/local_cluster.sh stop >/dev/null 2>&1 && echo "[tests/run.sh] stopped the local Slurm cluster it started (VLM_KEEP_SLURM=1 keeps it)"' EXIT
  fi
  if ! exports=$(bash slurm/local_cluster.sh start); then
    if [[ ${CI:-} == true ]]; then
      echo "[tests/run.sh] the local Slurm cluster did not start (logs above); CI=true needs it" >&2
      exit 1
    fi
    echo "[tests/run.sh] WARNING: no local Slurm cluster; the slurm tests will skip or fail" >&2
  else
    eval "$exports"
    echo "[tests/run.sh] SLURM_CONF=$SLURM_CONF"
  fi
else
  echo "[tests/run.sh] slurm-wlm not installed: the slurm tests will be skipped (apt-get install -y slurm-wlm munge)" >&2
fi
phase slurm

status=0
if [[ $# -gt 0 ]]; then
  # With only options (-k, -m, ...) pytest falls back to testpaths = ["tests"] (pyproject.toml).
  .venv/bin/python -m pytest -q "$@" || status=$?
else
  .venv/bin/python -m pytest -q tests || status=$?
  phase pytest
  echo "[tests/run.sh] the launcher tests again, inside the torch-free .venv-launcher"
  .venv-launcher/bin/python -m pytest -q -p no:cacheprovider -m "launcher and not slow and not xtuner" tests || status=$?
  phase_name=launcher
fi
phase "${phase_name:-pytest}"
if [[ $status -eq 5 ]]; then
  echo "[tests/run.sh] FAILED: pytest collected no tests (exit 5)" >&2
elif [[ $status -ne 0 ]]; then
  echo "[tests/run.sh] FAILED: pytest exited $status" >&2
fi
phase_start=$t0
phase total
exit "$status"
