#!/usr/bin/env bash
# A Ray cluster of several nodes on ONE machine, for trying multi-node behaviour (placement across
# nodes, SPREAD, a node dying) without a cloud. Each node is its own raylet with its own ports; they
# share this machine's CPUs and Ray's temp dir (/tmp/ray: Ray keeps one per machine). Everything binds
# to 127.0.0.1 and token authentication is on. See cluster/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: cluster/local.sh start [N]   start a head and N worker nodes (default 2, at most 8)
       cluster/local.sh stop        stop every Ray process of this user on this machine (ray stop --force)
       cluster/local.sh status      show the local cluster's nodes and resources (ray status)
       cluster/local.sh -h|--help   this text

After `start`, load the addresses into your shell with the `source` line it prints, then e.g.
  ray job submit --runtime-env jobs/runtime_env.yaml -- python jobs/train.py jobs/configs/digits_cnn_torch.yaml
  raykit train jobs/configs/digits_cnn_torch.yaml --set scaling.placement_strategy=SPREAD

Environment (all optional):
  RAYKIT_VENV             venv whose bin/ray is used (default: <repo>/.venv, else ray on PATH)
  RAYKIT_PORT             head GCS port (default: the first free of 6390, 6490, ..., 7290)
  RAYKIT_DASHBOARD_PORT   dashboard and job API port (default 8265)
  RAYKIT_HEAD_CPUS        CPUs the head offers (default 0: work goes to worker nodes, as on a cluster)
  RAYKIT_WORKER_CPUS      CPUs per worker node (default 1)
  RAYKIT_WORKER_GPUS      GPUs per worker node (default 0; left to detection every node would claim
                          all of this machine's GPUs)
  RAYKIT_OBJECT_STORE_MB  object store per node in MiB (default 256; Ray's default is 30% of RAM
                          per node, too much for several nodes on one machine)
  RAYKIT_DRY_RUN=1        print the commands instead of running them
Note: `stop` is Ray's own `ray stop --force`: it also stops any other Ray (e.g. a test session) that
this user runs on this machine.
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${RAYKIT_VENV:-$REPO/.venv}
STATE=${TMPDIR:-/tmp}/raykit-local-cluster-$(id -u).env   # the addresses `start` chose, for `source`
DASHBOARD_PORT=${RAYKIT_DASHBOARD_PORT:-8265}
MAX_WORKERS=8
# Jobs run `python` from the PATH the nodes were started with: put the venv first, so that
# `ray job submit -- python jobs/train.py` finds raykit and its dependencies.
if [[ -d "$VENV/bin" ]]; then export PATH="$VENV/bin:$PATH"; fi

ray_bin() {
  if [[ -x "$VENV/bin/ray" ]]; then echo "$VENV/bin/ray"
  elif command -v ray >/dev/null 2>&1; then command -v ray
  elif [[ -n "${RAYKIT_DRY_RUN:-}" ]]; then echo ray
  else echo "local.sh: no ray found: run 'make install' or set RAYKIT_VENV" >&2; return 1
  fi
}

# Print (dry run) or run a command.
run() {
  if [[ -n "${RAYKIT_DRY_RUN:-}" ]]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}

# Something already accepts connections on 127.0.0.1:$1.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Ports of node $1 (0 = head): a block of 10 above the GCS port, plus its own range of worker ports,
# so no two raylets on this machine ever pick the same port.
node_ports() {
  local b=$((PORT + 10 * ($1 + 1)))
  NM_PORT=$b OM_PORT=$((b + 1)) AGENT_HTTP_PORT=$((b + 2)) AGENT_GRPC_PORT=$((b + 3))
  RUNTIME_ENV_PORT=$((b + 4)) METRICS_PORT=$((b + 5))
  MIN_WORKER_PORT=$((20000 + 500 * $1)) MAX_WORKER_PORT=$((20000 + 500 * $1 + 499))
}

node_port_flags() {
  node_ports "$1"
  NODE_FLAGS=(--node-manager-port="$NM_PORT" --object-manager-port="$OM_PORT"
    --dashboard-agent-listen-port="$AGENT_HTTP_PORT" --dashboard-agent-grpc-port="$AGENT_GRPC_PORT"
    --runtime-env-agent-port="$RUNTIME_ENV_PORT" --metrics-export-port="$METRICS_PORT"
    --min-worker-port="$MIN_WORKER_PORT" --max-worker-port="$MAX_WORKER_PORT")
}

layout_free() {  # $1 = number of worker nodes; PORT set
  if port_busy "$PORT"; then return 1; fi
  local i p
  for ((i = 0; i <= $1; i++)); do
    node_ports "$i"
    for p in "$NM_PORT" "$OM_PORT" "$AGENT_HTTP_PORT" "$AGENT_GRPC_PORT" "$RUNTIME_ENV_PORT" "$METRICS_PORT"; do
      if port_busy "$p"; then return 1; fi
    done
  done
  return 0
}

pick_port() {  # sets PORT: RAYKIT_PORT as given, else the first base whose whole block is free
  local n=$1
  if [[ -n "${RAYKIT_PORT:-}" ]]; then
    PORT=$RAYKIT_PORT
    if layout_free "$n"; then return 0; fi
    echo "local.sh: port $PORT (or one of the node ports above it) is in use; choose another RAYKIT_PORT" >&2
    return 1
  fi
  for PORT in $(seq 6390 100 7290); do
    if layout_free "$n"; then return 0; fi
  done
  echo "local.sh: no free port block between 6390 and 7390; set RAYKIT_PORT" >&2
  return 1
}

print_env() {
  cat <<EOF
export RAY_ADDRESS=127.0.0.1:$PORT
export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT
export RAY_AUTH_MODE=token
EOF
}

start() {
  local n=${1:-2}
  if ! [[ "$n" =~ ^[0-9]+$ ]] || ((n > MAX_WORKERS)); then
    echo "local.sh: N must be 0..$MAX_WORKERS, got '$n'" >&2
    return 2
  fi
  local ray
  ray=$(ray_bin)
  # Ray 2.60 token auth: `ray start` only turns it on when told to (or a token already exists), and
  # then refuses to start without a token; `get-auth-token --generate` makes ~/.ray/auth_token once.
  export RAY_AUTH_MODE=token

  if [[ -z "${RAYKIT_DRY_RUN:-}" && -f "$STATE" ]]; then
    PORT=$(sed -n 's/^export RAY_ADDRESS=127\.0\.0\.1:\([0-9]*\)$/\1/p' "$STATE")
    if [[ -n "$PORT" ]] && "$ray" status --address "127.0.0.1:$PORT" >/dev/null 2>&1; then
      echo "local.sh: a local cluster is already running (stop it first to change its size):"
      echo "  source $STATE"
      return 0
    fi
  fi

  pick_port "$n"
  if port_busy "$DASHBOARD_PORT"; then
    echo "local.sh: dashboard port $DASHBOARD_PORT is in use; set RAYKIT_DASHBOARD_PORT" >&2
    return 1
  fi
  if [[ -z "${RAYKIT_DRY_RUN:-}" ]]; then trap 'echo "local.sh: start failed; clean up with: cluster/local.sh stop" >&2' ERR; fi

  local head_cpus=${RAYKIT_HEAD_CPUS:-0} cpus=${RAYKIT_WORKER_CPUS:-1} gpus=${RAYKIT_WORKER_GPUS:-0}
  local store=$((${RAYKIT_OBJECT_STORE_MB:-256} * 1024 * 1024))
  if [[ -n "${RAYKIT_DRY_RUN:-}" ]]; then run "$ray" get-auth-token --generate
  else "$ray" get-auth-token --generate >/dev/null; fi

  node_port_flags 0
  run "$ray" start --head --node-ip-address=127.0.0.1 --node-name=head --port="$PORT" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
    --num-cpus="$head_cpus" --num-gpus=0 --resources='{"head_node": 1}' \
    --object-store-memory="$store" "${NODE_FLAGS[@]}" --disable-usage-stats

  local i
  for ((i = 1; i <= n; i++)); do
    node_port_flags "$i"
    run "$ray" start --address="127.0.0.1:$PORT" --node-ip-address=127.0.0.1 --node-name="worker-$i" \
      --num-cpus="$cpus" --num-gpus="$gpus" --resources="{\"worker_node_$i\": 1}" \
      --object-store-memory="$store" "${NODE_FLAGS[@]}"
  done

  if [[ -n "${RAYKIT_DRY_RUN:-}" ]]; then print_env; return 0; fi
  print_env >"$STATE"
  echo
  echo "local.sh: head + $n worker nodes on 127.0.0.1 (GCS :$PORT, dashboard http://127.0.0.1:$DASHBOARD_PORT)."
  echo "Load the addresses and token mode into your shell with:"
  echo "  source $STATE"
  cat "$STATE"
}

stop() {
  local ray
  ray=$(ray_bin)
  run "$ray" stop --force
  if [[ -z "${RAYKIT_DRY_RUN:-}" ]]; then rm -f "$STATE"; fi
}

status() {
  local ray
  ray=$(ray_bin)
  export RAY_AUTH_MODE=token
  PORT=${RAYKIT_PORT:-}
  if [[ -z "$PORT" && -f "$STATE" ]]; then PORT=$(sed -n 's/^export RAY_ADDRESS=127\.0\.0\.1:\([0-9]*\)$/\1/p' "$STATE"); fi
  run "$ray" status --address "127.0.0.1:${PORT:-6390}"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
