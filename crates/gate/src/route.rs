//! Route classification: which of hb402's routes a request is, from its method, its canonical
//! path ([`crate::path`]) and its query. Pure; the proxy acts on the result.
//!
//! The edge is closed: a request is one of hb402's own routes (DataItem reads and uploads,
//! preflight), a refusal, or — only when its path starts with an operator-allowed prefix
//! (`passthrough.allow`) and its method is allowed — a pass-through. Everything under `/~s3@1.0`
//! belongs to hb402: object reads go through the read policy, object writes through the upload
//! path, anything else is refused, so the node's S3 API is never reachable from the public
//! listener. A path whose first segment is (or starts with) a DataItem id is a DataItem route,
//! never a pass-through.

use hb402_ans104::ItemId;

use crate::config::Config;
use crate::path::CanonicalPath;

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

/// How a read named its item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// `/<id>`.
    Id,
    /// `/resolve/<id>`.
    Resolve,
    /// `/resolve/<key…>` with the full object key, as Load's share links are built.
    ResolveKey(String),
    /// `/binary/<id>`.
    Binary,
    /// `/~s3@1.0/<bucket>/<key…>.ans104`.
    Raw {
        /// The bucket named.
        bucket: String,
    },
    /// `/protected/resolve/{payee}/{key…}/{network}/{amount}`: a paywalled share link.
    Protected {
        /// The object key named.
        key: String,
        /// The price terms named.
        terms: ProtectedTerms,
    },
}

/// A DataItem read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRoute {
    /// Data or whole item.
    pub kind: ReadKind,
    /// The item.
    pub id: ItemId,
    /// `HEAD` (headers only).
    pub head: bool,
    /// `?token=` share link.
    pub token: Option<String>,
    /// How the path named the item.
    pub via: Via,
    /// The canonical path (receipts and x402 resources name it).
    pub path: String,
}

/// A DataItem upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadTarget {
    /// Which route.
    pub route: UploadRoute,
    /// The id the URL claims (raw PUT), which the item must have.
    pub claimed_id: Option<ItemId>,
    /// The bucket the raw PUT names.
    pub bucket: Option<String>,
    /// The canonical path (x402 resources name it).
    pub path: String,
}

/// Why a request is refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The path has no canonical form.
    BadPath(crate::path::PathError),
    /// Nothing hb402 serves or forwards is at this path.
    NotFound,
    /// The route exists but not with this method; `allow` lists those it takes.
    MethodNotAllowed {
        /// The `Allow` header.
        allow: String,
    },
    /// The node's S3 API, other than hb402's own object reads and writes.
    NodeApi,
    /// A pass-through with a query string, which `passthrough.allow_query` does not allow.
    QueryNotForwarded,
    /// A body on a route that forwards none (reads, pass-through).
    BodyNotAllowed,
    /// The node refused a pass-through with this 4xx status.
    NodeRefused(u16),
}

/// A classified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `OPTIONS` on a route hb402 serves or forwards: answered at the edge.
    Preflight,
    /// A DataItem read.
    Read(ReadRoute),
    /// A DataItem upload.
    Upload(UploadTarget),
    /// Forwarded to the node at the canonical path.
    PassThrough,
    /// Refused.
    Refused(Refused),
}

const READ_METHODS: &str = "GET, HEAD, OPTIONS";
const UPLOAD_METHODS: &str = "POST, OPTIONS";

/// The node's S3 device: everything under it is hb402's.
const S3_DEVICE: &str = "~s3@1.0";

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode_query(v))
}

fn percent_decode_query(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16)),
                bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16)),
            )
        {
            out.push((hi << 4 | lo) as u8);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn item_id(segment: &str) -> Option<ItemId> {
    segment.parse().ok()
}

/// An id followed by `.ans104`, or a bare id.
fn key_item_id(segment: &str) -> Option<ItemId> {
    item_id(segment.strip_suffix(".ans104").unwrap_or(segment))
}

/// Whether a segment starts with something shaped like a DataItem id: 43 base64url characters
/// not followed by another one (`<id>`, `<id>~json@1.0`, `<id>.ans104`, `<id>&k=v`). The shape
/// is enough: such a segment is never passed through, id or not.
pub fn starts_with_item_id(segment: &str) -> bool {
    let b64url = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_');
    let bytes = segment.as_bytes();
    bytes.len() >= 43 && bytes[..43].iter().all(b64url) && bytes.get(43).is_none_or(|b| !b64url(b))
}

fn is(segment: &str, name: &str) -> bool {
    segment.eq_ignore_ascii_case(name)
}

/// Whether a first segment is one of hb402's: its route names, the node's S3 device, or a
/// DataItem id. Paths whose first segment is not are pass-through candidates (and only they
/// may be configured as `passthrough.allow` prefixes).
pub(crate) fn is_owned(first: &str) -> bool {
    [
        "resolve",
        "binary",
        "protected",
        "upload",
        "tx",
        "~bundler@1.0",
        S3_DEVICE,
    ]
    .iter()
    .any(|name| is(first, name))
        || starts_with_item_id(first)
}

/// What the segments of a path name, before the method is looked at.
enum Target {
    /// A DataItem read.
    Read(ReadKind, ItemId, Via),
    /// An upload route.
    Upload(UploadRoute),
    /// One of hb402's names, or a DataItem id, naming nothing hb402 serves.
    Nothing,
    /// None of hb402's routes.
    Other,
}

/// hb402's own routes (not `/~s3@1.0`), by their segments.
fn target(parts: &[&str]) -> Target {
    let read = |kind, id, via| Target::Read(kind, id, via);
    match parts {
        [r, key @ ..] if is(r, "resolve") && !key.is_empty() => {
            let last = key[key.len() - 1];
            match (key.len(), item_id(last), key_item_id(last)) {
                (1, Some(id), _) => read(ReadKind::Data, id, Via::Resolve),
                (_, _, Some(id)) => read(ReadKind::Data, id, Via::ResolveKey(key.join("/"))),
                _ => Target::Nothing,
            }
        }
        [b, id] if is(b, "binary") => match key_item_id(id) {
            Some(id) => read(ReadKind::Binary, id, Via::Binary),
            None => Target::Nothing,
        },
        [p, r, payee, key @ .., network, amount] if is(p, "protected") && is(r, "resolve") => {
            let Some(id) = key.last().and_then(|last| key_item_id(last)) else {
                return Target::Nothing;
            };
            let terms = ProtectedTerms {
                payee: (*payee).to_owned(),
                network: (*network).to_owned(),
                amount: (*amount).to_owned(),
            };
            read(
                ReadKind::Data,
                id,
                Via::Protected {
                    key: key.join("/"),
                    terms,
                },
            )
        }
        [u] if is(u, "upload") => Target::Upload(UploadRoute::Upload),
        [t] if is(t, "tx") => Target::Upload(UploadRoute::Tx),
        [b, i] if is(b, "~bundler@1.0") && (is(i, "item") || is(i, "tx")) => {
            Target::Upload(UploadRoute::Bundler)
        }
        [r, ..] if is(r, "resolve") || is(r, "binary") || is(r, "protected") => Target::Nothing,
        [id] if let Some(id) = item_id(id) => read(ReadKind::Data, id, Via::Id),
        // `/<id>/…`, `/<id>~device@1.0/…`: the node would serve the item's content.
        [first, ..] if starts_with_item_id(first) => Target::Nothing,
        _ => Target::Other,
    }
}

/// Classifies a request on its canonical path.
pub fn classify(config: &Config, method: &str, path: &CanonicalPath, query: Option<&str>) -> Route {
    let first = path.segments().next().unwrap_or_default();
    if !is_owned(first) {
        return pass_through(config, method, path, query);
    }
    let parts = path.parts();
    if is(first, S3_DEVICE) {
        return classify_s3(config, method, &parts[1..], query, path.to_uri_path());
    }
    let refused = |allow: &str| {
        Route::Refused(Refused::MethodNotAllowed {
            allow: allow.to_owned(),
        })
    };
    match (target(&parts), method) {
        (Target::Other, _) => pass_through(config, method, path, query),
        (Target::Nothing, _) => Route::Refused(Refused::NotFound),
        (_, "OPTIONS") => Route::Preflight,
        (Target::Read(kind, id, via), "GET" | "HEAD") => Route::Read(ReadRoute {
            kind,
            id,
            head: method == "HEAD",
            token: query_param(query, "token"),
            via,
            path: path.to_uri_path(),
        }),
        (Target::Read(..), _) => refused(READ_METHODS),
        (Target::Upload(route), "POST") => Route::Upload(UploadTarget {
            route,
            claimed_id: None,
            bucket: None,
            path: path.to_uri_path(),
        }),
        (Target::Upload(_), _) => refused(UPLOAD_METHODS),
    }
}

/// Everything under `/~s3@1.0/`.
fn classify_s3(
    config: &Config,
    method: &str,
    rest: &[&str],
    query: Option<&str>,
    canonical: String,
) -> Route {
    let up = &config.upstream;
    if method == "OPTIONS" {
        return Route::Preflight;
    }
    // Only object requests: a served bucket, and a key whose last segment is `<id>.ans104`.
    let object = match rest {
        [bucket, .., last] => {
            let served = *bucket == up.public_bucket || *bucket == up.private_bucket;
            let id = last
                .strip_suffix(".ans104")
                .and_then(item_id)
                .filter(|_| served);
            id.map(|id| (bucket.to_string(), id))
        }
        _ => None,
    };
    let Some((bucket, id)) = object else {
        return Route::Refused(Refused::NodeApi);
    };
    match method {
        "GET" | "HEAD" => Route::Read(ReadRoute {
            kind: ReadKind::Binary,
            id,
            head: method == "HEAD",
            token: query_param(query, "token"),
            via: Via::Raw { bucket },
            path: canonical,
        }),
        "PUT" => Route::Upload(UploadTarget {
            route: UploadRoute::S3Put,
            claimed_id: Some(id),
            bucket: Some(bucket),
            path: canonical,
        }),
        _ => Route::Refused(Refused::NodeApi),
    }
}

/// A path that is none of hb402's routes: forwarded only when an allowed prefix starts it, its
/// method is allowed, and what follows the prefix is plain names (no device call, message
/// syntax or DataItem id the node could act on).
fn pass_through(config: &Config, method: &str, path: &CanonicalPath, query: Option<&str>) -> Route {
    let rules = &config.passthrough;
    let Some(prefix) = rules.allow.iter().find(|p| path.starts_with(p)) else {
        return Route::Refused(Refused::NotFound);
    };
    let plain_name = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && !starts_with_item_id(s)
    };
    if !path
        .segments()
        .skip(prefix.segments().count())
        .all(plain_name)
    {
        return Route::Refused(Refused::NotFound);
    }
    if method == "OPTIONS" {
        return Route::Preflight;
    }
    if !rules.methods.iter().any(|m| m == method) {
        return Route::Refused(Refused::MethodNotAllowed {
            allow: rules.methods.join(", "),
        });
    }
    if query.is_some_and(|q| !q.is_empty()) && !rules.allow_query {
        return Route::Refused(Refused::QueryNotForwarded);
    }
    Route::PassThrough
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::normalize;
    use proptest::prelude::*;
    use std::path::Path;

    const ID: &str = "Ekaibo2KKp_NjU_R73cJQriRQ3CH5Nnejan4p8lhF3Y";

    fn config() -> Config {
        Config::from_toml("version = 1", Path::new("t"), &Default::default(), &|_| {
            None
        })
        .unwrap()
    }

    fn route(method: &str, path: &str, query: Option<&str>) -> Route {
        match normalize(path) {
            Ok(p) => classify(&config(), method, &p, query),
            Err(e) => Route::Refused(Refused::BadPath(e)),
        }
    }

    fn read(method: &str, path: &str) -> ReadRoute {
        match route(method, path, Some("token=abc%2Bd&x=1")) {
            Route::Read(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn reads() {
        let id: ItemId = ID.parse().unwrap();
        for (path, kind, via) in [
            (format!("/{ID}"), ReadKind::Data, Via::Id),
            (format!("/resolve/{ID}"), ReadKind::Data, Via::Resolve),
            (format!("/RESOLVE/{ID}/"), ReadKind::Data, Via::Resolve),
            (
                format!("/resolve/dataitems/{ID}.ans104"),
                ReadKind::Data,
                Via::ResolveKey(format!("dataitems/{ID}.ans104")),
            ),
            (format!("/binary/{ID}"), ReadKind::Binary, Via::Binary),
            (
                format!("/~s3@1.0/offchain-dataitems/dataitems/{ID}.ans104"),
                ReadKind::Binary,
                Via::Raw {
                    bucket: "offchain-dataitems".into(),
                },
            ),
        ] {
            let r = read("GET", &path);
            assert_eq!((r.kind, &r.id, &r.via), (kind, &id, &via), "{path}");
            assert_eq!(r.token.as_deref(), Some("abc+d"));
            assert!(!r.head);
        }
        let r = read(
            "HEAD",
            &format!("/protected/resolve/0xabc/dataitems/{ID}.ans104/base-sepolia/0.01"),
        );
        assert!(r.head);
        assert_eq!(
            r.via,
            Via::Protected {
                key: format!("dataitems/{ID}.ans104"),
                terms: ProtectedTerms {
                    payee: "0xabc".into(),
                    network: "base-sepolia".into(),
                    amount: "0.01".into()
                }
            }
        );
        assert_eq!(
            r.path,
            format!("/protected/resolve/0xabc/dataitems/{ID}.ans104/base-sepolia/0.01")
        );
    }

    #[test]
    fn uploads() {
        for (path, kind) in [
            ("/~bundler@1.0/item", UploadRoute::Bundler),
            ("/~bundler@1.0/tx", UploadRoute::Bundler),
            ("/tx", UploadRoute::Tx),
            ("/upload", UploadRoute::Upload),
            ("/upload/", UploadRoute::Upload),
        ] {
            match route("POST", path, Some("codec-device=ans104@1.0")) {
                Route::Upload(t) => {
                    assert_eq!((t.route, t.claimed_id, t.bucket), (kind, None, None))
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        match route("PUT", &format!("/~s3@1.0/hb402-private/{ID}.ans104"), None) {
            Route::Upload(t) => {
                assert_eq!(t.route, UploadRoute::S3Put);
                assert_eq!(t.claimed_id, Some(ID.parse().unwrap()));
                assert_eq!(t.bucket.as_deref(), Some("hb402-private"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            route("GET", "/upload", None),
            Route::Refused(Refused::MethodNotAllowed { .. })
        ));
    }

    #[test]
    fn the_edge_is_closed() {
        let refused =
            |method: &str, path: &str, query: Option<&str>| match route(method, path, query) {
                Route::Refused(r) => r,
                other => panic!("{method} {path}: {other:?}"),
            };
        for path in [
            "/~s3@1.0",
            "/~s3@1.0/",
            "/~s3@1.0/offchain-dataitems",
            "/~S3@1.0/offchain-dataitems/",
            "/~s3@1.0/cache/offchain-dataitems/dataitems/x.ans104",
            "/~s3@1.0/get-presigned",
            "/~s3@1.0/other-bucket/dataitems/x.ans104",
        ] {
            assert_eq!(refused("GET", path, None), Refused::NodeApi, "{path}");
        }
        let object = format!("/~s3@1.0/offchain-dataitems/dataitems/{ID}.ans104");
        for method in ["DELETE", "POST", "PATCH"] {
            assert_eq!(refused(method, &object, None), Refused::NodeApi, "{method}");
        }
        for path in [
            format!("/{ID}/data"),
            format!("/{ID}~json@1.0"),
            format!("/{ID}.ans104"),
            "/resolve/not-an-id".into(),
            "/binary/a/b".into(),
            "/".into(),
            "/~cache@1.0/read".into(),
            "/~meta@1.0/infox".into(),
            "/~meta@1.0/info/~s3@1.0".into(),
            format!("/~meta@1.0/info/{ID}"),
        ] {
            assert_eq!(refused("GET", &path, None), Refused::NotFound, "{path}");
        }
        assert_eq!(
            refused("GET", "/~meta@1.0/info", Some("path=/~s3@1.0")),
            Refused::QueryNotForwarded
        );
        assert!(matches!(
            refused("POST", "/~meta@1.0/info", None),
            Refused::MethodNotAllowed { .. }
        ));
        assert!(matches!(
            refused("DELETE", &format!("/{ID}"), None),
            Refused::MethodNotAllowed { .. }
        ));
        assert!(matches!(
            refused("GET", "/a%2Fb", None),
            Refused::BadPath(_)
        ));
        assert_eq!(
            route("GET", "/~meta@1.0/info/address", None),
            Route::PassThrough
        );
        assert_eq!(route("OPTIONS", &format!("/{ID}"), None), Route::Preflight);
    }

    /// Segments from which paths hb402 and the node both care about are built.
    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(ID.to_owned()),
            Just(format!("{ID}.ans104")),
            Just(format!("{ID}~json@1.0")),
            Just("resolve".to_owned()),
            Just("binary".to_owned()),
            Just("protected".to_owned()),
            Just("~s3@1.0".to_owned()),
            Just("~S3@1.0".to_owned()),
            Just("cache".to_owned()),
            Just("offchain-dataitems".to_owned()),
            Just("hb402-private".to_owned()),
            Just("dataitems".to_owned()),
            Just("~meta@1.0".to_owned()),
            Just("info".to_owned()),
            Just("upload".to_owned()),
            Just("~bundler@1.0".to_owned()),
            Just("item".to_owned()),
            "[a-zA-Z0-9._~@&=+-]{1,10}",
        ]
        .prop_filter("not a dot segment", |s| s != "." && s != "..")
    }

    fn method() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("GET"),
            Just("HEAD"),
            Just("PUT"),
            Just("POST"),
            Just("DELETE"),
            Just("OPTIONS")
        ]
    }

    proptest! {
        /// Every spelling of a path — any byte percent-encoded (either case), doubled slashes,
        /// dot segments, a trailing slash — is classified exactly as its canonical form.
        #[test]
        fn every_spelling_classifies_as_the_canonical_form(
            segments in proptest::collection::vec(segment(), 0..7),
            method in method(),
            escape in proptest::collection::vec(any::<bool>(), 96),
            noise in proptest::collection::vec(0u8..5, 8),
        ) {
            let config = config();
            let canonical = format!("/{}", segments.join("/"));
            let expected = match normalize(&canonical) {
                Ok(p) => classify(&config, method, &p, None),
                Err(e) => Route::Refused(Refused::BadPath(e)),
            };
            let mut spelled = String::new();
            for (i, segment) in segments.iter().enumerate() {
                spelled.push_str(match noise[i % noise.len()] {
                    0 => "/",
                    1 => "//",
                    2 => "/./",
                    3 => "/zz/../",
                    _ => "/%2e/",
                });
                for (j, b) in segment.bytes().enumerate() {
                    match escape[(i * 11 + j) % escape.len()] {
                        true if j % 2 == 0 => spelled.push_str(&format!("%{b:02X}")),
                        true => spelled.push_str(&format!("%{b:02x}")),
                        false => spelled.push(b as char),
                    }
                }
            }
            if noise[7] % 2 == 0 || spelled.is_empty() {
                spelled.push('/');
            }
            let got = match normalize(&spelled) {
                Ok(p) => classify(&config, method, &p, None),
                Err(e) => Route::Refused(Refused::BadPath(e)),
            };
            // The canonical path recorded in a route is the same too (receipts, resources).
            prop_assert_eq!(got, expected, "{} vs {}", spelled, canonical);
        }

        /// Whatever a client sends, a pass-through never names the node's S3 device or a
        /// DataItem, starts with an allowed prefix, and is forwarded in a form that normalises
        /// to itself.
        #[test]
        fn no_pass_through_reaches_the_s3_device_or_an_item(
            raw in "(/[a-zA-Z0-9._~@%&=+;:-]{0,12}){0,6}/?",
            method in method(),
        ) {
            let config = config();
            if let Ok(forwarded) = normalize(&raw)
                && Route::PassThrough == classify(&config, method, &forwarded, None)
            {
                let wire = forwarded.to_uri_path();
                let again = normalize(&wire).unwrap();
                prop_assert_eq!(&again, &forwarded);
                let first = again.segments().next().unwrap_or_default();
                prop_assert!(!first.eq_ignore_ascii_case("~s3@1.0"), "{}", wire);
                prop_assert!(!again.segments().any(starts_with_item_id), "{}", wire);
                prop_assert!(config.passthrough.allow.iter().any(|p| again.starts_with(p)), "{}", wire);
                prop_assert!(matches!(method, "GET" | "HEAD"));
            }
        }
    }
}
