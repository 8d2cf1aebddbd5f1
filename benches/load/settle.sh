#!/usr/bin/env bash
# Local settlement under load: wrk sends paid reads, each with a different pre-signed x402
# payment, to a release hb402 settling itself (payments.mode = "local") on anvil with USDC, for
# DURATION seconds (default 30), once on a chain that mines every transaction at once
# (automine; CONNECTIONS connections, default 32) and once on one that mines a block every 2 s
# (a real chain's cadence; BLOCK_CONNECTIONS, default 512: a paid read waits for its block, so
# a client with n connections makes at most n / 2 s paid reads per second). After each run it reconciles: the payee's balance rose by exactly
# the sum of the settled ledger rows, and every settled row's transaction is mined, succeeded
# and used that row's authorization (benches/load/reconcile.py).
#
#   ./benches/load/settle.sh [DURATION] [CONNECTIONS]
#
# Needs wrk (Debian: apt-get install wrk), node/npm (the test kit's chain), python3.
cd "$(dirname "$0")/../.."
source benches/lib.sh
need wrk node python3
duration=${1:-30}
connections=${2:-32}
js=crates/testkit/js
[ -f "$js/node_modules/.package-lock.json" ] \
  || (cd "$js" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
build_release

payee=0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC
admin_key=bench-admin-key-0123456789
echo "| chain | connections | paid reads/s | p50 ms | p99 ms | errors | non-2xx | hb402 CPU µs/paid read | settled rows | transactions | reconciled |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
scenario() { # NAME CONNECTIONS [anvil args…]
  local name=$1 connections=$2
  shift 2
  local rpc_port node_port public_port admin_port rpc hb402 paid before after result requests
  rpc_port=$(free_port)
  "$js/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil" --host 127.0.0.1 --port "$rpc_port" \
    --chain-id 84532 "$@" >"$BENCH_DIR/anvil-$name.log" 2>&1 &
  pids+=($!)
  wait_port "$rpc_port" anvil
  rpc=http://127.0.0.1:$rpc_port
  (cd "$js" && node chain.mjs setup --rpc "$rpc") >/dev/null
  node_port=$(free_port)
  start_devnode "$node_port"
  public_port=$(free_port)
  admin_port=$(free_port)
  HB402_OPERATOR_KEY=0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97 \
    HB402_ADMIN_KEY=$admin_key HB402_NAME=hb402-$name \
    start_hb402 "$public_port" "$admin_port" "http://127.0.0.1:$node_port" "
[admin]
bearer_key = \"\${HB402_ADMIN_KEY}\"
[payments]
mode = \"local\"
rpc_url = \"$rpc\"
operator_key = \"\${HB402_OPERATOR_KEY}\"
chain_id = 84532
[[payments.accept]]
network = \"base-sepolia\"
pay_to = \"$payee\"
[[pricing.rules]]
content_types = [\"text/*\"]
price = \"0.0001\""
  local pid=$HB402_PID
  hb402=http://127.0.0.1:$public_port
  paid=$(upload_item "$hb402" "paid-$name" text/plain 1024)
  sign_pool "$hb402/$paid" "${PAYMENT_POOL:-$((duration * 1000))}" \
    >"$BENCH_DIR/payments-$name.txt"
  before=$(cd "$js" && node chain.mjs balance --rpc "$rpc" "$payee")
  local cpu_before cpu_after
  cpu_before=$(cpu_seconds "$pid")
  result=$(PAYMENTS=$BENCH_DIR/payments-$name.txt WRK_SCRIPT=benches/load/paid.lua \
    run_wrk "$duration" "$connections" "$hb402/$paid" --timeout 10s)
  # Requests cut off by wrk's end may still be settling: the ledger is read once none is.
  local reconciled
  reconciled=$(python3 benches/load/reconcile.py --rpc "$rpc" --admin "http://127.0.0.1:$admin_port" \
    --key "$admin_key" --payee "$payee" --before "$before")
  cpu_after=$(cpu_seconds "$pid")
  requests=$(field "$result" requests)
  local ok=$((requests - $(field "$result" non2xx)))
  local cpu
  cpu=$(awk -v a="$cpu_before" -v b="$cpu_after" -v n="$ok" 'BEGIN { printf "%.0f", (b - a) / (n > 0 ? n : 1) * 1e6 }')
  echo "| $name | $connections | $(field "$result" rps) | $(field "$result" p50_ms) | $(field "$result" p99_ms) | $(field "$result" errors) | $(field "$result" non2xx) | $cpu | $(field "$reconciled" settled) | $(field "$reconciled" transactions) | $(field "$reconciled" verdict) |"
  cleanup
  pids=()
}
ulimit -n 4096 2>/dev/null || true
scenario automine "$connections"
scenario block-time-2s "${BLOCK_CONNECTIONS:-512}" --block-time 2
echo
echo "CPU is user + system time of the hb402 process only (anvil, the devnode and wrk are other processes), over the run and its reconciliation, per answered paid read."
echo "reconciled: the payee's balance rose by exactly the settled rows' sum and every settled row's transaction used its authorization."
