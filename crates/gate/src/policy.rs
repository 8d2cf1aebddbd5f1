//! Item lifetimes: when an upload expires, and what lifecycle to ask of the node. Pure.

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
