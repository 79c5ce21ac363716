#!/usr/bin/env bash
# bash setup.sh — create .venv with everything the launcher and internvl_chat need (idempotent).
# On a CPU-only machine torch==2.13.0 is the CPU build; on GPU nodes install your site's
# torch first. XTuner lives in its own environment: bash xtuner_cfgs/make_env.sh
# bash setup.sh --launcher — create .venv-launcher from requirements-launcher.txt alone (plus
# pytest): what a login node needs to compose, check, plan, submit and report; no torch.
# bash setup.sh --official — create .venv-internvl, the official InternVL trainer's environment
# (model.engine=internvl_official; pinned versions, see official_env/make_env.sh).
# bash setup.sh --official-gpt-oss — create .venv-internvl-gpt-oss, the env of the InternVL3.5
# tree internvl_chat_gpt_oss/ (transformers 4.55, deepspeed 0.17).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
venv=.venv
reqs=(requirements.txt requirements-launcher.txt)
install=(-r requirements.txt)
if [[ ${1:-} == --official ]]; then
  exec bash official_env/make_env.sh
fi
if [[ ${1:-} == --official-gpt-oss ]]; then
  exec bash official_env/make_env.sh --gpt-oss
fi
if [[ ${1:-} == --launcher ]]; then
  venv=.venv-launcher
  reqs=(requirements-launcher.txt)
  install=(-r requirements-launcher.txt pytest)
fi
if [[ ! -x $venv/bin/python ]]; then
  "$PY" -m venv "$venv"
fi
stamp=$venv/.requirements.sha256
want=$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  "$venv/bin/pip" install -q "${install[@]}"
  echo "$want" > "$stamp"
fi
echo "environment ready: $(pwd)/$venv"
