#!/usr/bin/env bash
# Load and soak: wrk against a release hb402 in front of hb402-devnode for DURATION seconds
# (default 60) per scenario, with CONNECTIONS connections (default 32; 8 for paid reads):
#   (a) pass-through reads (a node route hb402 forwards untouched),
#   (b) free DataItem reads (a 1 KiB item),
#   (c) paid reads: each request carries a different pre-signed x402 payment (USDC on a local
#       anvil chain), settled before the body, once through the reference facilitator and once
#       by hb402 itself (payments.mode = "local"),
#   (d) voucher-paid reads (x402 batch-settlement): one channel per connection, a deposit then a
#       pre-signed cumulative voucher per read, checked by hb402 without a transaction; beside
#       free reads at the same connection count for the ratio.
# Prints throughput, p50/p99 latency, errors and non-2xx answers per scenario, then hb402's peak
# RSS and its CPU time per paid request (hb402's own process only: the facilitator and the
# chain run in other processes).
#
#   ./benches/load/run.sh [DURATION] [CONNECTIONS]
#
# Needs wrk (Debian: apt-get install wrk), node/npm (the test kit's chain and facilitator).
cd "$(dirname "$0")/../.."
source benches/lib.sh
need wrk node python3
duration=${1:-60}
connections=${2:-32}
paid_connections=${PAID_CONNECTIONS:-8}
js=crates/testkit/js
[ -f "$js/node_modules/.package-lock.json" ] \
  || (cd "$js" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
build_release

# The chain: anvil with USDC at the Base Sepolia address, 1000 USDC for accounts #1-#5.
rpc_port=$(free_port)
"$js/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil" --host 127.0.0.1 --port "$rpc_port" \
  --chain-id 84532 >"$BENCH_DIR/anvil.log" 2>&1 &
pids+=($!)
wait_port "$rpc_port" anvil
rpc=http://127.0.0.1:$rpc_port
(cd "$js" && node chain.mjs setup --rpc "$rpc" && node chain.mjs batch-settlement --rpc "$rpc") >/dev/null
fac_port=$(free_port)
(cd "$js" && exec node facilitator.mjs --rpc "$rpc" --port "$fac_port" \
  --key 0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6) \
  >"$BENCH_DIR/facilitator.log" 2>&1 &
pids+=($!)
wait_port "$fac_port" facilitator

payee=0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC
node_port=$(free_port)
start_devnode "$node_port"
pricing="
[[payments.accept]]
network = \"base-sepolia\"
pay_to = \"$payee\"
[[pricing.rules]]
content_types = [\"text/*\"]
price = \"0.0001\""
# Two gateways on the same node: one settling through the reference facilitator, one settling
# itself over the RPC (payments.mode = "local", gas paid by anvil account #8).
public_port=$(free_port)
start_hb402 "$public_port" "$(free_port)" "http://127.0.0.1:$node_port" "
[payments]
mode = \"facilitator\"
facilitator_url = \"http://127.0.0.1:$fac_port\"
$pricing"
fac_pid=$HB402_PID
hb402=http://127.0.0.1:$public_port
local_port=$(free_port)
HB402_OPERATOR_KEY=0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97 \
  HB402_RECEIVER_AUTHORIZER_KEY=0x5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e \
  HB402_NAME=hb402-local start_hb402 "$local_port" "$(free_port)" "http://127.0.0.1:$node_port" "
[payments]
mode = \"local\"
rpc_url = \"$rpc\"
operator_key = \"\${HB402_OPERATOR_KEY}\"
chain_id = 84532
[payments.batch]
receiver_authorizer_key = \"\${HB402_RECEIVER_AUTHORIZER_KEY}\"
$pricing"
local_pid=$HB402_PID
hb402_local=http://127.0.0.1:$local_port
free=$(upload_item "$hb402" free application/octet-stream 1024)
paid=$(upload_item "$hb402" paid text/plain 1024)

# Pre-signed payments for one gateway's challenge, enough that none runs out (a request without
# one would be answered 402 and count as non-2xx).
pool=${PAYMENT_POOL:-$((duration * 400))}
sign_pool "$hb402/$paid" "$pool" >"$BENCH_DIR/payments-facilitator.txt"
sign_pool "$hb402_local/$paid" "$pool" >"$BENCH_DIR/payments-local.txt"
channels=${CHANNELS:-$paid_connections}
# Pre-signed vouchers take ~1.3 KB each: the voucher scenario runs at most 10 s, with enough
# for 30,000 paid reads a second (channels do not all go at the same pace; one that runs out
# sends no payment and its 402s count as non-2xx).
voucher_duration=$((duration < 10 ? duration : 10))
voucher_reads=${VOUCHER_POOL:-$((voucher_duration * 30000 / channels))}
sign_vouchers "$hb402_local/$paid" "$channels" "$voucher_reads" >"$BENCH_DIR/vouchers.txt"

echo "| scenario | connections | requests/s | p50 ms | p99 ms | errors | non-2xx |"
echo "|---|---|---|---|---|---|---|"
row() { # NAME CONNECTIONS RESULT
  echo "| $1 | $2 | $(field "$3" rps) | $(field "$3" p50_ms) | $(field "$3" p99_ms) | $(field "$3" errors) | $(field "$3" non2xx) |"
}
result=$(run_wrk "$duration" "$connections" "$hb402/~meta@1.0/info/address")
row "(a) pass-through" "$connections" "$result"
result=$(run_wrk "$duration" "$connections" "$hb402/$free")
row "(b) free DataItem read, 1 KiB" "$connections" "$result"
paid_run() { # NAME URL PID PAYMENTS CONNECTIONS
  local before after result requests
  before=$(cpu_seconds "$3")
  result=$(PAYMENTS=$4 WRK_SCRIPT=benches/load/paid.lua run_wrk "$duration" "$5" "$2")
  after=$(cpu_seconds "$3")
  row "$1" "$5" "$result"
  requests=$(field "$result" requests)
  cpu_notes+=("$1: $requests requests, hb402 CPU $(cpu_us "$before" "$after" "$requests") µs per request")
}
cpu_notes=()
cpu_us() { # CPU_BEFORE CPU_AFTER REQUESTS: microseconds of CPU per request
  awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.0f", (b - a) / (n > 0 ? n : 1) * 1e6 }'
}
# The reference facilitator settles from one account without managing nonces: concurrent
# settlements collide, so it gets one connection.
paid_run "(c) paid read, reference facilitator" "$hb402/$paid" "$fac_pid" \
  "$BENCH_DIR/payments-facilitator.txt" 1
paid_run "(c) paid read, local settlement" "$hb402_local/$paid" "$local_pid" \
  "$BENCH_DIR/payments-local.txt" "$paid_connections"
before=$(cpu_seconds "$local_pid")
free_same=$(THREADS=$channels run_wrk "$voucher_duration" "$channels" "$hb402_local/$free")
after=$(cpu_seconds "$local_pid")
row "(b) free DataItem read, 1 KiB (local gateway)" "$channels" "$free_same"
cpu_notes+=("(b) free read, local gateway: $(field "$free_same" requests) requests, hb402 CPU $(cpu_us "$before" "$after" "$(field "$free_same" requests)") µs per request")
before=$(cpu_seconds "$local_pid")
vouchers=$(THREADS=$channels IN_ORDER=1 PAYMENTS="$BENCH_DIR/vouchers.txt" WRK_SCRIPT=benches/load/paid.lua \
  run_wrk "$voucher_duration" "$channels" "$hb402_local/$paid")
after=$(cpu_seconds "$local_pid")
row "(d) voucher-paid read, batch-settlement" "$channels" "$vouchers"
requests=$(field "$vouchers" requests)
cpu_notes+=("(d) voucher-paid read: $requests requests (the first of each channel a deposit), hb402 CPU $(cpu_us "$before" "$after" "$requests") µs per request")
echo
paid_rps=$(awk -v n="$(field "$vouchers" requests)" -v e="$(field "$vouchers" non2xx)" -v s="$(field "$vouchers" seconds)" 'BEGIN { printf "%.1f", (n - e) / s }')
echo "voucher-paid reads answered 200: $paid_rps/s; / free reads per second, $channels connections each, ${voucher_duration} s: $(awk -v v="$paid_rps" -v f="$(field "$free_same" rps)" 'BEGIN { printf "%.2f", v / f }')"
echo "payments pre-signed per gateway: $pool; vouchers: $voucher_reads per channel, $channels channels"
printf '%s\n' "${cpu_notes[@]}"
echo "CPU is user + system time of the hb402 process only (the facilitator, anvil and wrk are other processes)."
echo "hb402 peak RSS: $(peak_rss_mib "$fac_pid") MiB (facilitator mode), $(peak_rss_mib "$local_pid") MiB (local settlement)"
