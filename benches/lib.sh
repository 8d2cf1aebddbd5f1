# Shared by benches/compare.sh and benches/load/run.sh: release builds, services on loopback,
# wrk runs that print one RESULT line, process accounting from /proc. Source it from the repo root.
set -euo pipefail

BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/hb402-bench.XXXXXX)}
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # The logs stay for a look; the pre-signed payments and vouchers (hundreds of MB) do not.
  rm -f "$BENCH_DIR"/vouchers.txt "$BENCH_DIR"/payments-*.txt
}
trap cleanup EXIT

need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || {
      echo "$tool is needed (Debian: apt-get install wrk nginx-light)" >&2
      exit 1
    }
  done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1 ($2); logs in $BENCH_DIR" >&2
  exit 1
}

build_release() {
  echo "building release binaries" >&2
  cargo build -q --release -p hb402 -p hb402-devnode -p hb402-benches
}

start_devnode() { # PORT
  target/release/hb402-devnode --listen "127.0.0.1:$1" --data-dir "$BENCH_DIR/devnode" \
    >"$BENCH_DIR/devnode.log" 2>&1 &
  pids+=($!)
  DEVNODE_PID=$!
  wait_port "$1" devnode
}

start_nginx() { # PORT UPSTREAM_PORT
  mkdir -p "$BENCH_DIR/nginx"
  cat >"$BENCH_DIR/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $BENCH_DIR/nginx/nginx.pid;
error_log $BENCH_DIR/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $BENCH_DIR/nginx/body;
  proxy_temp_path $BENCH_DIR/nginx/proxy;
  fastcgi_temp_path $BENCH_DIR/nginx/fastcgi;
  uwsgi_temp_path $BENCH_DIR/nginx/uwsgi;
  scgi_temp_path $BENCH_DIR/nginx/scgi;
  upstream node { server 127.0.0.1:$2; keepalive 64; }
  server {
    listen 127.0.0.1:$1;
    location / {
      proxy_pass http://node;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
  nginx -c "$BENCH_DIR/nginx/nginx.conf" -p "$BENCH_DIR/nginx" >"$BENCH_DIR/nginx.log" 2>&1 &
  pids+=($!)
  wait_port "$1" nginx
}

start_hb402() { # PUBLIC ADMIN UPSTREAM_URL [EXTRA_TOML]; $HB402_NAME names its files, $HB402_BIN
  # runs another hb402 binary
  local name=${HB402_NAME:-hb402}
  cat >"$BENCH_DIR/$name.toml" <<TOML
version = 1
[server]
threads = ${HB402_THREADS:-2}
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1
[listen]
public = "127.0.0.1:$1"
admin = "127.0.0.1:$2"
public_base_url = "http://127.0.0.1:$1"
[upstream]
url = "$3"
[store]
state_dir = "$BENCH_DIR/$name-state"
${4:-}
TOML
  RUST_LOG=warn "${HB402_BIN:-target/release/hb402}" --config "$BENCH_DIR/$name.toml" >"$BENCH_DIR/$name.log" 2>&1 &
  pids+=($!)
  HB402_PID=$!
  wait_port "$1" hb402
}

# Signs and uploads a free item through hb402; prints its id.
upload_item() { # HB402_URL NAME CONTENT_TYPE BYTES
  head -c "$4" /dev/urandom >"$BENCH_DIR/$2.data"
  HB402_ITEM_KEY=0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6 \
    target/release/hb402 sign-item -o "$BENCH_DIR/$2.ans104" --tag "Content-Type=$3" \
    "$BENCH_DIR/$2.data" 2>/dev/null
  target/release/hb402 upload "$BENCH_DIR/$2.ans104" "$1/upload" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p'
}

# Prints COUNT distinct x402 payments (one PAYMENT-SIGNATURE value per line) for the 402
# challenge of URL, signed by anvil account #1 with target/release/sign-payments.
sign_pool() { # URL COUNT
  HB402_PAYER_KEY=0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d \
    target/release/sign-payments "$(challenge "$1")" "$2"
}

# The base64 PAYMENT-REQUIRED header of URL's 402.
challenge() { # URL
  python3 - "$1" <<'PY'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1])
except urllib.error.HTTPError as e:
    print(e.headers["payment-required"])
PY
}

# Prints the batch-settlement payments of CHANNELS channels paying COUNT reads each of URL
# (interleaved by channel), signed by anvil account #3 with target/release/sign-vouchers.
sign_vouchers() { # URL CHANNELS COUNT
  HB402_PAYER_KEY=0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6 \
    target/release/sign-vouchers "$(challenge "$1")" "$2" "$3"
}

# CPU seconds (user + system) a process has used so far.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# Peak resident set size of a process, in MiB.
peak_rss_mib() {
  awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# wrk for DURATION seconds; prints the RESULT line's fields. Extra args go to wrk.
run_wrk() { # DURATION CONNECTIONS URL [wrk args…]
  local duration=$1 connections=$2 url=$3
  shift 3
  local threads=${THREADS:-2}
  [ "$connections" -lt "$threads" ] && threads=$connections
  REPORT_LUA=benches/load/report.lua WRK_THREADS=$threads wrk -t "$threads" -c "$connections" -d "${duration}s" --latency \
    -s "${WRK_SCRIPT:-benches/load/report.lua}" "$@" "$url" | sed -n 's/^RESULT //p'
}

field() { # "k=v k=v" KEY
  tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"
}
