#!/usr/bin/env bash
# Ledger scaling against a Redis of its own (started here on a free port):
# debit latency on an empty window vs one account holding 1 M debits, the
# usage report's latency on both (and the one-time rebuild of its aggregates
# from 1 M debits), and Redis memory per debit over 1 M debits across 1000
# accounts.
#
#   bash bench/ledger.sh            # DEBITS=1000000 to tune
#   bash bench/ledger.sh limits     # every plan with two extra windows (1h, 1d),
#                                   # the memory accounts paying from a grant
#   bash bench/ledger.sh cpu        # only Redis CPU per debit: no extra windows,
#                                   # two extra windows + an unspent grant, and
#                                   # a grant paying every debit (DEBITS_CPU=200000,
#                                   # ROUNDS=3 by default here)
set -euo pipefail
cd "$(dirname "$0")/.."
DEBITS=${DEBITS:-1000000}
PORT=${PORT:-18390}
command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
cargo build --release --quiet --example ledger_scaling --example debit_cpu
WORK=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
trap 'kill $REDIS_PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "redis: $(redis-server --version | cut -d' ' -f3), zset-max-listpack-entries $(redis-cli -p "$PORT" config get zset-max-listpack-entries | tail -1)"
if [ "${1:-}" = cpu ]; then
  target/release/examples/debit_cpu "redis://127.0.0.1:$PORT/0" "${DEBITS_CPU:-200000}" "${ROUNDS:-3}"
else
  target/release/examples/ledger_scaling "redis://127.0.0.1:$PORT/0" "$DEBITS" "${1:-}"
fi
