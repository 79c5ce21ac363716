#!/usr/bin/env bash
# bash slurm/local_cluster.sh start|stop|status|env [--dir DIR] [--nodes N] [--cpus C]
#
# A real Slurm cluster on this machine for tests and demos: one slurmctld and N slurmd
# ("node1".."nodeN", all at 127.0.0.1 on their own ports), munge auth, partition "debug".
#   start   bring it up (idempotent; replaces stale daemons/state), wait until every node is
#           idle, then print `export SLURM_CONF=...` on stdout:  eval "$(bash slurm/local_cluster.sh start)"
#   env     print the export lines for a running cluster
#   status  show daemons and sinfo; exit 1 if the cluster is not up
#   stop    kill this cluster's daemons (those started with DIR/slurm.conf) and nothing else
# DIR defaults to $VLM_SLURM_DIR or /tmp/vlm-slurm. Ports: slurmctld $VLM_SLURM_PORT (16817),
# slurmd node i on $VLM_SLURMD_PORT+i-1 (17001...). Needs root (slurmd) and the Debian
# packages slurm-wlm and munge. Progress goes to stderr; stdout carries only the export lines.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${VLM_SLURM_DIR:-/tmp/vlm-slurm}
NODES=
CPUS=4
CTLD_PORT=${VLM_SLURM_PORT:-16817}
SLURMD_PORT=${VLM_SLURMD_PORT:-17001}
START_TIMEOUT_S=${VLM_SLURM_TIMEOUT_S:-60}

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
log() { echo "[local_cluster] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $# -ge 1 ]] || usage
CMD=$1
shift
while [[ $# -gt 0 ]]; do
  case $1 in
    --dir) DIR=$2; shift 2 ;;
    --dir=*) DIR=${1#*=}; shift ;;
    --nodes) NODES=$2; shift 2 ;;
    --nodes=*) NODES=${1#*=}; shift ;;
    --cpus) CPUS=$2; shift 2 ;;
    --cpus=*) CPUS=${1#*=}; shift ;;
    -h|--help) usage ;;
    *) log "unknown argument: $1"; usage ;;
  esac
done
CONF=$DIR/slurm.conf
# Without --nodes, a running cluster keeps its size (env/status/stop see what start made).
if [[ -z $NODES ]]; then
  NODES=$(grep -c '^NodeName=' "$CONF" 2>/dev/null || true)
  [[ $CMD != start && $NODES -gt 0 ]] || NODES=2
fi
problems=()
[[ $NODES =~ ^[1-9][0-9]*$ ]] || problems+=("--nodes must be a positive integer, got '$NODES'")
[[ $CPUS =~ ^[1-9][0-9]*$ ]] || problems+=("--cpus must be a positive integer, got '$CPUS'")
[[ $CTLD_PORT =~ ^[0-9]+$ ]] || problems+=("VLM_SLURM_PORT must be a port number, got '$CTLD_PORT'")
[[ $SLURMD_PORT =~ ^[0-9]+$ ]] || problems+=("VLM_SLURMD_PORT must be a port number, got '$SLURMD_PORT'")
[[ $DIR == /* ]] || problems+=("--dir must be an absolute path, got '$DIR'")
[[ $DIR != *[[:space:]]* ]] || problems+=("--dir must not contain spaces (slurm.conf cannot quote them): '$DIR'")
if [[ ${#problems[@]} -gt 0 ]]; then
  printf '[local_cluster] ERROR: %s\n' "${problems[@]}" >&2
  exit 2
fi

# --- processes ---------------------------------------------------------------------------

# Pids of slurmctld/slurmd processes started with our slurm.conf (read from /proc, so this
# works without pid files and finds daemons a previous session left behind).
our_daemons() {  # [slurmctld|slurmd]
  local want=${1:-}
  local p comm args
  for p in /proc/[0-9]*; do
    comm=$(cat "$p/comm" 2>/dev/null) || continue
    [[ $comm == slurmctld || $comm == slurmd ]] || continue
    [[ -z $want || $comm == "$want" ]] || continue
    args=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
    [[ " $args " == *" -f $CONF "* ]] && echo "${p#/proc/}"
  done
  return 0
}

# Pids listening on TCP port $1 (from /proc/net/tcp*, so no iproute2/lsof needed).
port_owners() {
  local hex inodes p fd
  hex=$(printf '%04X' "$1")
  inodes=$(awk -v h=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == h { print $10 }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u)
  [[ -n $inodes ]] || return 0
  for p in /proc/[0-9]*; do
    for fd in "$p"/fd/*; do
      local target
      target=$(readlink "$fd" 2>/dev/null) || continue
      [[ $target == socket:* ]] || continue
      grep -qx "${target:8:-1}" <<<"$inodes" && { echo "${p#/proc/}"; break; }
    done
  done
  return 0
}

kill_pids() {  # PID... : TERM, wait up to 10 s, then KILL
  [[ $# -gt 0 ]] || return 0
  kill -TERM "$@" 2>/dev/null || true
  local i p alive
  for i in $(seq 1 50); do
    alive=()
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    [[ ${#alive[@]} -eq 0 ]] && return 0
    sleep 0.2
  done
  log "daemons ${alive[*]} ignored SIGTERM; sending SIGKILL"
  kill -KILL "${alive[@]}" 2>/dev/null || true
}

# Free our ports: stale Slurm daemons (e.g. of another DIR) are killed, anything else is an error.
free_ports() {
  local port pid comm
  local ports=("$CTLD_PORT")
  for i in $(seq 1 "$NODES"); do ports+=($((SLURMD_PORT + i - 1))); done
  local busy=()
  for port in "${ports[@]}"; do
    for pid in $(port_owners "$port"); do
      comm=$(cat "/proc/$pid/comm" 2>/dev/null || echo '?')
      if [[ $comm == slurmctld || $comm == slurmd ]]; then
        log "port $port: stale $comm (pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline")); stopping it"
        kill_pids "$pid"
      else
        busy+=("port $port is held by pid $pid ($comm)")
      fi
    done
  done
  if [[ ${#busy[@]} -gt 0 ]]; then
    printf '[local_cluster] ERROR: %s\n' "${busy[@]}" >&2
    die "set VLM_SLURM_PORT / VLM_SLURMD_PORT to free ports"
  fi
}

# --- munge ------------------------------------------------------------------------------

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ensure_munge() {
  munge_ok && return 0
  command -v munged >/dev/null || die "munged not found: apt-get install -y munge"
  [[ $(id -u) == 0 ]] || die "munge is not running and only root can start it"
  log "starting munged"
  mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile=/etc/munge/munge.key --force
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
  fi
  chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
  chmod 0700 /etc/munge /var/lib/munge /var/log/munge
  chmod 0755 /run/munge
  chmod 0400 /etc/munge/munge.key
  # --force: a munged that died left its socket and pid file behind.
  # 9>&-: daemons must not inherit the start/stop lock (below), or they would hold it forever.
  runuser -u munge -- munged --force 9>&- || die "munged failed to start: $(tail -5 /var/log/munge/munged.log 2>/dev/null)"
  for _ in $(seq 1 25); do munge_ok && return 0; sleep 0.2; done
  die "munged started but munge -n | unmunge fails: $(tail -5 /var/log/munge/munged.log 2>/dev/null)"
}

# --- config -----------------------------------------------------------------------------

render_conf() {
  local mem_mb node_lines="" i
  # Every slurmd sees the whole machine's memory; leave some for the rest of it.
  mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
  # All nodes share this machine's CPUs, and TaskPlugin=task/affinity binds a job's tasks to
  # the CPUs it was given, lowest first: reserve CPU 0 on every other node (CpuSpecList) so a
  # two-node job binds its nodes to different CPUs instead of both to CPU 0.
  local spec
  for i in $(seq 1 "$NODES"); do
    spec=""
    (( i % 2 == 0 && CPUS > 1 )) && spec=" CpuSpecList=0"
    node_lines+="NodeName=node$i NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((SLURMD_PORT + i - 1)) CPUs=$CPUS$spec RealMemory=$mem_mb State=UNKNOWN"$'\n'
  done
  local ctld_host
  ctld_host=$(hostname -s)
  awk -v dir="$DIR" -v host="$ctld_host" -v port="$CTLD_PORT" -v nodes="${node_lines%$'\n'}" '
    { gsub(/@DIR@/, dir); gsub(/@CTLD_HOST@/, host); gsub(/@CTLD_PORT@/, port) }
    /^@NODE_LINES@$/ { print nodes; next }
    { print }' "$HERE/slurm.conf.in"
}

# --- state ------------------------------------------------------------------------------

node_names() { local i; for i in $(seq 1 "$NODES"); do echo "node$i"; done; }

# All nodes answer and are usable (idle, or busy with jobs).
nodes_up() {
  local states
  states=$(SLURM_CONF=$CONF timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null) || return 1
  local n up=0
  for n in $(node_names); do
    grep -Eq "^$n (idle|mix|alloc|comp)$" <<<"$states" && up=$((up + 1))
  done
  [[ $up -eq $NODES ]]
}

running() {
  [[ -f $CONF ]] || return 1
  [[ -n $(our_daemons slurmctld) ]] || return 1
  [[ $(our_daemons slurmd | wc -l) -eq $NODES ]] || return 1
  nodes_up
}

print_env() { echo "export SLURM_CONF=$CONF"; }

log_tails() {
  local f
  for f in "$DIR"/log/*.log; do
    [[ -f $f ]] || continue
    echo "----- tail -n 20 $f" >&2
    tail -n 20 "$f" >&2
  done
  echo "----- sinfo" >&2
  SLURM_CONF=$CONF timeout 10 sinfo -N -o '%N %t %E' >&2 2>&1 || true
}

# Half-started daemons are stopped so the next start begins clean; their logs stay in DIR/log.
start_failed() {
  log_tails
  stop
  die "$1; daemon logs above (kept in $DIR/log)"
}

stop() {
  local pids
  pids=$(our_daemons)
  if [[ -n $pids ]]; then
    log "stopping $(echo "$pids" | wc -l) daemon(s) of $CONF"
    # shellcheck disable=SC2086
    kill_pids $pids
  fi
  rm -f "$DIR"/run/*.pid
}

start() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null ||
    die "slurmctld/slurmd not found: apt-get install -y slurm-wlm munge"
  [[ $(id -u) == 0 ]] || die "slurmd must run as root (we are $(id -un))"
  local want
  want=$(render_conf)
  if [[ -f $CONF && $(cat "$CONF") == "$want" ]] && running; then
    log "already running ($CONF)"
    print_env
    return 0
  fi
  ensure_munge
  stop
  free_ports
  # A cold start forgets old jobs and node states: tests want a clean cluster.
  rm -rf "$DIR/state" "$DIR/spool" "$DIR/run"
  mkdir -p "$DIR/state" "$DIR/run" "$DIR/log"
  local n
  for n in $(node_names); do mkdir -p "$DIR/spool/$n"; done
  printf '%s\n' "$want" >"$CONF.tmp" && mv "$CONF.tmp" "$CONF"
  : >"$DIR/log/slurmctld.log"
  log "starting slurmctld (port $CTLD_PORT) and $NODES slurmd in $DIR"
  slurmctld -f "$CONF" -c 9>&- || start_failed "slurmctld failed to start"
  for n in $(node_names); do
    slurmd -f "$CONF" -N "$n" 9>&- || start_failed "slurmd -N $n failed to start"
  done
  local deadline=$((SECONDS + START_TIMEOUT_S))
  until nodes_up; do
    ((SECONDS < deadline)) ||
      start_failed "nodes not idle after ${START_TIMEOUT_S}s (VLM_SLURM_TIMEOUT_S)"
    sleep 0.5
  done
  log "up: $(SLURM_CONF=$CONF sinfo -h -o '%P %D nodes %t' | tr '\n' ' ')"
  print_env
}

status() {
  local pids
  pids=$(our_daemons)
  if [[ -n $pids ]]; then
    # shellcheck disable=SC2086
    ps -o pid=,comm=,args= -p $(echo $pids | tr ' ' ',') >&2
  fi
  if running; then
    SLURM_CONF=$CONF sinfo -N -o '%N %P %t %c %m' >&2
    log "up: $CONF"
    return 0
  fi
  log "not running ($CONF)"
  return 1
}

# One start/stop at a time: several test sessions may share the cluster.
if [[ $CMD == start || $CMD == stop ]]; then
  mkdir -p "$DIR"
  exec 9>"$DIR/.lock"
  flock -w 120 9 || die "another local_cluster.sh start/stop has held $DIR/.lock for 120 s"
fi

case $CMD in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env)
    running || die "no running cluster with $CONF; run: bash slurm/local_cluster.sh start"
    print_env
    ;;
  *) usage ;;
esac
