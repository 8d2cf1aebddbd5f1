#!/usr/bin/env bash
# Runs hb402 in front of hb402-devnode for development: `./scripts/dev.sh`.
# Public listener 127.0.0.1:8402, admin 127.0.0.1:9402, devnode 127.0.0.1:8734.
# State under ./dev-state (devnode data) and ./hb402-state (hb402). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q -p hb402 -p hb402-devnode
bin=$(scripts/target-dir.sh)/debug
mkdir -p dev-state

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$bin/hb402-devnode" --listen 127.0.0.1:8734 --data-dir dev-state/devnode &
pids+=($!)
"$bin/hb402" --config deploy/config.example.toml --upstream http://127.0.0.1:8734 &
pids+=($!)

for _ in $(seq 1 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/8402) 2>/dev/null; then break; fi
  sleep 0.1
done
cat <<MSG

hb402 is running:
  public   http://127.0.0.1:8402   (DataItem routes; of the node, only passthrough.allow)
  admin    http://127.0.0.1:9402   (/metrics, /healthz, /readyz)
  devnode  http://127.0.0.1:8734   (stand-in for a HyperBEAM ~s3@1.0 node)
Press Ctrl-C to stop.
MSG
wait
