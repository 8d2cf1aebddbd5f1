#!/usr/bin/env bash
# Large bodies, side by side in one run against the same hb402-devnode: one upload of a SIZE-byte
# DataItem (default 1 GiB) through hb402 and through nginx (plain reverse proxy, request
# buffering off), then wrk reads of a 64 KiB and a 16 MiB item through each. Prints MB/s, the
# ratios, and hb402's peak RSS during the upload (VmHWM).
#
#   ./benches/large.sh [SIZE] [DURATION] [CONNECTIONS]
#
# Needs wrk, nginx and curl; SIZE bytes of free disk for the item file (and the devnode's copy).
cd "$(dirname "$0")/.."
source benches/lib.sh
need wrk nginx python3 curl
size=${1:-1073741824}
duration=${2:-10}
connections=${3:-8}
build_release
# The items and the devnode's copies are SIZE bytes each: removed on exit, whatever happens.
trap 'cleanup; rm -rf "$BENCH_DIR/devnode" "$BENCH_DIR"/big*.ans104' EXIT

node_port=$(free_port)
nginx_port=$(free_port)
public_port=$(free_port)
admin_port=$(free_port)
target/release/hb402-devnode --listen "127.0.0.1:$node_port" --data-dir "$BENCH_DIR/devnode" \
  --max-body-bytes $((size + 1048576)) >"$BENCH_DIR/devnode.log" 2>&1 &
pids+=($!)
wait_port "$node_port" devnode
start_nginx "$nginx_port" "$node_port"
# Stream request bodies to the node as they come, like hb402 does.
sed -i 's|location / {|client_max_body_size 0; proxy_request_buffering off;\n    location / {|' \
  "$BENCH_DIR/nginx/nginx.conf"
nginx -c "$BENCH_DIR/nginx/nginx.conf" -p "$BENCH_DIR/nginx" -s reload
sleep 1
start_hb402 "$public_port" "$admin_port" "http://127.0.0.1:$node_port" \
  "[limits]
max_upload_bytes = $((size + 1048576))"
hb402=http://127.0.0.1:$public_port

# Two items of SIZE bytes (different seeds: the second upload is not a duplicate).
target/release/gen-item "$size" 1 >"$BENCH_DIR/big1.ans104" 2>"$BENCH_DIR/big1.id"
target/release/gen-item "$size" 2 >"$BENCH_DIR/big2.ans104" 2>"$BENCH_DIR/big2.id"
id2=$(tr -d '\n' <"$BENCH_DIR/big2.id")

upload() { # URL FILE -> seconds
  curl -sS -o "$BENCH_DIR/upload.out" -w '%{http_code} %{time_total}' \
    -X POST -H 'content-type: application/octet-stream' -T "$2" "$1" |
    { read -r code seconds
      [ "${code:0:1}" = 2 ] || { echo "upload to $1 answered $code: $(cat "$BENCH_DIR/upload.out")" >&2; exit 1; }
      echo "$seconds"; }
}
hb402_s=$(upload "$hb402/upload" "$BENCH_DIR/big1.ans104")
hb402_rss=$(peak_rss_mib "$HB402_PID")
# The same bytes' worth through nginx, as the node's own PutObject (with the device's credential).
auth="authorization: AWS4-HMAC-SHA256 Credential=hb402-dev/20250101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=hb402"
nginx_s=$(curl -sS -o /dev/null -w '%{time_total}' -H "$auth" -T "$BENCH_DIR/big2.ans104" \
  "http://127.0.0.1:$nginx_port/~s3@1.0/offchain-dataitems/dataitems/$id2.ans104")
rm -f "$BENCH_DIR/big1.ans104" "$BENCH_DIR/big2.ans104"
mbps() { awk -v b="$size" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1048576 }'; }
echo "| upload of $((size / 1048576)) MiB | seconds | MB/s |"
echo "|---|---|---|"
echo "| hb402 → devnode | $hb402_s | $(mbps "$hb402_s") |"
echo "| nginx → devnode | $nginx_s | $(mbps "$nginx_s") |"
awk -v a="$nginx_s" -v b="$hb402_s" 'BEGIN { printf "hb402 / nginx upload throughput: %.2f\n", a / b }'
echo "hb402 peak RSS after the upload: $hb402_rss MiB"
echo

# Reads: a 64 KiB item (kept in hb402's item cache once hot) and a 16 MiB one (streamed).
echo "| read | hb402 MB/s | nginx MB/s | hb402 / nginx |"
echo "|---|---|---|---|"
for bytes in 65536 16777216; do
  id=$(upload_item "$hb402" "r$bytes" application/octet-stream "$bytes")
  key="/~s3@1.0/offchain-dataitems/dataitems/$id.ans104"
  run_wrk 2 "$connections" "$hb402/binary/$id" >/dev/null
  a=$(run_wrk "$duration" "$connections" "$hb402/binary/$id")
  run_wrk 2 "$connections" "http://127.0.0.1:$nginx_port$key" -H "$auth" >/dev/null
  b=$(run_wrk "$duration" "$connections" "http://127.0.0.1:$nginx_port$key" -H "$auth")
  item_bytes=$(stat -c %s "$BENCH_DIR/r$bytes.ans104")
  ra=$(awk -v r="$(field "$a" rps)" -v n="$item_bytes" 'BEGIN { printf "%.0f", r * n / 1048576 }')
  rb=$(awk -v r="$(field "$b" rps)" -v n="$item_bytes" 'BEGIN { printf "%.0f", r * n / 1048576 }')
  echo "| $((bytes / 1024)) KiB item, whole (\`/binary/<id>\`) | $ra | $rb | $(awk -v a="$ra" -v b="$rb" 'BEGIN { printf "%.2f", a / b }') |"
done
echo "hb402 peak RSS at the end: $(peak_rss_mib "$HB402_PID") MiB; logs in $BENCH_DIR"
