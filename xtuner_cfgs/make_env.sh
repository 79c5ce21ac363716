#!/usr/bin/env bash
# bash xtuner_cfgs/make_env.sh [VENV_DIR]  — build the XTuner 0.2.0 environment (idempotent).
#
# Default VENV_DIR is <repo>/.venv-xtuner. Order matters: torch first (here the CPU build from
# the local wheel directory; on GPU nodes preinstall your site's torch and set TORCH_SPEC=""),
# then torchvision and xtuner without dependencies so neither can swap torch for a CUDA build,
# then the pinned packages xtuner really imports, then our sitecustomize shim.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
venv=${1:-$repo/.venv-xtuner}
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC-torch==2.13.0}
TORCHVISION_SPEC=${TORCHVISION_SPEC-torchvision==0.28.0}
start=$SECONDS

if [[ ! -x $venv/bin/python ]]; then
  "$PY" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

stamp=$venv/.xtuner-env.sha256
want=$(cat "$here/requirements-xtuner.txt" "$here/make_env.sh" | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  if [[ -n $TORCH_SPEC ]]; then
    "${pip[@]}" install "$TORCH_SPEC"
    echo "make_env: torch installed ($((SECONDS - start)) s)"
  fi
  # torchvision pins torch==X exactly; --no-deps keeps the torch installed above.
  [[ -n $TORCHVISION_SPEC ]] && "${pip[@]}" install --no-deps "$TORCHVISION_SPEC"
  "${pip[@]}" install --no-deps xtuner==0.2.0
  # xtuner came --no-deps (its pins fight ours), so pip's resolver prints an "ERROR: ... dependency
  # resolver" note here although the install succeeds: keep it in a log, show it only on failure.
  log=$venv/pip-install.log
  if ! "${pip[@]}" install -r "$here/requirements-xtuner.txt" 2>"$log"; then
    cat "$log" >&2
    exit 1
  fi
  grep -q "dependency resolver" "$log" &&
    echo "make_env: pip's resolver notes on the --no-deps xtuner (expected) are in $log"
  echo "make_env: packages installed ($((SECONDS - start)) s)"
  echo "$want" > "$stamp"
fi

# The shim is always refreshed: it is tiny and must match this checkout.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
install -m 0644 "$here/sitecustomize.py" "$site/sitecustomize.py"

"$venv/bin/python" - <<'PY'
import importlib.metadata as md
import torch, transformers, mmengine, deepspeed, xtuner  # noqa: F401  (import check)
vers = {p: md.version(p) for p in ("xtuner", "torch", "transformers", "mmengine", "deepspeed")}
print("make_env: " + " ".join(f"{k}={v}" for k, v in vers.items()))
PY
echo "make_env: ready $venv in $((SECONDS - start)) s"
