#!/usr/bin/env bash
# Seeds corpus/route with request targets: hb402's routes, the node's S3 API in several
# spellings, pass-through paths and known attacks. Byte 0 picks the method (see the target).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="$here/corpus/route"
mkdir -p "$dir"
id=Ekaibo2KKp_NjU_R73cJQriRQ3CH5Nnejan4p8lhF3Y
n=0
for target in \
    "/$id" "/resolve/$id" "/resolve/dataitems/$id.ans104" "/binary/$id" \
    "/protected/resolve/0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC/dataitems/$id.ans104/base-sepolia/0.01?token=t" \
    "/~s3@1.0/offchain-dataitems/dataitems/$id.ans104" "/~s3@1.0/hb402-private//dataitems/$id.ans104/" \
    "/%7Es3%401.0/offchain-dataitems" "/~s3@1.0/cache/offchain-dataitems/dataitems/$id.ans104" \
    "/~s3@1.0/offchain-dataitems?delete" "/upload" "/~bundler@1.0/item?codec-device=ans104@1.0" \
    "/~meta@1.0/info/address" "/~meta@1.0/info/../../~s3@1.0/x" "/~meta@1.0/info/%2e%2e/x" \
    "/$id/data" "/$id~json@1.0" "/~hyperbuddy@1.0/index.html" "//a/./b/../c/" "/a%2Fb"; do
    for method in 0 2 3 4; do
        n=$((n + 1))
        { printf "\\x$(printf %02x "$method")"; printf '%s' "$target"; } >"$dir/seed-$n"
    done
done
echo "seeded: $(ls "$dir" | wc -l) route"
