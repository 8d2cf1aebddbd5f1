//! Share-link tokens: interoperability (jwt.io, PyJWT), tampering, algorithms, expiry.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hb402_gate::share::{
    self, MAX_TOKEN_BYTES, ShareClaims, ShareError, key_matches, mint, verify, verify_signature,
};

const SECRET: &[u8] = b"0123456789abcdef-share-secret";

fn claims() -> ShareClaims {
    ShareClaims {
        bucket_name: "hb402-private".into(),
        load_acc: "load_acc_test".into(),
        dataitem_key: "dataitems/Q9qsw4QGrcQxfA3Fr9yW9Yk9Bxz8tEAGYJKqcn0Ghuo.ans104".into(),
        exp: 2_000,
        iat: 1_000,
        payee: None,
        amount: None,
        network: None,
    }
}

/// Test helper: checks the signature and decodes the payload as generic JSON claims.
fn generic_claims(secret: &[u8], token: &str) -> Result<serde_json::Value, ShareError> {
    let payload = verify_signature(secret, token)?;
    Ok(serde_json::from_slice(&payload).expect("signed payload is JSON"))
}

/// Replaces one part of a token.
fn with_part(token: &str, index: usize, part: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[index] = part;
    parts.join(".")
}

#[test]
fn jwt_io_hs256_vector_verifies() {
    let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    let payload = generic_claims(b"your-256-bit-secret", token).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({"sub": "1234567890", "name": "John Doe", "iat": 1516239022})
    );
    assert_eq!(
        generic_claims(b"your-256-bit-secreT", token),
        Err(ShareError::BadSignature)
    );
    // The signature is good, but these are not share-link claims.
    assert!(matches!(
        verify(b"your-256-bit-secret", token, 0),
        Err(ShareError::InvalidClaims(_))
    ));
}

/// Tokens made once with PyJWT 2.15.1, independently of this crate:
///
/// ```python
/// import jwt
/// jwt.encode(claims, "hb402-pyjwt-cross-check-secret-0123456789", algorithm="HS256")
/// ```
///
/// with the claims of [`pyjwt_paid_claims`] and [`pyjwt_free_claims`] as Python dicts in the
/// same key order (`None` for the null payment claims).
const PYJWT_SECRET: &[u8] = b"hb402-pyjwt-cross-check-secret-0123456789";
const PYJWT_PAID: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJidWNrZXRfbmFtZSI6ImhiNDAyLXByaXZhdGUiLCJsb2FkX2FjYyI6ImxvYWRfYWNjX3B5and0IiwiZGF0YWl0ZW1fa2V5IjoiZGF0YWl0ZW1zL1E5cXN3NFFHcmNReGZBM0ZyOXlXOVlrOUJ4ejh0RUFHWUpLcWNuMEdodW8uYW5zMTA0IiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDAsInBheWVlIjoiMHgyMDk2OTNCYzZhZmMwQzUzMjhiQTM2RmFGMDNDNTE0RUYzMTIyODdDIiwiYW1vdW50IjowLjAxLCJuZXR3b3JrIjoiYmFzZS1zZXBvbGlhIn0.3jCCg4ZuBIUaeoLcve5xPGTJgK47fgVFFlrszCiSNdI";
const PYJWT_FREE: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJidWNrZXRfbmFtZSI6Im9mZmNoYWluLWRhdGFpdGVtcyIsImxvYWRfYWNjIjoibG9hZF9hY2NfcHlqd3QiLCJkYXRhaXRlbV9rZXkiOiJROXFzdzRRR3JjUXhmQTNGcjl5VzlZazlCeHo4dEVBR1lKS3FjbjBHaHVvIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDAsInBheWVlIjpudWxsLCJhbW91bnQiOm51bGwsIm5ldHdvcmsiOm51bGx9.hAeLkXON8R_Nr5IUZMdA9BdN8ikL67GE5haUpeqLMMc";

fn pyjwt_paid_claims() -> ShareClaims {
    ShareClaims {
        bucket_name: "hb402-private".into(),
        load_acc: "load_acc_pyjwt".into(),
        dataitem_key: "dataitems/Q9qsw4QGrcQxfA3Fr9yW9Yk9Bxz8tEAGYJKqcn0Ghuo.ans104".into(),
        exp: 4_102_444_800,
        iat: 1_700_000_000,
        payee: Some("0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into()),
        amount: Some(0.01),
        network: Some("base-sepolia".into()),
    }
}

fn pyjwt_free_claims() -> ShareClaims {
    ShareClaims {
        bucket_name: "offchain-dataitems".into(),
        load_acc: "load_acc_pyjwt".into(),
        dataitem_key: "Q9qsw4QGrcQxfA3Fr9yW9Yk9Bxz8tEAGYJKqcn0Ghuo".into(),
        exp: 4_102_444_800,
        iat: 1_700_000_000,
        payee: None,
        amount: None,
        network: None,
    }
}

#[test]
fn pyjwt_tokens_verify_and_minting_reproduces_them() {
    let now = 1_700_000_100;
    assert_eq!(
        verify(PYJWT_SECRET, PYJWT_PAID, now).unwrap(),
        pyjwt_paid_claims()
    );
    assert_eq!(
        verify(PYJWT_SECRET, PYJWT_FREE, now).unwrap(),
        pyjwt_free_claims()
    );
    // Same header, same claim order and number formatting: byte-identical tokens.
    assert_eq!(mint(PYJWT_SECRET, &pyjwt_paid_claims()), PYJWT_PAID);
    assert_eq!(mint(PYJWT_SECRET, &pyjwt_free_claims()), PYJWT_FREE);
}

#[test]
fn none_serialises_as_null() {
    let token = mint(SECRET, &claims());
    let payload = generic_claims(SECRET, &token).unwrap();
    assert_eq!(payload["payee"], serde_json::Value::Null);
    assert_eq!(payload["amount"], serde_json::Value::Null);
    assert_eq!(payload["network"], serde_json::Value::Null);
    let header = URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    assert_eq!(header, br#"{"alg":"HS256","typ":"JWT"}"#);
}

#[test]
fn round_trip() {
    let mut c = claims();
    c.payee = Some("0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into());
    c.amount = Some(1.5);
    c.network = Some("base".into());
    let token = mint(SECRET, &c);
    assert_eq!(verify(SECRET, &token, 1_500).unwrap(), c);
}

#[test]
fn tampered_payload_is_refused() {
    let token = mint(SECRET, &claims());
    let mut other = claims();
    other.dataitem_key = "dataitems/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.ans104".into();
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
    let forged = with_part(&token, 1, &forged_payload);
    assert_eq!(
        verify(SECRET, &forged, 1_500),
        Err(ShareError::BadSignature)
    );
    // A later expiry is a payload change too.
    let mut longer = claims();
    longer.exp = i64::MAX;
    let forged = with_part(
        &token,
        1,
        &URL_SAFE_NO_PAD.encode(serde_json::to_vec(&longer).unwrap()),
    );
    assert_eq!(
        verify(SECRET, &forged, 1_500),
        Err(ShareError::BadSignature)
    );
}

#[test]
fn tampered_signature_is_refused() {
    let token = mint(SECRET, &claims());
    let signature = token.rsplit('.').next().unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[0] ^= 1;
    let flipped = with_part(&token, 2, &URL_SAFE_NO_PAD.encode(&bytes));
    assert_eq!(
        verify(SECRET, &flipped, 1_500),
        Err(ShareError::BadSignature)
    );
    // Truncated and empty signatures.
    let short = with_part(&token, 2, &URL_SAFE_NO_PAD.encode(&bytes[..16]));
    assert_eq!(verify(SECRET, &short, 1_500), Err(ShareError::BadSignature));
    assert_eq!(
        verify(SECRET, &with_part(&token, 2, ""), 1_500),
        Err(ShareError::BadSignature)
    );
    // Padding or the standard alphabet is not base64url without padding.
    let padded = format!("{token}=");
    assert!(matches!(
        verify(SECRET, &padded, 1_500),
        Err(ShareError::Malformed(_))
    ));
}

#[test]
fn wrong_secret_is_refused() {
    let token = mint(SECRET, &claims());
    assert_eq!(
        verify(b"another-secret-of-some-length", &token, 1_500),
        Err(ShareError::BadSignature)
    );
}

#[test]
fn alg_none_and_other_algorithms_are_refused() {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    // The classic attack: alg none with an empty signature.
    let unsigned = format!("{none_header}.{payload}.");
    assert_eq!(
        verify(SECRET, &unsigned, 1_500),
        Err(ShareError::UnsupportedAlgorithm("none".into()))
    );
    // alg none even with a valid HS256 signature over the same input.
    let token = mint(SECRET, &claims());
    let resigned = with_part(&token, 0, &none_header);
    assert!(matches!(
        verify(SECRET, &resigned, 1_500),
        Err(ShareError::UnsupportedAlgorithm(_))
    ));
    for alg in ["HS512", "RS256", "hs256", "NONE", ""] {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        let token = with_part(&token, 0, &header);
        assert_eq!(
            verify(SECRET, &token, 1_500),
            Err(ShareError::UnsupportedAlgorithm(alg.into())),
            "{alg}"
        );
    }
    let no_alg = with_part(&token, 0, &URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT"}"#));
    assert!(matches!(
        verify(SECRET, &no_alg, 1_500),
        Err(ShareError::Malformed(_))
    ));
    let crit = with_part(
        &token,
        0,
        &URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","crit":["exp"]}"#),
    );
    assert!(matches!(
        verify(SECRET, &crit, 1_500),
        Err(ShareError::Malformed(_))
    ));
}

#[test]
fn expiry_is_exact_without_leeway() {
    let token = mint(SECRET, &claims());
    assert!(verify(SECRET, &token, 1_999).is_ok());
    assert_eq!(
        verify(SECRET, &token, 2_000),
        Err(ShareError::Expired {
            exp: 2_000,
            now: 2_000
        })
    );
    // Load's validator accepted this for 60 more seconds.
    assert!(matches!(
        verify(SECRET, &token, 2_059),
        Err(ShareError::Expired { .. })
    ));
}

#[test]
fn malformed_and_oversized_tokens_are_refused() {
    for bad in ["", "a", "a.b", "a.b.c.d", "...", "%%%.b.c"] {
        assert!(
            matches!(verify(SECRET, bad, 0), Err(ShareError::Malformed(_))),
            "{bad:?}"
        );
    }
    let long = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(
        verify(SECRET, &long, 0),
        Err(ShareError::TooLong {
            len: MAX_TOKEN_BYTES + 1,
            max: MAX_TOKEN_BYTES
        })
    );
    // Signed claims missing a required field.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(br#"{"bucket_name":"b","exp":10}"#);
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    assert!(matches!(
        verify(SECRET, &format!("{header}.{payload}.{sig}"), 0),
        Err(ShareError::InvalidClaims(_))
    ));
}

#[test]
fn error_messages_never_repeat_the_token() {
    let token = mint(SECRET, &claims());
    let tampered = format!("{token}x");
    let err = share::verify(b"other-secret-xxxxxxxx", &tampered, 0).unwrap_err();
    assert!(!err.to_string().contains(&token[..20]));
}

#[test]
fn key_matching_strips_a_single_suffix() {
    assert!(key_matches(
        "dataitems/Q9qsw4QGrcQxfA3Fr9yW9Yk9Bxz8tEAGYJKqcn0Ghuo.ans104",
        "dataitems/Q9qsw4QGrcQxfA3Fr9yW9Yk9Bxz8tEAGYJKqcn0Ghuo"
    ));
    assert!(key_matches("a", "a.ans104"));
    // Load's trim_end_matches stripped repeated suffixes: "a.ans104.ans104" matched "a".
    assert!(!key_matches("a.ans104.ans104", "a"));
    assert!(!key_matches("a", "a.ans104.ans104"));
    assert!(!key_matches("folder/a.ans104", "a"));
}
