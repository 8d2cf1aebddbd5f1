#!/usr/bin/env bash
# Side by side, in one run, on this machine and the same hb402-devnode upstream:
#   (a) the devnode directly, (b) nginx as a plain reverse proxy, (c) hb402 pass-through,
#   (d) hb402 free DataItem reads (1 KiB item, 64 KiB item);
# wrk for DURATION seconds each (default 15) with CONNECTIONS connections (default 32).
# Prints a markdown table with requests/s, p50, p99, errors and the ratios to nginx.
#
#   ./benches/compare.sh [DURATION] [CONNECTIONS]
#
# HB402_BASELINE=/path/to/another/hb402 adds that build beside this one (same devnode, same run)
# and prints this build's ratio to it, for pass-through and the 1 KiB read.
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
start_devnode "$node_port"
start_nginx "$nginx_port" "$node_port"
start_hb402 "$public_port" "$admin_port" "http://127.0.0.1:$node_port"
hb402=http://127.0.0.1:$public_port
small=$(upload_item "$hb402" small application/octet-stream 1024)
large=$(upload_item "$hb402" large application/octet-stream 65536)

path=/~meta@1.0/info/address
current_pid=$HB402_PID
baseline_rows=()
if [ -n "${HB402_BASELINE:-}" ]; then
  base_port=$(free_port)
  HB402_NAME=baseline HB402_BIN=$HB402_BASELINE start_hb402 "$base_port" "$(free_port)" \
    "http://127.0.0.1:$node_port"
  baseline=http://127.0.0.1:$base_port
  baseline_rows=(
    "baseline pass-through → devnode|$baseline$path"
    "baseline DataItem read, 1 KiB|$baseline/$small"
  )
fi
rows=(
  "devnode directly|http://127.0.0.1:$node_port$path"
  "nginx → devnode|http://127.0.0.1:$nginx_port$path"
  "hb402 pass-through → devnode|$hb402$path"
  ${baseline_rows[0]:+"${baseline_rows[0]}"}
  "hb402 DataItem read, 1 KiB|$hb402/$small"
  ${baseline_rows[1]:+"${baseline_rows[1]}"}
  "hb402 DataItem read, 64 KiB|$hb402/$large"
)
declare -A rps
echo "| target | requests/s | p50 ms | p99 ms | errors | non-2xx |"
echo "|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
  name=${row%%|*}
  url=${row#*|}
  run_wrk 2 "$connections" "$url" >/dev/null # warm-up: connections, caches
  result=$(run_wrk "$duration" "$connections" "$url")
  rps[$name]=$(field "$result" rps)
  echo "| $name | $(field "$result" rps) | $(field "$result" p50_ms) | $(field "$result" p99_ms) | $(field "$result" errors) | $(field "$result" non2xx) |"
done
nginx_rps=${rps["nginx → devnode"]}
echo
for name in "hb402 pass-through → devnode" "hb402 DataItem read, 1 KiB"; do
  awk -v a="${rps[$name]}" -v b="$nginx_rps" -v n="$name" 'BEGIN { printf "%s / nginx: %.2f\n", n, a / b }'
done
if [ -n "${HB402_BASELINE:-}" ]; then
  for kind in "pass-through → devnode" "DataItem read, 1 KiB"; do
    awk -v a="${rps["hb402 $kind"]}" -v b="${rps["baseline $kind"]}" -v n="$kind" \
      'BEGIN { printf "hb402 / baseline, %s: %.3f\n", n, a / b }'
  done
fi
echo "hb402 peak RSS: $(peak_rss_mib "$current_pid") MiB; nginx config and logs in $BENCH_DIR"
