#!/bin/bash
# wrapper dispatch of <TMP>/run
set -uo pipefail
cd <TMP>/run/code
export PYTHONPATH=<TMP>/run/code${PYTHONPATH:+:$PYTHONPATH}
exec srun --nodes=4 --ntasks-per-node=1 --kill-on-bad-exit=1 --partition=yjpc_a800 --gres=gpu:8 --cpus-per-task=80 '/opt/vlm env/bin/python' -u -m launcher.node <TMP>/run --slurm
