//! Share links, compatible with Load's sidecar: an HS256 JWT (header `{"alg":"HS256","typ":"JWT"}`)
//! whose claims name a bucket and an object key, optionally with x402 payment terms.
//!
//! Differences from Load's validation, on purpose:
//! - `exp` is enforced to the second, without the 60 s leeway (expiry at the edge): a token is
//!   valid while `now < exp`;
//! - only `HS256` is accepted (`none` and every other algorithm are refused before any signature
//!   work), the signature is compared in constant time, and tokens are bounded in length;
//! - [`key_matches`] strips one `.ans104` suffix, not every repetition of it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The longest token [`verify`] looks at.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The encoded header every token carries (`{"alg":"HS256","typ":"JWT"}`).
const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// The claims of a share link, in Load's names and order. `None` serialises as `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareClaims {
    /// The bucket holding the object.
    pub bucket_name: String,
    /// The account the link was minted for (copied from `x-load-acc`; not checked here).
    pub load_acc: String,
    /// The object key, e.g. `dataitems/<id>.ans104`.
    pub dataitem_key: String,
    /// Expiry, unix seconds; the link is valid while `now < exp`.
    pub exp: i64,
    /// Issue time, unix seconds.
    pub iat: i64,
    /// x402 payee address (payment links only).
    #[serde(default)]
    pub payee: Option<String>,
    /// x402 amount in whole units of the asset, e.g. `0.01` USDC (payment links only).
    #[serde(default)]
    pub amount: Option<f64>,
    /// x402 network, e.g. `base-sepolia` (payment links only).
    #[serde(default)]
    pub network: Option<String>,
}

/// Why a token is refused. Messages never repeat the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShareError {
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    #[error("the token is {len} bytes long; at most {max} are accepted")]
    TooLong {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The token is not three base64url parts with a JSON header.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names another algorithm than HS256 (including `none`).
    #[error("unsupported token algorithm {0:?}: only HS256 is accepted")]
    UnsupportedAlgorithm(String),
    /// The signature does not match (wrong secret or altered token).
    #[error("the token's signature is invalid")]
    BadSignature,
    /// The signed claims are not share-link claims.
    #[error("the token's claims are invalid: {0}")]
    InvalidClaims(String),
    /// `now` is at or after `exp`.
    #[error("the token expired at {exp} (now {now})")]
    Expired {
        /// The claim.
        exp: i64,
        /// The time of the check.
        now: i64,
    },
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed), so this cannot fail.
    HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

/// Mints a token for `claims`, signed with `secret`.
pub fn mint(secret: &[u8], claims: &ShareClaims) -> String {
    // Strings, integers and floats (non-finite ones become `null`) always serialise.
    let payload = serde_json::to_vec(claims).expect("share claims always serialise");
    let mut token = format!("{HEADER_B64}.{}", URL_SAFE_NO_PAD.encode(payload));
    let mut mac = mac(secret);
    mac.update(token.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    token.push('.');
    token.push_str(&signature);
    token
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Verifies `token`'s shape, header and signature with `secret` and returns the signed payload
/// (the JSON claims, not yet interpreted).
///
/// Order: length, shape, header (`alg` must be `HS256`), signature (constant time). Nothing in
/// the payload is looked at before the signature checks.
pub fn verify_signature(secret: &[u8], token: &str) -> Result<Vec<u8>, ShareError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(ShareError::TooLong {
            len: token.len(),
            max: MAX_TOKEN_BYTES,
        });
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ShareError::Malformed(
            "a token has three parts separated by '.'",
        ));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| ShareError::Malformed("the header is not base64url without padding"))?;
    let header: JoseHeader = serde_json::from_slice(&header)
        .map_err(|_| ShareError::Malformed("the header is not a JSON object with \"alg\""))?;
    if header.alg != "HS256" {
        let mut alg = header.alg;
        alg.truncate(alg.floor_char_boundary(32));
        return Err(ShareError::UnsupportedAlgorithm(alg));
    }
    if header.crit.is_some() {
        // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
        return Err(ShareError::Malformed(
            "critical header extensions are not supported",
        ));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| ShareError::Malformed("the signature is not base64url without padding"))?;
    let mut mac = mac(secret);
    mac.update(header_b64.as_bytes());
    mac.update(b".");
    mac.update(payload_b64.as_bytes());
    // `verify_slice` compares in constant time.
    mac.verify_slice(&signature)
        .map_err(|_| ShareError::BadSignature)?;
    URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| ShareError::Malformed("the claims are not base64url without padding"))
}

/// Verifies `token` with `secret` at unix time `now` and returns its claims: the signature
/// ([`verify_signature`]), then the claims, then `exp` to the exact second.
pub fn verify(secret: &[u8], token: &str, now: i64) -> Result<ShareClaims, ShareError> {
    let payload = verify_signature(secret, token)?;
    let claims: ShareClaims =
        serde_json::from_slice(&payload).map_err(|e| ShareError::InvalidClaims(e.to_string()))?;
    // No leeway: the link dies at the exact second (Load allowed 60 s more).
    if now >= claims.exp {
        return Err(ShareError::Expired {
            exp: claims.exp,
            now,
        });
    }
    Ok(claims)
}

/// Whether a token's `dataitem_key` names the key in a request path: equal after removing one
/// `.ans104` suffix from each (Load's `trim_end_matches` removed any number of them, so
/// `x.ans104.ans104` matched `x`).
pub fn key_matches(claims_key: &str, path_key: &str) -> bool {
    fn strip(key: &str) -> &str {
        key.strip_suffix(".ans104").unwrap_or(key)
    }
    strip(claims_key) == strip(path_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_constant_is_the_default_jose_header() {
        assert_eq!(
            URL_SAFE_NO_PAD.decode(HEADER_B64).unwrap(),
            br#"{"alg":"HS256","typ":"JWT"}"#
        );
    }

    #[test]
    fn key_matching_strips_one_suffix() {
        assert!(key_matches("dataitems/a.ans104", "dataitems/a"));
        assert!(key_matches("dataitems/a", "dataitems/a.ans104"));
        assert!(key_matches("a.ans104", "a.ans104"));
        assert!(!key_matches("a.ans104.ans104", "a"));
        assert!(!key_matches("dataitems/a.ans104", "a"));
    }
}
