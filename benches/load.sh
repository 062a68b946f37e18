#!/usr/bin/env bash
# benches/load.sh: load benchmark of onewindow against nginx (issue "Operate and measure").
#
# Usage (from anywhere in a clone; runs as root or with the tools installed):
#
#     benches/load.sh
#     DURATION=5 ROUNDS=1 benches/load.sh              # a quick smoke run
#     CONNECTIONS=128 THREADS=2 DURATION=15 benches/load.sh
#
# Environment:
#     DURATION      seconds per wrk run                    (default 10)
#     CONNECTIONS   wrk connections                        (default 64)
#     THREADS       wrk threads                            (default 2)
#     ROUNDS        rounds of a, b, c (and of c, d)        (default 3)
#     WARMUP        seconds of warm-up per target          (default 2)
#     KEEP_TMP=1    keep the temporary directory (configs, logs, audit files)
#     ONEWINDOW_BIN use this binary instead of target/release/onewindow
#
# What it does:
#   1. installs wrk, nginx and curl with apt-get when missing (needs root), and
#      builds target/release/onewindow when missing;
#   2. starts, on loopback only, a static upstream (nginx, 1 worker) answering
#      market supervision's licence JSON (~1 KB) at /api/v2/licences/{uscc} and
#      /licences/{uscc};
#   3. starts nginx as a plain reverse proxy to it (2 workers, keepalive pool);
#   4. starts onewindow from a temporary copy of config/ and adapters/ (demo
#      departments off, plain --listen, every adapter pointed at the static
#      upstream). The whole job stays on: JWT, grants, purpose, rate limits,
#      audit with fsync = "always";
#   5. alternates wrk runs over
#        a) nginx proxying /licences/{uscc},
#        b) onewindow pass-through GET /v1/proxy/market-supervision/licences/{uscc},
#        c) onewindow cached dataset read GET /v1/datasets/business-licence/{uscc},
#      for ROUNDS rounds, then restarts onewindow with fsync = "never" and
#      alternates c) and d) (cached read, fsync = "never") for ROUNDS rounds;
#   6. prints the medians (requests/s, p99), the ratios against nginx, the
#      audit cost (c against d) and onewindow's peak RSS (VmHWM).
#
# wrk, both nginx instances and onewindow share the machine's cores: the
# figures compare servers under the same conditions, not absolute capacity.
# Total time with the defaults: about 3 minutes.
set -euo pipefail

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}
USCC=91120116MA07Q8XJ2K

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${ONEWINDOW_BIN:-$ROOT/target/release/onewindow}

log() { printf '[load] %s\n' "$*" >&2; }
die() {
    printf '[load] error: %s\n' "$*" >&2
    exit 1
}

for v in DURATION CONNECTIONS THREADS ROUNDS WARMUP; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((ROUNDS >= 1 && DURATION >= 1 && CONNECTIONS >= THREADS)) || die "need ROUNDS >= 1, DURATION >= 1, CONNECTIONS >= THREADS"

# ---------------------------------------------------------------- 1. tools
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    log "installing ${need[*]} with apt-get"
    ((EUID == 0)) || die "need root to install ${need[*]} (or install them first)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [[ ! -x $BIN ]]; then
    log "building $BIN (cargo build --release)"
    (cd "$ROOT" && cargo build --release)
fi

# ---------------------------------------------------------------- helpers
TMP=$(mktemp -d "${TMPDIR:-/tmp}/onewindow-load.XXXXXX")
PIDS=()
cleanup() {
    local pid
    if [[ -n ${OW_PID:-} ]]; then PIDS+=("$OW_PID"); fi
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded wait: a process that ignores TERM for 5 s is killed.
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nobody listens on (and not one we already handed out).
USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 30000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if ! (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# Waits until a TCP port accepts connections (bounded).
wait_port() {
    local port=$1 what=$2 pid=$3
    for _ in $(seq 150); do
        (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || die "$what exited during start-up (see logs in $TMP; KEEP_TMP=1 keeps them)"
        sleep 0.1
    done
    die "$what did not listen on 127.0.0.1:$port within 15 s"
}

UP_PORT=$(free_port)
PX_PORT=$(free_port)
OW_PORT=$(free_port)
ADMIN_PORT=$(free_port)

# ---------------------------------------------------------------- 2. static upstream
# Market supervision's dialect: pinyin-initial fields, padded to about 1 KB.
# (No `$`, `'` or `\` in it: it is an nginx string literal.)
LICENCE='{"code":"0000","msg":"成功","data":{"tyshxydm":"91120116MA07Q8XJ2K","qymc":"天津滨海新区海河味道餐饮管理有限公司","fddbr":"李海燕","zs":"天津市滨海新区中新生态城动漫中路126号服务中心1号楼二层201室","jyfw":"许可项目：餐饮服务；食品销售；小餐饮。一般项目：餐饮管理；外卖递送服务；食品互联网销售（仅销售预包装食品）；会议及展览服务；企业管理咨询。","clrq":"2026-03-02","yxqz":"2046-03-01","djzt":"存续","qylx":"有限责任公司（自然人投资或控股）","zczb":"100万元人民币","djjg":"天津市滨海新区市场监督管理局","hzrq":"2026-03-02","sshy":"餐饮业","lxdh":"022-66000000","yzbm":"300450","bz":"padding-to-about-one-kilobyte-0123456789abcdefghijklmnopqrstuvwxyz-0123456789abcdefghijklmnopqrstuvwxyz-0123456789abcdefghijklmnopqrstuvwxyz"}}'

nginx_common() {
    local dir=$1 workers=$2
    mkdir -p "$dir/tmp"
    cat <<EOF
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
EOF
}

mkdir -p "$TMP/upstream" "$TMP/proxy"
{
    nginx_common "$TMP/upstream" 1
    cat <<EOF
    server {
        listen 127.0.0.1:$UP_PORT;
        default_type application/json;
        location = /api/v2/licences/$USCC { return 200 '$LICENCE'; }
        location = /licences/$USCC { return 200 '$LICENCE'; }
        location / { return 404 '{"code":"4004","msg":"not found"}'; }
    }
}
EOF
} >"$TMP/upstream/nginx.conf"

# ---------------------------------------------------------------- 3. nginx proxy
{
    nginx_common "$TMP/proxy" 2
    cat <<EOF
    upstream licence {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PX_PORT;
        location / {
            proxy_pass http://licence;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$TMP/proxy/nginx.conf"

start_nginx() {
    local name=$1 port=$2
    "$NGINX" -t -q -e "$TMP/$name/error.log" -p "$TMP/$name/" -c "$TMP/$name/nginx.conf" ||
        die "nginx $name config invalid ($TMP/$name/nginx.conf)"
    "$NGINX" -e "$TMP/$name/error.log" -p "$TMP/$name/" -c "$TMP/$name/nginx.conf" &
    PIDS+=($!)
    wait_port "$port" "nginx $name" "$!"
}
start_nginx upstream "$UP_PORT"
start_nginx proxy "$PX_PORT"
log "static upstream on 127.0.0.1:$UP_PORT, nginx proxy on 127.0.0.1:$PX_PORT"

# ---------------------------------------------------------------- 4. onewindow
PROJ=$TMP/project
mkdir -p "$PROJ/certs"
cp -r "$ROOT/config" "$ROOT/adapters" "$PROJ/"
GW=$PROJ/config/gateway.toml
sed -i \
    -e 's|^listen_tls = .*|listen_tls = ""|' \
    -e "s|^admin_listen = .*|admin_listen = \"127.0.0.1:$ADMIN_PORT\"|" \
    -e 's|^enabled = true|enabled = false|' \
    -e '/^departments = {.*}/d' \
    "$GW"
grep -q '^listen_tls = ""' "$GW" || die "could not disable the TLS listener in $GW"
grep -q '^enabled = false' "$GW" || die "could not disable the demo in $GW"
grep -q '^fsync = "always"' "$GW" || die "expected fsync = \"always\" in $GW"
# Every adapter points at the static upstream (only market supervision is used).
sed -i "s|^base_url = .*|base_url = \"http://127.0.0.1:$UP_PORT\"|" "$PROJ"/adapters/*.toml

# The token first: minting generates the demo issuer key and the JWKS [auth] trusts.
TOKEN=$("$BIN" token --sub portal-binhai --ttl 3600 --config "$GW" 2>"$TMP/token.log") ||
    die "onewindow token failed: $(cat "$TMP/token.log")"
"$BIN" check --config "$GW" >"$TMP/check.log" 2>&1 || {
    cat "$TMP/check.log" >&2
    die "onewindow check refused the benchmark config"
}

OW_PID=
start_onewindow() {
    local data=$1
    RUST_LOG=warn "$BIN" serve --config "$GW" --listen "127.0.0.1:$OW_PORT" \
        --data-dir "$data" >>"$TMP/onewindow.log" 2>&1 &
    OW_PID=$!
    wait_port "$OW_PORT" onewindow "$OW_PID"
}
stop_onewindow() {
    kill "$OW_PID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$OW_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$OW_PID" 2>/dev/null || true
    wait "$OW_PID" 2>/dev/null || true
    OW_PID=
    # Let the port go before the next start.
    for _ in $(seq 50); do
        (: <"/dev/tcp/127.0.0.1/$OW_PORT") 2>/dev/null || break
        sleep 0.1
    done
}
peak_rss_kb() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

URL_A="http://127.0.0.1:$PX_PORT/licences/$USCC"
URL_B="http://127.0.0.1:$OW_PORT/v1/proxy/market-supervision/licences/$USCC"
URL_C="http://127.0.0.1:$OW_PORT/v1/datasets/business-licence/$USCC"

HDR=(-H "Authorization: Bearer $TOKEN" -H "X-Purpose: service-handling")

# One request per target, checked, before any load: a benchmark of 401s is no benchmark.
probe() {
    local name=$1 url=$2 want=${3:-}
    local out
    out=$(curl -sS -m 5 -o "$TMP/probe.body" -D "$TMP/probe.head" -w '%{http_code} %{size_download}' \
        "${HDR[@]}" "$url") || die "$name: $url unreachable"
    [[ ${out%% *} == 200 ]] || die "$name: $url answered ${out%% *}: $(head -c 300 "$TMP/probe.body")"
    if [[ -n $want ]] && ! grep -qi "$want" "$TMP/probe.head"; then
        die "$name: $url lacks '$want' in its headers"
    fi
    log "$name: 200, ${out#* } bytes"
}

# ---------------------------------------------------------------- 5. wrk
cat >"$TMP/report.lua" <<'EOF'
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("RESULT %.1f %d %d %d\n",
        summary.requests / (summary.duration / 1e6),
        latency:percentile(99),
        e.status, e.connect + e.read + e.write + e.timeout))
end
EOF

declare -A RPS P99
run_wrk() {
    local name=$1 url=$2 secs=$3 out line
    out=$(timeout $((secs + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency \
        -s "$TMP/report.lua" "${HDR[@]}" "$url" 2>&1) || die "wrk failed on $name: $out"
    line=$(grep '^RESULT ' <<<"$out" | tail -n1)
    [[ -n $line ]] || die "wrk printed no result for $name: $out"
    read -r _ rps p99 bad errs <<<"$line"
    ((bad == 0)) || die "$name: $bad answers were not 2xx/3xx"
    ((errs == 0)) || log "$name: $errs socket errors"
    echo "$rps $p99"
}
measure() {
    local key=$1 url=$2 res
    # Earlier runs' dirty pages (audit files) are flushed first, so that their
    # write-back does not land on the fdatasyncs of this run.
    sync
    res=$(run_wrk "$key" "$url" "$DURATION")
    RPS[$key]+="${res% *} "
    P99[$key]+="${res#* } "
    log "  $key: $(awk '{ printf "%.0f req/s, p99 %.2f ms", $1, $2 / 1000 }' <<<"$res")"
}
warm() { run_wrk "$1" "$2" "$WARMUP" >/dev/null; }

median() {
    tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '
        { v[NR] = $1 }
        END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Phase 1: a, b, c with fsync = "always" (the shipped default).
start_onewindow "$TMP/data-always"
log "onewindow (fsync = always) on 127.0.0.1:$OW_PORT, pid $OW_PID"
probe a "$URL_A"
probe b "$URL_B"
probe c "$URL_C" "x-cache"
probe c "$URL_C" "x-cache: hit"
if ((WARMUP > 0)); then
    log "warm-up (${WARMUP}s each)"
    warm a "$URL_A"
    warm b "$URL_B"
    warm c "$URL_C"
fi
for r in $(seq "$ROUNDS"); do
    log "round $r/$ROUNDS: a b c (${DURATION}s each, $THREADS threads, $CONNECTIONS connections)"
    measure a "$URL_A"
    measure b "$URL_B"
    measure c "$URL_C"
done
RSS_ALWAYS=$(peak_rss_kb "$OW_PID")
stop_onewindow

# Phase 2: c (fsync = "always") against d (fsync = "never"), alternated.
cp "$GW" "$TMP/gateway-always.toml"
sed 's|^fsync = .*|fsync = "never"|' "$TMP/gateway-always.toml" >"$TMP/gateway-never.toml"
RSS_NEVER=0
for r in $(seq "$ROUNDS"); do
    log "round $r/$ROUNDS: c d"
    for v in c d; do
        if [[ $v == c ]]; then
            cp "$TMP/gateway-always.toml" "$GW"
            start_onewindow "$TMP/data-always"
        else
            cp "$TMP/gateway-never.toml" "$GW"
            start_onewindow "$TMP/data-never"
        fi
        probe "$v" "$URL_C"
        if ((WARMUP > 0)); then warm "$v" "$URL_C"; fi
        measure "$v"2 "$URL_C"
        rss=$(peak_rss_kb "$OW_PID")
        if [[ $v == d ]]; then
            if ((rss > RSS_NEVER)); then RSS_NEVER=$rss; fi
        elif ((rss > RSS_ALWAYS)); then
            RSS_ALWAYS=$rss
        fi
        stop_onewindow
    done
done

# ---------------------------------------------------------------- 6. report
declare -A MR MP
for k in a b c c2 d2; do
    MR[$k]=$(median "${RPS[$k]}")
    MP[$k]=$(median "${P99[$k]}")
done

awk -v ra="${MR[a]}" -v rb="${MR[b]}" -v rc="${MR[c]}" -v rc2="${MR[c2]}" -v rd="${MR[d2]}" \
    -v pa="${MP[a]}" -v pb="${MP[b]}" -v pc="${MP[c]}" -v pc2="${MP[c2]}" -v pd="${MP[d2]}" \
    -v rss1="$RSS_ALWAYS" -v rss2="$RSS_NEVER" \
    -v rounds="$ROUNDS" -v dur="$DURATION" -v conns="$CONNECTIONS" -v thr="$THREADS" \
    -v cores="$(nproc)" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" '
function ok(b) { return b ? "yes" : "NO" }
BEGIN {
    printf "\nonewindow load benchmark: medians of %d rounds, wrk -t%d -c%d -d%ds, %d cores shared by wrk, nginx and onewindow (load average at the end: %s)\n\n", rounds, thr, conns, dur, cores, load
    printf "%-46s %12s %10s %12s %10s\n", "target", "req/s", "p99 ms", "req/s / a", "p99 / a"
    printf "%-46s %12.0f %10.2f %12s %10s\n", "a) nginx reverse proxy", ra, pa / 1000, "1.00", "1.00"
    printf "%-46s %12.0f %10.2f %12.2f %10.2f\n", "b) onewindow pass-through", rb, pb / 1000, rb / ra, pb / pa
    printf "%-46s %12.0f %10.2f %12.2f %10.2f\n", "c) onewindow cached read (fsync always)", rc, pc / 1000, rc / ra, pc / pa
    printf "\naudit cost (phase 2, c and d alternated, fresh process each run):\n"
    printf "%-46s %12.0f %10.2f\n", "c) cached read, fsync = always", rc2, pc2 / 1000
    printf "%-46s %12.0f %10.2f\n", "d) cached read, fsync = never", rd, pd / 1000
    cost = rd > 0 ? (1 - rc2 / rd) * 100 : 0
    printf "throughput cost of fsync always: %.1f %%\n", cost
    printf "\nonewindow peak RSS (VmHWM): fsync always %.1f MB, fsync never %.1f MB\n", rss1 / 1024, rss2 / 1024
    printf "\ntargets: pass-through >= 1.0x nginx: %s (%.2fx); cached read >= 1.5x nginx: %s (%.2fx);\n", ok(rb >= ra), rb / ra, ok(rc >= 1.5 * ra), rc / ra
    printf "         p99 <= 2x nginx: b %s (%.2fx), c %s (%.2fx); peak RSS < 100 MB: %s; audit cost <= 10 %%: %s (%.1f %%)\n", ok(pb <= 2 * pa), pb / pa, ok(pc <= 2 * pa), pc / pa, ok(rss1 < 102400 && rss2 < 102400), ok(cost <= 10), cost
}'
