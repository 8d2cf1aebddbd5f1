#!/usr/bin/env bash
# hb402's test suite, as a newcomer runs it: `./scripts/test.sh`.
#
# Installs the pinned JavaScript and Python reference packages the tests drive (npm ci and a
# virtualenv, only when missing or out of date), then runs every Rust test in the workspace with
# cargo-nextest, then the doc tests, then the offline checks of deploy/.
# Extra arguments go to nextest (e.g. `./scripts/test.sh -p hb402-ans104`).
set -euo pipefail
cd "$(dirname "$0")/.."

for dir in crates/ans104/tests/vectors crates/testkit/js; do
  if [ ! -f "$dir/node_modules/.package-lock.json" ] \
    || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "installing the JavaScript packages of $dir" >&2
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  fi
done

# The PyPI x402 client of the test kit, in its own virtualenv (again only when missing or when
# requirements.txt changed since the last install).
py=crates/testkit/py
if [ ! -x "$py/.venv/bin/python" ] || [ ! -f "$py/.venv/.installed" ] \
  || [ "$py/requirements.txt" -nt "$py/.venv/.installed" ]; then
  echo "installing the Python packages of $py" >&2
  [ -x "$py/.venv/bin/python" ] || python3 -m venv "$py/.venv"
  "$py/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$py/requirements.txt"
  touch "$py/.venv/.installed"
fi

cargo nextest run --workspace --no-fail-fast "$@"
cargo test --workspace --doc --quiet
./scripts/check-deploy.sh
