//! Property tests: arbitrary and mutated input never panics, and parse and serialize are inverse.

mod common;

use hb402_ans104::{DataItem, HeaderParser, SigningKey, Tag, tags};
use proptest::prelude::*;

fn arb_tag() -> impl Strategy<Value = Tag> {
    (
        prop::collection::vec(any::<u8>(), 1..40),
        prop::collection::vec(any::<u8>(), 1..80),
    )
        .prop_map(|(n, v)| Tag::new(n, v))
}

fn arb_item() -> impl Strategy<Value = DataItem> {
    (
        any::<[u8; 32]>(),
        prop::option::of(any::<[u8; 32]>()),
        prop::option::of(any::<[u8; 32]>()),
        prop::collection::vec(arb_tag(), 0..12),
        prop::collection::vec(any::<u8>(), 0..600),
        0u8..3,
    )
        .prop_map(|(seed, target, anchor, tags, data, kind)| {
            let key = match kind {
                0 => SigningKey::ed25519_from_seed(&seed),
                1 => SigningKey::solana_from_seed(&seed),
                _ => SigningKey::ethereum_from_bytes(&seed)
                    .unwrap_or_else(|_| SigningKey::ed25519_from_seed(&seed)),
            };
            DataItem::sign(&key, target, anchor, tags, data).unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), split in 0usize..2048) {
        if let Ok(item) = DataItem::parse(&bytes) {
            // Whatever parses serializes back to the same bytes.
            prop_assert_eq!(item.to_bytes(), bytes.clone());
            let _ = item.verify();
        }
        let mut p = HeaderParser::new(4096);
        let split = split.min(bytes.len());
        let _ = p.push(&bytes[..split]).and_then(|_| p.push(&bytes[split..]));
        let _ = tags::decode_tags(&bytes, (split % 130) as u64);
    }

    #[test]
    fn plausible_headers_never_panic(ty in prop::sample::select(vec![1u16, 2, 3, 4, 5, 6, 7, 101, 9]),
                                     rest in prop::collection::vec(any::<u8>(), 0..3000)) {
        let mut bytes = ty.to_le_bytes().to_vec();
        bytes.extend_from_slice(&rest);
        if let Ok(item) = DataItem::parse(&bytes) {
            prop_assert_eq!(item.to_bytes(), bytes);
            let _ = item.verify();
        }
    }

    #[test]
    fn serialize_then_parse_is_identity(item in arb_item()) {
        let bytes = item.to_bytes();
        let parsed = DataItem::parse(&bytes).unwrap();
        prop_assert_eq!(&parsed, &item);
        prop_assert_eq!(parsed.to_bytes(), bytes);
        prop_assert!(parsed.verify().is_ok());
    }

    #[test]
    fn mutated_items_never_panic_and_never_verify(item in arb_item(), pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let mut bytes = item.to_bytes();
        let i = pos.index(bytes.len());
        bytes[i] ^= xor;
        if let Ok(m) = DataItem::parse(&bytes) {
            // A flip in the signature, owner, tags or data must not verify. The only bytes whose
            // change can keep an item valid are none: every byte is covered by the signature or
            // is the signature itself.
            prop_assert!(m.verify().is_err(), "flip at {} verified", i);
        }
    }
}

#[test]
fn committed_fixtures_survive_truncation_at_every_length() {
    for (_, bytes) in common::fixtures() {
        for len in 0..bytes.len().min(1400) {
            let _ = DataItem::parse(&bytes[..len]);
        }
    }
}

/// Regression: a type-3 (Ethereum) item with its recovery byte flipped (27 ↔ 28) verified,
/// because only (r, s) were checked against the owner; the flipped signature is a second id
/// for the same content. The byte must recover the owner.
#[test]
fn ethereum_items_need_the_recovery_byte_that_recovers_the_owner() {
    for seed in 1u8..=8 {
        let key = hb402_ans104::SigningKey::ethereum_from_bytes(&[seed; 32]).unwrap();
        let item = DataItem::sign(&key, None, None, vec![], vec![seed; 16]).unwrap();
        item.verify().unwrap();
        let mut bytes = item.to_bytes();
        // Signature type (2 bytes), then the 65-byte signature ending with v.
        let v = 2 + 64;
        assert!(matches!(bytes[v], 27 | 28));
        bytes[v] = if bytes[v] == 27 { 28 } else { 27 };
        let flipped = DataItem::parse(&bytes).unwrap();
        assert_ne!(flipped.id(), item.id());
        assert!(flipped.verify().is_err(), "seed {seed}: flipped v verifies");
    }
}
