//! hb402-ans104 against items made by the reference implementation (npm `@dha-team/arbundles`):
//! parse, id, owner, tags, data offset and verification agree; single-byte tampering is caught;
//! chunking does not matter; items signed here verify under arbundles.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hb402_ans104::{
    DEFAULT_MAX_HEADER_BYTES, DataItem, Error, HeaderParser, SignatureType, SigningKey,
    StreamingVerifier, Tag,
};
use sha2::{Digest, Sha256};

use common::{Fixture, fixtures, node, read_hex_key, vectors_dir};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn check_against_manifest(f: &Fixture, bytes: &[u8]) {
    let item = DataItem::parse(bytes).unwrap_or_else(|e| panic!("{}: {e}", f.file));
    let h = item.header();
    assert_eq!(h.signature_type().as_u16(), f.signature_type, "{}", f.file);
    assert_eq!(item.id().to_string(), f.id, "{}", f.file);
    assert_eq!(b64(h.owner()), f.owner_b64url, "{}", f.file);
    assert_eq!(h.owner_address(), f.owner_address, "{}", f.file);
    assert_eq!(h.target().map(|t| b64(t)), f.target_b64url, "{}", f.file);
    assert_eq!(h.anchor().map(|a| b64(a)), f.anchor_b64url, "{}", f.file);
    let tags: Vec<(String, String)> = h
        .tags()
        .iter()
        .map(|t| (t.name_str().into_owned(), t.value_str().into_owned()))
        .collect();
    let expected: Vec<(String, String)> = f
        .tags
        .iter()
        .map(|t| (t.name.clone(), t.value.clone()))
        .collect();
    assert_eq!(tags, expected, "{}", f.file);
    assert_eq!(h.tag_bytes().len() as u64, f.tag_bytes, "{}", f.file);
    assert_eq!(h.data_offset(), f.data_offset, "{}", f.file);
    assert_eq!(item.data().len() as u64, f.data_size, "{}", f.file);
    assert_eq!(
        hex::encode(Sha256::digest(item.data())),
        f.data_sha256_hex,
        "{}",
        f.file
    );
    assert_eq!(bytes.len() as u64, f.size, "{}", f.file);
    // Serialization is byte-exact.
    assert_eq!(item.to_bytes(), bytes, "{}", f.file);

    let verdict = item.verify();
    if h.tag_bytes().len() > hb402_ans104::tags::PORTABLE_TAG_BYTES {
        // arbundles refuses tag bytes over 4096 as a policy of its own; the item is valid ANS-104
        // and hb402 accepts it, reporting it as not portable.
        assert!(!f.valid, "{}", f.file);
        assert_eq!(verdict, Ok(()), "{}", f.file);
        assert!(!h.is_portable());
    } else if f.valid {
        assert_eq!(verdict, Ok(()), "{}", f.file);
    } else {
        assert_eq!(verdict, Err(Error::InvalidSignature), "{}", f.file);
    }
}

#[test]
fn every_fixture_agrees_with_arbundles() {
    let all = fixtures();
    assert!(all.len() >= 15, "fixtures are missing");
    let mut seen_types = std::collections::BTreeSet::new();
    for (f, bytes) in &all {
        check_against_manifest(f, bytes);
        seen_types.insert(f.signature_type);
    }
    assert_eq!(seen_types.into_iter().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
}

/// The published vectors of the reference (ans104.md §9) are among the fixtures, byte for byte.
#[test]
fn published_vectors_are_reproduced() {
    let expected = [
        (
            "ed25519_tags_target_anchor.ans104",
            "Ekaibo2KKp_NjU_R73cJQriRQ3CH5Nnejan4p8lhF3Y",
            226,
        ),
        (
            "ed25519_minimal.ans104",
            "m5QMdMAaINas9G_kNlXqHOngwe4uWo8Y6Hij2g-_pDM",
            116,
        ),
        (
            "ethereum_tags.ans104",
            "Xjb8jhs3ZBZxC6Zc9Y5Q7PLjiehPJ_2EJMdXrHGWmTo",
            196,
        ),
        (
            "solana_hex.ans104",
            "CJEfJwzzOtMp5unuWE-wbVUUBjUAKKnkqVoMXPunM0g",
            162,
        ),
    ];
    for (file, id, offset) in expected {
        let bytes = std::fs::read(vectors_dir().join("fixtures").join(file)).unwrap();
        let item = DataItem::parse(&bytes).unwrap();
        assert_eq!(item.id().to_string(), id);
        assert_eq!(item.header().data_offset(), offset);
        item.verify().unwrap();
    }
    // §9.3: the Ethereum owner recovers to anvil's account #1.
    let bytes = std::fs::read(vectors_dir().join("fixtures/ethereum_tags.ans104")).unwrap();
    assert_eq!(
        DataItem::parse(&bytes).unwrap().header().owner_address(),
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    );
}

/// Signing here reproduces the deterministic arbundles items exactly (Ed25519 and RFC 6979 ECDSA).
#[test]
fn signing_reproduces_deterministic_arbundles_items() {
    let seed = read_hex_key("ed25519.seed.hex");
    let eth = read_hex_key("secp256k1.key.hex");
    let tags = vec![
        Tag::new("Content-Type", "text/plain"),
        Tag::new("App-Name", "hb402-test"),
    ];
    let mut anchor = [0u8; 32];
    anchor.copy_from_slice(b"hb402-anchor-0123456789abcdefghi");
    let cases = [
        (
            "ed25519_tags_target_anchor.ans104",
            SigningKey::ed25519_from_seed(&seed),
            Some([0xaa; 32]),
            Some(anchor),
            tags.clone(),
            b"hello hb402".to_vec(),
        ),
        (
            "ed25519_minimal.ans104",
            SigningKey::ed25519_from_seed(&seed),
            None,
            None,
            vec![],
            b"x".to_vec(),
        ),
        (
            "ethereum_tags.ans104",
            SigningKey::ethereum_from_bytes(&eth).unwrap(),
            None,
            None,
            tags.clone(),
            b"hello hb402".to_vec(),
        ),
        (
            "solana_hex.ans104",
            SigningKey::solana_from_seed(&seed),
            None,
            None,
            tags.clone(),
            b"hello hb402".to_vec(),
        ),
    ];
    for (file, key, target, anchor, tags, data) in cases {
        let expected = std::fs::read(vectors_dir().join("fixtures").join(file)).unwrap();
        let item = DataItem::sign(&key, target, anchor, tags, data).unwrap();
        assert_eq!(item.to_bytes(), expected, "{file}");
    }
}

/// Flipping any single byte of signature, owner, tags or data makes verification fail (or the
/// item unparsable); it never panics and never verifies.
#[test]
fn every_single_byte_flip_is_caught() {
    for (f, bytes) in fixtures() {
        if !f.valid || f.tag_bytes > 4096 {
            continue;
        }
        let item = DataItem::parse(&bytes).unwrap();
        let h = item.header();
        let sig_start = 2;
        let owner_start = sig_start + h.signature().len();
        let owner_end = owner_start + h.owner().len();
        let tags_start = h.data_offset() as usize - h.tag_bytes().len();
        let regions = [
            (sig_start..owner_start),
            (owner_start..owner_end),
            (tags_start..h.data_offset() as usize),
            (h.data_offset() as usize..bytes.len()),
        ];
        for region in regions {
            for i in region {
                let mut mutated = bytes.clone();
                mutated[i] ^= 0x01;
                let verdict = DataItem::parse(&mutated).and_then(|m| m.verify());
                assert!(
                    verdict.is_err(),
                    "{}: flipping byte {i} still verifies",
                    f.file
                );
            }
        }
    }
}

fn verify_in_chunks(bytes: &[u8], sizes: &mut dyn FnMut() -> usize) -> hb402_ans104::VerifiedItem {
    let mut v = StreamingVerifier::new(DEFAULT_MAX_HEADER_BYTES);
    let mut pos = 0;
    while pos < bytes.len() {
        let n = sizes().clamp(1, bytes.len() - pos);
        v.push(&bytes[pos..pos + n]).unwrap();
        pos += n;
    }
    v.finish().unwrap()
}

/// The incremental parser and the streaming verifier give the same result whatever the chunking.
#[test]
fn chunking_does_not_matter() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 300) as usize + 1
    };
    for (f, bytes) in fixtures() {
        if !f.valid || f.tag_bytes > 4096 {
            continue;
        }
        let whole = DataItem::parse(&bytes).unwrap();
        let one = verify_in_chunks(&bytes, &mut || 1);
        let seven = verify_in_chunks(&bytes, &mut || 7);
        let rand = verify_in_chunks(&bytes, &mut random);
        for v in [&one, &seven, &rand] {
            assert_eq!(&v.header, whole.header(), "{}", f.file);
            assert_eq!(v.id.to_string(), f.id);
            assert_eq!(v.data_size, f.data_size);
            assert_eq!(v.size, f.size);
        }
        // The header parser alone reports exactly where the data starts.
        let mut p = HeaderParser::default();
        let mut offset = None;
        for (i, b) in bytes.iter().enumerate() {
            if let Some(parsed) = p.push(std::slice::from_ref(b)).unwrap() {
                assert_eq!(parsed.consumed, 1);
                offset = Some(i as u64 + 1);
                break;
            }
        }
        // An item with empty data ends with the header.
        assert_eq!(offset.unwrap(), f.data_offset, "{}", f.file);
    }
}

#[test]
fn truncated_items_are_refused_by_the_streaming_verifier() {
    for (f, bytes) in fixtures() {
        if !f.valid || f.tag_bytes > 4096 {
            continue;
        }
        // Cut inside the header: truncated.
        let mut v = StreamingVerifier::new(DEFAULT_MAX_HEADER_BYTES);
        v.push(&bytes[..f.data_offset as usize - 1]).unwrap();
        assert!(
            matches!(v.finish(), Err(Error::Truncated { .. })),
            "{}",
            f.file
        );
        // Cut inside the data: the signature no longer verifies.
        if f.data_size > 0 {
            let mut v = StreamingVerifier::new(DEFAULT_MAX_HEADER_BYTES);
            v.push(&bytes[..bytes.len() - 1]).unwrap();
            assert_eq!(
                v.finish().unwrap_err(),
                Error::InvalidSignature,
                "{}",
                f.file
            );
        }
    }
}

/// A 5 MiB item made by arbundles at test time verifies streaming, with the same id.
#[test]
fn five_mib_arbundles_item_verifies_streaming() {
    let dir = tempfile::tempdir().unwrap();
    node(&["generate.mjs", "--large", dir.path().to_str().unwrap()]);
    let manifest = common::load_manifest(dir.path());
    let f = &manifest[0];
    assert!(f.data_size >= 5 * 1024 * 1024);
    let bytes = std::fs::read(dir.path().join(&f.file)).unwrap();
    let v = verify_in_chunks(&bytes, &mut || 64 * 1024);
    assert_eq!(v.id.to_string(), f.id);
    assert_eq!(v.header.data_offset(), f.data_offset);
    check_against_manifest(f, &bytes);
}

#[derive(serde::Deserialize)]
struct NodeVerdict {
    id: String,
    valid: bool,
    signature_type: u16,
}

/// Items signed by hb402-ans104 with every supported type verify under arbundles.
#[test]
fn items_signed_here_verify_under_arbundles() {
    let seed = read_hex_key("ed25519.seed.hex");
    let eth = read_hex_key("secp256k1.key.hex");
    let pem = std::fs::read_to_string(vectors_dir().join("keys/arweave.pkcs8.pem")).unwrap();
    let keys = [
        SigningKey::arweave_from_pkcs8_pem(&pem).unwrap(),
        SigningKey::ed25519_from_seed(&seed),
        SigningKey::ethereum_from_bytes(&eth).unwrap(),
        SigningKey::solana_from_seed(&seed),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut ids = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        for (j, (target, anchor, tags, data)) in [
            (None, None, vec![], b"".to_vec()),
            (
                Some([7u8; 32]),
                Some([8u8; 32]),
                vec![
                    Tag::new("Content-Type", "application/json"),
                    Tag::new("n", "v"),
                ],
                br#"{"hello":"hb402"}"#.to_vec(),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let item = DataItem::sign(key, target, anchor, tags, data).unwrap();
            item.verify().unwrap();
            let path = dir.path().join(format!("item-{i}-{j}.ans104"));
            std::fs::write(&path, item.to_bytes()).unwrap();
            files.push(path.to_str().unwrap().to_owned());
            ids.push((item.id().to_string(), key.signature_type()));
        }
    }
    let mut args = vec!["verify.mjs"];
    args.extend(files.iter().map(String::as_str));
    let out = node(&args);
    let verdicts: Vec<NodeVerdict> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("verify.mjs JSON line"))
        .collect();
    assert_eq!(verdicts.len(), ids.len());
    for (v, (id, ty)) in verdicts.iter().zip(&ids) {
        assert!(v.valid, "arbundles rejects an item of type {ty}");
        assert_eq!(&v.id, id);
        assert_eq!(v.signature_type, ty.as_u16());
    }
    assert!(ids.iter().any(|(_, t)| *t == SignatureType::Arweave));
}
