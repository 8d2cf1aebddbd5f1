//! The Pingora `ProxyHttp` adapter: each phase reads the session, calls the module that decides
//! ([`crate::route`], [`crate::read`], [`crate::upload`], [`crate::payment`]) and does the I/O the
//! decision asks for. Refusals are turned into replies by [`crate::reply::rescue`]; a payment not
//! settled is ended by [`crate::payment::finish`], called as soon as the request's outcome is
//! known (`fail_to_proxy`) and otherwise in `logging`, whatever happened before.
//!
//! What reaches the node is built here from the decision alone: a read forwards `GET` of one
//! object range with hb402's own credentials; a pass-through forwards the canonical path with a
//! short list of harmless client headers. No client credential, body or unlisted header goes
//! upstream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{Method, RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::gate::Gate;
use crate::metrics::{Outcome, RouteLabel};
use crate::path::CanonicalPath;
use crate::payment::{self, Payment};
use crate::read::{self, ReadError, ReadRequest, ReadStep};
use crate::reply::{Asker, Refusal, Reply, rescue};
use crate::route::{ReadKind, ReadRoute, Refused, Route, UploadTarget, Via, classify};
use crate::upload::{self, BodySource, UploadHeaders};
use crate::upstream::UpstreamError;

/// Client headers a pass-through forwards; every other one (credentials, cookies, hop-by-hop,
/// `X-Forwarded-*`, anything the node might read as a message field) stays here.
const FORWARDED_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "user-agent",
    "if-none-match",
    "if-modified-since",
    "cache-control",
];

/// Node response headers a pass-through passes back; the rest (server software, internal
/// hosts, cookies) stays here.
fn returned(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "content-length"
            | "transfer-encoding"
            | "content-encoding"
            | "content-language"
            | "content-range"
            | "accept-ranges"
            | "etag"
            | "last-modified"
            | "cache-control"
            | "expires"
            | "vary"
            | "date"
            | "access-control-allow-origin"
            | "access-control-allow-methods"
            | "access-control-allow-headers"
            | "access-control-expose-headers"
    )
}

/// How long a write to a client may make no progress before the connection is dropped.
const WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// The proxy service.
#[derive(Debug, Clone)]
pub struct Proxy {
    gate: Arc<Gate>,
    /// The node's `Host`, made once.
    host: http::HeaderValue,
}

impl Proxy {
    /// A proxy over shared state.
    pub fn new(gate: Arc<Gate>) -> Self {
        // The authority was validated with the configuration; a value it cannot be is empty.
        let host = http::HeaderValue::from_str(&gate.config.upstream.authority)
            .unwrap_or_else(|_| http::HeaderValue::from_static(""));
        Proxy { gate, host }
    }

    /// Sets the node's `Host`.
    fn set_host(&self, request: &mut RequestHeader) -> Result<()> {
        request.insert_header(http::header::HOST, self.host.clone())
    }
}

/// What a forwarded request is.
#[derive(Debug)]
enum Forward {
    /// One range of one object.
    Read(Box<read::ReadPlan>),
    /// An allowed node route, at its canonical path.
    PassThrough(CanonicalPath),
}

/// Per-request state.
#[derive(Debug)]
pub struct Ctx {
    started: Instant,
    /// Made when first needed (a reply of hb402's, a log line): most forwarded requests need
    /// none.
    request_id: Option<String>,
    route: RouteLabel,
    outcome: Option<Outcome>,
    forward: Option<Forward>,
    payment: Option<Payment>,
    refusal: Option<Refusal>,
    upstream_started: Option<Instant>,
}

fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn payment_header(req: &RequestHeader) -> Option<&str> {
    header(req, "payment-signature").or_else(|| header(req, "x-payment"))
}

/// Whether the request carries a body (which no forwarded route takes).
fn has_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().trim_ascii() != b"0")
}

/// Whether the client prefers HTML (a browser: its 402 is then a page): `text/html` is listed
/// with a weight above zero that no other listed type exceeds, and JSON is not asked for as much.
fn wants_html(req: &RequestHeader) -> bool {
    let Some(accept) = header(req, "accept") else {
        return false;
    };
    let (mut html, mut json, mut other) = (0u16, 0u16, 0u16);
    for range in accept.split(',').take(64) {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim();
        let weight = parts
            .find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| quality(v.trim()))
            })
            .unwrap_or(Some(1000));
        let Some(weight) = weight else { continue };
        let slot = if media.eq_ignore_ascii_case("text/html") {
            &mut html
        } else if media.eq_ignore_ascii_case("application/json") {
            &mut json
        } else {
            &mut other
        };
        *slot = (*slot).max(weight);
    }
    html > 0 && html >= other && html > json
}

/// An RFC 9110 weight in thousandths (`0.8` → 800); `None` when malformed.
fn quality(v: &str) -> Option<u16> {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn route_label(route: &Route) -> RouteLabel {
    match route {
        Route::Read(r) => match (&r.via, r.kind) {
            (Via::Raw { .. }, _) => RouteLabel::Raw,
            (Via::Protected { .. }, _) => RouteLabel::Protected,
            (_, ReadKind::Data) => RouteLabel::Data,
            (_, ReadKind::Binary) => RouteLabel::Binary,
        },
        Route::Upload(_) => RouteLabel::Upload,
        Route::PassThrough => RouteLabel::Passthrough,
        Route::Preflight => RouteLabel::Preflight,
        Route::Refused(_) => RouteLabel::Other,
    }
}

/// Bodies up to this size are read and discarded before a refusal sent before the body was read
/// (a 402 for an unpaid upload), so that a client still sending gets the answer instead of a
/// reset connection; larger ones, or slower ones, are not waited for.
const DRAIN_BYTES: u64 = 8 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// After a refused upload: discard a small unread body, and never reuse the connection.
async fn drain_unread(session: &mut Session) {
    let small = header(session.req_header(), "content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|len| len <= DRAIN_BYTES);
    if session.body_bytes_read() == 0 && small {
        let _ = tokio::time::timeout(DRAIN_TIME, session.drain_request_body()).await;
    }
    session.set_keepalive(None);
}

fn set_uri(request: &mut RequestHeader, target: &str) -> Result<()> {
    let uri = target
        .parse()
        .map_err(|_| Error::explain(ErrorType::InternalError, "path is not a URI"))?;
    request.set_uri(uri);
    Ok(())
}

/// Removes every header `keep` does not name.
fn drop_headers(request: &mut RequestHeader, keep: impl Fn(&str) -> bool) {
    if request.headers.keys().all(|n| keep(n.as_str())) {
        return;
    }
    let names: Vec<_> = request
        .headers
        .keys()
        .filter(|n| !keep(n.as_str()))
        .cloned()
        .collect();
    for name in names {
        request.remove_header(&name);
    }
}

impl Ctx {
    /// This request's id, in every reply hb402 writes and in the logs of its failures.
    fn request_id(&mut self) -> &str {
        self.request_id
            .get_or_insert_with(|| format!("{:016x}", rand::random::<u64>()))
    }
}

/// The request body, as the upload path reads it.
struct SessionBody<'a>(&'a mut Session);

#[async_trait]
impl BodySource for SessionBody<'_> {
    async fn next_chunk(&mut self) -> std::result::Result<Option<Bytes>, String> {
        self.0.read_request_body().await.map_err(|e| e.to_string())
    }

    fn bytes_read(&self) -> u64 {
        self.0.body_bytes_read() as u64
    }
}

impl Proxy {
    /// Writes a reply hb402 made itself.
    async fn answer(&self, session: &mut Session, ctx: &mut Ctx, mut reply: Reply) -> Result<()> {
        reply
            .headers
            .push(("x-request-id", ctx.request_id().to_owned()));
        ctx.outcome = Some(Outcome::from_status(reply.status));
        let mut head = ResponseHeader::build(reply.status, Some(reply.headers.len() + 1))?;
        for (name, value) in &reply.headers {
            head.insert_header(*name, value.as_str())?;
        }
        if !reply.has("content-length") {
            head.insert_header("content-length", reply.body.len().to_string())?;
        }
        let head_only = reply.head_only || reply.body.is_empty();
        session
            .write_response_header(Box::new(head), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(reply.body), true).await?;
        }
        Ok(())
    }

    /// Writes the reply a refusal calls for.
    async fn refuse(&self, session: &mut Session, ctx: &mut Ctx, refusal: Refusal) -> Result<()> {
        if let Refusal::Payment(crate::payment::PaymentRefusal::Required(ch)) = &refusal {
            self.gate.metrics.record_payment_required(ch.label);
        }
        let asker = Asker {
            request_id: ctx.request_id(),
            browser: wants_html(session.req_header()).then_some(&self.gate.config.paywall),
        };
        let reply = rescue(refusal, asker);
        self.answer(session, ctx, reply).await
    }

    /// A read: planned by [`read::decide`]; `None` when it is forwarded.
    async fn read(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        route: ReadRoute,
    ) -> std::result::Result<Option<Reply>, Refusal> {
        let req = session.req_header();
        if has_body(req) {
            return Err(Refusal::Route(Refused::BodyNotAllowed));
        }
        let request = ReadRequest {
            route,
            headers: &req.headers,
            client: client_ip(session),
        };
        match read::decide(&self.gate, request).await? {
            ReadStep::Answer(reply, payment) => {
                ctx.payment = payment;
                Ok(Some(reply))
            }
            ReadStep::Forward(mut plan) => {
                ctx.payment = plan.payment.take().map(Payment::Held);
                ctx.forward = Some(Forward::Read(Box::new(plan)));
                Ok(None)
            }
        }
    }

    /// An upload: priced and paid for from its headers before its body is read.
    async fn upload(
        &self,
        session: &mut Session,
        target: UploadTarget,
    ) -> std::result::Result<Option<Reply>, Refusal> {
        let gate = &self.gate;
        let Ok(_slot) = gate.upload_slots.enter(client_ip(session)) else {
            return Err(upload::UploadError::ClientBusy.into());
        };
        let Ok(_permit) = gate.uploads.try_acquire() else {
            return Err(upload::UploadError::Busy.into());
        };
        let req = session.req_header();
        let headers = UploadHeaders {
            private: header(req, "x-private"),
            expiry_days: header(req, "x-expiry-days"),
            expires_at: header(req, "x-expires-at"),
            content_length: header(req, "content-length"),
            authorization: req.headers.get("authorization").map(|v| v.as_bytes()),
        };
        let intake = upload::intake(gate, &headers, &target)?;
        let hold = match &intake.offered {
            Some(offered) => Some(
                payment::hold(
                    gate,
                    payment_header(req),
                    offered.clone(),
                    client_ip(session),
                )
                .await?,
            ),
            None => None,
        };
        upload::handle(gate, &mut SessionBody(session), intake, hold)
            .await
            .map(Some)
    }
}

/// The TCP peer's address (never a forwarded header: anyone can write those).
fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map(|addr| addr.ip())
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            request_id: None,
            route: RouteLabel::Other,
            outcome: None,
            forward: None,
            payment: None,
            refusal: None,
            upstream_started: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // A client that stops reading its answer is let go of after a while: it holds no
        // connection (nor, for a channel payment, its channel) for ever.
        session.set_write_timeout(Some(WRITE_STALL));
        let req = session.req_header();
        let method = req.method.as_str();
        let (route, path) = match crate::path::normalize(req.uri.path()) {
            Ok(path) => (
                classify(&self.gate.config, method, &path, req.uri.query()),
                path,
            ),
            Err(e) => (Route::Refused(Refused::BadPath(e)), Default::default()),
        };
        ctx.route = route_label(&route);
        tracing::debug!(%method, ?route, "request");
        let step = match route {
            Route::PassThrough => {
                if has_body(session.req_header()) {
                    Err(Refusal::Route(Refused::BodyNotAllowed))
                } else {
                    ctx.forward = Some(Forward::PassThrough(path));
                    return Ok(false);
                }
            }
            Route::Preflight => Ok(Some(Reply::preflight())),
            Route::Refused(r) => Err(Refusal::Route(r)),
            // The read and upload futures are large (metadata, payments, streaming): boxed, they
            // cost only the requests that take them, not every request's future.
            Route::Read(r) => Box::pin(self.read(session, ctx, r)).await,
            Route::Upload(t) => {
                let result = Box::pin(self.upload(session, t)).await;
                if result.is_err() {
                    drain_unread(session).await;
                }
                result
            }
        };
        match step {
            Ok(None) => Ok(false),
            Ok(Some(reply)) => self.answer(session, ctx, reply).await.map(|()| true),
            Err(refusal) => self.refuse(session, ctx, refusal).await.map(|()| true),
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
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_started = Some(Instant::now());
        match &ctx.forward {
            Some(Forward::Read(plan)) => {
                upstream_request.set_method(Method::GET);
                set_uri(upstream_request, &plan.object_path)?;
                // Nothing of the client's request goes to the node but what hb402 decided.
                drop_headers(upstream_request, |name| name == "host");
                self.set_host(upstream_request)?;
                upstream_request
                    .insert_header("authorization", self.gate.upstream.authorization())?;
                upstream_request
                    .insert_header("range", format!("bytes={}-{}", plan.first, plan.last))?;
            }
            Some(Forward::PassThrough(path)) => {
                let query = session
                    .req_header()
                    .uri
                    .query()
                    .filter(|q| self.gate.config.passthrough.allow_query && !q.is_empty());
                // The canonical form, whatever the client spelled (in the common case the client
                // spelled it so, and there is nothing to rebuild). The target as it goes on the
                // wire is compared, not the parsed URI: an absolute-form target (`ftp://e/…`)
                // parses to the same path but would be sent as it came.
                let spelled = query.is_none()
                    && path
                        .as_wire()
                        .is_some_and(|wire| upstream_request.raw_path() == wire.as_bytes());
                if !spelled {
                    let mut target = path.to_uri_path();
                    if let Some(q) = query {
                        target.push('?');
                        target.push_str(q);
                    }
                    set_uri(upstream_request, &target)?;
                }
                drop_headers(upstream_request, |name| {
                    name == "host" || FORWARDED_HEADERS.contains(&name)
                });
                self.set_host(upstream_request)?;
            }
            // Every forwarded request was classified: nothing else is.
            None => return Err(Error::explain(ErrorType::InternalError, "unclassified")),
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Time to the node's response head, for every proxied request.
        if let Some(started) = ctx.upstream_started {
            self.gate.metrics.observe_upstream(started.elapsed());
        }
        let plan = match &ctx.forward {
            Some(Forward::Read(plan)) => plan,
            _ => return self.passed_through(upstream_response, ctx),
        };
        let status = upstream_response.status.as_u16();
        let refusal = match status {
            // The device answers a ranged read with 200 and only the requested bytes.
            200 | 206 => {
                let expected = plan.last - plan.first + 1;
                let length = upstream_response
                    .headers
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                match length {
                    Some(l) if l != expected => Refusal::Node(UpstreamError::Corrupt(format!(
                        "the node returned {l} bytes instead of {expected}"
                    ))),
                    _ => {
                        *upstream_response = self.content_head(ctx).await?;
                        return Ok(());
                    }
                }
            }
            // A missing key is a 500 from the device (or the node's lifecycle removed it).
            404 | 500 => Refusal::Read(ReadError::NotFound),
            other => Refusal::Node(UpstreamError::Status {
                status: other,
                message: "GetObject failed".into(),
            }),
        };
        ctx.refusal = Some(refusal);
        Err(Error::explain(ErrorType::HTTPStatus(502), "read refused"))
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // The connection is not reused after a failed proxy: say so, or a client reusing it
        // races the close.
        session.set_keepalive(None);
        // A payment held for a read that failed is given back before the answer, so that the
        // client's immediate retry finds its authorization free.
        // (A settled one stays for `logging`, which knows how much of the response went out.)
        if matches!(ctx.payment, Some(Payment::Held(_))) {
            let held = ctx.payment.take();
            Box::pin(payment::finish(&self.gate, held, payment::Delivery::None)).await;
        }
        let refusal = ctx.refusal.take().or_else(|| match e.esource() {
            ErrorSource::Downstream => None,
            _ => Some(Refusal::Node(UpstreamError::Unreachable(e.to_string()))),
        });
        let code = match (&refusal, e.esource()) {
            (None, ErrorSource::Downstream) => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            _ => 502,
        };
        let mut written = code;
        if session.response_written().is_none() {
            let result = match refusal {
                Some(refusal) => self.refuse(session, ctx, refusal).await,
                None if code == 400 => {
                    let err = crate::error::ApiError::bad_request("the request could not be read");
                    let reply = Reply::error(&err, ctx.request_id());
                    self.answer(session, ctx, reply).await
                }
                None => Ok(()),
            };
            if let Err(write) = result {
                tracing::debug!(error = %write, "could not send the error response");
            }
            written = session
                .response_written()
                .map_or(code, |r| r.status.as_u16());
        }
        FailToProxy {
            error_code: written,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // The one place a read's payment is finalised: settled and delivered, settled but not
        // delivered (the same payment fetches it again), or given back unsettled.
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let delivery = match ((200..300).contains(&status), e) {
            (false, _) => payment::Delivery::None,
            (true, Some(_)) => payment::Delivery::Head {
                body_bytes: session.body_bytes_sent() as u64,
            },
            (true, None) => payment::Delivery::Whole,
        };
        if let Some(payment) = ctx.payment.take() {
            Box::pin(payment::finish(&self.gate, Some(payment), delivery)).await;
        }
        let outcome = ctx.outcome.unwrap_or_else(|| Outcome::from_status(status));
        self.gate
            .metrics
            .record_request(ctx.route, outcome, ctx.started.elapsed());
    }
}

impl Proxy {
    /// A pass-through's answer: the node's content with a short list of its headers and the
    /// status's standard reason phrase; its errors and redirects become hb402's own (the node's
    /// text never reaches the client). A 304 has no body and passes.
    fn passed_through(&self, response: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        let status = response.status.as_u16();
        if status >= 300 && status != 304 {
            ctx.refusal = Some(match status {
                404 | 410 => Refusal::Route(Refused::NotFound),
                400..=499 => Refusal::Route(Refused::NodeRefused(status)),
                _ => Refusal::Node(UpstreamError::Status {
                    status,
                    message: "pass-through".into(),
                }),
            });
            return Err(Error::explain(ErrorType::HTTPStatus(502), "node error"));
        }
        response.set_reason_phrase(None)?;
        let unlisted = |name: &http::HeaderName| !returned(name.as_str());
        if response.headers.keys().any(unlisted) {
            let names: Vec<_> = response
                .headers
                .keys()
                .filter(|n| unlisted(n))
                .cloned()
                .collect();
            for name in names {
                response.remove_header(&name);
            }
        }
        Ok(())
    }

    /// The head of a read's answer, once the node answered with content: the payment is settled
    /// first, and on failure no byte goes out.
    async fn content_head(&self, ctx: &mut Ctx) -> Result<ResponseHeader> {
        let Some(Forward::Read(plan)) = &mut ctx.forward else {
            return Err(Error::explain(ErrorType::InternalError, "not a read"));
        };
        let mut headers = std::mem::take(&mut plan.headers);
        let (status, path) = (plan.status, plan.path.clone());
        if let Some(Payment::Held(hold)) = ctx.payment.take() {
            match Box::pin(hold.settle(&self.gate)).await {
                Ok(settled) => {
                    let (name, value) = settled.header();
                    headers.push((name, value.to_owned()));
                    if settled.grants_receipt()
                        && let Some(receipt) = read::receipt_for(&self.gate, settled.payer(), &path)
                    {
                        headers.push((crate::receipt::HEADER, receipt));
                    }
                    ctx.payment = Some(Payment::Settled(settled));
                }
                Err(refusal) => {
                    ctx.refusal = Some(refusal.into());
                    return Err(Error::explain(ErrorType::HTTPStatus(402), "not settled"));
                }
            }
        }
        let reply = Reply::new(status, headers, Bytes::new());
        let mut head = ResponseHeader::build(status, Some(reply.headers.len()))?;
        for (name, value) in &reply.headers {
            head.insert_header(*name, value.as_str())?;
        }
        ctx.outcome = Some(Outcome::from_status(status));
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(accept: Option<&str>) -> bool {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        if let Some(a) = accept {
            req.insert_header("accept", a).unwrap();
        }
        wants_html(&req)
    }

    #[test]
    fn only_clients_that_prefer_html_get_the_page() {
        for browser in [
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
            "text/html",
            "TEXT/HTML;q=0.5, */*;q=0.1",
            "application/json;q=0.2, text/html",
        ] {
            assert!(accepting(Some(browser)), "{browser}");
        }
        for client in [
            None,
            Some("*/*"),
            Some("application/json"),
            Some("application/json, text/html"),
            Some("text/html;q=0"),
            Some("text/html;q=0.5, image/png"),
            Some("text/html;q=2"),
            Some("text/html;q=abc"),
            Some("text/htmlx"),
        ] {
            assert!(!accepting(client), "{client:?}");
        }
    }
}
