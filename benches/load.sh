#!/usr/bin/env bash
# benches/load.sh: load benchmark of onewindow against nginx and a bare hyper
# reverse proxy, all on loopback, same run, alternated rounds, medians.
#
# Usage (from anywhere in a clone; as root, or with the tools installed):
#
#     benches/load.sh                                  # full run, ~10 minutes
#     DURATION=3 ROUNDS=1 benches/load.sh              # quick smoke run, < 3 minutes
#     CONNECTIONS=128 THREADS=2 DURATION=15 benches/load.sh
#
# Environment:
#     DURATION      seconds per measured run                    (default 10)
#     CONNECTIONS   wrk connections; h2load runs H2_CLIENTS x H2_STREAMS
#                   concurrent streams                          (default 64)
#     THREADS       wrk / h2load threads                        (default 2)
#     ROUNDS        alternated rounds                           (default 3)
#     WARMUP        seconds of warm-up per target               (default 2)
#     H2_CLIENTS    h2load connections                          (default 16)
#     H2_STREAMS    h2load concurrent streams per connection    (default 4)
#     IDLE_CONNS    idle keep-alive connections (0 skips)       (default 10000)
#     KEEP_TMP=1    keep the temporary directory (configs, certs, logs, audit)
#     ONEWINDOW_BIN use this binary instead of target/release/onewindow
#     BARE_BIN      use this bare proxy instead of target/release/examples/bare-proxy
#
# What it does:
#   1. installs wrk, nginx, curl and h2load (nghttp2-client) with apt-get when
#      missing (needs root), builds target/release/onewindow and the bare
#      proxy example (benches/peer/bare_proxy.rs) when missing;
#   2. lays out a temporary copy of config/ and adapters/; generates a
#      throwaway TLS certificate there with `onewindow certs dev` (deleted at
#      the end: no key is ever written into the clone); starts the gateway once
#      with its simulated departments to capture their replies;
#   3. starts, on loopback only: a static upstream (nginx, 1 worker) answering
#      the four departments of `open-restaurant` with those replies (the
#      licence padded to ~1 KB); nginx as a reverse proxy to it (2 workers,
#      keepalive pool; HTTP/1.1, TLS and h2c listeners); the bare hyper proxy
#      (plain and TLS); onewindow from the temporary config (demo departments
#      off, every adapter pointed at the static upstream). The gateway's whole
#      job stays on: JWT, grants, purpose, rate limits, audit fsync = "always";
#   4. alternates every row below for ROUNDS rounds (one after the other
#      inside a round, so a noisy moment hits all rows of one round), counting
#      the context switches and CPU time of the process under test over each run;
#   5. audit cost: restarts the gateway alternately with fsync "always" and
#      "never" and measures the cached read, ROUNDS times each;
#   6. idle connections: opens IDLE_CONNS keep-alive connections (one request
#      each, then idle) to a fresh gateway and to nginx, reports RSS before,
#      while open and after they are closed, and a short wrk run meanwhile;
#   7. prints markdown tables (medians; ratios from the same run) to paste in
#      README.md, and the issue's targets met or not.
#
# wrk/h2load, both nginx instances, the bare proxy and onewindow share the
# machine's cores: figures compare servers under the same conditions, not
# absolute capacity. Read the ratios, not the req/s.
set -euo pipefail

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}
H2_CLIENTS=${H2_CLIENTS:-16}
H2_STREAMS=${H2_STREAMS:-4}
IDLE_CONNS=${IDLE_CONNS:-10000}
USCC=91120116MA07Q8XJ2K

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${ONEWINDOW_BIN:-$ROOT/target/release/onewindow}
BARE=${BARE_BIN:-$ROOT/target/release/examples/bare-proxy}
IDLE_CLIENT=$ROOT/benches/peer/idle_conns.py

log() { printf '[load] %s\n' "$*" >&2; }
die() {
    printf '[load] error: %s\n' "$*" >&2
    exit 1
}

for v in DURATION CONNECTIONS THREADS ROUNDS WARMUP H2_CLIENTS H2_STREAMS IDLE_CONNS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((ROUNDS >= 1 && DURATION >= 1 && CONNECTIONS >= THREADS && H2_CLIENTS >= THREADS)) ||
    die "need ROUNDS >= 1, DURATION >= 1, CONNECTIONS >= THREADS, H2_CLIENTS >= THREADS"

# ---------------------------------------------------------------- 1. tools
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
command -v h2load >/dev/null || need+=(nghttp2-client)
if ((${#need[@]})); then
    log "installing ${need[*]} with apt-get"
    ((EUID == 0)) || die "need root to install ${need[*]} (or install them first)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [[ ! -x $BIN || ! -x $BARE ]]; then
    log "building $BIN and $BARE (cargo build --release --bin onewindow --example bare-proxy)"
    (cd "$ROOT" && cargo build --release --bin onewindow --example bare-proxy)
fi
[[ -x $BARE ]] || die "no bare proxy at $BARE (cargo build --release --example bare-proxy)"
if ((IDLE_CONNS > 0)); then
    command -v python3 >/dev/null || die "the idle-connection row needs python3 (or IDLE_CONNS=0)"
    # Each side of 10 000 connections needs a descriptor per connection.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    fds=$(ulimit -n)
    if [[ $fds != unlimited ]] && ((fds < IDLE_CONNS + 1000)); then
        die "open-file limit $fds is too low for IDLE_CONNS=$IDLE_CONNS (raise ulimit -n, or lower IDLE_CONNS)"
    fi
fi

# ---------------------------------------------------------------- helpers
TMP=$(mktemp -d "${TMPDIR:-/tmp}/onewindow-load.XXXXXX")
PIDS=()
cleanup() {
    local pid
    if [[ -n ${OW_PID:-} ]]; then PIDS+=("$OW_PID"); fi
    if [[ -n ${IDLE_PID:-} ]]; then PIDS+=("$IDLE_PID"); fi
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
        p=$((20000 + RANDOM % 12000))
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

# Ports below 32000: the ephemeral range (32768-60999 by default) stays for
# the clients' 10 000 connections.
UP_PORT=$(free_port)       # static upstream (nginx)
PX_PORT=$(free_port)       # nginx proxy, HTTP/1.1
PXS_PORT=$(free_port)      # nginx proxy, TLS
PX2_PORT=$(free_port)      # nginx proxy, h2c
BARE_PORT=$(free_port)     # bare hyper proxy, plain (HTTP/1.1 and h2c)
BARES_PORT=$(free_port)    # bare hyper proxy, TLS
OW_PORT=$(free_port)       # onewindow, plain (HTTP/1.1 and h2c)
OWS_PORT=$(free_port)      # onewindow, TLS
ADMIN_PORT=$(free_port)
SIM_PORTS=()
for _ in 1 2 3 4 5; do SIM_PORTS+=("$(free_port)"); done

# ---------------------------------------------------------------- 2. project, certificate, department replies
PROJ=$TMP/project
mkdir -p "$PROJ/certs"
cp -r "$ROOT/config" "$ROOT/adapters" "$PROJ/"
GW=$PROJ/config/gateway.toml
SIM_LINE="departments = { market-supervision = \"127.0.0.1:${SIM_PORTS[0]}\", health-commission = \"127.0.0.1:${SIM_PORTS[1]}\", fire-rescue = \"127.0.0.1:${SIM_PORTS[2]}\", public-security = \"127.0.0.1:${SIM_PORTS[3]}\", ecology-environment = \"127.0.0.1:${SIM_PORTS[4]}\" }"
sed -i \
    -e "s|^listen_tls = .*|listen_tls = \"127.0.0.1:$OWS_PORT\"|" \
    -e "s|^admin_listen = .*|admin_listen = \"127.0.0.1:$ADMIN_PORT\"|" \
    -e "s|^departments = {.*}|$SIM_LINE|" \
    "$GW"
grep -q "^listen_tls = \"127.0.0.1:$OWS_PORT\"" "$GW" || die "could not set the TLS listener in $GW"
grep -q '^fsync = "always"' "$GW" || die "expected fsync = \"always\" in $GW"
grep -q "^departments = .*${SIM_PORTS[4]}" "$GW" || die "could not move the simulated departments in $GW"

# A throwaway certificate for every TLS listener (gateway, nginx, bare proxy):
# the gateway's own development CA and server certificate, in $TMP only.
"$BIN" certs dev --config "$GW" >"$TMP/certs.log" 2>&1 || die "onewindow certs dev failed: $(cat "$TMP/certs.log")"
CERT=$PROJ/certs/dev-server.crt
KEY=$PROJ/certs/dev-server.key
[[ -s $CERT && -s $KEY ]] || die "onewindow certs dev wrote no $CERT / $KEY"

# The token first: minting generates the demo issuer key and the JWKS [auth] trusts.
TOKEN=$("$BIN" token --sub portal-binhai --ttl 7200 --config "$GW" 2>"$TMP/token.log") ||
    die "onewindow token failed: $(cat "$TMP/token.log")"

OW_PID=
OW_EXTRA=()
start_onewindow() {
    local data=$1
    RUST_LOG=warn "$BIN" serve --config "$GW" --listen "127.0.0.1:$OW_PORT" \
        --data-dir "$data" "${OW_EXTRA[@]}" >>"$TMP/onewindow.log" 2>&1 &
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

# The simulated departments' own replies for the scenario's other three
# parts, so that the static upstream answers exactly what the adapters expect
# (JSON envelopes, SOAP 1.1 for fire and rescue).
start_onewindow "$TMP/data-capture"
for p in 0 1 2; do wait_port "${SIM_PORTS[$p]}" "simulated department" "$OW_PID"; done
capture() {
    local name=$1
    shift
    curl -sS -m 5 -o "$TMP/$name.body" -w '%{http_code}' "$@" >"$TMP/$name.code" ||
        die "capture of $name failed"
    [[ $(cat "$TMP/$name.code") == 200 ]] || die "simulated $name answered $(cat "$TMP/$name.code")"
    if grep -q "[\$'\\\\]" "$TMP/$name.body"; then
        die "the simulated $name reply has \$, ' or \\ in it: it cannot be an nginx string literal"
    fi
}
FIRE_REQ="<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:fr=\"urn:fire-rescue:inspection\"><soap:Body><fr:GetInspection><fr:CreditCode>$USCC</fr:CreditCode><fr:Purpose>service-handling</fr:Purpose><fr:CaseNo></fr:CaseNo></fr:GetInspection></soap:Body></soap:Envelope>"
HEALTH_REQ="{\"orgCode\": \"$USCC\", \"purpose\": \"service-handling\", \"caseId\": null}"
capture food-permit "http://127.0.0.1:${SIM_PORTS[0]}/api/v2/food-permits?tyshxydm=$USCC&purpose=service-handling"
capture health-certificate -X POST -H 'Content-Type: application/json' --data-binary "$HEALTH_REQ" \
    "http://127.0.0.1:${SIM_PORTS[1]}/openapi/v1/health-certificates/query"
capture fire-safety -X POST -H 'Content-Type: text/xml; charset=utf-8' \
    -H 'SOAPAction: "urn:fire-rescue:GetInspection"' --data-binary "$FIRE_REQ" \
    "http://127.0.0.1:${SIM_PORTS[2]}/services/FireSafetyInspection"
stop_onewindow
log "captured the simulated departments' replies (food permit, health certificates, fire safety)"

# From here on: no demo departments, every adapter on the static upstream.
sed -i -e 's|^enabled = true|enabled = false|' -e '/^departments = {.*}/d' "$GW"
grep -q '^enabled = false' "$GW" || die "could not disable the demo in $GW"
sed -i "s|^base_url = .*|base_url = \"http://127.0.0.1:$UP_PORT\"|" "$PROJ"/adapters/*.toml
"$BIN" check --config "$GW" >"$TMP/check.log" 2>&1 || {
    cat "$TMP/check.log" >&2
    die "onewindow check refused the benchmark config"
}

# ---------------------------------------------------------------- 3. static upstream
# Market supervision's licence: pinyin-initial fields, padded to about 1 KB.
# (No `$`, `'` or `\` in it: it is an nginx string literal.)
LICENCE='{"code":"0000","msg":"成功","data":{"tyshxydm":"91120116MA07Q8XJ2K","qymc":"天津滨海新区海河味道餐饮管理有限公司","fddbr":"李海燕","zs":"天津市滨海新区中新生态城动漫中路126号服务中心1号楼二层201室","jyfw":"许可项目：餐饮服务；食品销售；小餐饮。一般项目：餐饮管理；外卖递送服务；食品互联网销售（仅销售预包装食品）；会议及展览服务；企业管理咨询。","clrq":"2026-03-02","yxqz":"2046-03-01","djzt":"存续","qylx":"有限责任公司（自然人投资或控股）","zczb":"100万元人民币","djjg":"天津市滨海新区市场监督管理局","hzrq":"2026-03-02","sshy":"餐饮业","lxdh":"022-66000000","yzbm":"300450","bz":"padding-to-about-one-kilobyte-0123456789abcdefghijklmnopqrstuvwxyz-0123456789abcdefghijklmnopqrstuvwxyz-0123456789abcdefghijklmnopqrstuvwxyz"}}'

nginx_common() {
    local dir=$1 workers=$2
    mkdir -p "$dir/tmp"
    cat <<EOF
worker_processes $workers;
worker_rlimit_nofile $((IDLE_CONNS + 4096));
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $((IDLE_CONNS + 4096)); }
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
        location = /api/v2/food-permits { return 200 '$(cat "$TMP/food-permit.body")'; }
        location = /openapi/v1/health-certificates/query { return 200 '$(cat "$TMP/health-certificate.body")'; }
        location = /services/FireSafetyInspection {
            default_type "text/xml; charset=utf-8";
            return 200 '$(cat "$TMP/fire-safety.body")';
        }
        location / { return 404 '{"code":"4004","msg":"not found"}'; }
    }
}
EOF
} >"$TMP/upstream/nginx.conf"

# ---------------------------------------------------------------- nginx proxy
proxy_location() {
    cat <<EOF
        location / {
            proxy_pass http://departments;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
EOF
}
{
    nginx_common "$TMP/proxy" 2
    cat <<EOF
    upstream departments {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PX_PORT;
$(proxy_location)
    }
    server {
        listen 127.0.0.1:$PXS_PORT ssl;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
$(proxy_location)
    }
    server {
        listen 127.0.0.1:$PX2_PORT http2;
$(proxy_location)
    }
}
EOF
} >"$TMP/proxy/nginx.conf"

NGINX_PROXY_PID=
start_nginx() {
    local name=$1 port=$2
    "$NGINX" -t -q -e "$TMP/$name/error.log" -p "$TMP/$name/" -c "$TMP/$name/nginx.conf" ||
        die "nginx $name config invalid ($TMP/$name/nginx.conf)"
    "$NGINX" -e "$TMP/$name/error.log" -p "$TMP/$name/" -c "$TMP/$name/nginx.conf" &
    PIDS+=($!)
    if [[ $name == proxy ]]; then NGINX_PROXY_PID=$!; fi
    wait_port "$port" "nginx $name" "$!"
}
start_nginx upstream "$UP_PORT"
start_nginx proxy "$PX_PORT"
log "static upstream on 127.0.0.1:$UP_PORT; nginx proxy on :$PX_PORT (TLS :$PXS_PORT, h2c :$PX2_PORT)"

"$BARE" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UP_PORT" >"$TMP/bare.log" 2>&1 &
BARE_PID=$!
PIDS+=("$BARE_PID")
wait_port "$BARE_PORT" "bare proxy" "$BARE_PID"
"$BARE" "127.0.0.1:$BARES_PORT" "127.0.0.1:$UP_PORT" --tls "$CERT" "$KEY" >"$TMP/bares.log" 2>&1 &
BARES_PID=$!
PIDS+=("$BARES_PID")
wait_port "$BARES_PORT" "bare TLS proxy" "$BARES_PID"
log "bare hyper proxy on :$BARE_PORT (TLS :$BARES_PORT)"

# ---------------------------------------------------------------- measuring helpers
peak_rss_kb() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}
# A process and its direct children (nginx: master + workers), from /proc.
family() {
    echo "$1"
    awk -v p="$1" '{ sub(/^.*\) /, ""); if ($2 == p) { split(FILENAME, f, "/"); print f[3] } }' /proc/[0-9]*/stat 2>/dev/null || true
}
# VmRSS summed over a process and its children.
rss_kb() {
    local total=0 pid v
    for pid in $(family "$1"); do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
# Voluntary + involuntary context switches of every thread of a process and
# of its children.
ctx_switches() {
    local pid
    for pid in $(family "$1"); do
        cat "/proc/$pid/task/"*/status 2>/dev/null || true
    done | awk '/ctxt_switches:/ { s += $2 } END { print s + 0 }'
}
# CPU time (user + system, all threads) of a process and of its children, in
# microseconds: what a request costs, steadier than req/s on a shared machine.
cpu_us() {
    local pid
    for pid in $(family "$1"); do
        cat "/proc/$pid/stat" 2>/dev/null || true
    done | awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); s += $12 + $13 } END { printf "%.0f", s * 1000000 / hz }'
}

HDR=(-H "Authorization: Bearer $TOKEN" -H "X-Purpose: service-handling")
SCENARIO_BODY="{\"subjects\": {\"uscc\": \"$USCC\"}}"

# One request per target, checked, before any load: a benchmark of 401s is no benchmark.
probe() {
    local name=$1 url=$2 want=${3:-}
    shift 3 || shift $#
    local out size version
    out=$(curl -sS -k -m 5 -o "$TMP/probe.body" -D "$TMP/probe.head" -w '%{http_code} %{size_download} %{http_version}' \
        "${HDR[@]}" "$@" "$url") || die "$name: $url unreachable"
    [[ ${out%% *} == 200 ]] || die "$name: $url answered ${out%% *}: $(head -c 300 "$TMP/probe.body")"
    if [[ -n $want ]] && ! grep -qi -- "$want" "$TMP/probe.head" "$TMP/probe.body"; then
        die "$name: $url lacks '$want' in its answer: $(head -c 400 "$TMP/probe.body")"
    fi
    read -r _ size version <<<"$out"
    log "$name: 200, $size bytes, HTTP/$version"
}

# wrk scripts: the report line; the open-restaurant scenario as one POST;
# its nginx counterpart as four requests per unit, in turn on each connection.
cat >"$TMP/report.lua" <<'EOF'
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("RESULT %.1f %d %d %d %d\n",
        summary.requests / (summary.duration / 1e6),
        latency:percentile(99),
        e.status, e.connect + e.read + e.write + e.timeout, summary.requests))
end
EOF
{
    cat <<EOF
local req
init = function(args)
    wrk.headers["Content-Type"] = "application/json"
    req = wrk.format("POST", "/v1/scenarios/open-restaurant", nil, '$SCENARIO_BODY')
end
request = function() return req end
EOF
    cat "$TMP/report.lua"
} >"$TMP/scenario.lua"
{
    cat <<EOF
local reqs = {}
local i = 0
init = function(args)
    reqs[1] = wrk.format("GET", "/api/v2/licences/$USCC?purpose=service-handling&caseNo=")
    reqs[2] = wrk.format("GET", "/api/v2/food-permits?tyshxydm=$USCC&purpose=service-handling&caseNo=")
    reqs[3] = wrk.format("POST", "/openapi/v1/health-certificates/query",
        { ["Content-Type"] = "application/json", ["X-Request-Purpose"] = "service-handling" },
        '$HEALTH_REQ')
    reqs[4] = wrk.format("POST", "/services/FireSafetyInspection",
        { ["Content-Type"] = "text/xml; charset=utf-8", ["SOAPAction"] = '"urn:fire-rescue:GetInspection"' },
        '$FIRE_REQ')
end
request = function()
    i = i % 4 + 1
    return reqs[i]
end
EOF
    cat "$TMP/report.lua"
} >"$TMP/four.lua"

# Prints "req/s p99_us requests" of one run.
run_wrk() {
    local name=$1 url=$2 secs=$3 script=$4 out line rps p99 bad errs n
    out=$(timeout $((secs + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency \
        -s "$script" "${HDR[@]}" "$url" 2>&1) || die "wrk failed on $name: $out"
    line=$(grep '^RESULT ' <<<"$out" | tail -n1)
    [[ -n $line ]] || die "wrk printed no result for $name: $out"
    read -r _ rps p99 bad errs n <<<"$line"
    ((bad == 0)) || die "$name: $bad answers were not 2xx/3xx"
    ((errs == 0)) || log "$name: $errs socket errors"
    echo "$rps $p99 $n"
}
# h2load over h2c (prior knowledge): no percentiles, so p99 is reported as 0.
run_h2() {
    local name=$1 url=$2 secs=$3 out rps n ok
    out=$(timeout $((secs + 30)) h2load -t"$THREADS" -c"$H2_CLIENTS" -m"$H2_STREAMS" -D"$secs" \
        "${HDR[@]}" "$url" 2>&1) || die "h2load failed on $name: $out"
    rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<<"$out")
    read -r n ok < <(awk '/^requests:/ { print $2, $8 }' <<<"$out")
    [[ -n $rps && -n $n ]] || die "h2load printed no result for $name: $out"
    grep -q '^status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' <<<"$out" ||
        die "$name: h2load saw non-2xx answers: $(grep '^status codes' <<<"$out")"
    echo "$rps 0 $ok"
}

# The rows. KEYS in the order they run within a round.
declare -A DESC URL TOOL WHO SCRIPT
row() { # key tool who script url description
    KEYS+=("$1")
    TOOL[$1]=$2 WHO[$1]=$3 SCRIPT[$1]=$4 URL[$1]=$5 DESC[$1]=$6
}
KEYS=()
P=http://127.0.0.1
S=https://localhost
LIC=licences/$USCC
row a wrk nginx report "$P:$PX_PORT/$LIC" "nginx reverse proxy (2 workers, keepalive)"
row e wrk bare report "$P:$BARE_PORT/$LIC" "bare hyper reverse proxy (same crates)"
row b wrk gw report "$P:$OW_PORT/v1/proxy/market-supervision/$LIC" "onewindow pass-through"
row c wrk gw report "$P:$OW_PORT/v1/datasets/business-licence/$USCC" "onewindow cached dataset read"
row f wrk nginx report "$S:$PXS_PORT/$LIC" "nginx TLS reverse proxy"
row t wrk bares report "$S:$BARES_PORT/$LIC" "bare hyper TLS reverse proxy"
row g wrk gw report "$S:$OWS_PORT/v1/datasets/business-licence/$USCC" "onewindow TLS cached dataset read"
row h wrk nginx four "$P:$PX_PORT/" "nginx: 4 sequential fetches (the scenario's 4 department calls)"
row i wrk gw scenario "$P:$OW_PORT/v1/scenarios/open-restaurant" "onewindow open-restaurant scenario (4 parts)"
row j h2 nginx - "$P:$PX2_PORT/$LIC" "nginx h2c reverse proxy"
row k h2 bare - "$P:$BARE_PORT/$LIC" "bare hyper h2c reverse proxy"
row l h2 gw - "$P:$OW_PORT/v1/datasets/business-licence/$USCC" "onewindow h2c cached dataset read"

pid_of() {
    case ${WHO[$1]} in
        nginx) echo "$NGINX_PROXY_PID" ;;
        bare) echo "$BARE_PID" ;;
        bares) echo "$BARES_PID" ;;
        gw) echo "$OW_PID" ;;
    esac
}
run_row() { # key secs
    local k=$1 secs=$2
    if [[ ${TOOL[$k]} == h2 ]]; then
        run_h2 "$k" "${URL[$k]}" "$secs"
    else
        run_wrk "$k" "${URL[$k]}" "$secs" "$TMP/${SCRIPT[$k]}.lua"
    fi
}

declare -A RPS P99 CSW CPU
measure() {
    local key=$1 res pid before after cpu0 cpu1 rps p99 n
    pid=$(pid_of "$key")
    # Earlier runs' dirty pages (audit files) are flushed first, so that their
    # write-back does not land on the fdatasyncs of this run.
    sync
    before=$(ctx_switches "$pid")
    cpu0=$(cpu_us "$pid")
    res=$(run_row "$key" "$DURATION")
    cpu1=$(cpu_us "$pid")
    after=$(ctx_switches "$pid")
    read -r rps p99 n <<<"$res"
    RPS[$key]+="$rps "
    P99[$key]+="$p99 "
    CSW[$key]+="$(awk -v d=$((after - before)) -v n="$n" 'BEGIN { printf "%.2f", (n > 0 ? d / n : 0) }') "
    CPU[$key]+="$(awk -v d=$((cpu1 - cpu0)) -v n="$n" 'BEGIN { printf "%.0f", (n > 0 ? d / n : 0) }') "
    log "  $key: $(awk -v r="$rps" -v p="$p99" 'BEGIN { printf "%.0f req/s, p99 %.2f ms", r, p / 1000 }'), $((after - before)) context switches and $(((cpu1 - cpu0) / 1000)) ms of CPU over $n requests"
}
median() {
    tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '
        { v[NR] = $1 }
        END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ---------------------------------------------------------------- 4. the rows, alternated
start_onewindow "$TMP/data-always"
log "onewindow (fsync = always) on 127.0.0.1:$OW_PORT (TLS :$OWS_PORT), pid $OW_PID"
probe a "${URL[a]}"
probe e "${URL[e]}"
probe b "${URL[b]}"
probe c "${URL[c]}" "x-cache"
probe c "${URL[c]}" "x-cache: hit"
probe f "${URL[f]}"
probe t "${URL[t]}"
probe g "${URL[g]}" "x-cache: hit"
probe i "${URL[i]}" '"complete":true' -X POST -H 'Content-Type: application/json' --data-binary "$SCENARIO_BODY"
probe h-food "$P:$PX_PORT/api/v2/food-permits?tyshxydm=$USCC"
probe h-fire "$P:$PX_PORT/services/FireSafetyInspection" "GetInspectionResponse" -X POST --data-binary "$FIRE_REQ"
probe j "${URL[j]}" "" --http2-prior-knowledge
probe k "${URL[k]}" "" --http2-prior-knowledge
probe l "${URL[l]}" "x-cache: hit" --http2-prior-knowledge
if ((WARMUP > 0)); then
    log "warm-up (${WARMUP}s each)"
    for k in "${KEYS[@]}"; do run_row "$k" "$WARMUP" >/dev/null; done
fi
for r in $(seq "$ROUNDS"); do
    log "round $r/$ROUNDS: ${KEYS[*]} (${DURATION}s each; wrk -t$THREADS -c$CONNECTIONS; h2load -c$H2_CLIENTS -m$H2_STREAMS)"
    for k in "${KEYS[@]}"; do measure "$k"; done
done
RSS_ALWAYS=$(peak_rss_kb "$OW_PID")
stop_onewindow

# ---------------------------------------------------------------- 5. audit cost
# c (fsync = "always") against d (fsync = "never"), alternated, fresh process each.
cp "$GW" "$TMP/gateway-always.toml"
sed 's|^fsync = .*|fsync = "never"|' "$TMP/gateway-always.toml" >"$TMP/gateway-never.toml"
TOOL[c2]=wrk SCRIPT[c2]=report URL[c2]=${URL[c]} WHO[c2]=gw
TOOL[d2]=wrk SCRIPT[d2]=report URL[d2]=${URL[c]} WHO[d2]=gw
# And m2: the same cached read by a node in cluster mode (rate limits shared
# through a local redis-server, fsync per batch), when redis-server is here.
TOOL[m2]=wrk SCRIPT[m2]=report URL[m2]=${URL[c]} WHO[m2]=gw
VARIANTS=(c2 d2)
if command -v redis-server >/dev/null || [[ -x /usr/bin/redis-server ]]; then
    REDIS_PORT=$(free_port)
    "$(command -v redis-server || echo /usr/bin/redis-server)" --bind 127.0.0.1 --port "$REDIS_PORT" \
        --save '' --appendonly no >"$TMP/redis.log" 2>&1 &
    PIDS+=("$!")
    wait_port "$REDIS_PORT" redis-server "$!"
    VARIANTS+=(m2)
else
    log "no redis-server: the cluster-mode row is skipped (apt-get install redis-server)"
fi
RSS_NEVER=0
for r in $(seq "$ROUNDS"); do
    log "audit round $r/$ROUNDS: ${VARIANTS[*]}"
    for v in "${VARIANTS[@]}"; do
        # Every run starts on an empty data directory: a gateway on a
        # directory holding millions of records measured slower per request
        # (docs/PERFORMANCE.md, "Run-to-run spread"), and the rows before
        # this one filled the shared one.
        rm -rf "$TMP/data-audit-run"
        if [[ $v == c2 ]]; then
            cp "$TMP/gateway-always.toml" "$GW"
            start_onewindow "$TMP/data-audit-run"
        elif [[ $v == m2 ]]; then
            cp "$TMP/gateway-always.toml" "$GW"
            OW_EXTRA=(--redis "redis://127.0.0.1:$REDIS_PORT/" --node load-node)
            start_onewindow "$TMP/data-audit-run"
            OW_EXTRA=()
        else
            cp "$TMP/gateway-never.toml" "$GW"
            start_onewindow "$TMP/data-audit-run"
        fi
        probe "$v" "${URL[c]}"
        if ((WARMUP > 0)); then run_row "$v" "$WARMUP" >/dev/null; fi
        measure "$v"
        rss=$(peak_rss_kb "$OW_PID")
        if [[ $v == d2 ]]; then
            if ((rss > RSS_NEVER)); then RSS_NEVER=$rss; fi
        elif [[ $v == c2 ]] && ((rss > RSS_ALWAYS)); then
            RSS_ALWAYS=$rss
        fi
        stop_onewindow
    done
done
cp "$TMP/gateway-always.toml" "$GW"

# ---------------------------------------------------------------- 6. idle keep-alive connections
# Sets IDLE_RESULT to "rss_before rss_open rss_after opened still req/s" (RSS in KB).
IDLE_PID=
IDLE_RESULT=
idle_test() {
    local name=$1 pid=$2 port=$3 path=$4 url=$5
    local ready=$TMP/idle-$name.ready release=$TMP/idle-$name.release before open after line still rps
    rm -f "$ready" "$release"
    before=$(rss_kb "$pid")
    HOLD_SECS=$((DURATION + 60)) timeout $((DURATION + 240)) python3 "$IDLE_CLIENT" 127.0.0.1 "$port" "$path" \
        "$IDLE_CONNS" "$ready" "$release" "Authorization: Bearer $TOKEN" "X-Purpose: service-handling" \
        >"$TMP/idle-$name.log" 2>&1 &
    IDLE_PID=$!
    for _ in $(seq 1800); do
        [[ -s $ready ]] && break
        kill -0 "$IDLE_PID" 2>/dev/null || die "idle client ($name) ended early: $(cat "$TMP/idle-$name.log")"
        sleep 0.1
    done
    [[ -s $ready ]] || die "idle client ($name) did not open $IDLE_CONNS connections within 3 minutes"
    sleep 1
    open=$(rss_kb "$pid")
    # Requests still pass while the connections are open (and are counted).
    probe "idle-$name" "$url"
    rps=$(run_wrk "idle-$name" "$url" "$(((DURATION + 1) / 2))" "$TMP/report.lua" | cut -d' ' -f1)
    touch "$release"
    wait "$IDLE_PID" || die "idle client ($name) failed: $(cat "$TMP/idle-$name.log")"
    IDLE_PID=
    still=$(awk '/^STILL/ { print $2 }' "$TMP/idle-$name.log")
    read -r _ opened _ <"$ready"
    # The connections are gone: memory should be back where it was.
    sleep 2
    after=$(rss_kb "$pid")
    log "idle $name: $opened opened, $still still open at the end; RSS ${before} -> ${open} -> ${after} KB; ${rps} req/s meanwhile"
    IDLE_RESULT="$before $open $after $opened ${still:-0} $rps"
}
IDLE_GW=
IDLE_NGX=
if ((IDLE_CONNS > 0)); then
    # Room for the idle connections plus the wrk run; idle keep-alive
    # connections outlive the measurement (the idle timeout bounds a parked
    # connection; the header read timeout, its first byte and any head).
    sed -i \
        -e "s|^max_connections = .*|max_connections = $((IDLE_CONNS + 1000))|" \
        -e "s|^header_read_timeout_ms = .*|header_read_timeout_ms = 300000|" \
        -e "s|^idle_timeout_secs = .*|idle_timeout_secs = 300|" \
        "$GW"
    grep -q "^max_connections = $((IDLE_CONNS + 1000))" "$GW" && grep -q '^header_read_timeout_ms = 300000' "$GW" ||
        die "could not raise max_connections / header_read_timeout_ms in $GW"
    start_onewindow "$TMP/data-idle"
    probe c "${URL[c]}" "x-cache"
    run_wrk warm "${URL[c]}" 1 "$TMP/report.lua" >/dev/null
    idle_test onewindow "$OW_PID" "$OW_PORT" "/v1/datasets/business-licence/$USCC" "${URL[c]}"
    IDLE_GW=$IDLE_RESULT
    stop_onewindow
    cp "$TMP/gateway-always.toml" "$GW"
    idle_test nginx "$NGINX_PROXY_PID" "$PX_PORT" "/$LIC" "${URL[a]}"
    IDLE_NGX=$IDLE_RESULT
fi

# ---------------------------------------------------------------- 7. report
declare -A MR MP MC MU
for k in "${KEYS[@]}" "${VARIANTS[@]}"; do
    MR[$k]=$(median "${RPS[$k]}")
    MP[$k]=$(median "${P99[$k]}")
    MC[$k]=$(median "${CSW[$k]}")
    MU[$k]=$(median "${CPU[$k]}")
done

args=()
for k in "${KEYS[@]}" "${VARIANTS[@]}"; do
    args+=(-v "r_$k=${MR[$k]}" -v "p_$k=${MP[$k]}" -v "c_$k=${MC[$k]}" -v "u_$k=${MU[$k]}")
done
for k in "${KEYS[@]}"; do
    args+=(-v "desc_$k=${DESC[$k]}")
done
awk "${args[@]}" -v idle_gw="$IDLE_GW" -v idle_ngx="$IDLE_NGX" -v idle_n="$IDLE_CONNS" \
    -v rss1="$RSS_ALWAYS" -v rss2="$RSS_NEVER" \
    -v rounds="$ROUNDS" -v dur="$DURATION" -v conns="$CONNECTIONS" -v thr="$THREADS" \
    -v h2c="$H2_CLIENTS" -v h2m="$H2_STREAMS" \
    -v cores="$(nproc)" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" -v when="$(date -u '+%Y-%m-%d %H:%M UTC')" '
function ok(b) { return b ? "yes" : "**no**" }
function x(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }
function ms(p) { return p > 0 ? sprintf("%.2f", p / 1000) : "-" }
# 12345.6 -> "12,346" (mawk has no %s).
function th(n,    s, out) {
    s = sprintf("%.0f", n)
    while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
    return s out
}
BEGIN {
    printf "\nonewindow load benchmark, %s: medians of %d alternated rounds, %ds each; wrk -t%d -c%d, h2load -t%d -c%d -m%d;\n", when, rounds, dur, thr, conns, thr, h2c, h2m
    printf "%d cores shared by the load generator, nginx, the bare proxy and onewindow; load average at the end: %s.\n\n", cores, load
    printf "| target | req/s | p99 ms | req/s ÷ peer | p99 ÷ peer | context switches / request | CPU µs / request |\n"
    printf "| --- | --- | --- | --- | --- | --- | --- |\n"
    printf "| a) %s | %s | %s | 1.00 | 1.00 | %s | %s |\n", desc_a, th(r_a), ms(p_a), c_a, u_a
    printf "| e) %s | %s | %s | %s (a) | %s (a) | %s | %s |\n", desc_e, th(r_e), ms(p_e), x(r_e, r_a), x(p_e, p_a), c_e, u_e
    printf "| b) %s | %s | %s | %s (a), %s (e) | %s (a) | %s | %s |\n", desc_b, th(r_b), ms(p_b), x(r_b, r_a), x(r_b, r_e), x(p_b, p_a), c_b, u_b
    printf "| c) %s | %s | %s | %s (a) | %s (a) | %s | %s |\n", desc_c, th(r_c), ms(p_c), x(r_c, r_a), x(p_c, p_a), c_c, u_c
    printf "| f) %s | %s | %s | 1.00 | 1.00 | %s | %s |\n", desc_f, th(r_f), ms(p_f), c_f, u_f
    printf "| t) %s | %s | %s | %s (f) | %s (f) | %s | %s |\n", desc_t, th(r_t), ms(p_t), x(r_t, r_f), x(p_t, p_f), c_t, u_t
    printf "| g) %s | %s | %s | %s (f) | %s (f) | %s | %s |\n", desc_g, th(r_g), ms(p_g), x(r_g, r_f), x(p_g, p_f), c_g, u_g
    printf "| h) %s | %s scenarios/s (%s req/s) | %s | 1.00 | 1.00 | %s | %s |\n", desc_h, th(r_h / 4), th(r_h), ms(p_h), c_h, u_h
    printf "| i) %s | %s scenarios/s | %s | %s (h) | - | %s | %s |\n", desc_i, th(r_i), ms(p_i), x(r_i, r_h / 4), c_i, u_i
    printf "| j) %s | %s | - | 1.00 | - | %s | %s |\n", desc_j, th(r_j), c_j, u_j
    printf "| k) %s | %s | - | %s (j) | - | %s | %s |\n", desc_k, th(r_k), x(r_k, r_j), c_k, u_k
    printf "| l) %s | %s | - | %s (j) | - | %s | %s |\n", desc_l, th(r_l), x(r_l, r_j), c_l, u_l
    printf "\nPeers: a for b, c, e; f (nginx TLS) for g, t; h (nginx, 4 fetches = 1 scenario) for i; j (nginx h2c) for k, l. h2load reports no percentiles.\n"
    printf "Context switches and CPU time (user + system): all threads of the process under test (nginx: master + workers; the upstream is not counted), over each run, per request.\n"
    printf "The scenario row: onewindow runs open-restaurant (business licence, food permit, health certificates, fire safety over SOAP) with its parts served from its shared cache after the first call; nginx fetches the same four replies from the same static upstream, one after the other on each connection.\n"

    cost = r_d2 > 0 ? (1 - r_c2 / r_d2) * 100 : 0
    printf "\n| audit cost (cached read, fresh process each run) | req/s | p99 ms |\n| --- | --- | --- |\n"
    printf "| fsync = \"always\" (shipped; fsync per batch) | %s | %s |\n", th(r_c2), ms(p_c2)
    printf "| fsync = \"never\" | %s | %s |\n", th(r_d2), ms(p_d2)
    if (r_m2 > 0) printf "| cluster mode (limits shared through Redis), fsync per batch | %s | %s |\n", th(r_m2), ms(p_m2)
    if (r_m2 > 0) printf "\nCluster mode against single node (same config, fsync per batch): %sx throughput, %sx p99.\n", x(r_m2, r_c2), x(p_m2, p_c2)
    printf "\nThroughput cost of fsync per batch: %.1f %%. onewindow peak RSS (VmHWM) under load: %.1f MB (always), %.1f MB (never).\n", cost, rss1 / 1024, rss2 / 1024

    have_idle = split(idle_gw, g, " ") == 6 && split(idle_ngx, n, " ") == 6
    if (have_idle) {
        printf "\n| %d idle keep-alive connections | RSS before | with them open | per connection | after they closed | still open at the end | req/s meanwhile |\n", idle_n
        printf "| --- | --- | --- | --- | --- | --- | --- |\n"
        printf "| onewindow | %.1f MB | %.1f MB (+%.1f MB) | %.1f KB | %.1f MB | %d of %d | %s |\n", g[1] / 1024, g[2] / 1024, (g[2] - g[1]) / 1024, (g[4] > 0 ? (g[2] - g[1]) / g[4] : 0), g[3] / 1024, g[5], g[4], th(g[6])
        printf "| nginx (master + 2 workers) | %.1f MB | %.1f MB (+%.1f MB) | %.1f KB | %.1f MB | %d of %d | %s |\n", n[1] / 1024, n[2] / 1024, (n[2] - n[1]) / 1024, (n[4] > 0 ? (n[2] - n[1]) / n[4] : 0), n[3] / 1024, n[5], n[4], th(n[6])
        printf "\nEach connection made one request and then stayed idle. For this row only, onewindow ran with max_connections = %d and header/idle timeouts of 300 s (the shipped 60 s idle timeout would close them before they are measured).\n", idle_n + 1000
    }

    printf "\nTargets (issue 18):\n\n"
    printf "- pass-through >= 0.85x bare hyper proxy: %s (%sx); >= 0.75x nginx: %s (%sx)\n", ok(r_b >= 0.85 * r_e), x(r_b, r_e), ok(r_b >= 0.75 * r_a), x(r_b, r_a)
    printf "- cached read >= 1.5x nginx: %s (%sx)\n", ok(r_c >= 1.5 * r_a), x(r_c, r_a)
    printf "- TLS cached read >= 1.2x nginx TLS proxy: %s (%sx)\n", ok(r_g >= 1.2 * r_f), x(r_g, r_f)
    printf "- p99 <= 2x nginx: pass-through %s (%sx), cached read %s (%sx), TLS %s (%sx)\n", ok(p_b <= 2 * p_a), x(p_b, p_a), ok(p_c <= 2 * p_a), x(p_c, p_a), ok(p_g <= 2 * p_f), x(p_g, p_f)
    if (have_idle) printf "- %d idle connections add < 60 MB RSS: %s (+%.1f MB)\n", idle_n, ok((g[2] - g[1]) < 60 * 1024), (g[2] - g[1]) / 1024
    printf "- audit fsync per batch costs < 10 %% of cached-read throughput: %s (%.1f %%)\n", ok(cost < 10), cost
}'
