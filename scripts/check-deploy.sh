#!/usr/bin/env bash
# Offline checks of deploy/: every TOML validates with `hb402 --validate` (secrets from dummy
# environment values), the Kubernetes ConfigMap embeds exactly deploy/k8s/config.toml, JSON and
# YAML parse, the dashboard and alert rules only use metrics hb402 exports, the Dockerfile keeps
# its guarantees, and the systemd unit passes `systemd-analyze verify` where available.
# Part of ./scripts/test.sh; `HB402_BIN` selects the binary (default: the debug build's).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${HB402_BIN:-$(scripts/target-dir.sh)/debug/hb402}
[ -x "$bin" ] || cargo build -q -p hb402
fail() {
  echo "check-deploy: $*" >&2
  exit 1
}

# 1. Configurations.
for toml in deploy/config.example.toml deploy/compose/config.toml deploy/k8s/config.toml; do
  HB402_SHARE_SECRET=check-share-secret-0123456789 HB402_ADMIN_KEY=check-admin-key-0123456789 \
    HB402_RECEIPT_SECRET=check-receipt-secret-0123456789 \
    "$bin" --validate --config "$toml" >/dev/null || fail "$toml does not validate"
done

# 2. The ConfigMap carries deploy/k8s/config.toml verbatim; 3. JSON and YAML parse.
python3 - <<'PY' || fail "deploy/ files do not parse or disagree"
import json, sys
import yaml

docs = list(yaml.safe_load_all(open("deploy/k8s/hb402-sidecar.yaml")))
maps = [d for d in docs if d and d.get("kind") == "ConfigMap"]
embedded = maps[0]["data"]["config.toml"]
if embedded.strip() != open("deploy/k8s/config.toml").read().strip():
    sys.exit("the ConfigMap in deploy/k8s/hb402-sidecar.yaml differs from deploy/k8s/config.toml")
for path in ["deploy/compose/compose.yaml", "deploy/prometheus/hb402-alerts.yaml"]:
    list(yaml.safe_load_all(open(path)))
json.load(open("deploy/grafana/hb402-dashboard.json"))
PY

# 4. Metric names in the dashboard and alerts exist.
used=$(grep -oh 'hb402_[a-z_]*' deploy/grafana/hb402-dashboard.json deploy/prometheus/hb402-alerts.yaml \
  | sed -E 's/_(bucket|sum|count)$//' | sort -u)
for metric in $used; do
  grep -q "\"$metric\"" crates/gate/src/metrics.rs || fail "unknown metric $metric in deploy/"
done

# 5. The image is built --locked, runs as a non-root user and has a health check.
for needle in "--locked" "USER hb402" "HEALTHCHECK"; do
  grep -q -- "$needle" deploy/Dockerfile || fail "deploy/Dockerfile lacks $needle"
done

# 6. The systemd unit, when systemd-analyze is available (with ExecStart pointed at this binary).
if command -v systemd-analyze >/dev/null; then
  tmp=$(mktemp -d)
  sed "s|/usr/local/bin/hb402|$(realpath "$bin")|" deploy/systemd/hb402.service >"$tmp/hb402.service"
  if ! out=$(systemd-analyze verify "$tmp/hb402.service" 2>&1); then
    rm -rf "$tmp"
    fail "systemd-analyze verify: $out"
  fi
  rm -rf "$tmp"
else
  echo "check-deploy: systemd-analyze not available, the unit file was not verified" >&2
fi
echo "deploy/: all checks passed"
