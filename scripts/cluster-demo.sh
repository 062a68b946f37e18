#!/usr/bin/env bash
# Three onewindow nodes and one Redis on loopback, from this project folder.
#
#   scripts/cluster-demo.sh            # builds (release) if needed, then runs
#   REDIS_PORT=6390 BASE_PORT=8081 scripts/cluster-demo.sh
#
# Node a runs the simulated departments; nodes b and c (--no-demo) use them.
# Each node has its own data dir (audit chain) under data/cluster-demo/.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT=${REDIS_PORT:-6390}
BASE_PORT=${BASE_PORT:-8081}
ADMIN_BASE=${ADMIN_BASE:-9091}
BIN=${ONEWINDOW_BIN:-target/release/onewindow}
DATA=data/cluster-demo
REDIS_URL="redis://127.0.0.1:${REDIS_PORT}"

command -v redis-server >/dev/null || {
    echo "redis-server is not installed (Debian/Ubuntu: apt-get install redis-server; or .ci/setup-redis.sh)" >&2
    exit 1
}
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
if [ ! -x "$BIN" ]; then
    echo "building $BIN ..." >&2
    cargo build --release
fi
mkdir -p "$DATA"

pids=()
stop() {
    trap - INT TERM EXIT
    echo >&2
    echo "stopping ..." >&2
    # Nodes first (they drain and close their audit logs), then Redis.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[$i]}" 2>/dev/null || true
        wait "${pids[$i]}" 2>/dev/null || true
    done
    echo "stopped" >&2
}
trap stop INT TERM EXIT

wait_for() { # url, what
    for _ in $(seq 1 150); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    echo "$2 did not come up ($1); see $DATA/*.log" >&2
    exit 1
}

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    >"$DATA/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
    if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then break; fi
    sleep 0.1
done

start_node() { # name, index, extra flags...
    local name=$1 i=$2
    shift 2
    local port=$((BASE_PORT + i)) admin=$((ADMIN_BASE + i))
    "$BIN" serve --redis "$REDIS_URL" --tls-listen "" \
        --listen "127.0.0.1:${port}" --admin-listen "127.0.0.1:${admin}" \
        --data-dir "$DATA/node-$name" "$@" >"$DATA/node-$name.log" 2>&1 &
    pids+=($!)
    wait_for "http://127.0.0.1:${admin}/healthz" "node $name"
    echo "node $name: data plane http://127.0.0.1:${port}  admin http://127.0.0.1:${admin}  (log $DATA/node-$name.log)" >&2
}

# Node a first: it generates the demo issuer key and runs the departments.
start_node a 0
start_node b 1 --no-demo
start_node c 2 --no-demo

TOKEN=$("$BIN" token --sub portal-binhai)
ADMIN=$("$BIN" token --sub ops --role platform-admin)
A=http://127.0.0.1:${BASE_PORT}
C=http://127.0.0.1:$((BASE_PORT + 2))
cat >&2 <<HINT

Three nodes share Redis at ${REDIS_URL}. Try:

  export TOKEN='${TOKEN}'
  export ADMIN='${ADMIN}'

  # The same record through node a, then node c:
  curl -s -H "Authorization: Bearer \$TOKEN" -H 'X-Purpose: service-handling' \\
    ${A}/v1/datasets/business-licence/91120116MA07T6WN8F
  curl -s -H "Authorization: Bearer \$TOKEN" -H 'X-Purpose: service-handling' \\
    ${C}/v1/datasets/business-licence/91120116MA07T6WN8F

  # Revoke it through node a's admin plane; the reply says how many nodes confirmed:
  curl -s -X POST -H "Authorization: Bearer \$ADMIN" -H 'Content-Type: application/json' \\
    -d '{"dataset":"business-licence","subject":"91120116MA07T6WN8F"}' \\
    http://127.0.0.1:${ADMIN_BASE}/admin/cache/invalidate

  # A case accepted through node a, read through node b (cases live in Redis):
  curl -s -X POST -H "Authorization: Bearer \$TOKEN" -H 'X-Purpose: service-handling' \\
    -H 'X-Case-Id: BH-2026-0042' -d '{"subjects":{"uscc":"91120116MA07R3LP5D"}}' \\
    ${A}/v1/scenarios/open-restaurant
  curl -s -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:$((BASE_PORT + 1))/v1/cases/BH-2026-0042

  # Each node's view of the cluster:
  curl -s http://127.0.0.1:$((ADMIN_BASE + 1))/readyz

  # Stop Redis (redis-cli -p ${REDIS_PORT} shutdown nosave): the nodes keep serving
  # with local limits, /readyz says "degraded"; this script does not restart it.

Audit: each node keeps its own chain; query them together with
  $BIN audit query --data-dir $DATA/node-a --data-dir $DATA/node-b --data-dir $DATA/node-c --limit 10

Ctrl-C stops everything.
HINT
wait "${pids[0]}"
