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
    /// Forwarded to the node at this canonical path.
    PassThrough(CanonicalPath),
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

/// Whether a segment starts with a DataItem id: 43 base64url characters not followed by
/// another one (`<id>`, `<id>~json@1.0`, `<id>.ans104`, `<id>&k=v`).
pub fn starts_with_item_id(segment: &str) -> bool {
    let b64url = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_');
    let bytes = segment.as_bytes();
    bytes.len() >= 43
        && bytes[..43].iter().all(b64url)
        && bytes.get(43).is_none_or(|b| !b64url(b))
        && item_id(&segment[..43]).is_some()
}

fn is(segment: &str, name: &str) -> bool {
    segment.eq_ignore_ascii_case(name)
}

/// Classifies a request on its canonical path.
pub fn classify(config: &Config, method: &str, path: &CanonicalPath, query: Option<&str>) -> Route {
    let parts = path.parts();
    let canonical = || path.to_uri_path();
    let read = |kind, id, via| {
        Route::Read(ReadRoute {
            kind,
            id,
            head: method == "HEAD",
            token: query_param(query, "token"),
            via,
            path: canonical(),
        })
    };
    let upload = |route, claimed_id, bucket| {
        Route::Upload(UploadTarget {
            route,
            claimed_id,
            bucket,
            path: canonical(),
        })
    };
    let on_read = |route: Route| match method {
        "GET" | "HEAD" => route,
        "OPTIONS" => Route::Preflight,
        _ => Route::Refused(Refused::MethodNotAllowed {
            allow: READ_METHODS.to_owned(),
        }),
    };
    let on_upload = |route: UploadRoute| match method {
        "POST" => upload(route, None, None),
        "OPTIONS" => Route::Preflight,
        _ => Route::Refused(Refused::MethodNotAllowed {
            allow: UPLOAD_METHODS.to_owned(),
        }),
    };
    let not_found = Route::Refused(Refused::NotFound);
    let Some(first) = parts.first().copied() else {
        return pass_through(config, method, path, query);
    };
    if is(first, S3_DEVICE) {
        return classify_s3(config, method, &parts[1..], query, canonical());
    }
    match parts.as_slice() {
        [r, key @ ..] if is(r, "resolve") && !key.is_empty() => {
            let last = key[key.len() - 1];
            match (key.len(), item_id(last), key_item_id(last)) {
                (1, Some(id), _) => on_read(read(ReadKind::Data, id, Via::Resolve)),
                (_, _, Some(id)) => {
                    on_read(read(ReadKind::Data, id, Via::ResolveKey(key.join("/"))))
                }
                _ => not_found,
            }
        }
        [b, id] if is(b, "binary") => match key_item_id(id) {
            Some(id) => on_read(read(ReadKind::Binary, id, Via::Binary)),
            None => not_found,
        },
        [p, r, payee, key @ .., network, amount] if is(p, "protected") && is(r, "resolve") => {
            let Some(id) = key.last().and_then(|last| key_item_id(last)) else {
                return not_found;
            };
            let via = Via::Protected {
                key: key.join("/"),
                terms: ProtectedTerms {
                    payee: (*payee).to_owned(),
                    network: (*network).to_owned(),
                    amount: (*amount).to_owned(),
                },
            };
            on_read(read(ReadKind::Data, id, via))
        }
        [u] if is(u, "upload") => on_upload(UploadRoute::Upload),
        [t] if is(t, "tx") => on_upload(UploadRoute::Tx),
        [b, i] if is(b, "~bundler@1.0") && (is(i, "item") || is(i, "tx")) => {
            on_upload(UploadRoute::Bundler)
        }
        [r, ..] if is(r, "resolve") || is(r, "binary") || is(r, "protected") => not_found,
        [id] if item_id(id).is_some() => match item_id(id) {
            Some(id) => on_read(read(ReadKind::Data, id, Via::Id)),
            None => not_found,
        },
        // `/<id>/…`, `/<id>~device@1.0/…`: the node would serve the item's content.
        _ if starts_with_item_id(first) => not_found,
        _ => pass_through(config, method, path, query),
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
    let plain_name = |s: &String| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && !starts_with_item_id(s)
    };
    if !path.segments()[prefix.segments().len()..]
        .iter()
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
    Route::PassThrough(path.clone())
}
