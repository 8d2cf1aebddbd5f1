//! Route classification: which of hb402's routes a request is, from its method, path and query.
//! Pure; the proxy acts on the result.

use hb402_ans104::ItemId;

use crate::config::Config;

/// What part of an item a read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// The data field (`/<id>`, `/resolve/<id>`), `Range` relative to the data.
    Data,
    /// The whole signed item (`/binary/<id>`, the raw `~s3@1.0` route).
    Binary,
}

/// Which upload route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadRoute {
    /// `POST /~bundler@1.0/item` or `/~bundler@1.0/tx`.
    Bundler,
    /// `POST /tx`.
    Tx,
    /// `POST /upload`.
    Upload,
    /// `PUT /~s3@1.0/<bucket>/<key>.ans104`.
    S3Put,
}

/// The terms in a `/protected/resolve/{payee}/{key}/{network}/{amount}` path, which the share
/// link's claims must repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedTerms {
    /// Recipient address.
    pub payee: String,
    /// Network name.
    pub network: String,
    /// Decimal amount in asset units.
    pub amount: String,
}

/// A classified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `OPTIONS` on a public route: answered at the edge.
    Preflight,
    /// A DataItem read.
    Read {
        /// Data or whole item.
        kind: ReadKind,
        /// The item.
        id: ItemId,
        /// `HEAD` (headers only).
        head: bool,
        /// `?token=` share link.
        token: Option<String>,
        /// The bucket the raw route named, if any.
        bucket: Option<String>,
        /// The full key of a `/resolve/<key>` path with several segments (a Load-style share
        /// link), which the link's claims must name.
        path_key: Option<String>,
        /// The price terms of a Load-compatible `/protected/resolve/...` path.
        protected: Option<ProtectedTerms>,
    },
    /// A DataItem upload.
    Upload {
        /// Which route.
        route: UploadRoute,
        /// The id the URL claims (raw PUT), which the item must have.
        claimed_id: Option<ItemId>,
        /// The bucket the raw PUT names.
        bucket: Option<String>,
    },
    /// A path that looks like a DataItem route but names nothing hb402 serves.
    NotFound,
    /// A method hb402 does not allow on a DataItem route.
    MethodNotAllowed,
    /// A path denied by configuration (or by hb402 itself, e.g. the node's unauthenticated cache).
    Denied,
    /// Everything else: forwarded to the node unchanged.
    PassThrough,
}

/// The node's unauthenticated, never-invalidated cache route: it would bypass expiry and privacy.
pub const NODE_CACHE_PREFIX: &str = "/~s3@1.0/cache/";

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn item_id(segment: &str) -> Option<ItemId> {
    segment.parse().ok()
}

/// Classifies a request.
pub fn classify(config: &Config, method: &str, path: &str, query: Option<&str>) -> Route {
    if path.starts_with(NODE_CACHE_PREFIX)
        || config
            .passthrough
            .deny
            .iter()
            .any(|prefix| path.starts_with(prefix.as_str()))
    {
        return Route::Denied;
    }
    let read = matches!(method, "GET" | "HEAD");
    let head = method == "HEAD";
    let token = || query_param(query, "token");
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();

    // Upload routes.
    let upload = |route| Route::Upload {
        route,
        claimed_id: None,
        bucket: None,
    };
    match (method, path) {
        ("POST", "/~bundler@1.0/item" | "/~bundler@1.0/tx") => return upload(UploadRoute::Bundler),
        ("POST", "/tx") => return upload(UploadRoute::Tx),
        ("POST", "/upload") => return upload(UploadRoute::Upload),
        _ => {}
    }

    // DataItem reads by id.
    let data_route = match segments.as_slice() {
        [id] => item_id(id).map(|id| (ReadKind::Data, id)),
        ["resolve", id] => item_id(id).map(|id| (ReadKind::Data, id)),
        ["binary", id] => item_id(id).map(|id| (ReadKind::Binary, id)),
        _ => None,
    };
    if let Some((kind, id)) = data_route {
        if method == "OPTIONS" {
            return Route::Preflight;
        }
        if !read {
            return Route::MethodNotAllowed;
        }
        return Route::Read {
            kind,
            id,
            head,
            token: token(),
            bucket: None,
            path_key: None,
            protected: None,
        };
    }
    // Load's paywalled share link: `/protected/resolve/{payee}/{key}/{network}/{amount}?token=`.
    // The key may have several segments (`dataitems/<id>.ans104`); network and amount are last.
    if let ["protected", "resolve", payee, rest @ ..] = segments.as_slice()
        && rest.len() >= 3
    {
        let (key, terms) = rest.split_at(rest.len() - 2);
        let (network, amount) = (terms[0], terms[1]);
        let key = key.join("/");
        let last = key.rsplit('/').next().unwrap_or_default();
        let stem = last.strip_suffix(".ans104").unwrap_or(last);
        return match (item_id(stem), method) {
            (_, "OPTIONS") => Route::Preflight,
            (Some(id), "GET" | "HEAD") => Route::Read {
                kind: ReadKind::Data,
                id,
                head,
                token: token(),
                bucket: None,
                path_key: Some(key.clone()),
                protected: Some(ProtectedTerms {
                    payee: (*payee).to_owned(),
                    network: network.to_owned(),
                    amount: amount.to_owned(),
                }),
            },
            (Some(_), _) => Route::MethodNotAllowed,
            (None, _) => Route::NotFound,
        };
    }
    // `/resolve/<key>` with the full object key (`dataitems/<id>.ans104`), as Load's share links
    // are built: the item is the one the last segment names.
    if let ["resolve", key @ ..] = segments.as_slice()
        && !key.is_empty()
        && let Some(id) = key
            .last()
            .map(|last| last.strip_suffix(".ans104").unwrap_or(last))
            .and_then(item_id)
    {
        if method == "OPTIONS" {
            return Route::Preflight;
        }
        if !read {
            return Route::MethodNotAllowed;
        }
        return Route::Read {
            kind: ReadKind::Data,
            id,
            head,
            token: token(),
            bucket: None,
            path_key: Some(key.join("/")),
            protected: None,
        };
    }
    if matches!(segments.as_slice(), ["resolve" | "binary", ..]) {
        // A read route with something that is not an id.
        return if method == "OPTIONS" {
            Route::Preflight
        } else {
            Route::NotFound
        };
    }

    // The raw S3 route for `.ans104` objects: same policy as the id routes.
    if let ["~s3@1.0", bucket, key @ ..] = segments.as_slice()
        && !key.is_empty()
        && key.last().is_some_and(|k| k.ends_with(".ans104"))
    {
        let key = key
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        let bucket = (*bucket).to_owned();
        let stem = key
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".ans104");
        let served_bucket =
            bucket == config.upstream.public_bucket || bucket == config.upstream.private_bucket;
        let Some(id) = item_id(stem).filter(|_| served_bucket) else {
            return match method {
                "OPTIONS" => Route::Preflight,
                _ => Route::NotFound,
            };
        };
        return match method {
            "GET" | "HEAD" => Route::Read {
                kind: ReadKind::Binary,
                id,
                head,
                token: token(),
                bucket: Some(bucket),
                path_key: None,
                protected: None,
            },
            "PUT" => Route::Upload {
                route: UploadRoute::S3Put,
                claimed_id: Some(id),
                bucket: Some(bucket),
            },
            "OPTIONS" => Route::Preflight,
            _ => Route::MethodNotAllowed,
        };
    }
    Route::PassThrough
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const ID: &str = "Ekaibo2KKp_NjU_R73cJQriRQ3CH5Nnejan4p8lhF3Y";

    fn config() -> Config {
        Config::from_toml(
            "version = 1\n[passthrough]\ndeny = [\"/~meta@1.0/secret\"]",
            Path::new("t"),
            &Default::default(),
            &|_| None,
        )
        .unwrap()
    }

    fn id() -> ItemId {
        ID.parse().unwrap()
    }

    #[test]
    fn reads() {
        let c = config();
        for path in [format!("/{ID}"), format!("/resolve/{ID}")] {
            assert_eq!(
                classify(&c, "GET", &path, Some("token=abc%2Bd&x=1")),
                Route::Read {
                    kind: ReadKind::Data,
                    id: id(),
                    head: false,
                    token: Some("abc+d".into()),
                    bucket: None,
                    path_key: None,
                    protected: None
                }
            );
        }
        assert_eq!(
            classify(&c, "HEAD", &format!("/binary/{ID}"), None),
            Route::Read {
                kind: ReadKind::Binary,
                id: id(),
                head: true,
                token: None,
                bucket: None,
                path_key: None,
                protected: None
            }
        );
        assert_eq!(
            classify(
                &c,
                "GET",
                &format!("/resolve/dataitems/{ID}.ans104"),
                Some("token=t")
            ),
            Route::Read {
                kind: ReadKind::Data,
                id: id(),
                head: false,
                token: Some("t".into()),
                bucket: None,
                path_key: Some(format!("dataitems/{ID}.ans104")),
                protected: None
            }
        );
        assert_eq!(
            classify(
                &c,
                "GET",
                &format!("/~s3@1.0/offchain-dataitems/dataitems/{ID}.ans104"),
                None
            ),
            Route::Read {
                kind: ReadKind::Binary,
                id: id(),
                head: false,
                token: None,
                bucket: Some("offchain-dataitems".into()),
                path_key: None,
                protected: None
            }
        );
        assert_eq!(
            classify(&c, "DELETE", &format!("/{ID}"), None),
            Route::MethodNotAllowed
        );
        assert_eq!(
            classify(&c, "OPTIONS", &format!("/resolve/{ID}"), None),
            Route::Preflight
        );
        assert_eq!(
            classify(&c, "GET", "/resolve/not-an-id", None),
            Route::NotFound
        );
        assert_eq!(
            classify(&c, "GET", "/~s3@1.0/other-bucket/x.ans104", None),
            Route::NotFound
        );
    }

    #[test]
    fn uploads() {
        let c = config();
        for (path, route) in [
            ("/~bundler@1.0/item", UploadRoute::Bundler),
            ("/~bundler@1.0/tx", UploadRoute::Bundler),
            ("/tx", UploadRoute::Tx),
            ("/upload", UploadRoute::Upload),
        ] {
            assert_eq!(
                classify(&c, "POST", path, Some("codec-device=ans104@1.0")),
                Route::Upload {
                    route,
                    claimed_id: None,
                    bucket: None
                }
            );
        }
        assert_eq!(
            classify(
                &c,
                "PUT",
                &format!("/~s3@1.0/hb402-private/{ID}.ans104"),
                None
            ),
            Route::Upload {
                route: UploadRoute::S3Put,
                claimed_id: Some(id()),
                bucket: Some("hb402-private".into())
            }
        );
    }

    #[test]
    fn pass_through_and_deny() {
        let c = config();
        assert_eq!(
            classify(&c, "GET", "/~meta@1.0/info/address", None),
            Route::PassThrough
        );
        assert_eq!(
            classify(&c, "GET", "/~meta@1.0/secret/x", None),
            Route::Denied
        );
        assert_eq!(
            classify(
                &c,
                "GET",
                &format!("/~s3@1.0/cache/offchain-dataitems/dataitems/{ID}.ans104"),
                None
            ),
            Route::Denied
        );
        assert_eq!(
            classify(&c, "GET", "/~s3@1.0/offchain-dataitems", None),
            Route::PassThrough
        );
        assert_eq!(classify(&c, "GET", "/", None), Route::PassThrough);
        assert_eq!(classify(&c, "GET", "/short", None), Route::PassThrough);
    }
}
