//! The Pingora `ProxyHttp` implementation. Each phase reads the session, calls a pure decision
//! (`route`, `policy`, `range`) and acts on it: refusals are answered in `request_filter` before
//! any upstream cost; reads are forwarded with the object path and byte range rewritten; the
//! device's quirks (200 for a ranged read, 500 for a missing key) are normalised on the way back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use hb402_ans104::ItemId;
use pingora::http::{Method, RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::error::ApiError;
use crate::gate::Gate;
use crate::items::{Location, now_secs};
use crate::metrics::{Outcome, RouteLabel, UploadResult};
use crate::paywall;
use crate::policy::{Access, ReadDecision, decide_read, link_names};
use crate::pricing::{self, PriceRoute, ReadFacts};
use crate::range::{RangeReply, evaluate};
use crate::route::UploadRoute;
use crate::route::{ReadKind, Route, classify};
use crate::upload::{self, Refusal};
use crate::upstream::Upstream;

/// Headers a browser may read on hb402's routes.
const EXPOSE_HEADERS: &str = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE, Content-Range, Content-Length, ETag, X-Expires-At";
/// Request headers a browser may send on hb402's routes.
const ALLOW_HEADERS: &str = "PAYMENT-SIGNATURE, X-PAYMENT, Range, Content-Type, Authorization, X-Expiry-Days, X-Expires-At, X-Private";

/// The proxy service.
#[derive(Debug, Clone)]
pub struct Proxy {
    gate: Arc<Gate>,
}

impl Proxy {
    /// A proxy over shared state.
    pub fn new(gate: Arc<Gate>) -> Self {
        Proxy { gate }
    }
}

/// How a read is forwarded and answered.
#[derive(Debug)]
struct ReadPlan {
    object_path: String,
    first: u64,
    last: u64,
    status: u16,
    headers: Vec<(&'static str, String)>,
}

/// A read, as the route named it.
#[derive(Debug)]
struct ReadRequest {
    kind: ReadKind,
    id: ItemId,
    head: bool,
    token: Option<String>,
    bucket: Option<String>,
    path_key: Option<String>,
    protected: Option<crate::route::ProtectedTerms>,
}

/// A verified payment travelling with its request until settlement.
#[derive(Debug)]
struct Payment {
    verified: paywall::Verified,
    offers: Vec<hb402_x402::Offer>,
    resource: hb402_x402::ResourceInfo,
}

/// Per-request state.
#[derive(Debug)]
pub struct Ctx {
    started: Instant,
    route: RouteLabel,
    outcome: Option<Outcome>,
    plan: Option<ReadPlan>,
    error: Option<ApiError>,
    payment: Option<Payment>,
    prepared: Option<paywall::Prepared>,
    upstream_started: Option<Instant>,
}

fn cors(headers: &mut Vec<(&'static str, String)>) {
    headers.push(("access-control-allow-origin", "*".into()));
    headers.push(("access-control-expose-headers", EXPOSE_HEADERS.into()));
}

/// Writes a complete response.
async fn respond(
    session: &mut Session,
    status: u16,
    headers: &[(&'static str, String)],
    body: Option<Bytes>,
) -> Result<()> {
    let mut head = ResponseHeader::build(status, Some(headers.len() + 2))?;
    for (name, value) in headers {
        head.insert_header(*name, value.as_str())?;
    }
    let len = body.as_ref().map_or(0, Bytes::len);
    if !headers.iter().any(|(n, _)| *n == "content-length") {
        head.insert_header("content-length", len.to_string())?;
    }
    let head_only = body.is_none();
    session
        .write_response_header(Box::new(head), head_only)
        .await?;
    if let Some(body) = body {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Writes a paywall answer (a 402).
async fn respond_402(
    session: &mut Session,
    ctx: &mut Ctx,
    prepared: paywall::Prepared,
) -> Result<()> {
    ctx.outcome = Some(Outcome::PaymentRequired);
    respond(
        session,
        prepared.status,
        &prepared.headers,
        Some(prepared.body),
    )
    .await
}

/// Writes a paywall answer from `request_filter` (the request ends there).
async fn write_402(
    session: &mut Session,
    ctx: &mut Ctx,
    prepared: paywall::Prepared,
) -> std::result::Result<bool, (ApiError, Vec<(&'static str, String)>)> {
    respond_402(session, ctx, prepared)
        .await
        .map_err(|e| (ApiError::new(500, "write_failed", e.to_string()), vec![]))?;
    Ok(true)
}

/// Writes hb402's JSON error body.
async fn respond_error(
    session: &mut Session,
    err: &ApiError,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut headers = vec![("content-type", "application/json".to_owned())];
    headers.extend_from_slice(extra);
    cors(&mut headers);
    respond(session, err.status, &headers, Some(err.body())).await
}

impl Proxy {
    /// A receipt for a settled payment, when receipts are enabled.
    fn receipt_for(&self, req: &RequestHeader, verified: &paywall::Verified) -> Option<String> {
        let window = self.gate.config.payments.receipt_window.as_secs();
        (window > 0).then(|| {
            crate::receipt::mint(
                &self.gate.receipt_key,
                verified.payer(),
                req.uri.path(),
                now_secs() + window,
            )
        })
    }

    /// An upload: priced before its body is read (the 402 leaves with the body unread), then
    /// verified while it streams and paid before it is stored.
    async fn upload(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: UploadRoute,
        claimed_id: Option<ItemId>,
        bucket: Option<&str>,
    ) -> std::result::Result<upload::Stored, Refusal> {
        let gate = &self.gate;
        let intake = upload::intake(gate, session.req_header(), bucket)?;
        let paid = if intake.offers.is_empty() {
            None
        } else {
            let offers = intake.offers.clone();
            match paywall::check(gate, session.req_header(), &offers, &intake.resource).await {
                Ok(verified) => Some(upload::PaidUpload { verified, offers }),
                Err(prepared) => {
                    ctx.outcome = Some(Outcome::PaymentRequired);
                    return Err(Refusal::Payment(prepared));
                }
            }
        };
        upload::handle(gate, session, route, claimed_id, intake, paid).await
    }

    /// Decides a read; `Ok(true)` when the answer was written here.
    async fn read(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        request: ReadRequest,
    ) -> std::result::Result<bool, (ApiError, Vec<(&'static str, String)>)> {
        let ReadRequest {
            kind,
            id,
            head,
            token,
            bucket,
            path_key,
            protected,
        } = request;
        let gate = &self.gate;
        let config = &gate.config;
        let now = now_secs();
        let buckets = [
            config.upstream.public_bucket.as_str(),
            config.upstream.private_bucket.as_str(),
        ];
        // A share link is checked before anything else: a bad one is refused without any
        // upstream request.
        let claims = match token {
            None => None,
            Some(token) => {
                let Some(links) = &config.share_links else {
                    return Err((
                        ApiError::unauthorized("share links are not enabled on this gateway"),
                        vec![],
                    ));
                };
                let claims = crate::share::verify(links.secret.expose(), &token, now as i64)
                    .map_err(|e| (ApiError::new(401, "invalid_token", e.to_string()), vec![]))?;
                // A link in Load's form names the full key in the path (`/resolve/<key>`); it must
                // be the key of the claims.
                let key_ok = path_key
                    .as_deref()
                    .is_none_or(|k| crate::share::key_matches(&claims.dataitem_key, k));
                let terms_ok = protected
                    .as_ref()
                    .is_none_or(|t| protected_terms_match(&claims, t));
                if !terms_ok {
                    return Err((
                        ApiError::new(
                            401,
                            "invalid_token",
                            "the paywalled link's payee, network or amount differ from its token's",
                        ),
                        vec![],
                    ));
                }
                if !key_ok || !link_names(&claims, &id.to_string(), buckets) {
                    return Err((
                        ApiError::new(401, "invalid_token", "the share link names another item"),
                        vec![],
                    ));
                }
                Some(claims)
            }
        };
        if protected.is_some() && claims.is_none() {
            return Err((
                ApiError::unauthorized("a paywalled link needs its token"),
                vec![],
            ));
        }
        if bucket.as_deref() == Some(config.upstream.private_bucket.as_str()) && claims.is_none() {
            return Err((
                ApiError::unauthorized("this item is private: a share link token is required"),
                vec![],
            ));
        }
        let location = match &claims {
            Some(c) => Location::Named {
                bucket: &c.bucket_name,
                key: &c.dataitem_key,
            },
            None => Location::Public,
        };
        let (meta, source) = gate
            .items
            .find(&id, location)
            .await
            .map_err(|e| (e, vec![]))?
            .ok_or_else(|| (ApiError::not_found(format!("no item {id}")), vec![]))?;
        gate.metrics.record_metadata_lookup(source);
        let access = claims.as_ref().map_or(Access::Public, Access::Link);
        match decide_read(&meta, access, now) {
            ReadDecision::Serve => {}
            ReadDecision::Gone { expired_at } => {
                return Err((
                    ApiError::new(410, "expired", format!("item {id} expired at {expired_at}")),
                    vec![("x-expires-at", expired_at.to_string())],
                ));
            }
            ReadDecision::Unauthorized(reason) => {
                return Err((ApiError::unauthorized(reason), vec![]));
            }
        }

        let (total, base, content_type, etag) = match kind {
            ReadKind::Data => (
                meta.data_size(),
                meta.data_offset,
                meta.content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".to_owned()),
                format!("\"{id}\""),
            ),
            ReadKind::Binary => (
                meta.size,
                0,
                "application/octet-stream".to_owned(),
                format!("\"{id}.ans104\""),
            ),
        };
        let range = session
            .req_header()
            .headers
            .get("range")
            .and_then(|v| v.to_str().ok());
        let reply = evaluate(range, total);
        let (status, first, last) = match reply {
            RangeReply::Full => (200, 0, total.saturating_sub(1)),
            RangeReply::Partial { start, end, .. } => (206, start, end),
            RangeReply::Unsatisfiable { .. } => {
                let content_range = reply.content_range().unwrap_or_default();
                return Err((
                    ApiError::range_not_satisfiable(format!(
                        "no byte of the requested range exists in {total} bytes"
                    )),
                    vec![("content-range", content_range)],
                ));
            }
        };
        let length = if total == 0 { 0 } else { last - first + 1 };
        let mut headers = vec![
            ("content-type", content_type),
            ("content-length", length.to_string()),
            ("accept-ranges", "bytes".to_owned()),
            ("etag", etag),
        ];
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
        cors(&mut headers);

        // The paywall: HEAD is never charged; a priced GET pays before anything is fetched.
        let payments = &config.payments;
        if protected.is_some() && !payments.enabled() {
            return Err((
                ApiError::new(
                    503,
                    "payments_disabled",
                    "paywalled links need payments.mode",
                ),
                vec![],
            ));
        }
        if !head && payments.enabled() {
            let facts = ReadFacts {
                route: match (kind, &bucket) {
                    (_, Some(_)) => PriceRoute::Raw,
                    (ReadKind::Data, None) => PriceRoute::Data,
                    (ReadKind::Binary, None) => PriceRoute::Binary,
                },
                bucket: &meta.bucket,
                content_type: &headers[0].1,
                owner: &meta.owner_address,
                bytes: total,
            };
            let resource = hb402_x402::ResourceInfo {
                url: format!(
                    "{}{}",
                    config.listen.public_base_url,
                    session.req_header().uri.path()
                ),
                description: Some(format!("DataItem {id}")),
                mime_type: Some(headers[0].1.clone()),
            };
            let offers = match &protected {
                // Load's paywalled share link: the link's own terms are the offer.
                Some(terms) => {
                    vec![protected_offer(payments, terms, &resource).map_err(|e| (e, vec![]))?]
                }
                None => {
                    let by_rule = pricing::offers(
                        &payments.registry,
                        &payments.rules,
                        &payments.accept,
                        payments.max_timeout_seconds,
                        &facts,
                        &resource,
                    );
                    let ruled = pricing::rule_for(&payments.rules, &facts).is_some();
                    match payments.item_tags_max {
                        // No rule decided: the item's own signed tags may ask for a price.
                        Some(max) if !ruled => {
                            let chain = match &payments.mode {
                                crate::config::PaymentMode::Local { chain_id, .. } => {
                                    Some(*chain_id)
                                }
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
                                // An item that asks for a price this gateway cannot honour is
                                // not given away.
                                return Err((
                                    ApiError::forbidden(
                                        "the item's X402 price tags are outside this gateway's bounds",
                                    ),
                                    vec![],
                                ));
                            }
                            offer.into_iter().collect()
                        }
                        _ => by_rule,
                    }
                }
            };
            let path = session.req_header().uri.path().to_owned();
            let receipt = session
                .req_header()
                .headers
                .get(crate::receipt::HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|t| crate::receipt::verify(&gate.receipt_key, t, &path, now));
            if let Some(payer) = receipt {
                // Already paid within the receipt window: a re-read, not a new purchase.
                tracing::debug!(%payer, %path, "read on a receipt");
            } else if !offers.is_empty() {
                match paywall::check(gate, session.req_header(), &offers, &resource).await {
                    Ok(verified) => {
                        ctx.payment = Some(Payment {
                            verified,
                            offers,
                            resource,
                        });
                    }
                    Err(prepared) => {
                        return write_402(session, ctx, prepared).await;
                    }
                }
            }
        }
        if let (Some(payment), true) = (ctx.payment.as_mut(), length == 0) {
            // Nothing to fetch: settle now, then answer.
            let req = session.req_header().clone();
            match paywall::settle(
                gate,
                &req,
                &mut payment.verified,
                &payment.offers,
                &payment.resource,
            )
            .await
            {
                Ok((name, value)) => headers.push((name, value)),
                Err(prepared) => {
                    return write_402(session, ctx, prepared).await;
                }
            }
        }
        if head || length == 0 {
            // HEAD and empty bodies are answered from metadata: no upstream request.
            ctx.outcome = Some(Outcome::from_status(status));
            respond(session, status, &headers, (!head).then(Bytes::new))
                .await
                .map_err(|e| (ApiError::new(500, "write_failed", e.to_string()), vec![]))?;
            return Ok(true);
        }
        ctx.plan = Some(ReadPlan {
            object_path: Upstream::object_path(&meta.bucket, &meta.key),
            first: base + first,
            last: base + last,
            status,
            headers,
        });
        Ok(false)
    }
}

/// Whether a paywalled link's path repeats its token's terms: the payee as an address, the
/// network by name and the amount as an exact number of atomic units (never as a float).
fn protected_terms_match(
    claims: &crate::share::ShareClaims,
    terms: &crate::route::ProtectedTerms,
) -> bool {
    let address = |s: &str| s.parse::<alloy::primitives::Address>().ok();
    let atomic = |s: &str| hb402_x402::parse_price(s, 6).ok();
    let payee_ok = claims
        .payee
        .as_deref()
        .and_then(address)
        .is_some_and(|p| Some(p) == address(&terms.payee));
    let network_ok = claims.network.as_deref() == Some(terms.network.as_str());
    let amount_ok = claims
        .amount
        .map(|a| a.to_string())
        .and_then(|a| atomic(&a))
        .is_some_and(|a| Some(a) == atomic(&terms.amount));
    payee_ok && network_ok && amount_ok
}

/// The single offer of a paywalled link.
fn protected_offer(
    payments: &crate::config::PaymentsConfig,
    terms: &crate::route::ProtectedTerms,
    resource: &hb402_x402::ResourceInfo,
) -> std::result::Result<hb402_x402::Offer, ApiError> {
    let registry = &payments.registry;
    let network = registry
        .network(&terms.network)
        .ok_or_else(|| ApiError::bad_request(format!("unknown network {:?}", terms.network)))?;
    let asset = registry
        .usdc(network.chain_id)
        .cloned()
        .ok_or_else(|| ApiError::bad_request(format!("no USDC on {:?}", terms.network)))?;
    let pay_to = terms
        .payee
        .parse()
        .map_err(|_| ApiError::bad_request("the payee is not an EVM address"))?;
    let amount = hb402_x402::parse_price(&terms.amount, asset.decimals)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let offer_terms = hb402_x402::OfferTerms {
        asset,
        pay_to,
        amount,
        max_timeout_seconds: payments.max_timeout_seconds,
    };
    hb402_x402::Offer::new(registry, offer_terms, resource)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            route: RouteLabel::Other,
            outcome: None,
            plan: None,
            error: None,
            payment: None,
            prepared: None,
            upstream_started: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let method = req.method.as_str().to_owned();
        let path = req.uri.path().to_owned();
        let query = req.uri.query().map(str::to_owned);
        let route = classify(&self.gate.config, &method, &path, query.as_deref());
        tracing::debug!(%method, %path, ?route, "request");
        match route {
            Route::PassThrough => {
                ctx.route = RouteLabel::Passthrough;
                Ok(false)
            }
            Route::Preflight => {
                ctx.route = RouteLabel::Preflight;
                ctx.outcome = Some(Outcome::Ok);
                let headers = [
                    ("access-control-allow-origin", "*".to_owned()),
                    (
                        "access-control-allow-methods",
                        "GET, HEAD, POST, PUT, OPTIONS".to_owned(),
                    ),
                    ("access-control-allow-headers", ALLOW_HEADERS.to_owned()),
                    ("access-control-expose-headers", EXPOSE_HEADERS.to_owned()),
                    ("access-control-max-age", "600".to_owned()),
                ];
                respond(session, 204, &headers, None).await?;
                Ok(true)
            }
            Route::NotFound => {
                ctx.route = RouteLabel::Other;
                respond_error(
                    session,
                    &ApiError::not_found(format!("nothing is served at {path}")),
                    &[],
                )
                .await?;
                Ok(true)
            }
            Route::MethodNotAllowed => {
                let err =
                    ApiError::method_not_allowed(format!("{method} is not allowed on {path}"));
                respond_error(session, &err, &[("allow", "GET, HEAD, OPTIONS".to_owned())]).await?;
                Ok(true)
            }
            Route::Denied => {
                ctx.route = RouteLabel::Passthrough;
                respond_error(
                    session,
                    &ApiError::forbidden(format!("{path} is not served by this gateway")),
                    &[],
                )
                .await?;
                Ok(true)
            }
            Route::Upload {
                route,
                claimed_id,
                bucket,
            } => {
                ctx.route = RouteLabel::Upload;
                let result = self
                    .upload(session, ctx, route, claimed_id, bucket.as_deref())
                    .await;
                let label = match &result {
                    Ok(stored) if stored.status == 201 => UploadResult::Stored,
                    Ok(_) => UploadResult::Duplicate,
                    Err(Refusal::Payment(_)) => UploadResult::Unpaid,
                    Err(Refusal::Error(e, _)) if e.status == 413 => UploadResult::TooLarge,
                    Err(Refusal::Error(e, _)) if e.status >= 500 => UploadResult::UpstreamError,
                    Err(Refusal::Error(e, _)) if e.code == "bad_request" => UploadResult::Rejected,
                    Err(Refusal::Error(e, _)) if e.status == 411 => UploadResult::Rejected,
                    Err(Refusal::Error(..)) => UploadResult::Invalid,
                };
                self.gate
                    .metrics
                    .record_upload(label, session.body_bytes_read() as u64);
                match result {
                    Ok(stored) => {
                        let mut headers = vec![("content-type", "application/json".to_owned())];
                        headers.extend(stored.headers);
                        cors(&mut headers);
                        let body = Bytes::from(stored.body.to_string());
                        respond(session, stored.status, &headers, Some(body)).await?;
                    }
                    Err(refusal) => {
                        // Whatever the client still sends is not read: close the connection.
                        session.set_keepalive(None);
                        match refusal {
                            Refusal::Error(err, extra) => {
                                respond_error(session, &err, &extra).await?;
                            }
                            Refusal::Payment(prepared) => {
                                respond_402(session, ctx, prepared).await?;
                            }
                        }
                    }
                }
                Ok(true)
            }
            Route::Read {
                kind,
                id,
                head,
                token,
                bucket,
                path_key,
                protected,
            } => {
                ctx.route = match (kind, &bucket) {
                    (_, Some(_)) => RouteLabel::Raw,
                    (ReadKind::Data, None) => RouteLabel::Data,
                    (ReadKind::Binary, None) => RouteLabel::Binary,
                };
                let request = ReadRequest {
                    kind,
                    id,
                    head,
                    token,
                    bucket,
                    path_key,
                    protected,
                };
                match self.read(session, ctx, request).await {
                    Ok(done) => Ok(done),
                    Err((err, extra)) => {
                        respond_error(session, &err, &extra).await?;
                        Ok(true)
                    }
                }
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let up = &self.gate.config.upstream;
        let mut peer = HttpPeer::new(up.authority.as_str(), false, String::new());
        peer.options.connection_timeout = Some(up.connect_timeout);
        peer.options.total_connection_timeout = Some(up.connect_timeout);
        peer.options.read_timeout = Some(up.read_timeout);
        peer.options.write_timeout = Some(up.write_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_started = Some(Instant::now());
        let Some(plan) = &ctx.plan else {
            return Ok(());
        };
        upstream_request.set_method(Method::GET);
        let uri = plan
            .object_path
            .parse()
            .map_err(|_| Error::explain(ErrorType::InternalError, "object path is not a URI"))?;
        upstream_request.set_uri(uri);
        // Nothing of the client's request goes to the node but what hb402 decides.
        let names: Vec<_> = upstream_request.headers.keys().cloned().collect();
        for name in names {
            upstream_request.remove_header(&name);
        }
        upstream_request.insert_header("host", self.gate.config.upstream.authority.as_str())?;
        upstream_request.insert_header("authorization", self.gate.upstream.authorization())?;
        upstream_request.insert_header("range", format!("bytes={}-{}", plan.first, plan.last))?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Time to the node's response head, for every proxied request.
        if let Some(started) = ctx.upstream_started {
            self.gate.metrics.observe_upstream(started.elapsed());
        }
        let Some(plan) = &ctx.plan else {
            return Ok(());
        };
        let status = upstream_response.status.as_u16();
        let expected = plan.last - plan.first + 1;
        match status {
            // The device answers a ranged read with 200 and only the requested bytes.
            200 | 206 => {
                let length = upstream_response
                    .headers
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if length.is_some_and(|l| l != expected) {
                    ctx.error = Some(ApiError::bad_gateway(format!(
                        "the node returned {} bytes instead of {expected}",
                        length.unwrap_or_default()
                    )));
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(502),
                        "length mismatch",
                    ));
                }
                let mut head = ResponseHeader::build(plan.status, Some(plan.headers.len() + 1))?;
                for (name, value) in &plan.headers {
                    head.insert_header(*name, value.as_str())?;
                }
                // Settle before the first body byte leaves hb402; on failure the upstream body
                // is discarded and the client gets the 402.
                if let Some(payment) = ctx.payment.as_mut() {
                    let req = session.req_header().clone();
                    match paywall::settle(
                        &self.gate,
                        &req,
                        &mut payment.verified,
                        &payment.offers,
                        &payment.resource,
                    )
                    .await
                    {
                        Ok((name, value)) => {
                            head.insert_header(name, value)?;
                            if let Some(receipt) = self.receipt_for(&req, &payment.verified) {
                                head.insert_header(crate::receipt::HEADER, receipt)?;
                            }
                        }
                        Err(prepared) => {
                            ctx.prepared = Some(prepared);
                            return Err(Error::explain(
                                ErrorType::HTTPStatus(402),
                                "settlement failed",
                            ));
                        }
                    }
                }
                *upstream_response = head;
                ctx.outcome = Some(Outcome::from_status(plan.status));
                Ok(())
            }
            // A missing key is a 500 from the device (or the node's lifecycle removed it).
            404 | 500 => {
                ctx.error = Some(ApiError::not_found(
                    "the item is no longer stored by the node",
                ));
                Err(Error::explain(
                    ErrorType::HTTPStatus(404),
                    "object missing upstream",
                ))
            }
            other => {
                if let Some(payment) = &ctx.payment {
                    paywall::release(&self.gate, &payment.verified).await;
                }
                ctx.error = Some(ApiError::bad_gateway(format!("the node answered {other}")));
                Err(Error::explain(ErrorType::HTTPStatus(502), "upstream error"))
            }
        }
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        // The connection is not reused after a failed proxy: say so, or a client reusing it
        // races the close.
        session.set_keepalive(None);
        if let Some(prepared) = ctx.prepared.take()
            && session.response_written().is_none()
        {
            let status = prepared.status;
            if let Err(write) = respond_402(session, ctx, prepared).await {
                tracing::debug!(error = %write, "could not send the 402");
            }
            return FailToProxy {
                error_code: status,
                can_reuse_downstream: false,
            };
        }
        if code > 0 && session.response_written().is_none() {
            let err = ctx.error.take().unwrap_or_else(|| match code {
                502..=504 => ApiError::bad_gateway("the node could not be reached"),
                400 => ApiError::bad_request("the request could not be read"),
                _ => ApiError::new(code, "internal_error", e.to_string()),
            });
            ctx.outcome = Some(Outcome::from_status(err.status));
            if let Err(write) = respond_error(session, &err, &[]).await {
                tracing::debug!(error = %write, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        // A verified payment that was not settled (upstream failed, client gone before the
        // response) is released: the authorization is still the payer's.
        if let Some(payment) = &ctx.payment
            && !payment.verified.settled
        {
            paywall::release(&self.gate, &payment.verified).await;
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let outcome = ctx.outcome.unwrap_or_else(|| Outcome::from_status(status));
        self.gate
            .metrics
            .record_request(ctx.route, outcome, ctx.started.elapsed());
    }
}
