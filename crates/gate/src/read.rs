//! DataItem reads, planned without any proxy types: authorize the link → metadata → policy →
//! range → price → payment, ending in a [`ReadStep`]: an answer hb402 writes itself, or a plan
//! for the proxy to forward one byte range of one object.
//!
//! Each step but the metadata lookup and the payment is a pure function of the route, the
//! configuration, the metadata and the time; every refusal is a [`ReadError`] (or another
//! [`Refusal`]) turned into a reply in one place, [`crate::reply::rescue`].

use bytes::Bytes;
use hb402_x402::ResourceInfo;

use crate::config::{Config, PaymentMode};
use crate::gate::Gate;
use crate::items::{ItemsError, Location, now_secs};
use crate::meta::ItemMeta;
use crate::metrics::{CacheLabel, CacheResult};
use crate::payment::{self, Hold, Offered, Payment};
use crate::pricing::{self, PriceRoute, ReadFacts};
use crate::range::{RangeReply, evaluate};
use crate::reply::{Refusal, Reply};
use crate::route::{ProtectedTerms, ReadKind, ReadRoute, Via};
use crate::share::{ShareClaims, ShareError};
use crate::store::StoreError;
use crate::upstream::{Upstream, UpstreamError};

/// Why a read is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The share link does not verify (signature, expiry, shape).
    #[error("invalid share link: {0}")]
    Token(#[from] ShareError),
    /// A token was sent but share links are not configured.
    #[error("share links are not enabled")]
    LinksDisabled,
    /// The link names another item, bucket or key than the route.
    #[error("the share link names another item")]
    LinkNamesOther,
    /// The link carries payment terms: it opens only its paywalled route.
    #[error("the share link is a paywalled link")]
    PaywalledLink,
    /// The paywalled route's terms differ from its token's.
    #[error("the paywalled link's terms differ from its token's")]
    TermsDiffer,
    /// A link is needed (private item, paywalled route).
    #[error("{0}")]
    TokenRequired(&'static str),
    /// No such item where it was looked for.
    #[error("no such item")]
    NotFound,
    /// Expired at this second.
    #[error("expired at {0}")]
    Gone(u64),
    /// No byte of the range exists in `total` bytes.
    #[error("range not satisfiable in {0} bytes")]
    Range(u64),
    /// The item asks a price (its `X402-*` tags) this gateway cannot honour.
    #[error("item price tags out of bounds")]
    PriceTagsOutOfBounds,
    /// A paywalled route without payments configured.
    #[error("payments are not configured")]
    PaymentsOff,
    /// A paywalled route whose terms cannot be offered.
    #[error("bad paywalled link terms: {0}")]
    BadTerms(&'static str),
    /// The node's object is larger than hb402 may read whole to verify it.
    #[error("item too large to verify")]
    TooLargeToVerify,
}

impl ReadError {
    /// Status, code, message and extra headers: called only by [`crate::reply::rescue`].
    pub(crate) fn into_api(self) -> (crate::error::ApiError, Vec<(&'static str, String)>) {
        use crate::error::ApiError as E;
        let invalid = |m: &str| E::new(401, "invalid_token", m.to_owned());
        match self {
            ReadError::Token(e) => (E::from(e), vec![]),
            ReadError::LinksDisabled => (
                E::unauthorized("share links are not enabled on this gateway"),
                vec![],
            ),
            ReadError::LinkNamesOther => (invalid("the share link names another item"), vec![]),
            ReadError::PaywalledLink => (
                invalid("this share link is paywalled: open it at its /protected/resolve/ URL"),
                vec![],
            ),
            ReadError::TermsDiffer => (
                invalid("the paywalled link's payee, network or amount differ from its token's"),
                vec![],
            ),
            ReadError::TokenRequired(m) => (E::unauthorized(m), vec![]),
            ReadError::NotFound => (E::not_found("no such item"), vec![]),
            ReadError::Gone(at) => (
                E::gone(format!("the item expired at {at}")),
                vec![("x-expires-at", at.to_string())],
            ),
            ReadError::Range(total) => (
                E::range_not_satisfiable(format!(
                    "no byte of the requested range exists in {total} bytes"
                )),
                vec![("content-range", format!("bytes */{total}"))],
            ),
            ReadError::PriceTagsOutOfBounds => (
                E::forbidden("the item's X402 price tags are outside this gateway's bounds"),
                vec![],
            ),
            ReadError::PaymentsOff => (
                E::service_unavailable("payments_disabled", "paywalled links need payments"),
                vec![],
            ),
            ReadError::BadTerms(m) => (E::bad_request(m), vec![]),
            ReadError::TooLargeToVerify => (
                E::new(
                    502,
                    "unverifiable_item",
                    "the node's copy of this item is too large to be verified here",
                ),
                vec![],
            ),
        }
    }
}

impl From<ItemsError> for Refusal {
    fn from(e: ItemsError) -> Self {
        match e {
            ItemsError::Store(m) => Refusal::Store(StoreError::Backend(m)),
            ItemsError::Node(m) => Refusal::Node(UpstreamError::Unreachable(m)),
            ItemsError::Gone => Refusal::Read(ReadError::NotFound),
            ItemsError::TooLargeToVerify { .. } => Refusal::Read(ReadError::TooLargeToVerify),
        }
    }
}

/// A read, as the request carries it.
#[derive(Debug)]
pub(crate) struct ReadRequest<'a> {
    /// The route.
    pub(crate) route: ReadRoute,
    /// The request's headers (`Range`; for a priced read `PAYMENT-SIGNATURE` or `X-PAYMENT`, and
    /// `X-Receipt`).
    pub(crate) headers: &'a http::HeaderMap,
    /// The client's address (its failure budget), when known.
    pub(crate) client: Option<std::net::IpAddr>,
}

/// What to do with a read.
#[derive(Debug)]
pub(crate) enum ReadStep {
    /// Answered from metadata (HEAD, empty data), with the payment it settled.
    Answer(Reply, Option<Payment>),
    /// Forward one range of one object.
    Forward(ReadPlan),
}

/// How a read is forwarded and answered.
#[derive(Debug)]
pub(crate) struct ReadPlan {
    /// The object's path on the node.
    pub(crate) object_path: String,
    /// First byte of the object to read.
    pub(crate) first: u64,
    /// Last byte (inclusive).
    pub(crate) last: u64,
    /// The status to answer (200, 206).
    pub(crate) status: u16,
    /// The response headers.
    pub(crate) headers: Vec<(&'static str, String)>,
    /// The payment to settle before the first body byte.
    pub(crate) payment: Option<Hold>,
    /// The canonical path (receipts name it).
    pub(crate) path: String,
}

/// The credentials a read comes with, once checked.
#[derive(Debug)]
pub(crate) enum Access {
    /// No link.
    Public,
    /// A verified share link.
    Link(ShareClaims),
}

/// A key a link may name: `[segment/…]<id>[.ans104]`, segments of `A-Z a-z 0-9 . _ -`, none
/// empty, `.` or `..` (it goes into the node's URL).
fn safe_key(key: &str) -> bool {
    key.len() <= 1024
        && key.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// The id a key names: its last segment without `.ans104`.
fn key_item(key: &str) -> &str {
    let last = key.rsplit('/').next().unwrap_or_default();
    last.strip_suffix(".ans104").unwrap_or(last)
}

/// Whether a paywalled route repeats its token's terms: the payee as an address, the network by
/// name and the amount as an exact number of atomic units (never as a float).
fn terms_match(claims: &ShareClaims, terms: &ProtectedTerms) -> bool {
    let address = |s: &str| s.parse::<alloy::primitives::Address>().ok();
    let atomic = |s: &str| hb402_x402::parse_price(s, 6).ok();
    let payee_ok = claims
        .payee
        .as_deref()
        .and_then(address)
        .is_some_and(|p| Some(p) == address(&terms.payee));
    let network_ok = claims.network.as_deref() == Some(terms.network.as_str());
    // The claim is a float (Load's format): its shortest decimal form must be the same number
    // of atomic units.
    let amount_ok = claims
        .amount
        .map(|a| a.to_string())
        .and_then(|a| atomic(&a))
        .is_some_and(|a| Some(a) == atomic(&terms.amount));
    payee_ok && network_ok && amount_ok
}

/// Step 1: the share link, checked before anything else (a bad one costs no upstream request).
/// A link opens exactly the route its claims describe: one with payment terms only its
/// paywalled route.
pub(crate) fn authorize(config: &Config, route: &ReadRoute, now: u64) -> Result<Access, ReadError> {
    let up = &config.upstream;
    let Some(token) = &route.token else {
        return match &route.via {
            Via::Protected { .. } => {
                Err(ReadError::TokenRequired("a paywalled link needs its token"))
            }
            Via::Raw { bucket } if *bucket == up.private_bucket => Err(ReadError::TokenRequired(
                "this item is private: a share link token is required",
            )),
            _ => Ok(Access::Public),
        };
    };
    let links = config
        .share_links
        .as_ref()
        .ok_or(ReadError::LinksDisabled)?;
    let claims = crate::share::verify(links.secret.expose(), token, now as i64)?;
    let served = claims.bucket_name == up.public_bucket || claims.bucket_name == up.private_bucket;
    if !served
        || !safe_key(&claims.dataitem_key)
        || key_item(&claims.dataitem_key) != route.id.to_string()
    {
        return Err(ReadError::LinkNamesOther);
    }
    let paywalled = claims.payee.is_some() || claims.amount.is_some() || claims.network.is_some();
    match &route.via {
        Via::Protected { key, terms } => {
            if !paywalled || !terms_match(&claims, terms) {
                return Err(ReadError::TermsDiffer);
            }
            if !crate::share::key_matches(&claims.dataitem_key, key) {
                return Err(ReadError::LinkNamesOther);
            }
        }
        _ if paywalled => return Err(ReadError::PaywalledLink),
        Via::ResolveKey(key) if !crate::share::key_matches(&claims.dataitem_key, key) => {
            return Err(ReadError::LinkNamesOther);
        }
        Via::Raw { bucket } if *bucket != claims.bucket_name => {
            return Err(ReadError::LinkNamesOther);
        }
        _ => {}
    }
    Ok(Access::Link(claims))
}

/// Step 2: where the copy is.
fn location<'a>(config: &'a Config, route: &'a ReadRoute, access: &'a Access) -> Location<'a> {
    match (access, &route.via) {
        (Access::Link(c), _) => Location::Named {
            bucket: &c.bucket_name,
            key: &c.dataitem_key,
        },
        (Access::Public, Via::Raw { bucket }) => Location::Bucket(bucket),
        (Access::Public, _) => Location::Bucket(&config.upstream.public_bucket),
    }
}

/// Step 3: expiry wins over everything; a private copy needs a link naming its bucket.
pub(crate) fn admit(meta: &ItemMeta, access: &Access, now: u64) -> Result<(), ReadError> {
    if let Some(at) = meta.expires_at.filter(|&at| at <= now) {
        return Err(ReadError::Gone(at));
    }
    allowed(meta, access)
}

/// Whether the credentials open this copy (whatever its expiry).
fn allowed(meta: &ItemMeta, access: &Access) -> Result<(), ReadError> {
    match access {
        Access::Public if meta.private => Err(ReadError::TokenRequired(
            "this item is private: a share link token is required",
        )),
        Access::Link(c) if c.bucket_name != meta.bucket || key_item(&c.dataitem_key) != meta.id => {
            Err(ReadError::LinkNamesOther)
        }
        _ => Ok(()),
    }
}

/// The response a read gets, before any byte is fetched.
#[derive(Debug)]
pub(crate) struct Shape {
    /// 200 or 206.
    pub(crate) status: u16,
    /// Offset in the object of the first byte served.
    pub(crate) first: u64,
    /// Offset of the last byte served (inclusive).
    pub(crate) last: u64,
    /// Bytes served.
    pub(crate) length: u64,
    /// The representation's length (data or whole item).
    pub(crate) total: u64,
    /// The content type.
    pub(crate) content_type: String,
    /// Response headers.
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Shape {
    fn set_cache_control(&mut self, value: &str) {
        self.headers.retain(|(n, _)| *n != "cache-control");
        self.headers.push(("cache-control", value.to_owned()));
    }
}

/// The item's content type (checked when its metadata was made, see
/// [`crate::meta::media_type`]), or bytes.
fn content_type(meta: &ItemMeta) -> String {
    meta.content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// Whether content of this type may run as a document on the gateway's origin: everything but
/// types known to be passive (images other than SVG, audio, video, fonts, plain text, JSON, PDF,
/// archives, bytes) gets the sandbox.
fn is_active(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let (major, minor) = media.split_once('/').unwrap_or((media, ""));
    let passive = match major {
        "image" => !minor.contains("svg") && !minor.ends_with("xml"),
        "audio" | "video" | "font" => true,
        "text" => matches!(minor, "plain" | "csv" | "markdown" | "tab-separated-values"),
        "application" => matches!(
            minor,
            "octet-stream"
                | "json"
                | "pdf"
                | "zip"
                | "gzip"
                | "x-tar"
                | "wasm"
                | "cbor"
                | "msgpack"
                | "ld+json"
        ),
        _ => false,
    };
    !passive
}

/// Step 4: the range and the headers, from metadata alone.
pub(crate) fn shape(
    config: &Config,
    meta: &ItemMeta,
    route: &ReadRoute,
    range: Option<&str>,
    now: u64,
) -> Result<Shape, ReadError> {
    let (total, base, content_type, etag) = match route.kind {
        ReadKind::Data => (
            meta.data_size(),
            meta.data_offset,
            content_type(meta),
            format!("\"{}\"", meta.id),
        ),
        ReadKind::Binary => (
            meta.size,
            0,
            "application/octet-stream".to_owned(),
            format!("\"{}.ans104\"", meta.id),
        ),
    };
    let reply = evaluate(range, total);
    let (status, first, last) = match reply {
        RangeReply::Full => (200, 0, total.saturating_sub(1)),
        RangeReply::Partial { start, end, .. } => (206, start, end),
        RangeReply::Unsatisfiable { .. } => return Err(ReadError::Range(total)),
    };
    let length = if total == 0 { 0 } else { last - first + 1 };
    let mut headers = vec![
        ("content-type", content_type.clone()),
        ("content-length", length.to_string()),
        ("accept-ranges", "bytes".to_owned()),
        ("etag", etag),
        ("x-content-type-options", "nosniff".to_owned()),
    ];
    if let (true, Some(csp)) = (
        is_active(&content_type),
        &config.responses.active_content_csp,
    ) {
        headers.push(("content-security-policy", csp.clone()));
    }
    if let Some(content_range) = reply.content_range() {
        headers.push(("content-range", content_range));
    }
    let cache_control = match (meta.private, meta.expires_at) {
        (true, _) => "private, no-store".to_owned(),
        (false, Some(at)) => format!("public, max-age={}", at.saturating_sub(now)),
        (false, None) => "public, max-age=31536000, immutable".to_owned(),
    };
    headers.push(("cache-control", cache_control));
    if let Some(at) = meta.expires_at {
        headers.push(("x-expires-at", at.to_string()));
    }
    Ok(Shape {
        status,
        first: base + first,
        last: base + last,
        length,
        total,
        content_type,
        headers,
    })
}

/// The offer of a Load-compatible paywalled link: its own terms.
fn protected_offer(
    config: &Config,
    terms: &ProtectedTerms,
    resource: &ResourceInfo,
) -> Result<hb402_x402::Offer, ReadError> {
    let payments = &config.payments;
    let registry = &payments.registry;
    let network = registry
        .network(&terms.network)
        .ok_or(ReadError::BadTerms("the link names an unknown network"))?;
    let asset = registry
        .usdc(network.chain_id)
        .cloned()
        .ok_or(ReadError::BadTerms("the link's network has no known USDC"))?;
    let pay_to = terms
        .payee
        .parse()
        .map_err(|_| ReadError::BadTerms("the payee is not an EVM address"))?;
    let amount = hb402_x402::parse_price(&terms.amount, asset.decimals)
        .map_err(|_| ReadError::BadTerms("the amount is not a price in USDC"))?;
    let offer_terms = hb402_x402::OfferTerms {
        asset,
        pay_to,
        amount,
        max_timeout_seconds: payments.max_timeout_seconds,
    };
    hb402_x402::Offer::new(registry, offer_terms, resource)
        .map_err(|_| ReadError::BadTerms("the link's network cannot be offered"))
}

/// Step 5: what the read costs: the paywalled link's terms, else the first matching rule, else
/// (when the operator honours them) the item's own signed tags. `None`: free.
pub(crate) fn price(
    config: &Config,
    meta: &ItemMeta,
    route: &ReadRoute,
    shape: &Shape,
) -> Result<Option<Offered>, ReadError> {
    let payments = &config.payments;
    if !payments.enabled() {
        return match route.via {
            Via::Protected { .. } => Err(ReadError::PaymentsOff),
            _ => Ok(None),
        };
    }
    let resource = ResourceInfo {
        url: format!("{}{}", config.listen.public_base_url, route.path),
        description: Some(format!("DataItem {}", meta.id)),
        mime_type: Some(shape.content_type.clone()),
    };
    // The item's own type, on every route: `/binary/<id>` and the raw route serve the same data
    // inside the whole item, and must cost what the data costs.
    let item_type = content_type(meta);
    let facts = ReadFacts {
        route: match (&route.via, route.kind) {
            (Via::Raw { .. }, _) => PriceRoute::Raw,
            (_, ReadKind::Data) => PriceRoute::Data,
            (_, ReadKind::Binary) => PriceRoute::Binary,
        },
        bucket: &meta.bucket,
        content_type: &item_type,
        owner: &meta.owner_address,
        bytes: shape.total,
    };
    let mut offers = match &route.via {
        Via::Protected { terms, .. } => vec![protected_offer(config, terms, &resource)?],
        _ if pricing::rule_for(&payments.rules, &facts).is_some() => pricing::offers(
            &payments.registry,
            &payments.rules,
            &payments.accept,
            payments.max_timeout_seconds,
            &facts,
            &resource,
        ),
        // No rule decided: the item's own signed tags may ask for a price.
        _ => match payments.item_tags_max {
            None => Vec::new(),
            Some(max) => {
                let chain = match &payments.mode {
                    PaymentMode::Local { chain_id, .. } => Some(*chain_id),
                    _ => None,
                };
                let offer = pricing::item_tag_offer(
                    &payments.registry,
                    &meta.tags,
                    max,
                    payments.max_timeout_seconds,
                    chain,
                    &resource,
                );
                let asks = meta
                    .tags
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case("X402-Price"));
                if offer.is_none() && asks {
                    // An item that asks for a price this gateway cannot honour is not given away.
                    return Err(ReadError::PriceTagsOutOfBounds);
                }
                offer.into_iter().collect()
            }
        },
    };
    let item = Some(payment::ItemFacts {
        id: meta.id.clone(),
        content_type: shape.content_type.clone(),
        size: shape.total,
        expires_at: meta.expires_at,
    });
    if let Some(batch) = &payments.batch {
        let channel_offers: Vec<_> = offers
            .iter()
            .filter(|o| o.terms.asset.chain_id == batch.chain_id)
            .filter_map(|o| pricing::batch_offer(batch, o))
            .collect();
        offers.extend(channel_offers);
    }
    Ok((!offers.is_empty()).then_some(Offered {
        offers,
        resource,
        item,
        served: Some((shape.length, shape.total)),
    }))
}

/// A receipt for a settled payment, when receipts are enabled.
pub(crate) fn receipt_for(gate: &Gate, payer: &str, path: &str) -> Option<String> {
    let window = gate.config.payments.receipt_window.as_secs();
    (window > 0).then(|| crate::receipt::mint(&gate.receipt_key, payer, path, now_secs() + window))
}

/// Plans a read: every step above, the lookup and the payment.
pub(crate) async fn decide(gate: &Gate, req: ReadRequest<'_>) -> Result<ReadStep, Refusal> {
    let config = &gate.config;
    let now = now_secs();
    let ReadRequest {
        route,
        headers,
        client,
    } = req;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let access = authorize(config, &route, now)?;
    let (meta, source) = gate
        .items
        .find(&route.id, location(config, &route, &access))
        .await?
        .ok_or(ReadError::NotFound)?;
    gate.metrics.record_metadata_lookup(source);
    let gone = match admit(&meta, &access, now) {
        Err(ReadError::Gone(at)) => allowed(&meta, &access).map(|()| Some(at))?,
        admitted => admitted.map(|()| None)?,
    };
    let range = headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok());
    let mut shape = shape(config, &meta, &route, range, now)?;
    let priced = price(config, &meta, &route, &shape)?;
    if priced.is_some() {
        // What is sold is the payer's alone: no shared cache may keep it for the next reader.
        shape.set_cache_control("private, no-store");
    }
    // HEAD is never charged.
    let offered = priced.filter(|_| !route.head);
    let paid_before = |offered: &Option<Offered>| {
        offered.as_ref()?;
        header(crate::receipt::HEADER)
            .and_then(|t| crate::receipt::verify(&gate.receipt_key, t, &route.path, now))
    };
    let receipt = paid_before(&offered);
    let payment = header("payment-signature").or_else(|| header("x-payment"));
    if let Some(at) = gone {
        // Expired: only a payment charged while it was on sale still gets it.
        let late = match (offered, payment) {
            (Some(offered), Some(payment)) => {
                Box::pin(payment::resume(gate, payment, offered, client)).await?
            }
            _ => None,
        };
        return match late {
            Some(hold) => Box::pin(deliver(gate, &meta, shape, Some(hold), route)).await,
            None => Err(ReadError::Gone(at).into()),
        };
    }
    let hold = match (offered, receipt) {
        (Some(offered), None) => {
            Some(Box::pin(payment::hold(gate, payment, offered, client)).await?)
        }
        (Some(_), Some(payer)) => {
            tracing::debug!(%payer, path = %route.path, "read on a receipt");
            None
        }
        (None, _) => None,
    };
    if let Some(hold) = hold {
        if hold.is_refund() {
            return Box::pin(refunded(gate, hold)).await;
        }
        return Box::pin(deliver(gate, &meta, shape, Some(hold), route)).await;
    }
    Box::pin(deliver(gate, &meta, shape, hold, route)).await
}

/// A channel's cooperative refund, asked on a priced read: paid, and answered without the
/// content (nothing is read from the node).
async fn refunded(gate: &Gate, hold: Hold) -> Result<ReadStep, Refusal> {
    let settled = hold.settle(gate).await?;
    let body = serde_json::json!({
        "message": "Refund acknowledged",
        "channelId": settled.channel_id(),
    });
    let mut reply = Reply::json(200, &body);
    let (name, value) = settled.header();
    reply.headers.push((name, value.to_owned()));
    reply.headers.push(("cache-control", "no-store".to_owned()));
    Ok(ReadStep::Answer(reply, Some(Payment::Settled(settled))))
}

/// The read's bytes, once it was decided: from metadata (HEAD, empty data), from the edge
/// cache, or a plan to forward one range of the object.
async fn deliver(
    gate: &Gate,
    meta: &ItemMeta,
    shape: Shape,
    mut hold: Option<Hold>,
    route: ReadRoute,
) -> Result<ReadStep, Refusal> {
    if route.head || shape.length == 0 {
        let body = Bytes::new();
        return Box::pin(answer(gate, shape, hold, route.head, &route.path, body)).await;
    }
    // Behind the plan: the edge cache of item bytes, for items small enough to keep.
    if let Some((bytes, budget)) = cached_bytes(gate, meta, &shape, &mut hold).await? {
        let step = Box::pin(answer(gate, shape, hold, false, &route.path, bytes)).await?;
        return Ok(match step {
            ReadStep::Answer(mut reply, payment) => {
                reply.budget = Some(std::sync::Arc::new(budget));
                ReadStep::Answer(reply, payment)
            }
            forward => forward,
        });
    }
    Ok(ReadStep::Forward(ReadPlan {
        object_path: Upstream::object_path(&meta.bucket, &meta.key),
        first: shape.first,
        last: shape.last,
        status: shape.status,
        headers: shape.headers,
        payment: hold,
        path: route.path,
    }))
}

/// Step 7: the bytes to serve from the edge cache, when it keeps this item (a miss reads the
/// item from the node and verifies it), with their share of the in-flight budget. On a node
/// failure the held payment is given back.
async fn cached_bytes(
    gate: &Gate,
    meta: &ItemMeta,
    shape: &Shape,
    hold: &mut Option<Hold>,
) -> Result<Option<(Bytes, tokio::sync::OwnedSemaphorePermit)>, Refusal> {
    let started = std::time::Instant::now();
    match gate.items.body(meta).await {
        Ok(None) => Ok(None),
        Ok(Some(body)) => {
            let result = match body.hit {
                true => CacheResult::Hit,
                false => {
                    gate.metrics.observe_upstream(started.elapsed());
                    CacheResult::Miss
                }
            };
            gate.metrics.record_cache(CacheLabel::Items, result);
            // The object's bytes are its verified size, which the range was planned within.
            Ok(body
                .slice(shape.first, shape.last)
                .map(|bytes| (bytes, body.permit)))
        }
        Err(e) => {
            // Nothing was served: the payment is given back, never settled.
            payment::finish(
                gate,
                hold.take().map(Payment::Held),
                payment::Delivery::None,
            )
            .await;
            Err(e.into())
        }
    }
}

/// HEAD, empty bodies and cached items are answered without an upstream request. A paid answer
/// is settled first.
async fn answer(
    gate: &Gate,
    shape: Shape,
    hold: Option<Hold>,
    head: bool,
    path: &str,
    body: Bytes,
) -> Result<ReadStep, Refusal> {
    let mut headers = shape.headers;
    let settled = match hold {
        Some(hold) => {
            let settled = hold.settle(gate).await?;
            let (name, value) = settled.header();
            headers.push((name, value.to_owned()));
            if settled.grants_receipt()
                && let Some(receipt) = receipt_for(gate, settled.payer(), path)
            {
                headers.push((crate::receipt::HEADER, receipt));
            }
            Some(Payment::Settled(settled))
        }
        None => None,
    };
    let mut reply = Reply::new(shape.status, headers, body);
    reply.head_only = head;
    Ok(ReadStep::Answer(reply, settled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_passive_types_go_without_the_sandbox() {
        for ct in [
            "text/html",
            "text/html; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "application/rss+xml",
            "text/xml",
            "text/javascript",
            "application/x-unknown",
            "model/x3d+xml",
        ] {
            assert!(is_active(ct), "{ct}");
        }
        for ct in [
            "text/plain",
            "text/plain; charset=utf-8",
            "image/png",
            "application/json",
            "video/mp4",
            "application/octet-stream",
        ] {
            assert!(!is_active(ct), "{ct}");
        }
    }

    #[test]
    fn odd_content_types_become_bytes() {
        use crate::meta::media_type;
        // Browsers take the last type of a comma list: never passed on.
        for odd in [
            "text/plain\r\nset-cookie: a=b",
            "nothing",
            "image/png,text/html",
            "text/plain, text/html",
            "text/plain; a=\"x,text/html\"",
            "text/ html",
            "text/plain;",
        ] {
            assert_eq!(media_type(odd), None, "{odd}");
        }
        assert_eq!(
            media_type(" Text/Plain; charset=utf-8 ").as_deref(),
            Some("text/plain; charset=utf-8")
        );
    }

    #[test]
    fn keys_a_link_may_name() {
        let id = "Q9qsw4QGrcQxfA3Fr9yW9Yk9Bxz8tEAGYJKqcn0Ghuo";
        assert!(safe_key(&format!("dataitems/{id}.ans104")));
        assert!(safe_key(id));
        assert!(!safe_key(&format!("../{id}")));
        assert!(!safe_key(&format!("a//{id}")));
        assert!(!safe_key(&format!("a?b/{id}")));
        assert_eq!(key_item(&format!("dataitems/{id}.ans104")), id);
    }
}
