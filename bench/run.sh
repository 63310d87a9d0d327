#!/usr/bin/env bash
# Throughput and latency of the gateway against a local stub upstream, all on
# loopback. ROUNDS (default 2) interleaved rounds of:
#   direct         the stub upstream alone
#   free           through the gateway, a cost-0 route (auth, no debit)
#   priced         through the gateway, a cost-1 route (one Redis debit script)
#   nginx_proxy    plain nginx proxy_pass to the same stub (peer)
#   nginx_lua      nginx + Lua access phase running the same debit script (peer)
#   floor          examples/floor_proxy.rs: a bare hyper per-core proxy (the floor)
#   floor_priced   the same plus one EVALSHA of the debit script per request, as
#                  the nginx + Lua peer makes it (the floor of the priced route)
#   free_log       the free route on a second gateway with its access log on
#                  (CREDITGATE_LOG=info, written to a file)
# and, when named in TARGETS (not by default):
#   priced_limits  the priced route for accounts whose plan has two extra
#                  windows (1h, 1d) and that hold an active prepaid grant
#                  (the allowance pays: the grant is live but not spent)
#   priced_grant   the same plan with a zero allowance: every debit is paid
#                  from the grant (the grants are read and written each time)
#   e.g. TARGETS="priced priced_limits priced_grant" EXTRAS=0 bash bench/run.sh
# and the best round of each is reported. Then, once:
#   priced_512     the priced route at 512 connections (the RSS target)
#   nginx_lua_512  the peer at 512 connections
#   priced_h2      the priced route over HTTP/2 (h2load, CONNECTIONS/4
#                  connections x 4 streams; p50/p99 from its request log)
#
#   bash bench/run.sh            # DURATION=10s CONNECTIONS=64 ACCOUNTS=1000 ROUNDS=2 to tune;
#                                # TARGETS="free priced" EXTRAS=0 for a quick partial run;
#                                # GATEWAY_BIN=path/to/creditgate to measure another build
#   PROFILE="free priced" bash bench/run.sh   # also perf-record the proxy under test
#                                             # during the first run of each named target
#                                             # (into $PROFILE_OUT-<name>.data, default ./perf-<name>.data)
#
# Needs wrk, h2load, redis-server, nginx, libnginx-mod-http-lua and
# lua-nginx-redis (installed with apt-get when missing, as root). Exits
# non-zero if any run saw errors or non-2xx answers.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
ACCOUNTS=${ACCOUNTS:-1000}
BASE_PORT=${BASE_PORT:-18000}
REDIS_PORT=$((BASE_PORT + 379))
STUB_PORT=$((BASE_PORT + 1))
DATA_PORT=$((BASE_PORT + 80))
NGINX_PROXY_PORT=$((BASE_PORT + 81))
NGINX_LUA_PORT=$((BASE_PORT + 82))
ADMIN_PORT=$((BASE_PORT + 90))
LOG_DATA_PORT=$((BASE_PORT + 83))
LOG_ADMIN_PORT=$((BASE_PORT + 91))
FLOOR_PORT=$((BASE_PORT + 84))
FLOOR_PRICED_PORT=$((BASE_PORT + 85))
TOKEN=bench-admin-token

if ! command -v wrk >/dev/null || ! command -v h2load >/dev/null || ! command -v redis-server >/dev/null \
   || ! command -v nginx >/dev/null || ! command -v curl >/dev/null \
   || [ ! -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || [ ! -f /usr/share/lua/5.1/nginx/redis.lua ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client redis-server curl nginx \
    libnginx-mod-http-lua lua-nginx-redis >/dev/null
fi

cargo build --release --quiet --bin creditgate --example stub_upstream --example floor_proxy
# GATEWAY_BIN: another build of the gateway to measure (an A/B against an
# older commit, say), in the same run as the peers and the floor.
BIN=${GATEWAY_BIN:-target/release/creditgate}
STUB=target/release/examples/stub_upstream
FLOOR=target/release/examples/floor_proxy

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
"$STUB" "127.0.0.1:$STUB_PORT" 2>"$WORK/stub.log" &
PIDS+=($!)

cat >"$WORK/bench.toml" <<TOML
[server]
listen = "127.0.0.1:$DATA_PORT"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
token = "$TOKEN"
[ledger]
redis_url = "redis://127.0.0.1:$REDIS_PORT/0"
timeout = "1s"
[plans.bench]
monthly_allowance = 1000000000
[plans.limits]
monthly_allowance = 1000000000
limits = [{ window = "1h", credits = 1000000000 }, { window = "1d", credits = 1000000000 }]
[plans.grantpaid]
monthly_allowance = 0
limits = [{ window = "1h", credits = 1000000000 }, { window = "1d", credits = 1000000000 }]
[upstreams.stub]
url = "http://127.0.0.1:$STUB_PORT"
[[routes]]
name = "free"
path = "/bench/free"
upstream = "stub"
cost = 0
[[routes]]
name = "priced"
path = "/bench/priced"
upstream = "stub"
cost = 1
TOML

# The second gateway: same config and Redis, its own ports, access log on.
sed -e "s/127.0.0.1:$DATA_PORT/127.0.0.1:$LOG_DATA_PORT/" -e "s/127.0.0.1:$ADMIN_PORT/127.0.0.1:$LOG_ADMIN_PORT/" \
  "$WORK/bench.toml" >"$WORK/bench-log.toml"

for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
CREDITGATE_LOG=warn "$BIN" serve --config "$WORK/bench.toml" 2>"$WORK/gateway.log" &
GATEWAY_PID=$!
PIDS+=($GATEWAY_PID)
CREDITGATE_LOG=info "$BIN" serve --config "$WORK/bench-log.toml" 2>"$WORK/access.log" &
LOG_GATEWAY_PID=$!
PIDS+=($LOG_GATEWAY_PID)
"$FLOOR" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$STUB_PORT" 2>"$WORK/floor.log" &
FLOOR_PID=$!
PIDS+=($FLOOR_PID)
for port in "$ADMIN_PORT" "$LOG_ADMIN_PORT"; do
  for _ in $(seq 100); do curl -fs "127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done

echo "creating $ACCOUNTS accounts with keys …"
: >"$WORK/keys.txt"
: >"$WORK/accounts.txt"
for i in $(seq "$ACCOUNTS"); do
  echo "bench-$i" >>"$WORK/accounts.txt"
  curl -fs -X PUT "127.0.0.1:$ADMIN_PORT/admin/v1/accounts/bench-$i" \
    -H "Authorization: Bearer $TOKEN" -d '{"plan":"bench"}' >/dev/null
  key=$(curl -fs -X POST "127.0.0.1:$ADMIN_PORT/admin/v1/accounts/bench-$i/keys" \
    -H "Authorization: Bearer $TOKEN" | sed 's/.*"key":"\([^"]*\)".*/\1/')
  printf '%s\n' "$key" >>"$WORK/keys.txt"
done
# Accounts for priced_limits / priced_grant: their plan, a key, an active grant.
for plan in limits grantpaid; do
  target=priced_$plan
  [ "$plan" = grantpaid ] && target=priced_grant
  case " ${TARGETS:-} " in *" $target "*) ;; *) continue ;; esac
  echo "creating $ACCOUNTS accounts on plan $plan, each with a grant …"
  : >"$WORK/keys-$plan.txt"
  for i in $(seq "$ACCOUNTS"); do
    curl -fs -X PUT "127.0.0.1:$ADMIN_PORT/admin/v1/accounts/$plan-$i" \
      -H "Authorization: Bearer $TOKEN" -d "{\"plan\":\"$plan\"}" >/dev/null
    curl -fs -X POST "127.0.0.1:$ADMIN_PORT/admin/v1/accounts/$plan-$i/grants" \
      -H "Authorization: Bearer $TOKEN" -d '{"credits":1000000000,"note":"bench"}' >/dev/null
    key=$(curl -fs -X POST "127.0.0.1:$ADMIN_PORT/admin/v1/accounts/$plan-$i/keys" \
      -H "Authorization: Bearer $TOKEN" | sed 's/.*"key":"\([^"]*\)".*/\1/')
    printf '%s\n' "$key" >>"$WORK/keys-$plan.txt"
  done
done

# wrk rotates over the keys (gateway) or account ids (nginx peer).
cat >"$WORK/rotate.lua" <<'LUA'
local tokens = {}
for line in io.lines(os.getenv("KEYS_FILE")) do tokens[#tokens + 1] = line end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", wrk.path, { ["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1] })
end
LUA

# The peer: nginx with a Lua access phase that runs the gateway's own debit
# script (same key layout, same Redis) before proxy_pass; its account is the
# bearer token itself (no key lookup), which only flatters the peer.
cat src/ledger/redis/lua/prelude.lua src/ledger/redis/lua/debit.lua >"$WORK/debit.lua"
"$FLOOR" "127.0.0.1:$FLOOR_PRICED_PORT" "127.0.0.1:$STUB_PORT" "$(nproc)" \
  "redis://127.0.0.1:$REDIS_PORT/0" "$WORK/debit.lua" 2>"$WORK/floor-priced.log" &
FLOOR_PRICED_PID=$!
PIDS+=($FLOOR_PRICED_PID)
mkdir -p "$WORK/nginx-tmp"
cat >"$WORK/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-tmp;
  proxy_temp_path $WORK/nginx-tmp;
  lua_package_path "/usr/share/lua/5.1/?.lua;;";
  upstream stub { server 127.0.0.1:$STUB_PORT; keepalive 64; }
  init_by_lua_block {
    local f = io.open("$WORK/debit.lua")
    DEBIT = f:read("*a")
    f:close()
    DEBIT_SHA = (ngx.sha1_bin(DEBIT):gsub(".", function(c) return string.format("%02x", c:byte()) end))
  }
  server {
    listen 127.0.0.1:$NGINX_PROXY_PORT;
    location / { proxy_pass http://stub; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:$NGINX_LUA_PORT;
    location / {
      access_by_lua_block {
        local redis = require "nginx.redis"
        local red = redis:new()
        red:set_timeout(1000)
        local ok = red:connect("127.0.0.1", $REDIS_PORT)
        if not ok then return ngx.exit(503) end
        local account = string.sub(ngx.var.http_authorization or "", 8)
        local k = "cg:{" .. account .. "}:"
        -- The gateway's own id form: 16 hex digits packed into 8 bytes after a flags byte.
        local function packed(hex)
          return string.char(2) .. (hex:gsub("..", function(h) return string.char(tonumber(h, 16)) end))
        end
        local rid = ngx.var.request_id
        local id, fallback = packed(string.sub(rid, 1, 16)), packed(string.sub(rid, 17, 32))
        -- One debit per call (a batch of one): window, retention, plan table, then the debit.
        local res, err = red:evalsha(DEBIT_SHA, 6, k .. "a", k .. "w", k .. "i", k .. "u", k .. "g", k .. "q",
          2592000000, 7776000000, 1, "bench", 1000000000, "", 1, id, fallback, "", "priced", 0, "")
        if not res and err and string.find(err, "NOSCRIPT", 1, true) then
          res, err = red:eval(DEBIT, 6, k .. "a", k .. "w", k .. "i", k .. "u", k .. "g", k .. "q",
            2592000000, 7776000000, 1, "bench", 1000000000, "", 1, id, fallback, "", "priced", 0, "")
        end
        red:set_keepalive(10000, 256)
        if not res then return ngx.exit(503) end
        if string.sub(res, 1, 1) ~= "A" then return ngx.exit(429) end
      }
      proxy_pass http://stub; proxy_http_version 1.1; proxy_set_header Connection "";
    }
  }
}
NGINX
nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log"

FAILED=0
declare -A RPS P50 P99 CPU
REDIS_PID=${PIDS[0]}
STUB_PID=${PIDS[1]}
NGINX_PIDS() { cat "$WORK/nginx.pid"; pgrep -P "$(cat "$WORK/nginx.pid")"; }
# The process(es) whose CPU the proxy column counts, per target.
proxy_pids() {
  case $1 in
    direct) ;;
    nginx_*) NGINX_PIDS ;;
    floor_priced*) echo "$FLOOR_PRICED_PID" ;;
    floor*) echo "$FLOOR_PID" ;;
    free_log*) echo "$LOG_GATEWAY_PID" ;;
    *) echo "$GATEWAY_PID" ;;
  esac
}
# CPU time (clock ticks, user + system, all threads) of a set of processes.
ticks() { local total=0 pid; for pid in "$@"; do
  total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0))); done; echo "$total"; }
cpu_snapshot() { echo "$(ticks $(proxy_pids "$1")) $(ticks "$REDIS_PID") $(ticks "$STUB_PID")"; }
# wrk prints latencies as e.g. 812.00us / 1.20ms / 1.01s; normalise to ms.
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 } else { sub(/s$/, "", v); print v * 1000 } }'; }
# CPU microseconds per request (proxy/redis/stub) from two snapshots.
per_request() { awk -v b="$1" -v a="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    split(b, x, " "); split(a, y, " ");
    per = 1e6 / hz / n;
    printf "%.1f/%.1f/%.1f", (y[1] - x[1]) * per, (y[2] - x[2]) * per, (y[3] - x[3]) * per }'; }
declare -A PROFILED
start_profile() {
  PERF_PID=
  case " ${PROFILE:-} " in
    *" $1 "*)
      [ -n "${PROFILED[$1]:-}" ] && return
      PROFILED[$1]=1
      perf record -F "${PERF_FREQ:-2000}" ${PERF_CALLGRAPH:--g} -p "$(proxy_pids "$1" | head -1)" -o "${PROFILE_OUT:-perf}-$1.data" \
        -- sleep "${DURATION%s}" 2>/dev/null &
      PERF_PID=$!
      ;;
  esac
}
# Keeps the round with the most requests per second of each target.
keep_best() {
  local name=$1 rps=$2 p50=$3 p99=$4 cpu=$5
  if [ -z "${RPS[$name]:-}" ] || awk -v a="$rps" -v b="${RPS[$name]}" 'BEGIN { exit !(a > b) }'; then
    RPS[$name]=$rps; P50[$name]=$p50; P99[$name]=$p99; CPU[$name]=$cpu
  fi
}
# load NAME URL CONNECTIONS [wrk args…]
load() {
  local name=$1 url=$2 connections=$3; shift 3
  local out="$WORK/$name.txt" before after requests
  before=$(cpu_snapshot "$name")
  start_profile "$name"
  wrk -t"$THREADS" -c"$connections" -d"$DURATION" --latency "$@" "$url" >"$out" 2>&1
  after=$(cpu_snapshot "$name")
  [ -n "$PERF_PID" ] && wait "$PERF_PID"
  requests=$(awk '/requests in/ { print $1 }' "$out")
  keep_best "$name" "$(awk '/^Requests\/sec/ { print $2 }' "$out")" \
    "$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")" \
    "$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")" \
    "$(per_request "$before" "$after" "$requests")"
  if grep -qE 'Non-2xx|Socket errors' "$out"; then
    echo "!! $name: errors:"; grep -E 'Non-2xx|Socket errors' "$out"; FAILED=1
  fi
}
# h2load NAME URL: HTTP/2 (prior knowledge), one key, percentiles from the request log.
load_h2() {
  local name=$1 url=$2
  local out="$WORK/$name.txt" log="$WORK/$name.log" before after requests
  local streams=4 connections=$((CONNECTIONS / 4))
  before=$(cpu_snapshot "$name")
  h2load -c"$connections" -m"$streams" -t1 -D"${DURATION%s}" --log-file="$log" \
    -H "authorization: Bearer $(head -1 "$WORK/keys.txt")" "$url" >"$out" 2>&1
  after=$(cpu_snapshot "$name")
  requests=$(awk '/^requests:/ { print $2 }' "$out")
  local rps p50 p99
  rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$out")
  p50=$(awk '{ print $3 }' "$log" | sort -n | awk '{ v[NR] = $1 } END { printf "%.3f", v[int(NR * 0.50)] / 1000 }')
  p99=$(awk '{ print $3 }' "$log" | sort -n | awk '{ v[NR] = $1 } END { printf "%.3f", v[int(NR * 0.99)] / 1000 }')
  keep_best "$name" "$rps" "$p50" "$p99" "$(per_request "$before" "$after" "$requests")"
  if ! grep -qE '^status codes: [0-9]+ 2xx, 0 3xx, 0 4xx, 0 5xx' "$out" || ! grep -qE ' 0 failed, 0 errored' "$out"; then
    echo "!! $name: errors:"; grep -E '^(requests|status codes):' "$out"; FAILED=1
  fi
}

echo "warming up …"
for port in "$DATA_PORT" "$LOG_DATA_PORT"; do
  KEYS_FILE="$WORK/keys.txt" wrk -t1 -c8 -d2s -s "$WORK/rotate.lua" "http://127.0.0.1:$port/bench/priced" >/dev/null
done
KEYS_FILE="$WORK/accounts.txt" wrk -t1 -c8 -d2s -s "$WORK/rotate.lua" "http://127.0.0.1:$NGINX_LUA_PORT/bench/priced" >/dev/null
wrk -t1 -c8 -d1s "http://127.0.0.1:$FLOOR_PORT/bench/direct" >/dev/null
KEYS_FILE="$WORK/accounts.txt" wrk -t1 -c8 -d1s -s "$WORK/rotate.lua" "http://127.0.0.1:$FLOOR_PRICED_PORT/bench/priced" >/dev/null

PARTIAL=${TARGETS:+1}
TARGETS=${TARGETS:-direct free priced nginx_proxy nginx_lua floor floor_priced free_log}
LOADS=()
for round in $(seq "$ROUNDS"); do
  echo "round $round: load average $(cut -d' ' -f1-3 /proc/loadavg)"
  LOADS+=("$(cut -d' ' -f1 /proc/loadavg)")
  # Alternate the order, so no target always runs right after the same one.
  order=$TARGETS
  [ $((round % 2)) -eq 0 ] && order=$(echo "$TARGETS" | tr ' ' '\n' | tac | tr '\n' ' ')
  for name in $order; do
    case $name in
      direct) load direct "http://127.0.0.1:$STUB_PORT/bench/direct" "$CONNECTIONS" ;;
      free) KEYS_FILE="$WORK/keys.txt" load free "http://127.0.0.1:$DATA_PORT/bench/free" "$CONNECTIONS" -s "$WORK/rotate.lua" ;;
      priced) KEYS_FILE="$WORK/keys.txt" load priced "http://127.0.0.1:$DATA_PORT/bench/priced" "$CONNECTIONS" -s "$WORK/rotate.lua" ;;
      priced_limits) KEYS_FILE="$WORK/keys-limits.txt" load priced_limits "http://127.0.0.1:$DATA_PORT/bench/priced" "$CONNECTIONS" -s "$WORK/rotate.lua" ;;
      priced_grant) KEYS_FILE="$WORK/keys-grantpaid.txt" load priced_grant "http://127.0.0.1:$DATA_PORT/bench/priced" "$CONNECTIONS" -s "$WORK/rotate.lua" ;;
      nginx_proxy) load nginx_proxy "http://127.0.0.1:$NGINX_PROXY_PORT/bench/direct" "$CONNECTIONS" ;;
      nginx_lua) KEYS_FILE="$WORK/accounts.txt" load nginx_lua "http://127.0.0.1:$NGINX_LUA_PORT/bench/priced" "$CONNECTIONS" -s "$WORK/rotate.lua" ;;
      floor) load floor "http://127.0.0.1:$FLOOR_PORT/bench/direct" "$CONNECTIONS" ;;
      floor_priced) KEYS_FILE="$WORK/accounts.txt" load floor_priced "http://127.0.0.1:$FLOOR_PRICED_PORT/bench/priced" "$CONNECTIONS" -s "$WORK/rotate.lua" ;;
      free_log) KEYS_FILE="$WORK/keys.txt" load free_log "http://127.0.0.1:$LOG_DATA_PORT/bench/free" "$CONNECTIONS" -s "$WORK/rotate.lua" ;;
    esac
  done
done
if [ "${EXTRAS:-1}" = 0 ]; then
  # Quick runs (profiling): the table of what ran, no verdicts.
  for name in $TARGETS; do echo "$name ${RPS[$name]} req/s p99 ${P99[$name]} ms cpu ${CPU[$name]}"; done
  exit $FAILED
fi
echo "extra runs: load average $(cut -d' ' -f1-3 /proc/loadavg)"
LOADS+=("$(cut -d' ' -f1 /proc/loadavg)")
KEYS_FILE="$WORK/keys.txt" load priced_512 "http://127.0.0.1:$DATA_PORT/bench/priced" 512 -s "$WORK/rotate.lua"
RSS_KB=$(awk '/VmHWM/ { print $2 }' "/proc/$GATEWAY_PID/status")
THREADS_512=$(awk '/^Threads/ { print $2 }' "/proc/$GATEWAY_PID/status")
[ -n "${MEMORY_DETAIL:-}" ] && { cat "/proc/$GATEWAY_PID/smaps_rollup"; ls "/proc/$GATEWAY_PID/task" | while read -r t; do cat "/proc/$GATEWAY_PID/task/$t/comm"; done | sort | uniq -c; }
KEYS_FILE="$WORK/accounts.txt" load nginx_lua_512 "http://127.0.0.1:$NGINX_LUA_PORT/bench/priced" 512 -s "$WORK/rotate.lua"
load_h2 priced_h2 "http://127.0.0.1:$DATA_PORT/bench/priced"
LOG_LINES=$(grep -c 'creditgate::access' "$WORK/access.log" || true)

if [ -n "$PARTIAL" ]; then
  for name in $TARGETS priced_512 nginx_lua_512 priced_h2; do echo "$name ${RPS[$name]} req/s p99 ${P99[$name]} ms cpu ${CPU[$name]}"; done
  echo "gateway peak RSS at 512 conns: $((RSS_KB / 1024)) MB ($THREADS_512 threads)"
  exit $FAILED
fi
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? v >= t : v <= t; print ok ? "met" : "NOT met" }'; }
proxy_cpu() { echo "${CPU[$1]%%/*}"; }
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ACCOUNTS accounts, best of $ROUNDS rounds; load average at each round's start: ${LOADS[*]}"
printf '| %-13s | %10s | %8s | %8s | %9s | %-22s |\n' run req/s p50_ms p99_ms vs_direct "cpu_us/req proxy/redis/stub"
printf '|%s|%s|%s|%s|%s|%s|\n' --------------- ------------ ---------- ---------- ----------- ------------------------
for name in $TARGETS priced_512 nginx_lua_512 priced_h2; do
  printf '| %-13s | %10s | %8s | %8s | %9s | %-22s |\n' "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" \
    "$(ratio "${RPS[$name]}" "${RPS[direct]}")" "${CPU[$name]}"
done
echo
r=$(ratio "${RPS[free]}" "${RPS[nginx_proxy]}"); echo "free / nginx_proxy req/s:      $r (target >= 1.2): $(verdict "$r" '>=' 1.2)"
c=$(ratio "$(proxy_cpu free)" "$(proxy_cpu nginx_proxy)"); echo "free / nginx_proxy cpu/req:    $c (target <= 1.0): $(verdict "$c" '<=' 1.0)"
r=$(ratio "${RPS[priced]}" "${RPS[nginx_lua]}"); echo "priced / nginx_lua req/s:      $r (target >= 2.0): $(verdict "$r" '>=' 2.0)"
r=$(ratio "${P99[priced]}" "${P99[nginx_lua]}"); echo "priced / nginx_lua p99:        $r (target <= 0.5): $(verdict "$r" '<=' 0.5)"
r=$(ratio "${RPS[free_log]}" "${RPS[free]}"); echo "free_log / free req/s:         $r (target >= 0.9): $(verdict "$r" '>=' 0.9) ($LOG_LINES access lines written)"
echo "gateway peak RSS at 512 conns: $((RSS_KB / 1024)) MB (target <= 64): $(verdict "$((RSS_KB / 1024))" '<=' 64) ($THREADS_512 threads)"
r=$(ratio "${RPS[free]}" "${RPS[floor]}"); echo "free / floor req/s:            $r (the gateway's own cost per request)"
r=$(ratio "${RPS[priced]}" "${RPS[floor_priced]}"); echo "priced / floor_priced req/s:   $r"
r=$(ratio "${RPS[floor_priced]}" "${RPS[nginx_lua]}"); echo "floor_priced / nginx_lua req/s: $r (what the design allows at best here)"
r=$(ratio "${RPS[floor]}" "${RPS[nginx_proxy]}"); echo "floor / nginx_proxy req/s:     $r (likewise, free)"
exit $FAILED
