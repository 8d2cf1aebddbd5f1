//! Receipts: a settled payment lets its payer re-read the same resource for a while (a broken
//! download is not paid twice) by presenting the token hb402 returned in `X-Receipt`. The token
//! is signed (HMAC-SHA256) and names the payer, the resource path and its expiry; the payment
//! header itself is never accepted twice.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The response header carrying a receipt, and the request header presenting one.
pub const HEADER: &str = "x-receipt";

/// Bound on a presented receipt.
const MAX_RECEIPT_BYTES: usize = 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// Payer address.
    p: String,
    /// Resource path.
    r: String,
    /// Expiry, unix seconds.
    e: u64,
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

/// Mints a receipt for `payer` on `path`, valid until `expires_at`.
pub fn mint(secret: &[u8], payer: &str, path: &str, expires_at: u64) -> String {
    let claims = serde_json::to_vec(&Claims {
        p: payer.to_owned(),
        r: path.to_owned(),
        e: expires_at,
    })
    .unwrap_or_default();
    let payload = URL_SAFE_NO_PAD.encode(claims);
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{payload}.{tag}")
}

/// The payer a receipt names, if it is authentic, unexpired and for `path`.
pub fn verify(secret: &[u8], token: &str, path: &str, now: u64) -> Option<String> {
    if token.len() > MAX_RECEIPT_BYTES {
        return None;
    }
    let (payload, tag) = token.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    // Constant-time comparison.
    m.verify_slice(&tag).ok()?;
    let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    (claims.r == path && claims.e > now).then_some(claims.p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_are_bound_to_path_expiry_and_key() {
        let t = mint(b"k1", "0xabc", "/resolve/x", 100);
        assert_eq!(
            verify(b"k1", &t, "/resolve/x", 99).as_deref(),
            Some("0xabc")
        );
        assert_eq!(verify(b"k1", &t, "/resolve/x", 100), None, "expired");
        assert_eq!(verify(b"k1", &t, "/resolve/y", 99), None, "other resource");
        assert_eq!(verify(b"k2", &t, "/resolve/x", 99), None, "other key");
        let forged = mint(b"k1", "0xabc", "/resolve/x", 10_000);
        let (payload, _) = forged.split_once('.').unwrap();
        let (_, tag) = t.split_once('.').unwrap();
        assert_eq!(
            verify(b"k1", &format!("{payload}.{tag}"), "/resolve/x", 99),
            None
        );
        assert_eq!(verify(b"k1", "garbage", "/resolve/x", 0), None);
    }
}
