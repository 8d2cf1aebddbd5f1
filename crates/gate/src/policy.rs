//! Who may read what, and until when: pure decisions from an item's metadata, the request's
//! credentials and the time. The proxy fetches nothing upstream until a decision says so.

use crate::meta::ItemMeta;
use crate::share::ShareClaims;

/// The credentials a read comes with.
#[derive(Debug, Clone, Copy)]
pub enum Access<'a> {
    /// No share link.
    Public,
    /// A verified share link.
    Link(&'a ShareClaims),
}

/// What to do with a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadDecision {
    /// Serve it.
    Serve,
    /// It expired at this unix second: 410.
    Gone {
        /// When.
        expired_at: u64,
    },
    /// 401 with this reason.
    Unauthorized(&'static str),
}

/// The id a share link names: the last segment of its key, without `.ans104`.
pub fn link_item_id(claims: &ShareClaims) -> &str {
    let last = claims.dataitem_key.rsplit('/').next().unwrap_or_default();
    last.strip_suffix(".ans104").unwrap_or(last)
}

/// Whether a share link names the item `id` in a bucket hb402 serves.
pub fn link_names(claims: &ShareClaims, id: &str, buckets: [&str; 2]) -> bool {
    link_item_id(claims) == id && buckets.contains(&claims.bucket_name.as_str())
}

/// Decides a read of `meta` at `now`.
pub fn decide_read(meta: &ItemMeta, access: Access<'_>, now: u64) -> ReadDecision {
    if let Some(expired_at) = meta.expires_at.filter(|&at| at <= now) {
        return ReadDecision::Gone { expired_at };
    }
    match access {
        Access::Public if meta.private => {
            ReadDecision::Unauthorized("this item is private: a share link token is required")
        }
        Access::Link(claims)
            if claims.bucket_name != meta.bucket || link_item_id(claims) != meta.id =>
        {
            ReadDecision::Unauthorized("the share link names another item")
        }
        _ => ReadDecision::Serve,
    }
}

/// When an upload expires: the earliest of its signed `Expires` tag, the `x-expires-at` and
/// `x-expiry-days` request headers, and the configured default (days, 0 for none).
pub fn upload_expiry(
    tag_expires: Option<u64>,
    header_expires_at: Option<u64>,
    header_days: Option<u32>,
    default_days: u32,
    now: u64,
) -> Option<u64> {
    let days = header_days.or((default_days > 0).then_some(default_days));
    [
        tag_expires,
        header_expires_at,
        days.map(|d| now + u64::from(d) * 86_400),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// The `x-amz-meta-expiry-days` to ask of the node so its lifecycle reclaims the space after the
/// item expires: whole days rounded up, only when within the device's 1–365 range (a shorter
/// lifecycle would delete the object before hb402's expiry).
pub fn lifecycle_days(expires_at: Option<u64>, now: u64) -> Option<u32> {
    let secs = expires_at?.saturating_sub(now);
    let days = secs.div_ceil(86_400).max(1);
    (days <= 365).then_some(days as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(private: bool, expires_at: Option<u64>) -> ItemMeta {
        ItemMeta {
            id: "abc".into(),
            bucket: if private {
                "hb402-private"
            } else {
                "offchain-dataitems"
            }
            .into(),
            key: "dataitems/abc.ans104".into(),
            size: 100,
            data_offset: 50,
            content_type: None,
            owner_address: String::new(),
            signature_type: 2,
            tags: vec![],
            expires_at,
            private,
            uploaded_at: None,
        }
    }

    fn claims(bucket: &str, key: &str) -> ShareClaims {
        ShareClaims {
            bucket_name: bucket.into(),
            load_acc: String::new(),
            dataitem_key: key.into(),
            exp: 0,
            iat: 0,
            payee: None,
            amount: None,
            network: None,
        }
    }

    #[test]
    fn expiry_is_exact_to_the_second() {
        assert_eq!(
            decide_read(&meta(false, Some(100)), Access::Public, 99),
            ReadDecision::Serve
        );
        assert_eq!(
            decide_read(&meta(false, Some(100)), Access::Public, 100),
            ReadDecision::Gone { expired_at: 100 }
        );
        // Expiry wins over a valid link.
        let c = claims("hb402-private", "dataitems/abc.ans104");
        assert!(matches!(
            decide_read(&meta(true, Some(5)), Access::Link(&c), 6),
            ReadDecision::Gone { .. }
        ));
    }

    #[test]
    fn private_items_need_a_link_naming_them() {
        assert!(matches!(
            decide_read(&meta(true, None), Access::Public, 0),
            ReadDecision::Unauthorized(_)
        ));
        let good = claims("hb402-private", "dataitems/abc.ans104");
        assert_eq!(
            decide_read(&meta(true, None), Access::Link(&good), 0),
            ReadDecision::Serve
        );
        let other_key = claims("hb402-private", "dataitems/xyz.ans104");
        assert!(matches!(
            decide_read(&meta(true, None), Access::Link(&other_key), 0),
            ReadDecision::Unauthorized(_)
        ));
        let other_bucket = claims("offchain-dataitems", "abc.ans104");
        assert!(matches!(
            decide_read(&meta(true, None), Access::Link(&other_bucket), 0),
            ReadDecision::Unauthorized(_)
        ));
        assert!(link_names(
            &good,
            "abc",
            ["offchain-dataitems", "hb402-private"]
        ));
        assert!(!link_names(
            &good,
            "abd",
            ["offchain-dataitems", "hb402-private"]
        ));
        assert!(!link_names(
            &claims("elsewhere", "abc"),
            "abc",
            ["offchain-dataitems", "hb402-private"]
        ));
    }

    #[test]
    fn earliest_expiry_wins() {
        assert_eq!(upload_expiry(None, None, None, 0, 1000), None);
        assert_eq!(upload_expiry(Some(5000), None, None, 0, 1000), Some(5000));
        assert_eq!(
            upload_expiry(Some(5000), Some(3000), None, 0, 1000),
            Some(3000)
        );
        assert_eq!(
            upload_expiry(Some(500_000), None, Some(1), 0, 1000),
            Some(87_400)
        );
        assert_eq!(upload_expiry(None, None, None, 2, 0), Some(172_800));
        assert_eq!(lifecycle_days(Some(1000 + 86_401), 1000), Some(2));
        assert_eq!(lifecycle_days(Some(1000 + 10), 1000), Some(1));
        assert_eq!(lifecycle_days(Some(1000 + 400 * 86_400), 1000), None);
        assert_eq!(lifecycle_days(None, 1000), None);
    }
}
