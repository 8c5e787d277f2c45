# Shared by up and down. Sourced, not run.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/versions.env"
STATE=${MLFLOW_OPERATOR_CLUSTER_DIR:-/dev/shm/mlflow-operator-cluster}
[ -d /dev/shm ] || STATE=${MLFLOW_OPERATOR_CLUSTER_DIR:-${TMPDIR:-/tmp}/mlflow-operator-cluster}

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# N free loopback TCP ports, space separated (held open together so they differ).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# start NAME BINARY ARGS...: runs detached in its own session, logs to $STATE/logs/NAME.log.
start() {
  local name=$1; shift
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo "$name $! $1" >> "$STATE/pids"
}

pid_of() { awk -v n="$1" '$1==n {print $2}' "$STATE/pids" 2>/dev/null; }

# Is PID still the process we started (same executable), not a reused pid?
ours() { # pid exe
  [ -n "$1" ] && [ -r "/proc/$1/exe" ] && [ "$(readlink "/proc/$1/exe")" = "$2" ]
}

# wait_for NAME SECONDS CMD...: polls CMD until it succeeds; on deadline or if NAME died, prints
# the tail of NAME's log and fails.
wait_for() {
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs)) pid exe
  pid=$(pid_of "$name"); exe=$(awk -v n="$name" '$1==n {print $3}' "$STATE/pids")
  until "$@" >/dev/null 2>&1; do
    if ! ours "$pid" "$exe"; then
      log "$name exited before it became ready; last lines of $STATE/logs/$name.log:"
      tail -n 40 "$STATE/logs/$name.log" >&2; exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "$name not ready within ${secs}s; last lines of $STATE/logs/$name.log:"
      tail -n 40 "$STATE/logs/$name.log" >&2; exit 1
    fi
    sleep 0.2
  done
}

cluster_status() {
  local name pid exe out=()
  while read -r name pid exe; do
    if ours "$pid" "$exe"; then out+=("$name up"); else out+=("$name down"); fi
  done < "$STATE/pids"
  local IFS=,; echo "${out[*]}"
}

cluster_healthy() {
  local name pid exe
  while read -r name pid exe; do ours "$pid" "$exe" || return 1; done < "$STATE/pids"
  [ -f "$STATE/env" ] || return 1
  local server
  server=$(sed -n 's/^export CLUSTER_SERVER=//p' "$STATE/env")
  curl -sf --cacert "$STATE/pki/ca.crt" --cert "$STATE/pki/admin.crt" --key "$STATE/pki/admin.key" \
    "$server/readyz" >/dev/null 2>&1
}
