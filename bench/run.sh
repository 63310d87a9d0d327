#!/usr/bin/env bash
# Throughput and latency of the gateway against a local stub upstream, all on
# loopback: direct to the stub, through the gateway on a free route (cost 0),
# and through the gateway on a priced route (Redis debit per request).
#
#   bash bench/run.sh            # DURATION=10s CONNECTIONS=64 ACCOUNTS=1000 to tune
#
# Needs wrk and redis-server (installed with apt-get when missing, as root).
# Exits non-zero if any run saw errors or non-2xx answers.
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
ADMIN_PORT=$((BASE_PORT + 90))
TOKEN=bench-admin-token

for tool in wrk redis-server curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq wrk redis-server curl >/dev/null
  fi
done

cargo build --release --quiet --bin creditgate --example stub_upstream
BIN=target/release/creditgate
STUB=target/release/examples/stub_upstream

WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
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
for i in $(seq "$ACCOUNTS"); do
  curl -fs -X PUT "127.0.0.1:$ADMIN_PORT/admin/v1/accounts/bench-$i" \
    -H "Authorization: Bearer $TOKEN" -d '{"plan":"bench"}' >/dev/null
  curl -fs -X POST "127.0.0.1:$ADMIN_PORT/admin/v1/accounts/bench-$i/keys" \
    -H "Authorization: Bearer $TOKEN" | sed 's/.*"key":"\([^"]*\)".*/\1/' >>"$WORK/keys.txt"
done

cat >"$WORK/keys.lua" <<'LUA'
local keys = {}
for line in io.lines(os.getenv("KEYS_FILE")) do keys[#keys + 1] = line end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", wrk.path, { ["Authorization"] = "Bearer " .. keys[(n % #keys) + 1] })
end
LUA

FAILED=0
declare -A RPS P50 P99
# wrk prints latencies as e.g. 812.00us / 1.20ms / 1.01s; normalise to ms.
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 } else { sub(/s$/, "", v); print v * 1000 } }'; }
load() {
  local name=$1 url=$2; shift 2
  local out="$WORK/$name.txt"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" >"$out" 2>&1
  RPS[$name]=$(awk '/^Requests\/sec/ { print $2 }' "$out")
  P50[$name]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
  P99[$name]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  if grep -qE 'Non-2xx|Socket errors' "$out"; then
    echo "!! $name: errors:"; grep -E 'Non-2xx|Socket errors' "$out"; FAILED=1
  fi
}

echo "warming up …"
KEYS_FILE="$WORK/keys.txt" wrk -t1 -c8 -d2s -s "$WORK/keys.lua" "http://127.0.0.1:$DATA_PORT/bench/priced" >/dev/null
load direct "http://127.0.0.1:$STUB_PORT/bench/direct"
KEYS_FILE="$WORK/keys.txt" load free "http://127.0.0.1:$DATA_PORT/bench/free" -s "$WORK/keys.lua"
KEYS_FILE="$WORK/keys.txt" load priced "http://127.0.0.1:$DATA_PORT/bench/priced" -s "$WORK/keys.lua"
RSS_KB=$(awk '/VmHWM/ { print $2 }' "/proc/$GATEWAY_PID/status")

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ACCOUNTS accounts"
printf '%-28s %12s %10s %10s %12s\n' run req/s p50_ms p99_ms vs_direct
for name in direct free priced; do
  ratio=$(awk -v a="${RPS[$name]}" -v b="${RPS[direct]}" 'BEGIN { printf "%.2f", a / b }')
  printf '%-28s %12s %10s %10s %12s\n' "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" "$ratio"
done
echo "gateway peak RSS: $((RSS_KB / 1024)) MB"
used=$(curl -fs "127.0.0.1:$ADMIN_PORT/admin/v1/accounts/bench-1" -H "Authorization: Bearer $TOKEN")
echo "account bench-1 after the run: $used"
exit $FAILED
