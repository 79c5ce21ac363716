#!/usr/bin/env bash
# bash official_env/make_env.sh [--gpt-oss] [VENV_DIR] — build the official InternVL trainer's
# environment (idempotent; `bash setup.sh --official` runs it). Default VENV_DIR is
# <repo>/.venv-internvl (internvl_chat/ at both revisions, transformers 4.37); with --gpt-oss
# <repo>/.venv-internvl-gpt-oss, the InternVL3.5 tree internvl_chat_gpt_oss/ (transformers 4.55,
# deepspeed 0.17; `bash setup.sh --official-gpt-oss` runs it).
#
# Order matters: torch first (the CPU build here; on GPU nodes preinstall your site's torch and
# set TORCH_SPEC=""), torchvision and timm --no-deps so neither can swap torch, the pinned
# packages, then deepspeed 0.14.4 from its sdist against that torch (--no-build-isolation),
# then the start-up shim (official_env/sitecustomize.py: torchvision op schemas on a CUDA-less
# torch, DeepSpeed's JIT cache inside the env, no shm-comm JIT build on CPU).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
reqs=$here/requirements-official.txt
name=.venv-internvl
TIMM_SPEC=timm==0.9.12
DEEPSPEED_DEFAULT=deepspeed==0.14.4
if [[ ${1:-} == --gpt-oss ]]; then
  shift
  reqs=$here/requirements-official-gpt-oss.txt
  name=.venv-internvl-gpt-oss
  TIMM_SPEC=timm==1.0.19
  DEEPSPEED_DEFAULT=deepspeed==0.17.4
fi
venv=${1:-$repo/$name}
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC-torch==2.13.0}
TORCHVISION_SPEC=${TORCHVISION_SPEC-torchvision==0.28.0}
DEEPSPEED_SPEC=${DEEPSPEED_SPEC-$DEEPSPEED_DEFAULT}
start=$SECONDS

if [[ ! -x $venv/bin/python ]]; then
  "$PY" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

stamp=$venv/.official-env.sha256
want=$(cat "$reqs" "$here/make_env.sh" | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  "${pip[@]}" install -U "pip<25" "setuptools<70" wheel
  if [[ -n $TORCH_SPEC ]]; then
    "${pip[@]}" install "$TORCH_SPEC"
    echo "make_env: torch installed ($((SECONDS - start)) s)"
  fi
  # torchvision pins torch==X exactly and timm pulls torchvision: --no-deps keeps torch as is.
  [[ -n $TORCHVISION_SPEC ]] && "${pip[@]}" install --no-deps "$TORCHVISION_SPEC"
  "${pip[@]}" install --no-deps "$TIMM_SPEC"
  "${pip[@]}" install -r "$reqs"
  # torch pulls a setuptools too new for deepspeed 0.14.4's setup.py (pkg_resources)
  "${pip[@]}" install "setuptools<70"
  # DS_BUILD_OPS=0: no op is compiled at install; the few a run needs are JIT-built on first
  # use into TORCH_EXTENSIONS_DIR (inside this env, set by the shim).
  DS_BUILD_OPS=0 "${pip[@]}" install --no-build-isolation --no-binary deepspeed "$DEEPSPEED_SPEC"
  echo "make_env: packages installed ($((SECONDS - start)) s)"
  echo "$want" > "$stamp"
fi

# The shim is always refreshed: it is tiny and must match this checkout.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
install -m 0644 "$here/sitecustomize.py" "$site/sitecustomize.py"

"$venv/bin/python" - <<'PY'
import importlib.metadata as md
import deepspeed, torch, torchvision.transforms, transformers  # noqa: F401  (import check)
pkgs = ("torch", "torchvision", "transformers", "tokenizers", "deepspeed", "timm", "numpy")
print("make_env: " + " ".join(f"{p}={md.version(p)}" for p in pkgs))
PY
echo "make_env: ready $venv in $((SECONDS - start)) s"
