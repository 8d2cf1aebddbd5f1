#!/usr/bin/env bash
# Instructions hb402 executes per request, counted by valgrind's callgrind: repeatable whatever
# else the machine is doing, unlike requests per second on a shared 2-core box.
#
#   ./benches/instructions.sh [BASELINE_HB402]
#
# For this build (and, when given, another hb402 binary beside it): hb402 runs under callgrind in
# front of hb402-devnode; one client on one keep-alive connection sends N requests of a
# pass-through (/~meta@1.0/info/address) and of a free 1 KiB DataItem read. Each case runs with
# 200 and 1200 requests; the difference over 1000 is the cost of one request, start-up and
# shut-down cancelled out. Prints a markdown table and, with a baseline, the ratios.
#
# Needs valgrind (Debian: apt-get install valgrind) and python3.
cd "$(dirname "$0")/.."
source benches/lib.sh
need valgrind python3
build_release
baseline=${1:-}

cat >"$BENCH_DIR/client.py" <<'PY'
import http.client, sys
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
PY

# Prints the total instructions of one run: BIN CASE N
run_case() {
  local bin=$1 case=$2 n=$3 run=$BENCH_DIR/run-$RANDOM
  local node_port public_port admin_port
  node_port=$(free_port)
  public_port=$(free_port)
  admin_port=$(free_port)
  mkdir -p "$run"
  target/release/hb402-devnode --listen "127.0.0.1:$node_port" --data-dir "$run/devnode" \
    >"$run/devnode.log" 2>&1 &
  local devnode=$!
  wait_port "$node_port" devnode
  cat >"$run/hb402.toml" <<TOML
version = 1
[server]
threads = 2
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1
[listen]
public = "127.0.0.1:$public_port"
admin = "127.0.0.1:$admin_port"
[upstream]
url = "http://127.0.0.1:$node_port"
[store]
state_dir = "$run/state"
TOML
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$run/callgrind.out" \
    "$bin" --config "$run/hb402.toml" >"$run/hb402.log" 2>&1 &
  local hb402=$!
  wait_port "$public_port" "hb402 under callgrind"
  local path=/~meta@1.0/info/address
  if [ "$case" = read ]; then
    head -c 1024 /dev/zero >"$run/data"
    HB402_ITEM_KEY=0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6 \
      target/release/hb402 sign-item -o "$run/item.ans104" "$run/data" 2>/dev/null
    path=/$(target/release/hb402 upload "$run/item.ans104" "http://127.0.0.1:$public_port/upload" |
      sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
    python3 "$BENCH_DIR/client.py" "$public_port" 20 "$path" # metadata cached, as when warm
  fi
  python3 "$BENCH_DIR/client.py" "$public_port" "$n" "$path"
  kill -INT "$hb402"
  wait "$hb402" 2>/dev/null || true
  kill "$devnode"
  wait "$devnode" 2>/dev/null || true
  sed -n 's/^summary: //p' "$run/callgrind.out"
}

per_request() { # BIN CASE
  local small large
  small=$(run_case "$1" "$2" 200)
  large=$(run_case "$1" "$2" 1200)
  echo $(((large - small) / 1000))
}

echo "| build | pass-through, instructions/request | 1 KiB read, instructions/request |"
echo "|---|---|---|"
pass=$(per_request target/release/hb402 pass)
read=$(per_request target/release/hb402 read)
echo "| this build | $pass | $read |"
if [ -n "$baseline" ]; then
  base_pass=$(per_request "$baseline" pass)
  base_read=$(per_request "$baseline" read)
  echo "| baseline ($baseline) | $base_pass | $base_read |"
  echo
  awk -v a="$pass" -v b="$base_pass" 'BEGIN { printf "pass-through: this build / baseline = %.3f\n", a / b }'
  awk -v a="$read" -v b="$base_read" 'BEGIN { printf "1 KiB read: this build / baseline = %.3f\n", a / b }'
fi
