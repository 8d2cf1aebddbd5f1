#!/usr/bin/env bash
# Side by side, in one run, on this machine and the same hb402-devnode upstream:
#   (a) the devnode directly, (b) nginx as a plain reverse proxy (keep-alive pool),
#   (c) a bare Pingora proxy (only `upstream_peer`: the framework's ceiling),
#   (d) hb402 pass-through, (e) hb402 free DataItem reads (1 KiB item, 64 KiB item; served
#   from hb402's item cache once hot);
# wrk for DURATION seconds each (default 15) with CONNECTIONS connections (default 32).
# Prints a markdown table with requests/s, p50, p99, errors, the proxy's own CPU per request
# (user + system of its processes, from /proc) and the ratios.
#
#   ./benches/compare.sh [DURATION] [CONNECTIONS]
#
# HB402_BASELINE=/path/to/another/hb402 adds that build beside this one (same devnode, same run)
# and prints this build's ratio to it, for pass-through and the 1 KiB and 64 KiB reads.
#
# Needs wrk and nginx (Debian: apt-get install wrk nginx-light).
cd "$(dirname "$0")/.."
source benches/lib.sh
need wrk nginx python3
duration=${1:-15}
connections=${2:-32}
build_release

node_port=$(free_port)
nginx_port=$(free_port)
public_port=$(free_port)
admin_port=$(free_port)
bare_port=$(free_port)
start_devnode "$node_port"
start_nginx "$nginx_port" "$node_port"
NGINX_PID=${pids[-1]}
target/release/bare-pingora "127.0.0.1:$bare_port" "127.0.0.1:$node_port" 2 \
  >"$BENCH_DIR/bare-pingora.log" 2>&1 &
pids+=($!)
BARE_PID=$!
wait_port "$bare_port" bare-pingora
start_hb402 "$public_port" "$admin_port" "http://127.0.0.1:$node_port"
hb402=http://127.0.0.1:$public_port
small=$(upload_item "$hb402" small application/octet-stream 1024)
large=$(upload_item "$hb402" large application/octet-stream 65536)

path=/~meta@1.0/info/address
current_pid=$HB402_PID
baseline_pid=
baseline_rows=()
if [ -n "${HB402_BASELINE:-}" ]; then
  base_port=$(free_port)
  HB402_NAME=baseline HB402_BIN=$HB402_BASELINE start_hb402 "$base_port" "$(free_port)" \
    "http://127.0.0.1:$node_port"
  baseline=http://127.0.0.1:$base_port
  baseline_pid=$HB402_PID
  baseline_rows=(
    "baseline pass-through → devnode|$baseline$path|$baseline_pid"
    "baseline DataItem read, 1 KiB|$baseline/$small|$baseline_pid"
    "baseline DataItem read, 64 KiB|$baseline/$large|$baseline_pid"
  )
fi
# name|url|pids whose CPU is the proxy's (none for the devnode itself)
rows=(
  "devnode directly|http://127.0.0.1:$node_port$path|"
  "nginx → devnode|http://127.0.0.1:$nginx_port$path|$NGINX_PID"
  "bare Pingora → devnode|http://127.0.0.1:$bare_port$path|$BARE_PID"
  "hb402 pass-through → devnode|$hb402$path|$current_pid"
  ${baseline_rows[0]:+"${baseline_rows[0]}"}
  "hb402 DataItem read, 1 KiB|$hb402/$small|$current_pid"
  ${baseline_rows[1]:+"${baseline_rows[1]}"}
  "hb402 DataItem read, 64 KiB|$hb402/$large|$current_pid"
  ${baseline_rows[2]:+"${baseline_rows[2]}"}
)
# CPU seconds of a process and its children (nginx's workers).
tree_cpu() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    total=$(awk -v t="$total" -v c="$(cpu_seconds "$pid")" 'BEGIN { printf "%.2f", t + c }')
  done
  echo "$total"
}
declare -A rps cpu
echo "| target | requests/s | p50 ms | p99 ms | errors | non-2xx | CPU µs/req |"
echo "|---|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
  IFS='|' read -r name url pid <<<"$row"
  run_wrk 2 "$connections" "$url" >/dev/null # warm-up: connections, caches
  [ -n "$pid" ] && before=$(tree_cpu "$pid")
  result=$(run_wrk "$duration" "$connections" "$url")
  rps[$name]=$(field "$result" rps)
  cpu[$name]="—"
  if [ -n "$pid" ]; then
    cpu[$name]=$(awk -v a="$before" -v b="$(tree_cpu "$pid")" -v n="$(field "$result" requests)" \
      'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')
  fi
  echo "| $name | $(field "$result" rps) | $(field "$result" p50_ms) | $(field "$result" p99_ms) | $(field "$result" errors) | $(field "$result" non2xx) | ${cpu[$name]} |"
done
nginx_rps=${rps["nginx → devnode"]}
bare_rps=${rps["bare Pingora → devnode"]}
echo
for name in "hb402 pass-through → devnode" "hb402 DataItem read, 1 KiB" "bare Pingora → devnode"; do
  awk -v a="${rps[$name]}" -v b="$nginx_rps" -v n="$name" -v c="${cpu[$name]}" -v d="${cpu["nginx → devnode"]}" \
    'BEGIN { printf "%s / nginx: %.2f requests/s, %.2f CPU per request\n", n, a / b, c / d }'
done
awk -v a="${rps["hb402 pass-through → devnode"]}" -v b="$bare_rps" \
  'BEGIN { printf "hb402 pass-through / bare Pingora: %.2f\n", a / b }'
if [ -n "${HB402_BASELINE:-}" ]; then
  for kind in "pass-through → devnode" "DataItem read, 1 KiB" "DataItem read, 64 KiB"; do
    awk -v a="${rps["hb402 $kind"]}" -v b="${rps["baseline $kind"]}" -v n="$kind" \
      'BEGIN { printf "hb402 / baseline, %s: %.3f\n", n, a / b }'
  done
fi
echo "hb402 peak RSS: $(peak_rss_mib "$current_pid") MiB; nginx config and logs in $BENCH_DIR"
