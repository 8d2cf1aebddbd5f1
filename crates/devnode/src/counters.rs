//! Request and storage counters that tests read to prove what reached the node (for example,
//! that a proxy in front of it did *not* forward a refused request).

use std::sync::atomic::{AtomicU64, Ordering};

/// The kind of request the devnode answered, one per emulated operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RouteKind {
    /// `GET /~s3@1.0/` (answered 501).
    ListBuckets,
    /// `PUT /~s3@1.0/<bucket>`.
    CreateBucket,
    /// `HEAD /~s3@1.0/<bucket>`.
    HeadBucket,
    /// `GET /~s3@1.0/<bucket>`.
    ListObjects,
    /// `POST /~s3@1.0/<bucket>`.
    DeleteObjects,
    /// `PUT /~s3@1.0/<bucket>/<key>`.
    PutObject,
    /// `GET /~s3@1.0/<bucket>/<key>`.
    GetObject,
    /// `HEAD /~s3@1.0/<bucket>/<key>`.
    HeadObject,
    /// `DELETE /~s3@1.0/<bucket>/<key>`.
    DeleteObject,
    /// `POST /~s3@1.0/get-presigned`.
    Presign,
    /// `GET /~s3@1.0/cache/<bucket>/<key>`.
    Cache,
    /// Any other request under `/~s3@1.0/` (invalid path, unsupported method).
    S3Other,
    /// `GET` of a presigned URL issued by this devnode.
    PresignedGet,
    /// `POST /~bundler@1.0/item` or `/~bundler@1.0/tx`.
    BundlerItem,
    /// `GET /<id>`, the hybrid gateway.
    Gateway,
    /// `GET /~meta@1.0/info/address`.
    Meta,
    /// `OPTIONS` on any path (CORS preflight).
    Preflight,
    /// Anything else.
    Other,
}

impl RouteKind {
    /// Every kind, in declaration order.
    pub const ALL: [RouteKind; 18] = [
        RouteKind::ListBuckets,
        RouteKind::CreateBucket,
        RouteKind::HeadBucket,
        RouteKind::ListObjects,
        RouteKind::DeleteObjects,
        RouteKind::PutObject,
        RouteKind::GetObject,
        RouteKind::HeadObject,
        RouteKind::DeleteObject,
        RouteKind::Presign,
        RouteKind::Cache,
        RouteKind::S3Other,
        RouteKind::PresignedGet,
        RouteKind::BundlerItem,
        RouteKind::Gateway,
        RouteKind::Meta,
        RouteKind::Preflight,
        RouteKind::Other,
    ];

    /// A stable snake_case name, used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::ListBuckets => "list_buckets",
            RouteKind::CreateBucket => "create_bucket",
            RouteKind::HeadBucket => "head_bucket",
            RouteKind::ListObjects => "list_objects",
            RouteKind::DeleteObjects => "delete_objects",
            RouteKind::PutObject => "put_object",
            RouteKind::GetObject => "get_object",
            RouteKind::HeadObject => "head_object",
            RouteKind::DeleteObject => "delete_object",
            RouteKind::Presign => "presign",
            RouteKind::Cache => "cache",
            RouteKind::S3Other => "s3_other",
            RouteKind::PresignedGet => "presigned_get",
            RouteKind::BundlerItem => "bundler_item",
            RouteKind::Gateway => "gateway",
            RouteKind::Meta => "meta",
            RouteKind::Preflight => "preflight",
            RouteKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for RouteKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of one running devnode. Every request is counted once, under its [`RouteKind`],
/// before it is authenticated or answered.
#[derive(Debug, Default)]
pub struct Counters {
    requests: [AtomicU64; RouteKind::ALL.len()],
    objects_stored: AtomicU64,
}

impl Counters {
    /// Requests received of this kind.
    pub fn requests(&self, kind: RouteKind) -> u64 {
        self.requests[kind.index()].load(Ordering::Relaxed)
    }

    /// Requests received of every kind.
    pub fn total_requests(&self) -> u64 {
        self.requests
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Objects written successfully: `PutObject` calls and bundler uploads that were stored.
    pub fn objects_stored(&self) -> u64 {
        self.objects_stored.load(Ordering::Relaxed)
    }

    pub(crate) fn record_request(&self, kind: RouteKind) {
        self.requests[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_stored(&self) {
        self.objects_stored.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_declaration_order() {
        for (i, kind) in RouteKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }

    #[test]
    fn counts_per_kind() {
        let counters = Counters::default();
        counters.record_request(RouteKind::GetObject);
        counters.record_request(RouteKind::GetObject);
        counters.record_request(RouteKind::Gateway);
        counters.record_stored();
        assert_eq!(counters.requests(RouteKind::GetObject), 2);
        assert_eq!(counters.requests(RouteKind::Gateway), 1);
        assert_eq!(counters.requests(RouteKind::PutObject), 0);
        assert_eq!(counters.total_requests(), 3);
        assert_eq!(counters.objects_stored(), 1);
    }
}
