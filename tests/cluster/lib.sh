# Shared by the scripts of tests/cluster (and hack/, .ci/run). Sourced, not run.
# shellcheck shell=bash
# A Kubernetes version asked for in the environment (`K8S_VERSION=v1.34.4 tests/cluster/up`) wins
# over the pin; everything else stays pinned.
asked_k8s_version=${K8S_VERSION:-}
source "$(dirname "${BASH_SOURCE[0]}")/versions.env"
K8S_VERSION=${asked_k8s_version:-$K8S_VERSION}
unset asked_k8s_version

# The Go wrapper module that builds $K8S_VERSION: k8s/ for the pinned version, k8s-v<major.minor>/
# for another one (its go.mod names the exact version).
k8s_module() {
  local dir minor=${K8S_VERSION%.*}
  dir=$(dirname "${BASH_SOURCE[0]}")
  for m in k8s "k8s-$minor"; do
    if grep -q "k8s.io/kubernetes $K8S_VERSION\b" "$dir/$m/go.mod" 2>/dev/null; then
      echo "$m"; return
    fi
  done
  echo "no Go module builds Kubernetes $K8S_VERSION: tests/cluster/k8s-$minor/go.mod must require k8s.io/kubernetes $K8S_VERSION (see tests/cluster/README.md)" >&2
  return 1
}
STATE=${MLFLOW_OPERATOR_CLUSTER_DIR:-/dev/shm/mlflow-operator-cluster}
[ -d /dev/shm ] || STATE=${MLFLOW_OPERATOR_CLUSTER_DIR:-${TMPDIR:-/tmp}/mlflow-operator-cluster}

# Everything of the cluster (plane, node, kube-proxy, pods' bridge) lives in one network namespace
# of its own, so the host's interfaces, routes, sysctls and iptables are never touched. Its name
# and the node's cgroup root are derived from the state directory: two clusters never collide.
CLUSTER_ID=$(printf '%s' "$STATE" | sha256sum | cut -c1-8)
NETNS=mlflow-operator-$CLUSTER_ID
NETNS_PATH=/run/netns/$NETNS
CGROUP_ROOT=mlflow-operator-$CLUSTER_ID
# Addresses inside that namespace only.
NODE_IP=10.250.0.1          # on bridge node0: the node's InternalIP, the apiserver's advertise address
NODE_CIDR=10.250.0.1/24
POD_CIDR=10.244.0.0/24      # bridge cni0, gateway 10.244.0.1
SERVICE_CIDR=10.0.0.0/24    # the kubernetes Service is 10.0.0.1
# Addresses for tests' stand-ins of outside hosts (fake Azure endpoints, IMDS), on node0: pods
# reach them through their gateway; names map to them in STATE/node/hosts (served by CoreDNS).
TEST_HOST_IPS="10.250.0.10 10.250.0.11 10.250.0.12 10.250.0.13 10.250.0.14 10.250.0.15 169.254.169.254"
NODE_NAME=mlflow-operator-node
# Fixed ports: the namespace is ours alone.
API_PORT=6443 ETCD_PORT=2379 PEER_PORT=2380 KCM_PORT=10257 SCHED_PORT=10259 KUBELET_PORT=10250
PROXY_HEALTH_PORT=10256 PROXY_METRICS_PORT=10249 DNS_READY_PORT=8181

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Temporary paths of the script, removed however it exits (an error under set -e, a signal, or
# its end): an interrupted image build otherwise left a rootfs of hundreds of MiB behind.
# A script with an EXIT trap of its own calls remove_temps from it.
TEMPS=()
remove_temps() { [ ${#TEMPS[@]} -eq 0 ] || rm -rf "${TEMPS[@]}"; }
# remove_on_exit PATH...: PATH is removed when the script exits.
remove_on_exit() { TEMPS+=("$@"); trap remove_temps EXIT; }
# temp_dir VAR TEMPLATE: a new directory (mktemp -d TEMPLATE) in VAR, removed on exit.
temp_dir() {
  local _dir
  _dir=$(mktemp -d "$2")
  remove_on_exit "$_dir"
  printf -v "$1" '%s' "$_dir"
}

# require_cluster: fails unless a cluster runs in $STATE, then loads its environment
# (KUBECONFIG, PATH with kubectl and helm, CLUSTER_*).
require_cluster() {
  [ -f "$STATE/env" ] || die "no cluster is running in $STATE; start one with tests/cluster/up"
  # shellcheck disable=SC1091
  source "$STATE/env"
}

# N free loopback TCP ports, space separated (held open together so they differ).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# in_netns CMD...: CMD in the cluster's network namespace (mounts stay the host's).
in_netns() { nsenter --net="$NETNS_PATH" -- "$@"; }

# start NAME BINARY ARGS...: runs detached in its own session inside the cluster's network
# namespace, logs to $STATE/logs/NAME.log, and records "name pid executable" once the process
# runs BINARY. Set START_IN_NETNS=0 when already inside the namespace.
start() {
  local name=$1 exe; shift
  exe=$(readlink -f "$1")
  if [ "${START_IN_NETNS:-1}" = 1 ]; then
    setsid nsenter --net="$NETNS_PATH" -- "$@" >>"$STATE/logs/$name.log" 2>&1 < /dev/null &
  else
    setsid "$@" >>"$STATE/logs/$name.log" 2>&1 < /dev/null &
  fi
  local pid=$! deadline=$((SECONDS + 5))
  until [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$exe" ]; do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$STATE/logs/$name.log" >&2; die "$name exited at once"; }
    [ $SECONDS -lt $deadline ] || die "$name did not start"
    sleep 0.05
  done
  echo "$name $pid $exe" >> "$STATE/pids"
}

# start_apiserver BIN ISSUER: kube-apiserver as `up` runs it (and `restart` again).
start_apiserver() {
  local bin=$1 issuer=$2 pki=$STATE/pki
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=0.0.0.0 --secure-port="$API_PORT" --advertise-address="$NODE_IP" \
    --cert-dir="$pki" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --kubelet-client-certificate="$pki/admin.crt" --kubelet-client-key="$pki/admin.key" \
    --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --authorization-mode=Node,RBAC \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-issuer="$issuer" \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --allow-privileged=true --profiling=false -v=1
}

# Whether the API server answers /readyz, as the cluster's admin.
apiserver_ready() {
  in_netns curl -sf --cacert "$STATE/pki/ca.crt" --cert "$STATE/pki/admin.crt" \
    --key "$STATE/pki/admin.key" "https://127.0.0.1:$API_PORT/readyz"
}

pid_of() { awk -v n="$1" '$1==n {print $2}' "$STATE/pids" 2>/dev/null; }

# Is PID still the process we started (same executable), not a reused pid?
ours() { # pid exe
  [ -n "$1" ] && [ -r "/proc/$1/exe" ] && [ "$(readlink "/proc/$1/exe")" = "$2" ]
}

# stop_pid NAME PID EXE: SIGTERM, then SIGKILL if it still runs 10 s later; a pid that is no
# longer ours (exited, or reused by another program) is left alone.
stop_pid() {
  ours "$2" "$3" || return 0
  kill -TERM "$2" 2>/dev/null || true
  for _ in $(seq 100); do ours "$2" "$3" || break; sleep 0.1; done
  if ours "$2" "$3"; then
    kill -KILL "$2" 2>/dev/null || true
    log "killed $1 ($2): still running 10 s after SIGTERM"
  else
    log "stopped $1 ($2)"
  fi
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

# No process of the cluster runs any more.
cluster_dead() {
  local name pid exe
  while read -r name pid exe; do ! ours "$pid" "$exe" || return 1; done < "$STATE/pids"
}

# A run killed with its cluster (a stopped CI, a rebooted machine) leaves only state behind:
# with none of its processes alive there is nothing to disturb, so it is cleared.
clear_dead_cluster() {
  [ -s "$STATE/pids" ] && cluster_dead || return 0
  log "a cluster started in $STATE has no process left ($(cluster_status)); removing its state"
  "$(dirname "${BASH_SOURCE[0]}")/down" >&2
}

cluster_healthy() {
  local name pid exe
  while read -r name pid exe; do ours "$pid" "$exe" || return 1; done < "$STATE/pids"
  [ -f "$STATE/env" ] && [ -e "$NETNS_PATH" ] || return 1
  apiserver_ready >/dev/null 2>&1
}

# Every cgroup directory of the node, deepest first, in every v1 hierarchy and the unified one.
node_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/"$CGROUP_ROOT" /sys/fs/cgroup/"$CGROUP_ROOT"; do
    [ -d "$d" ] && find "$d" -depth -type d
  done
  return 0
}
