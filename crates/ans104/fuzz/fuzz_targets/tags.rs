//! The Avro tag decoder: byte 0 of the input is the declared tag count, the rest the tag bytes.
//!
//! Whatever decodes respects the ANS-104 limits and the declared count, re-encodes into bytes that
//! decode to the same tags, and re-encodes byte for byte exactly when the input was the canonical
//! single-block encoding (checked by an independent reader below). Other encodings the decoder
//! accepts (several blocks, negative block counts, overlong varints, a lone terminator for no tags)
//! are never shorter than the canonical one.

#![no_main]

use hb402_ans104::tags::{self, MAX_NAME_BYTES, MAX_TAGS, MAX_VALUE_BYTES, Tag, TagError};
use libfuzzer_sys::fuzz_target;

/// Reads a minimally encoded zig-zag varint; `None` for anything else.
fn minimal_long(bytes: &[u8], pos: &mut usize) -> Option<i64> {
    let mut acc: u64 = 0;
    for i in 0..10 {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        acc |= u64::from(byte & 0x7f).checked_shl(7 * i)?;
        if byte & 0x80 == 0 {
            // Minimal: no trailing zero group (except the single byte 0).
            if i > 0 && byte == 0 {
                return None;
            }
            return Some(((acc >> 1) as i64) ^ -((acc & 1) as i64));
        }
    }
    None
}

/// Whether `bytes` is exactly what a canonical writer emits for `tags`: nothing for no tags,
/// otherwise one positive block with minimal varints and the terminator.
fn is_canonical(bytes: &[u8], tags: &[Tag]) -> bool {
    if tags.is_empty() {
        return bytes.is_empty();
    }
    let mut pos = 0;
    if minimal_long(bytes, &mut pos) != Some(tags.len() as i64) {
        return false;
    }
    for tag in tags {
        for field in [&tag.name, &tag.value] {
            if minimal_long(bytes, &mut pos) != Some(field.len() as i64) {
                return false;
            }
            pos += field.len();
        }
    }
    bytes.get(pos..) == Some(&[0][..])
}

fuzz_target!(|data: &[u8]| {
    let Some((&count, bytes)) = data.split_first() else {
        return;
    };
    let declared = u64::from(count);
    let Ok(decoded) = tags::decode_tags(bytes, declared) else {
        return;
    };

    assert_eq!(decoded.len() as u64, declared);
    assert!(decoded.len() <= MAX_TAGS);
    for tag in &decoded {
        assert!(!tag.name.is_empty() && tag.name.len() <= MAX_NAME_BYTES);
        assert!(tag.value.len() <= MAX_VALUE_BYTES);
    }

    match tags::encode_tags(&decoded) {
        Ok(encoded) => {
            assert!(decoded.iter().all(|t| !t.value.is_empty()));
            assert_eq!(tags::decode_tags(&encoded, declared).as_ref(), Ok(&decoded));
            assert!(
                is_canonical(&encoded, &decoded),
                "the encoder is not canonical"
            );
            assert_eq!(
                encoded == bytes,
                is_canonical(bytes, &decoded),
                "byte-exact round trip must hold exactly for canonical input"
            );
            assert!(
                encoded.len() <= bytes.len(),
                "an accepted encoding is shorter than canonical"
            );
        }
        // Decoding accepts empty values (HyperBEAM writes them); encoding refuses them, and
        // nothing else, since the decoder enforced every other limit.
        Err(TagError::EmptyValue { index }) => assert!(decoded[index].value.is_empty()),
        Err(e) => panic!("decoded tags fail to encode: {e:?}"),
    }
});
