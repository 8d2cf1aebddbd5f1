//! Request classification (pure): which emulated component answers a request, and for the
//! `~s3@1.0` device, which operation — following `hb_http_server.erl` and
//! `dev_s3:handle_s3_request/4` + `parse_s3_path/1` of `loadnetwork/load_hb@s3-edge`.

use std::str::FromStr as _;

use hb402_ans104::ItemId;

use crate::counters::RouteKind;

/// Paths starting with this (at offset 0) go to the device, before any AO-Core parsing.
pub(crate) const S3_PREFIX: &str = "/~s3@1.0/";

/// Where presigned URLs issued by this devnode point (the stand-in for the S3 backend's
/// public endpoint).
pub(crate) const PRESIGNED_PREFIX: &str = "/s3/";

/// What `dev_s3:parse_s3_path/1` makes of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum S3Path {
    /// `/~s3@1.0/get-presigned`, exactly.
    GetPresigned,
    /// `/~s3@1.0/cache/<bucket>[/<key…>]`.
    Cache { bucket: String, key: String },
    /// `/~s3@1.0/`.
    Root,
    /// `/~s3@1.0/<bucket>`.
    Bucket(String),
    /// `/~s3@1.0/<bucket>/<key…>`: empty key segments dropped and the rest rejoined with `/`.
    Object { bucket: String, key: String },
    /// An empty bucket segment (`/~s3@1.0//x`, `/~s3@1.0/cache/`).
    Invalid,
}

/// Splits `rest` at `/`: the first segment is the bucket (must be non-empty), the non-empty
/// remaining segments form the key.
fn bucket_and_key(rest: &str) -> Option<(String, String)> {
    let mut segments = rest.split('/');
    let bucket = segments.next().unwrap_or_default();
    if bucket.is_empty() {
        return None;
    }
    let key = segments
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    Some((bucket.to_owned(), key))
}

/// `dev_s3:parse_s3_path/1`. The path is the raw request path: like the device, the devnode
/// does not percent-decode it, so a key is stored exactly as it is spelled in the path.
pub(crate) fn parse_s3_path(path: &str) -> S3Path {
    if path == "/~s3@1.0/get-presigned" {
        return S3Path::GetPresigned;
    }
    if let Some(rest) = path.strip_prefix("/~s3@1.0/cache/") {
        return match bucket_and_key(rest) {
            Some((bucket, key)) => S3Path::Cache { bucket, key },
            None => S3Path::Invalid,
        };
    }
    if path == "/~s3@1.0" || path == "/~s3@1.0/" {
        return S3Path::Root;
    }
    match path.strip_prefix(S3_PREFIX).map(bucket_and_key) {
        Some(Some((bucket, key))) if key.is_empty() => S3Path::Bucket(bucket),
        Some(Some((bucket, key))) => S3Path::Object { bucket, key },
        _ => S3Path::Invalid,
    }
}

/// The device operation selected by method and path (`dev_s3:handle_s3_request/4`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum S3Op {
    ListBuckets,
    ListObjects {
        bucket: String,
    },
    GetObject {
        bucket: String,
        key: String,
    },
    Cache {
        bucket: String,
        key: String,
    },
    CreateBucket {
        bucket: String,
    },
    PutObject {
        bucket: String,
        key: String,
    },
    HeadBucket {
        bucket: String,
    },
    HeadObject {
        bucket: String,
        key: String,
    },
    DeleteObject {
        bucket: String,
        key: String,
    },
    DeleteObjects {
        bucket: String,
    },
    Presign,
    /// An error reply the device gives without doing anything (invalid path, 405).
    Reject {
        status: u16,
        body: String,
    },
    /// A path/method combination the device's `case` does not cover: an Erlang `case_clause`
    /// exception, answered `500 S3 request failed`.
    Crash,
}

impl S3Op {
    /// Selects the operation. `method` is compared byte for byte, like the Erlang binaries.
    pub(crate) fn select(method: &str, path: S3Path) -> S3Op {
        let reject = |text: &str| S3Op::Reject {
            status: 400,
            body: text.to_owned(),
        };
        match method {
            "GET" => match path {
                S3Path::Cache { bucket, key } => S3Op::Cache { bucket, key },
                S3Path::Object { bucket, key } => S3Op::GetObject { bucket, key },
                S3Path::Bucket(bucket) => S3Op::ListObjects { bucket },
                S3Path::Root => S3Op::ListBuckets,
                S3Path::Invalid => reject("Invalid S3 path"),
                // `get_presigned` has no clause in the GET branch.
                S3Path::GetPresigned => S3Op::Crash,
            },
            "PUT" => match path {
                S3Path::Object { bucket, key } => S3Op::PutObject { bucket, key },
                S3Path::Bucket(bucket) => S3Op::CreateBucket { bucket },
                _ => reject("Invalid PUT path"),
            },
            "HEAD" => match path {
                S3Path::Object { bucket, key } => S3Op::HeadObject { bucket, key },
                S3Path::Bucket(bucket) => S3Op::HeadBucket { bucket },
                _ => reject("Invalid HEAD path"),
            },
            "DELETE" => match path {
                S3Path::Object { bucket, key } => S3Op::DeleteObject { bucket, key },
                _ => reject("Invalid DELETE path - can only DELETE objects"),
            },
            "POST" => match path {
                S3Path::GetPresigned => S3Op::Presign,
                S3Path::Bucket(bucket) => S3Op::DeleteObjects { bucket },
                _ => reject("Invalid POST path"),
            },
            other => S3Op::Reject {
                status: 405,
                body: format!("Method {other} not supported"),
            },
        }
    }

    pub(crate) fn kind(&self) -> RouteKind {
        match self {
            S3Op::ListBuckets => RouteKind::ListBuckets,
            S3Op::ListObjects { .. } => RouteKind::ListObjects,
            S3Op::GetObject { .. } => RouteKind::GetObject,
            S3Op::Cache { .. } => RouteKind::Cache,
            S3Op::CreateBucket { .. } => RouteKind::CreateBucket,
            S3Op::PutObject { .. } => RouteKind::PutObject,
            S3Op::HeadBucket { .. } => RouteKind::HeadBucket,
            S3Op::HeadObject { .. } => RouteKind::HeadObject,
            S3Op::DeleteObject { .. } => RouteKind::DeleteObject,
            S3Op::DeleteObjects { .. } => RouteKind::DeleteObjects,
            S3Op::Presign => RouteKind::Presign,
            S3Op::Reject { .. } | S3Op::Crash => RouteKind::S3Other,
        }
    }
}

/// Which component of the emulated node answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `OPTIONS` on any path: the HTTP server's CORS reply, before any routing.
    Preflight,
    /// The `~s3@1.0` device.
    S3(S3Op),
    /// `/~bundler@1.0/item` and its alias `/~bundler@1.0/tx`.
    Bundler,
    /// `/<43-character id>`: the hybrid gateway.
    Gateway(ItemId),
    /// `/~meta@1.0/info/address`.
    MetaAddress,
    /// A presigned URL issued by this devnode: `/s3/<bucket>/<key…>`.
    PresignedGet { bucket: String, key: String },
    /// `/` without a query: the node's redirect to its dashboard.
    Root,
    /// Anything else (AO-Core resolution is not emulated).
    Other,
}

impl Route {
    /// Classifies a request by method, raw path and raw query.
    pub(crate) fn classify(method: &str, path: &str, query: Option<&str>) -> Route {
        if method == "OPTIONS" {
            return Route::Preflight;
        }
        if path.starts_with(S3_PREFIX) {
            return Route::S3(S3Op::select(method, parse_s3_path(path)));
        }
        match path {
            "/~bundler@1.0/item" | "/~bundler@1.0/tx" => return Route::Bundler,
            "/~meta@1.0/info/address" => return Route::MetaAddress,
            "/" if query.is_none_or(str::is_empty) => return Route::Root,
            _ => {}
        }
        if let Some(rest) = path.strip_prefix(PRESIGNED_PREFIX)
            && let Some((bucket, key)) = rest.split_once('/')
            && !bucket.is_empty()
            && !key.is_empty()
        {
            // The key stays percent-encoded here; the presign module decodes it.
            return Route::PresignedGet {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            };
        }
        if let Some(id) = path.strip_prefix('/')
            && let Ok(id) = ItemId::from_str(id)
        {
            return Route::Gateway(id);
        }
        Route::Other
    }

    pub(crate) fn kind(&self) -> RouteKind {
        match self {
            Route::Preflight => RouteKind::Preflight,
            Route::S3(op) => op.kind(),
            Route::Bundler => RouteKind::BundlerItem,
            Route::Gateway(_) => RouteKind::Gateway,
            Route::MetaAddress => RouteKind::Meta,
            Route::PresignedGet { .. } => RouteKind::PresignedGet,
            Route::Root | Route::Other => RouteKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(bucket: &str, key: &str) -> S3Path {
        S3Path::Object {
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    #[test]
    fn parses_paths_like_dev_s3() {
        assert_eq!(
            parse_s3_path("/~s3@1.0/get-presigned"),
            S3Path::GetPresigned
        );
        assert_eq!(parse_s3_path("/~s3@1.0/"), S3Path::Root);
        assert_eq!(parse_s3_path("/~s3@1.0"), S3Path::Root);
        assert_eq!(parse_s3_path("/~s3@1.0/b"), S3Path::Bucket("b".into()));
        assert_eq!(parse_s3_path("/~s3@1.0/b/"), S3Path::Bucket("b".into()));
        assert_eq!(parse_s3_path("/~s3@1.0/b//"), S3Path::Bucket("b".into()));
        assert_eq!(parse_s3_path("/~s3@1.0/b/k"), object("b", "k"));
        assert_eq!(parse_s3_path("/~s3@1.0/b/a//c/"), object("b", "a/c"));
        assert_eq!(parse_s3_path("/~s3@1.0/b/a%20c"), object("b", "a%20c"));
        assert_eq!(parse_s3_path("/~s3@1.0//k"), S3Path::Invalid);
        assert_eq!(parse_s3_path("/~s3@1.0//"), S3Path::Invalid);
        assert_eq!(
            parse_s3_path("/~s3@1.0/get-presigned/x"),
            object("get-presigned", "x")
        );
    }

    #[test]
    fn parses_cache_paths() {
        let cache = |b: &str, k: &str| S3Path::Cache {
            bucket: b.into(),
            key: k.into(),
        };
        assert_eq!(parse_s3_path("/~s3@1.0/cache/b/k/x"), cache("b", "k/x"));
        assert_eq!(parse_s3_path("/~s3@1.0/cache/b//k"), cache("b", "k"));
        assert_eq!(parse_s3_path("/~s3@1.0/cache/b"), cache("b", ""));
        assert_eq!(parse_s3_path("/~s3@1.0/cache/"), S3Path::Invalid);
        assert_eq!(parse_s3_path("/~s3@1.0/cache//k"), S3Path::Invalid);
        assert_eq!(
            parse_s3_path("/~s3@1.0/cache"),
            S3Path::Bucket("cache".into())
        );
    }

    #[test]
    fn selects_operations_per_method() {
        let op = |m: &str, p: &str| S3Op::select(m, parse_s3_path(p));
        assert_eq!(op("GET", "/~s3@1.0/"), S3Op::ListBuckets);
        assert_eq!(op("GET", "/~s3@1.0/get-presigned"), S3Op::Crash);
        assert_eq!(
            op("POST", "/~s3@1.0/b"),
            S3Op::DeleteObjects { bucket: "b".into() }
        );
        assert_eq!(op("POST", "/~s3@1.0/get-presigned"), S3Op::Presign);
        assert_eq!(
            op("PATCH", "/~s3@1.0/b/k"),
            S3Op::Reject {
                status: 405,
                body: "Method PATCH not supported".into()
            }
        );
        assert_eq!(
            op("get", "/~s3@1.0/b/k"),
            S3Op::Reject {
                status: 405,
                body: "Method get not supported".into()
            }
        );
        assert_eq!(
            op("DELETE", "/~s3@1.0/b"),
            S3Op::Reject {
                status: 400,
                body: "Invalid DELETE path - can only DELETE objects".into()
            }
        );
        assert_eq!(
            op("PUT", "/~s3@1.0/cache/b/k"),
            S3Op::Reject {
                status: 400,
                body: "Invalid PUT path".into()
            }
        );
    }

    #[test]
    fn classifies_top_level_routes() {
        let id = "ysAGgm6JngmOAxmaFN2YJr5t7V1JH8JGZHe1942mPbA";
        assert_eq!(
            Route::classify("OPTIONS", "/~s3@1.0/b", None),
            Route::Preflight
        );
        assert!(matches!(
            Route::classify("GET", &format!("/{id}"), None),
            Route::Gateway(_)
        ));
        assert_eq!(Route::classify("GET", "/short", None), Route::Other);
        assert_eq!(
            Route::classify("POST", "/~bundler@1.0/tx", Some("codec-device=ans104@1.0")),
            Route::Bundler
        );
        assert_eq!(
            Route::classify("GET", "/~meta@1.0/info/address", None),
            Route::MetaAddress
        );
        assert_eq!(Route::classify("GET", "/", None), Route::Root);
        assert_eq!(Route::classify("GET", "/", Some("a=b")), Route::Other);
        assert_eq!(
            Route::classify("GET", "/s3/b/k/x", Some("X-Amz-Signature=1")),
            Route::PresignedGet {
                bucket: "b".into(),
                key: "k/x".into()
            }
        );
        assert_eq!(Route::classify("GET", "/s3/b", None), Route::Other);
    }
}
