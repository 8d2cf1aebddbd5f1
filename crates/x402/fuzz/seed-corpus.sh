#!/usr/bin/env bash
# Seeds corpus/payment_header with the payment headers the reference clients made
# (crates/testkit/fixtures/payments.json: @x402/evm v2, legacy x402 v1, @x402/core v1).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fixture="$here/../../testkit/fixtures/payments.json"
mkdir -p "$here/corpus/payment_header"
for client in v2 v1 v1core; do
    python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))[sys.argv[2]]["header"])' \
        "$fixture" "$client" >"$here/corpus/payment_header/$client"
done
echo "seeded: $(ls "$here/corpus/payment_header" | wc -l) payment_header"
