#!/usr/bin/env bash
# Builds the seed corpora under corpus/ from the committed DataItem fixtures.
#
# header_parser and streaming_verify take a control prefix (see src/lib.rs) before the item: each
# fixture is seeded whole, in 1-byte chunks, in mixed chunks and under the smallest header bound.
# tags takes the declared count byte followed by the fixture's tag bytes (field 10).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
fixtures="$here/../tests/vectors/fixtures"
corpus="$here/corpus"
mkdir -p "$corpus/header_parser" "$corpus/streaming_verify" "$corpus/tags"

# u8 at offset $2 of file $1
byte() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
# little-endian u64 at offset $2 of file $1 (the fixtures' values fit in 32 bits)
u64le() {
    local v=0 i
    for i in 3 2 1 0; do v=$((v * 256 + $(byte "$1" $(($2 + i))))); done
    echo "$v"
}

for f in "$fixtures"/*.ans104; do
    name="$(basename "$f" .ans104)"
    for variant in whole:'\x00' bytewise:'\x01\x01' mixed:'\x03\x07\x40\xff' small:'\x82\x10\x00'; do
        for target in header_parser streaming_verify; do
            { printf "${variant#*:}"; cat "$f"; } >"$corpus/$target/$name-${variant%%:*}"
        done
    done

    # Field offsets by signature type (signature + owner lengths).
    case "$(( $(byte "$f" 0) + 256 * $(byte "$f" 1) ))" in
        1) fixed=1024 ;;
        2 | 4) fixed=96 ;;
        3) fixed=130 ;;
        *) continue ;;
    esac
    pos=$((2 + fixed))
    [ "$(byte "$f" "$pos")" = 1 ] && pos=$((pos + 32))
    pos=$((pos + 1))
    [ "$(byte "$f" "$pos")" = 1 ] && pos=$((pos + 32))
    pos=$((pos + 1))
    count="$(u64le "$f" "$pos")"
    len="$(u64le "$f" $((pos + 8)))"
    {
        printf "\\x$(printf %02x "$count")"
        dd if="$f" bs=1 skip=$((pos + 16)) count="$len" status=none
    } >"$corpus/tags/$name"
done

echo "seeded: $(ls "$corpus/header_parser" | wc -l) header_parser, $(ls "$corpus/streaming_verify" | wc -l) streaming_verify, $(ls "$corpus/tags" | wc -l) tags"
