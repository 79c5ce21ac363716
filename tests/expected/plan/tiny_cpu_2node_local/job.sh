#!/bin/bash
# local dispatch of <TMP>/run
set -uo pipefail
cd <TMP>/run/code
export PYTHONPATH=<TMP>/run/code${PYTHONPATH:+:$PYTHONPATH}
port=$('/opt/vlm env/bin/python' -m launcher.node --free-port)
pids=()
'/opt/vlm env/bin/python' -u -m launcher.node <TMP>/run --node-rank=0 --nnodes=2 --master-addr=127.0.0.1 --master-port="$port" & pids+=($!)
'/opt/vlm env/bin/python' -u -m launcher.node <TMP>/run --node-rank=1 --nnodes=2 --master-addr=127.0.0.1 --master-port="$port" & pids+=($!)
status=0; for p in "${pids[@]}"; do wait "$p" || status=$?; done; exit $status
