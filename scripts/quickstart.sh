#!/usr/bin/env bash
# hb402 with payments, on one machine: `./scripts/quickstart.sh [--detach | --stop]`.
#
# Starts a local chain (anvil, chain id 84532, Circle's USDC at the Base Sepolia USDC address,
# 1000 USDC minted to anvil's development accounts #1-#5), hb402-devnode (a stand-in for a
# HyperBEAM ~s3@1.0 node) and hb402 in front of it settling payments itself over the chain's RPC.
# Then it signs and uploads two DataItems with `hb402 sign-item` / `hb402 upload` (one priced by
# its own X402-* tags, one free), pays for the priced one with `hb402 fetch`, and prints the
# transaction and the balances. Everything stays running; Ctrl-C stops it all.
#
#   --detach   start, write the env file, return (processes keep running)
#   --stop     stop what a previous --detach started (by the recorded pids)
#
# Machine-readable facts go to $HB402_QUICKSTART_DIR/quickstart.env (default ./quickstart-state).
# The keys used are anvil's public development keys: never use them with real funds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

mode=run
usage() {
  echo "usage: $0 [--detach | --stop]" >&2
  exit 64
}
[ $# -le 1 ] || usage
case "${1:-}" in
  "") ;;
  --detach) mode=detach ;;
  --stop) mode=stop ;;
  -h | --help)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) usage ;;
esac

state=${HB402_QUICKSTART_DIR:-$root/quickstart-state}
envfile=$state/quickstart.env

stop_recorded() {
  [ -f "$envfile" ] || return 0
  local pids
  pids=$(sed -n 's/^PIDS="\{0,1\}\([0-9 ]*\)"\{0,1\}$/\1/p' "$envfile")
  for pid in $pids; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  rm -f "$envfile"
}

if [ "$mode" = stop ]; then
  if [ -f "$envfile" ]; then
    stop_recorded
    echo "stopped"
  else
    echo "nothing recorded in $envfile" >&2
  fi
  exit 0
fi

# --- what is needed ------------------------------------------------------------------------
apt_install=()
command -v cargo >/dev/null || {
  echo "Rust is needed: https://rustup.rs" >&2
  exit 1
}
command -v cmake >/dev/null || apt_install+=(cmake)
command -v node >/dev/null || apt_install+=(nodejs)
command -v npm >/dev/null || apt_install+=(npm)
if [ ${#apt_install[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${apt_install[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_install[@]}" >/dev/null
  else
    echo "missing: ${apt_install[*]} (on Debian: sudo apt-get install ${apt_install[*]})" >&2
    exit 1
  fi
fi
js=crates/testkit/js
if [ ! -f "$js/node_modules/.package-lock.json" ] \
  || [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
  echo "installing anvil, USDC and viem from npm into $js" >&2
  (cd "$js" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
anvil=${HB402_ANVIL:-$root/$js/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil}

echo "building hb402 and hb402-devnode" >&2
cargo build -q -p hb402 -p hb402-devnode
# Where cargo put them: CARGO_TARGET_DIR or build.target-dir may move the target directory.
target_dir=$(scripts/target-dir.sh)
hb402=$target_dir/debug/hb402
devnode=$target_dir/debug/hb402-devnode

# --- ports and state -----------------------------------------------------------------------
rpc_port=${RPC_PORT:-8545}
node_port=${DEVNODE_PORT:-8734}
public_port=${HB402_PORT:-8402}
admin_port=${HB402_ADMIN_PORT:-9402}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
stop_recorded
for port in "$rpc_port" "$node_port" "$public_port" "$admin_port"; do
  if port_busy "$port"; then
    echo "port $port on 127.0.0.1 is in use (a previous run? try $0 --stop)" >&2
    exit 1
  fi
done
rm -rf "$state"
mkdir -p "$state"

# anvil's development accounts (public keys, for local use only).
buyer=0x70997970C51812dc3A010C7d01b50e0d17dc79C8 # #1
buyer_key=0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d
payee=0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC # #2
seller_key=0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6 # #3 signs items
operator_key=0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97 # #8 pays gas
# #7 signs batch-settlement claims and refunds (it needs no funds).
authorizer_key=0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356
usdc=0x036CbD53842c5426634e7929541eC2318f3dCF7e
chain_id=84532
price=0.01
price_atomic=10000

rpc=http://127.0.0.1:$rpc_port
node_url=http://127.0.0.1:$node_port
url=http://127.0.0.1:$public_port
admin_url=http://127.0.0.1:$admin_port

# Detached processes get their own session, so that closing the terminal does not stop them.
launch=()
[ "$mode" = detach ] && launch=(setsid)

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$envfile"
}
if [ "$mode" = run ]; then
  trap cleanup EXIT
  trap 'exit 130' INT TERM
else
  # Until the start-up is complete, a failure stops what was started.
  trap cleanup EXIT
fi

wait_port() {
  for _ in $(seq 1 200); do
    port_busy "$1" && return 0
    sleep 0.1
  done
  echo "$2 did not start listening on 127.0.0.1:$1; see $state/$2.log" >&2
  exit 1
}

# --- the chain -----------------------------------------------------------------------------
"${launch[@]}" "$anvil" --host 127.0.0.1 --port "$rpc_port" --chain-id "$chain_id" >"$state/anvil.log" 2>&1 &
pids+=($!)
wait_port "$rpc_port" anvil
(cd "$js" && node chain.mjs setup --rpc "$rpc") >"$state/usdc.json"
# The x402 batch-settlement contracts at their canonical addresses (compiled once, then cached).
(cd "$js" && node chain.mjs batch-settlement --rpc "$rpc") >"$state/batch-settlement.json"
balance() { (cd "$js" && node chain.mjs balance --rpc "$rpc" "$1"); }
usdc_units() { awk -v a="$1" 'BEGIN { printf "%.6f", a / 1000000 }'; }

# --- the node and hb402 --------------------------------------------------------------------
"${launch[@]}" "$devnode" --listen "127.0.0.1:$node_port" --data-dir "$state/devnode" >"$state/devnode.log" 2>&1 &
pids+=($!)
wait_port "$node_port" devnode

cat >"$state/hb402.toml" <<TOML
version = 1

[server]
grace_period_seconds = 0              # stop at once on Ctrl-C (a production node drains first)
graceful_shutdown_timeout_seconds = 1

[listen]
public = "127.0.0.1:$public_port"
admin = "127.0.0.1:$admin_port"
public_base_url = "$url"

[upstream]
url = "$node_url"

[store]
state_dir = "$state/hb402"

[payments]
mode = "local"                        # hb402 settles over the chain's RPC itself
rpc_url = "$rpc"
operator_key = "\${HB402_OPERATOR_KEY}"
chain_id = $chain_id

[payments.batch]                      # x402 batch-settlement beside exact: one deposit, then vouchers
receiver_authorizer_key = "\${HB402_RECEIVER_AUTHORIZER_KEY}"
withdraw_delay_seconds = 900
claim_interval_seconds = 60
settle_interval_seconds = 60

[[payments.accept]]
network = "base-sepolia"
pay_to = "$payee"

[pricing]
honour_item_tags = true               # an item's signed X402-Price / X402-Pay-To / X402-Network
max_item_price = "1.00"

[[paywall.chains]]                    # a browser wallet without this chain is asked to add it
network = "eip155:$chain_id"
name = "hb402 quick start (anvil)"
rpc_urls = ["$rpc"]
TOML
HB402_OPERATOR_KEY=$operator_key HB402_RECEIVER_AUTHORIZER_KEY=$authorizer_key \
  "${launch[@]}" "$hb402" --config "$state/hb402.toml" >"$state/hb402.log" 2>&1 &
pids+=($!)
wait_port "$public_port" hb402
wait_port "$admin_port" hb402

# --- two items: one priced by its own tags, one free ---------------------------------------
printf 'Hello from hb402: these bytes cost %s USDC.\n' "$price" >"$state/paid.txt"
printf 'Hello from hb402: these bytes are free.\n' >"$state/free.txt"
item_id() { sed -n 's/.*"id":"\([^"]*\)".*/\1/p'; }
HB402_ITEM_KEY=$seller_key "$hb402" sign-item -o "$state/paid.ans104" \
  --tag Content-Type=text/plain --tag "X402-Price=$price" --tag "X402-Pay-To=$payee" \
  --tag X402-Network=base-sepolia "$state/paid.txt" 2>/dev/null
HB402_ITEM_KEY=$seller_key "$hb402" sign-item -o "$state/free.ans104" \
  --tag Content-Type=text/plain "$state/free.txt" 2>/dev/null
paid_id=$("$hb402" upload "$state/paid.ans104" "$url/upload" | item_id)
free_id=$("$hb402" upload "$state/free.ans104" "$url/upload" | item_id)
paid_url=$url/$paid_id

# --- pay for the priced one ----------------------------------------------------------------
buyer_before=$(balance "$buyer")
payee_before=$(balance "$payee")
echo
if command -v curl >/dev/null; then
  echo "GET $paid_url without paying:"
  curl -s -o /dev/null -w '  %{http_code} Payment Required\n' "$paid_url" || true
fi
echo "hb402 fetch $paid_url (pays from $buyer):"
HB402_PAYER_KEY=$buyer_key "$hb402" fetch "$paid_url" 2>"$state/fetch.err" | sed 's/^/  /'
sed 's/^/  /' "$state/fetch.err"
tx=$(sed -n 's/.*transaction \(0x[0-9a-fA-F]\{64\}\).*/\1/p' "$state/fetch.err")
buyer_after=$(balance "$buyer")
payee_after=$(balance "$payee")
echo
echo "USDC balances (transaction $tx):"
echo "  buyer  $buyer  $(usdc_units "$buyer_before") -> $(usdc_units "$buyer_after")"
echo "  payee  $payee  $(usdc_units "$payee_before") -> $(usdc_units "$payee_after")"

cat >"$envfile" <<ENV
HB402_URL=$url
HB402_ADMIN_URL=$admin_url
DEVNODE_URL=$node_url
RPC_URL=$rpc
CHAIN_ID=$chain_id
USDC=$usdc
PAYEE=$payee
PAID_ITEM_ID=$paid_id
PAID_ITEM_URL=$paid_url
FREE_ITEM_ID=$free_id
PRICE_ATOMIC=$price_atomic
SETTLEMENT_TX=$tx
PIDS="${pids[*]}"
ENV

cat <<MSG

hb402 is running:
  public   $url        DataItem routes (of the node, only passthrough.allow is reachable)
  admin    $admin_url        /metrics /healthz /readyz /admin/payments
  devnode  $node_url        stand-in for a HyperBEAM ~s3@1.0 node
  chain    $rpc        anvil, chain id $chain_id, USDC at $usdc
  items    paid $paid_url
           free $url/$free_id
Accounts #1-#5 of anvil hold USDC; pay with any x402 client, or:
  HB402_PAYER_KEY=$buyer_key \\
    $hb402 fetch $paid_url
or open $paid_url in a browser whose wallet holds one of those accounts' keys
(its network: chain id $chain_id at $rpc). Agents that read many items can pay with
x402 batch-settlement (offered beside exact): one deposit, then a voucher per read.
Facts for scripts: $envfile. Logs: $state/*.log.
MSG

if [ "$mode" = detach ]; then
  trap - EXIT
  echo "Detached; stop with: $0 --stop"
  exit 0
fi
echo "Press Ctrl-C to stop."
wait
