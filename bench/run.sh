#!/usr/bin/env bash
# Throughput and latency of the gateway against a local stub upstream, all on
# loopback, in one run and in turn:
#   direct         the stub upstream alone
#   free           through the gateway, a cost-0 route (auth, no debit)
#   priced         through the gateway, a cost-1 route (one Redis debit script)
#   nginx_proxy    plain nginx proxy_pass to the same stub (peer)
#   nginx_lua      nginx + Lua access phase running the same debit script (peer)
#
#   bash bench/run.sh            # DURATION=10s CONNECTIONS=64 ACCOUNTS=1000 to tune
#   PROFILE=priced bash bench/run.sh   # also perf-record the gateway during that run
#                                      # (into PROFILE_OUT, default ./perf.data)
#
# Needs wrk, redis-server, nginx, libnginx-mod-http-lua and lua-nginx-redis
# (installed with apt-get when missing, as root). Exits non-zero if any run
# saw errors or non-2xx answers.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
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
TOKEN=bench-admin-token

if ! command -v wrk >/dev/null || ! command -v redis-server >/dev/null || ! command -v nginx >/dev/null \
   || [ ! -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || [ ! -f /usr/share/lua/5.1/nginx/redis.lua ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk redis-server curl nginx \
    libnginx-mod-http-lua lua-nginx-redis >/dev/null
fi

cargo build --release --quiet --bin creditgate --example stub_upstream
BIN=target/release/creditgate
STUB=target/release/examples/stub_upstream

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

for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
CREDITGATE_LOG=warn "$BIN" serve --config "$WORK/bench.toml" 2>"$WORK/gateway.log" &
GATEWAY_PID=$!
PIDS+=($GATEWAY_PID)
for _ in $(seq 100); do curl -fs "127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

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
        local res, err = red:evalsha(DEBIT_SHA, 3, k .. "a", k .. "w", k .. "i",
          2592000000, 7776000000, 1, "bench", 1000000000, 1, id, fallback, "", "priced", 0)
        if not res and err and string.find(err, "NOSCRIPT", 1, true) then
          res, err = red:eval(DEBIT, 3, k .. "a", k .. "w", k .. "i",
            2592000000, 7776000000, 1, "bench", 1000000000, 1, id, fallback, "", "priced", 0)
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
# CPU time (clock ticks, user + system, all threads) of a set of processes.
ticks() { local total=0 pid; for pid in "$@"; do
  total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0))); done; echo "$total"; }
# Per run: CPU microseconds per request spent by the gateway (or nginx), Redis and the stub.
cpu_snapshot() { echo "$(ticks "$GATEWAY_PID") $(ticks $(NGINX_PIDS)) $(ticks "$REDIS_PID") $(ticks "$STUB_PID")"; }
# wrk prints latencies as e.g. 812.00us / 1.20ms / 1.01s; normalise to ms.
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 } else { sub(/s$/, "", v); print v * 1000 } }'; }
load() {
  local name=$1 url=$2; shift 2
  local out="$WORK/$name.txt"
  local before after
  before=$(cpu_snapshot)
  local perf_pid=
  if [ "${PROFILE:-}" = "$name" ]; then
    perf record -F 2000 -g -p "$GATEWAY_PID" -o "${PROFILE_OUT:-perf.data}" -- sleep "${DURATION%s}" 2>/dev/null &
    perf_pid=$!
  fi
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" >"$out" 2>&1
  after=$(cpu_snapshot)
  [ -n "$perf_pid" ] && wait "$perf_pid"
  local requests
  requests=$(awk '/requests in/ { print $1 }' "$out")
  CPU[$name]=$(awk -v b="$before" -v a="$after" -v n="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    split(b, x, " "); split(a, y, " ");
    per = 1e6 / hz / n;
    printf "%.1f/%.1f/%.1f", (y[1] - x[1] + y[2] - x[2]) * per, (y[3] - x[3]) * per, (y[4] - x[4]) * per }')
  RPS[$name]=$(awk '/^Requests\/sec/ { print $2 }' "$out")
  P50[$name]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
  P99[$name]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  if grep -qE 'Non-2xx|Socket errors' "$out"; then
    echo "!! $name: errors:"; grep -E 'Non-2xx|Socket errors' "$out"; FAILED=1
  fi
}

echo "warming up …"
KEYS_FILE="$WORK/keys.txt" wrk -t1 -c8 -d2s -s "$WORK/rotate.lua" "http://127.0.0.1:$DATA_PORT/bench/priced" >/dev/null
KEYS_FILE="$WORK/accounts.txt" wrk -t1 -c8 -d2s -s "$WORK/rotate.lua" "http://127.0.0.1:$NGINX_LUA_PORT/bench/priced" >/dev/null

load direct "http://127.0.0.1:$STUB_PORT/bench/direct"
KEYS_FILE="$WORK/keys.txt" load free "http://127.0.0.1:$DATA_PORT/bench/free" -s "$WORK/rotate.lua"
KEYS_FILE="$WORK/keys.txt" load priced "http://127.0.0.1:$DATA_PORT/bench/priced" -s "$WORK/rotate.lua"
RSS_KB=$(awk '/VmHWM/ { print $2 }' "/proc/$GATEWAY_PID/status")
load nginx_proxy "http://127.0.0.1:$NGINX_PROXY_PORT/bench/direct"
KEYS_FILE="$WORK/accounts.txt" load nginx_lua "http://127.0.0.1:$NGINX_LUA_PORT/bench/priced" -s "$WORK/rotate.lua"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ACCOUNTS accounts"
printf '| %-12s | %10s | %8s | %8s | %9s | %-22s |\n' run req/s p50_ms p99_ms vs_direct "cpu_us/req proxy/redis/stub"
printf '|%s|%s|%s|%s|%s|%s|\n' -------------- ------------ ---------- ---------- ----------- ------------------------
for name in direct free priced nginx_proxy nginx_lua; do
  printf '| %-12s | %10s | %8s | %8s | %9s | %-22s |\n' "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" \
    "$(ratio "${RPS[$name]}" "${RPS[direct]}")" "${CPU[$name]}"
done
echo
echo "gateway peak RSS: $((RSS_KB / 1024)) MB (target <= 64)"
echo "priced / nginx_lua req/s: $(ratio "${RPS[priced]}" "${RPS[nginx_lua]}") (target >= 2.0)"
echo "priced / nginx_lua p99:   $(ratio "${P99[priced]}" "${P99[nginx_lua]}") (target <= 0.5)"
echo "free / nginx_proxy req/s: $(ratio "${RPS[free]}" "${RPS[nginx_proxy]}") (target >= 1.0)"
exit $FAILED
