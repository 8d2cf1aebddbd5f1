//! The admin listener: metrics, health, readiness, and minting share links.
//!
//! Routes (on `listen.admin` only, never on the public listener):
//! - `GET /metrics`: the Prometheus text format;
//! - `GET /healthz`: `200 {"status":"ok"}` while the process serves;
//! - `GET /readyz`: `200` when the node answers `HEAD /~s3@1.0/<public bucket>` with the
//!   configured access key id and the store answers, else `503` naming the failed checks;
//! - `POST /sign`, `POST /sign/402`: Load-compatible share-link minting (same headers as Load's
//!   sidecar), behind `Authorization: Bearer <admin.bearer_key>` compared in constant time. Without
//!   a configured key every minting call is refused.
//!
//! Differences from Load's sidecar, on purpose: the admin key is its own credential on its own
//! listener (defect #13); the links are built from `listen.public_base_url`, not a hard-coded
//! host; `x-expires-minutes` that does not parse or is out of range is a 400, not a silent
//! default; `/sign/402` needs all three payment headers (defect #11), checks the address, amount
//! and network, and encodes its receipt in URL-safe base64 (defect #10).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

use crate::config::{Config, ShareLinkConfig};
use crate::error::{ApiError, JSON_CONTENT_TYPE};
use crate::metrics::{self, Metrics};
use crate::share::{self, ShareClaims};
use crate::store::Store;

/// Bound on each readiness check.
const READY_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on reading an admin request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `x-load-acc` accepted (it is copied into the token).
const MAX_LOAD_ACC_BYTES: usize = 512;
/// Longest `x-dataitem-key` accepted (it is copied into the token and the URL).
const MAX_KEY_BYTES: usize = 1024;
/// Longest `x-402-amount` accepted.
const MAX_AMOUNT_BYTES: usize = 40;

/// The admin application. Serve it with [`admin_service`].
#[derive(Debug)]
pub struct AdminApp {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    /// The channels whose records are written behind, written before they are listed.
    channels: Option<Arc<crate::channels::Channels>>,
    client: reqwest::Client,
    networks: hb402_x402::Registry,
}

/// A listening service serving `app` on `addr` (`host:port`).
pub fn admin_service(app: AdminApp, addr: &str) -> Service<HttpServer<AdminApp>> {
    let mut service = Service::new("hb402 admin".to_owned(), HttpServer::new_app(app));
    service.add_tcp(addr);
    service
}

/// The `Authorization` header the node's `~s3@1.0` device accepts: it only compares the access
/// key id after `Credential=`; the signature is never checked (hyperbeam-s3 §1.2).
pub(crate) fn node_authorization(access_key_id: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/20250101/us-east-1/s3/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=dummy"
    )
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A response with a body and its length.
fn reply(status: u16, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let len = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}

fn json(status: u16, value: &serde_json::Value) -> Response<Vec<u8>> {
    reply(status, JSON_CONTENT_TYPE, value.to_string().into_bytes())
}

/// An [`ApiError`] as a response, with any extra header it calls for.
fn refusal(err: &ApiError) -> Response<Vec<u8>> {
    let mut resp = reply(err.status, JSON_CONTENT_TYPE, err.body().to_vec());
    if err.status == 401 {
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

fn method_not_allowed(allow: &'static str, path: &str) -> Response<Vec<u8>> {
    let mut resp = refusal(&ApiError::method_not_allowed(format!(
        "{path} accepts only {allow}"
    )));
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

/// A request header as text: `Ok(None)` when absent or blank, 400 when not UTF-8.
fn header<'a>(session: &'a ServerSession, name: &str) -> Result<Option<&'a str>, ApiError> {
    match session.get_header(name) {
        None => Ok(None),
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| ApiError::bad_request(format!("header {name} is not ASCII text")))?
                .trim();
            Ok((!v.is_empty()).then_some(v))
        }
    }
}

fn required<'a>(session: &'a ServerSession, name: &str) -> Result<&'a str, ApiError> {
    header(session, name)?
        .ok_or_else(|| ApiError::bad_request(format!("header {name} is required")))
}

/// Checks an object key is safe to put in a URL path and names a DataItem:
/// `[segment/…]<id>[.ans104]`, segments of `A-Z a-z 0-9 . _ -`, none empty, `.` or `..`.
fn check_key(key: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::bad_request(format!(
            "x-dataitem-key {why}; expected [prefix/]<item id>[.ans104]"
        )))
    };
    if key.len() > MAX_KEY_BYTES {
        return bad(&format!("is longer than {MAX_KEY_BYTES} bytes"));
    }
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if !key.split('/').all(segment_ok) {
        return bad("has an empty, relative or non-URL-safe path segment");
    }
    let last = key.rsplit('/').next().unwrap_or_default();
    let stem = last.strip_suffix(".ans104").unwrap_or(last);
    if stem.parse::<hb402_ans104::ItemId>().is_err() {
        return bad("does not end with a DataItem id");
    }
    Ok(())
}

/// Parses an EVM address; mixed case must be a valid EIP-55 checksum. Returns the checksummed
/// form.
fn parse_address(value: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "x-402-address must be an EVM address: 0x and 40 hex digits (EIP-55 if mixed case)",
        )
    };
    let hex = value.strip_prefix("0x").ok_or_else(bad)?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mixed =
        hex.bytes().any(|b| b.is_ascii_lowercase()) && hex.bytes().any(|b| b.is_ascii_uppercase());
    let address = if mixed {
        alloy::primitives::Address::parse_checksummed(value, None).map_err(|_| bad())?
    } else {
        value
            .parse::<alloy::primitives::Address>()
            .map_err(|_| bad())?
    };
    Ok(address.to_checksum(None))
}

impl AdminApp {
    /// The admin app over the shared configuration, metrics and store.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, store: Arc<dyn Store>) -> Self {
        // The readiness probe talks to the node beside us: never through a proxy.
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(READY_TIMEOUT)
            .timeout(READY_TIMEOUT)
            .build()
            .unwrap_or_default();
        AdminApp {
            config,
            metrics,
            store,
            channels: None,
            client,
            networks: hb402_x402::Registry::builtin(),
        }
    }

    /// Lists `channels`' records as they are in memory (written to the store first).
    #[must_use]
    pub fn with_channels(mut self, channels: Option<Arc<crate::channels::Channels>>) -> Self {
        self.channels = channels;
        self
    }

    /// Reads and discards the request body, refusing more than `limits.max_admin_body_bytes`.
    async fn drain_body(&self, session: &mut ServerSession) -> Result<(), ApiError> {
        let max = self.config.limits.max_admin_body_bytes;
        let too_large = || {
            ApiError::payload_too_large(format!("admin request bodies are limited to {max} bytes"))
        };
        let declared = header(session, CONTENT_LENGTH.as_str())?
            .map(|v| v.parse::<u64>())
            .transpose()
            .map_err(|_| {
                session.set_keepalive(None);
                ApiError::bad_request("invalid Content-Length")
            })?;
        if declared.is_some_and(|n| n > max as u64) {
            // The body stays unread: the connection cannot be reused.
            session.set_keepalive(None);
            return Err(too_large());
        }
        session.set_read_timeout(Some(BODY_TIMEOUT));
        let mut read = 0usize;
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    if read > max {
                        session.set_keepalive(None);
                        return Err(too_large());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    session.set_keepalive(None);
                    return Err(ApiError::bad_request(format!(
                        "the request body could not be read: {e}"
                    )));
                }
            }
        }
    }

    /// Checks `Authorization: Bearer <admin key>`.
    fn authorize(&self, session: &ServerSession) -> Result<(), ApiError> {
        let Some(key) = &self.config.admin.bearer_key else {
            return Err(ApiError::unauthorized(
                "the admin API is disabled: no admin.bearer_key is configured",
            ));
        };
        let Some(value) = session.get_header(AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "missing Authorization: Bearer <admin key>",
            ));
        };
        let value = value.as_bytes();
        let scheme = b"bearer ";
        let token = value
            .split_at_checked(scheme.len())
            .filter(|(s, _)| s.eq_ignore_ascii_case(scheme))
            .map(|(_, token)| token.trim_ascii())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be Bearer <admin key>"))?;
        if key.matches(token) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("wrong admin key"))
        }
    }

    /// The claims common to both minting routes, from the Load sidecar's headers.
    fn base_claims(
        &self,
        session: &ServerSession,
    ) -> Result<(ShareClaims, &ShareLinkConfig), ApiError> {
        let Some(links) = &self.config.share_links else {
            return Err(ApiError::service_unavailable(
                "share_links_disabled",
                "share links are disabled: no share_links.secret is configured",
            ));
        };
        let upstream = &self.config.upstream;
        let bucket = required(session, "x-bucket-name")?;
        if bucket != upstream.public_bucket && bucket != upstream.private_bucket {
            return Err(ApiError::bad_request(format!(
                "x-bucket-name must be {:?} or {:?}",
                upstream.public_bucket, upstream.private_bucket
            )));
        }
        let load_acc = required(session, "x-load-acc")?;
        if load_acc.len() > MAX_LOAD_ACC_BYTES {
            return Err(ApiError::bad_request(format!(
                "x-load-acc is longer than {MAX_LOAD_ACC_BYTES} bytes"
            )));
        }
        let key = required(session, "x-dataitem-key")?;
        check_key(key)?;
        let minutes = match header(session, "x-expires-minutes")? {
            None => links.default_minutes,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|m| (1..=links.max_minutes).contains(m))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "x-expires-minutes must be a whole number from 1 to {}",
                        links.max_minutes
                    ))
                })?,
        };
        let iat = now_unix();
        let lifetime = i64::try_from(minutes.saturating_mul(60)).unwrap_or(i64::MAX);
        let claims = ShareClaims {
            bucket_name: bucket.to_owned(),
            load_acc: load_acc.to_owned(),
            dataitem_key: key.to_owned(),
            exp: iat.saturating_add(lifetime),
            iat,
            payee: None,
            amount: None,
            network: None,
        };
        Ok((claims, links))
    }

    fn mint(links: &ShareLinkConfig, claims: &ShareClaims) -> Result<String, ApiError> {
        let token = share::mint(links.secret.expose(), claims);
        // Header bounds keep tokens far below this; a token the gate would refuse is never issued.
        if token.len() > share::MAX_TOKEN_BYTES {
            return Err(ApiError::bad_request("the link's claims are too long"));
        }
        Ok(token)
    }

    /// `POST /sign`.
    fn sign(&self, session: &ServerSession) -> Result<Response<Vec<u8>>, ApiError> {
        self.authorize(session)?;
        let (claims, links) = self.base_claims(session)?;
        let token = Self::mint(links, &claims)?;
        let url = format!(
            "{}/resolve/{}?token={token}",
            self.config.listen.public_base_url, claims.dataitem_key
        );
        Ok(json(
            200,
            &serde_json::json!({ "signed_url": url, "expires_at": claims.exp }),
        ))
    }

    /// `POST /sign/402`.
    fn sign_402(&self, session: &ServerSession) -> Result<Response<Vec<u8>>, ApiError> {
        self.authorize(session)?;
        let (mut claims, links) = self.base_claims(session)?;
        let address = header(session, "x-402-address")?;
        let amount = header(session, "x-402-amount")?;
        let network = header(session, "x-402-network")?;
        // Load minted a link without payment terms when one was missing (its defect #11).
        let (Some(address), Some(amount_text), Some(network_id)) = (address, amount, network)
        else {
            let missing: Vec<&str> = [
                ("x-402-address", address),
                ("x-402-amount", amount),
                ("x-402-network", network),
            ]
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| *n)
            .collect();
            return Err(ApiError::bad_request(format!(
                "a payment link needs x-402-address, x-402-amount and x-402-network; missing {}",
                missing.join(", ")
            )));
        };
        let payee = parse_address(address)?;
        let network = self.networks.network(network_id).ok_or_else(|| {
            ApiError::bad_request(format!(
                "x-402-network {network_id:?} is not a known network"
            ))
        })?;
        let asset = self.networks.usdc(network.chain_id).ok_or_else(|| {
            ApiError::bad_request(format!("no USDC deployment is known on {network_id:?}"))
        })?;
        let bad_amount = || {
            ApiError::bad_request(format!(
                "x-402-amount must be a positive decimal with at most {} decimals, e.g. 0.01",
                asset.decimals
            ))
        };
        if amount_text.len() > MAX_AMOUNT_BYTES {
            return Err(bad_amount());
        }
        let atomic =
            hb402_x402::parse_price(amount_text, asset.decimals).map_err(|_| bad_amount())?;
        if atomic.is_zero() {
            return Err(bad_amount());
        }
        let amount: f64 = amount_text.parse().map_err(|_| bad_amount())?;
        claims.payee = Some(payee.clone());
        claims.amount = Some(amount);
        claims.network = Some(network_id.to_owned());
        let token = Self::mint(links, &claims)?;
        let protected_url = format!(
            "{}/protected/resolve/{payee}/{}/{network_id}/{amount_text}?token={token}",
            self.config.listen.public_base_url, claims.dataitem_key
        );
        let receipt = serde_json::json!({
            "token": token,
            "dataitem_id": claims.dataitem_key,
            "payee_address": payee,
            "amount": amount,
            "network": network_id,
            "protected_url": protected_url,
        });
        // URL-safe base64 without padding: the receipt is put in URL paths. Load used the
        // standard alphabet (`+`, `/`, `=`), its defect #10.
        let body = URL_SAFE_NO_PAD.encode(receipt.to_string());
        Ok(reply(200, "text/plain; charset=utf-8", body.into_bytes()))
    }

    /// The upstream check: TCP connect, then `HEAD` of the public bucket with the device's
    /// `Authorization`.
    async fn check_upstream(&self) -> Result<(), String> {
        let upstream = &self.config.upstream;
        let connect = tokio::time::timeout(
            READY_TIMEOUT.min(upstream.connect_timeout),
            tokio::net::TcpStream::connect(upstream.authority.as_str()),
        )
        .await;
        match connect {
            Err(_) => return Err(format!("connecting to {} timed out", upstream.authority)),
            Ok(Err(e)) => return Err(format!("cannot connect to {}: {e}", upstream.authority)),
            Ok(Ok(_)) => {}
        }
        let url = format!("{}/~s3@1.0/{}", upstream.url, upstream.public_bucket);
        let response = self
            .client
            .head(&url)
            .header(AUTHORIZATION, node_authorization(&upstream.access_key_id))
            .timeout(READY_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("HEAD {url} failed: {e}"))?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            404 => Err(format!(
                "the node has no bucket {:?} (HEAD answered 404)",
                upstream.public_bucket
            )),
            // The device answers 500 to a wrong access key id (hyperbeam-s3 §1.5).
            500 => Err("the node answered 500: check upstream.access_key_id".to_owned()),
            other => Err(format!("HEAD {url} answered {other}")),
        }
    }

    async fn check_store(&self) -> Result<(), String> {
        match tokio::time::timeout(READY_TIMEOUT, self.store.ping()).await {
            Err(_) => Err("the store did not answer in time".to_owned()),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// `GET /readyz`.
    async fn ready(&self) -> Response<Vec<u8>> {
        let upstream = async {
            tokio::time::timeout(READY_TIMEOUT, self.check_upstream())
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {READY_TIMEOUT:?}")))
        };
        let (upstream, store) = tokio::join!(upstream, self.check_store());
        let failed: Vec<String> = [("upstream", &upstream), ("store", &store)]
            .iter()
            .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
            .collect();
        if failed.is_empty() {
            json(
                200,
                &serde_json::json!({"status": "ready", "checks": {"upstream": "ok", "store": "ok"}}),
            )
        } else {
            tracing::warn!(checks = %failed.join("; "), "not ready");
            refusal(&ApiError::service_unavailable(
                "not_ready",
                format!("not ready: {}", failed.join("; ")),
            ))
        }
    }

    /// `GET /admin/payments?since=<id>&limit=<n>`: the ledger, oldest first, for reconciliation.
    async fn payments(&self, session: &ServerSession) -> Result<Response<Vec<u8>>, ApiError> {
        self.authorize(session)?;
        let query = session.req_header().uri.query().unwrap_or_default();
        let mut since = 0u64;
        let mut limit = 100usize;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "since" => {
                    since = value.parse().map_err(|_| {
                        ApiError::bad_request("since must be a ledger id (a whole number)")
                    })?;
                }
                "limit" => {
                    limit = value
                        .parse()
                        .ok()
                        .filter(|l| (1..=1000).contains(l))
                        .ok_or_else(|| ApiError::bad_request("limit must be between 1 and 1000"))?;
                }
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown parameter {other:?}"
                    )));
                }
            }
        }
        let records = self.store.ledger_list(since, limit).await?;
        let next = records.last().map(|r| r.id);
        Ok(json(
            200,
            &serde_json::json!({"payments": records, "next": next}),
        ))
    }

    /// `GET /admin/channels?limit=<n>`: `batch-settlement` channels holding charges not claimed
    /// on chain yet (what a payer's withdrawal could still take), with the sum.
    async fn channels(&self, session: &ServerSession) -> Result<Response<Vec<u8>>, ApiError> {
        self.authorize(session)?;
        let query = session.req_header().uri.query().unwrap_or_default();
        let mut limit = 100usize;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("limit", value) => {
                    limit = value
                        .parse()
                        .ok()
                        .filter(|l| (1..=1000).contains(l))
                        .ok_or_else(|| ApiError::bad_request("limit must be between 1 and 1000"))?;
                }
                (other, _) => {
                    return Err(ApiError::bad_request(format!(
                        "unknown parameter {other:?}"
                    )));
                }
            }
        }
        if let Some(channels) = &self.channels {
            channels.write_behind(self.store.as_ref()).await?;
        }
        let listed = self.store.channels_unclaimed("", limit).await?;
        let unclaimed: u128 = listed
            .iter()
            .map(|(_, r)| r.charged.saturating_sub(r.total_claimed))
            .sum();
        let channels: Vec<serde_json::Value> = listed
            .iter()
            .map(|(id, r)| {
                serde_json::json!({
                    "channel_id": id,
                    "payer": r.config.payer,
                    "receiver": r.config.receiver,
                    "token": r.config.token,
                    "charged": r.charged.to_string(),
                    "claimed": r.total_claimed.to_string(),
                    "balance": r.balance.to_string(),
                    "withdraw_requested_at": r.withdraw_requested_at,
                    "last_request_at": r.last_request_at,
                    "claim_refused_at": r.claim_refused_at,
                })
            })
            .collect();
        Ok(json(
            200,
            &serde_json::json!({"channels": channels, "unclaimed": unclaimed.to_string()}),
        ))
    }

    async fn route(&self, session: &mut ServerSession) -> Result<Response<Vec<u8>>, ApiError> {
        // Every body is read (and bounded) first, so the connection can be reused after any
        // answer.
        self.drain_body(session).await?;
        let method = session.req_header().method.as_str().to_owned();
        let path = session.req_header().uri.path().to_owned();
        let allow = match path.as_str() {
            "/metrics" | "/healthz" | "/readyz" | "/admin/payments" | "/admin/channels" => "GET",
            "/sign" | "/sign/402" => "POST",
            _ => return Err(ApiError::not_found(format!("nothing is served at {path}"))),
        };
        if method != allow {
            return Ok(method_not_allowed(allow, &path));
        }
        match path.as_str() {
            "/metrics" => Ok(reply(
                200,
                metrics::CONTENT_TYPE,
                self.metrics.encode().into_bytes(),
            )),
            "/healthz" => Ok(json(200, &serde_json::json!({"status": "ok"}))),
            "/readyz" => Ok(self.ready().await),
            "/admin/payments" => self.payments(session).await,
            "/admin/channels" => self.channels(session).await,
            "/sign" => self.sign(session),
            _ => self.sign_402(session),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match self.route(session).await {
            Ok(resp) => resp,
            Err(err) => refusal(&err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_name_an_item_and_be_url_safe() {
        let id = "Q9qsw4QGrcQxfA3Fr9yW9Yk9Bxz8tEAGYJKqcn0Ghuo";
        assert!(check_key(id).is_ok());
        assert!(check_key(&format!("{id}.ans104")).is_ok());
        assert!(check_key(&format!("dataitems/{id}.ans104")).is_ok());
        assert!(check_key("dataitems/not-an-id.ans104").is_err());
        assert!(check_key(&format!("dataitems//{id}")).is_err());
        assert!(check_key(&format!("../{id}")).is_err());
        assert!(check_key(&format!("a?b/{id}")).is_err());
        assert!(check_key(&format!("/{id}")).is_err());
    }

    #[test]
    fn addresses_are_checked_and_checksummed() {
        let lower = "0x209693bc6afc0c5328ba36faf03c514ef312287c";
        let sum = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
        assert_eq!(parse_address(lower).unwrap(), sum);
        assert_eq!(parse_address(sum).unwrap(), sum);
        assert!(parse_address("0x209693Bc6afc0C5328bA36FaF03C514EF312287c").is_err());
        assert!(parse_address("209693bc6afc0c5328ba36faf03c514ef312287c").is_err());
        assert!(parse_address("0x1234").is_err());
    }

    #[test]
    fn node_authorization_carries_the_key_id() {
        assert!(node_authorization("abc").starts_with("AWS4-HMAC-SHA256 Credential=abc/"));
    }
}
