//! Uploads: the DataItem is verified while it streams to the node, and the node never receives a
//! complete object unless the item is valid.
//!
//! The body is read in `request_filter` and written to the node with a streaming `PutObject`
//! opened as soon as the item's id is known (it names the object). The latest chunk is always
//! held back; only when the whole item has been read and its signature verified is it released
//! and the upload completed. An invalid, truncated or oversized item aborts the upstream request
//! mid-body, so the node stores nothing (hyperbeam-s3.md §1.3: PutObject buffers the whole body).

use std::collections::VecDeque;

use bytes::Bytes;
use hb402_ans104::{ItemId, StreamingVerifier};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use serde_json::json;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::gate::Gate;
use crate::items::now_secs;
use crate::meta::ItemMeta;
use crate::paywall::{self, Prepared, Verified};
use crate::policy::{lifecycle_days, upload_expiry};
use crate::route::UploadRoute;

/// What the client asked for in headers.
#[derive(Debug, Clone, Default)]
pub(crate) struct UploadOptions {
    private: bool,
    expires_at: Option<u64>,
    expiry_days: Option<u32>,
    content_length: Option<u64>,
}

fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn options(
    gate: &Gate,
    req: &RequestHeader,
    bucket: Option<&str>,
    now: u64,
) -> Result<UploadOptions, ApiError> {
    let private_header = match header(req, "x-private") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "x-private must be true or false, not {v:?}"
            )));
        }
    };
    let up = &gate.config.upstream;
    let private = match bucket {
        Some(b) if b == up.private_bucket => true,
        Some(_) if private_header => {
            return Err(ApiError::bad_request(
                "x-private: true conflicts with a PUT into the public bucket",
            ));
        }
        _ => private_header,
    };
    let expiry_days = header(req, "x-expiry-days")
        .map(|v| {
            v.parse::<u32>()
                .ok()
                .filter(|d| (1..=gate.config.expiry.max_days).contains(d))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "x-expiry-days must be a whole number of days from 1 to {}",
                        gate.config.expiry.max_days
                    ))
                })
        })
        .transpose()?;
    let expires_at = header(req, "x-expires-at")
        .map(|v| {
            v.parse::<u64>().ok().filter(|&t| t > now).ok_or_else(|| {
                ApiError::bad_request("x-expires-at must be a unix time in the future")
            })
        })
        .transpose()?;
    let content_length = header(req, "content-length")
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request("invalid Content-Length"))
        })
        .transpose()?;
    if let Some(len) = content_length
        && len > gate.config.limits.max_upload_bytes
    {
        return Err(ApiError::payload_too_large(format!(
            "the item is {len} bytes; at most {} are accepted",
            gate.config.limits.max_upload_bytes
        )));
    }
    Ok(UploadOptions {
        private,
        expires_at,
        expiry_days,
        content_length,
    })
}

/// An upload about to be read: its options, and what it costs when uploads are priced.
#[derive(Debug)]
pub(crate) struct Intake {
    opts: UploadOptions,
    now: u64,
    /// The offers to pay before the item is stored; empty when the upload is free.
    pub(crate) offers: Vec<hb402_x402::Offer>,
    /// The resource the offers are for.
    pub(crate) resource: hb402_x402::ResourceInfo,
}

/// Reads an upload's headers and prices it, before any of its body is read. A priced upload
/// is priced by its declared length, so it must declare one.
pub(crate) fn intake(
    gate: &Gate,
    req: &RequestHeader,
    bucket: Option<&str>,
) -> Result<Intake, ApiError> {
    let now = now_secs();
    let opts = options(gate, req, bucket, now)?;
    let config = &gate.config;
    let resource = hb402_x402::ResourceInfo {
        url: format!("{}{}", config.listen.public_base_url, req.uri.path()),
        description: Some("Storage of one ANS-104 DataItem".to_owned()),
        mime_type: Some("application/json".to_owned()),
    };
    let payments = &config.payments;
    let offers = match &payments.upload_price {
        Some(price) if payments.enabled() => {
            let bytes = opts.content_length.ok_or_else(|| {
                ApiError::new(
                    411,
                    "length_required",
                    "uploads are priced by size: send a Content-Length",
                )
            })?;
            let days = match (opts.expiry_days, opts.expires_at) {
                (Some(days), _) => Some(days),
                (None, Some(at)) => Some(at.saturating_sub(now).div_ceil(86_400) as u32),
                (None, None) => {
                    (config.expiry.default_days > 0).then_some(config.expiry.default_days)
                }
            };
            price.offers(
                &payments.registry,
                &payments.accept,
                payments.max_timeout_seconds,
                bytes,
                days,
                &resource,
            )
        }
        _ => Vec::new(),
    };
    Ok(Intake {
        opts,
        now,
        offers,
        resource,
    })
}

/// A verified payment for an upload, settled once the item is verified and before its last
/// bytes reach the node.
#[derive(Debug)]
pub(crate) struct PaidUpload {
    /// The payment.
    pub(crate) verified: Verified,
    /// The offers it was checked against.
    pub(crate) offers: Vec<hb402_x402::Offer>,
}

/// Why an upload was not stored.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A JSON error, with extra headers (a settlement's `PAYMENT-RESPONSE`).
    Error(ApiError, Vec<(&'static str, String)>),
    /// The payment's settlement failed: the 402 to send.
    Payment(Prepared),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Error(e, Vec::new())
    }
}

/// A stored (or already stored) item's answer.
#[derive(Debug)]
pub(crate) struct Stored {
    /// 201 stored, 200 already stored.
    pub(crate) status: u16,
    /// The JSON receipt.
    pub(crate) body: serde_json::Value,
    /// Extra headers (the settlement's).
    pub(crate) headers: Vec<(&'static str, String)>,
}

/// The JSON answer of an upload.
pub(crate) fn receipt(meta: &ItemMeta) -> serde_json::Value {
    json!({
        "id": meta.id,
        "owner": meta.owner_address,
        "size": meta.size,
        "expires_at": meta.expires_at,
        "private": meta.private,
    })
}

/// The upstream half of an upload in progress.
struct Outbound {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    task: tokio::task::JoinHandle<Result<(), crate::upstream::UpstreamError>>,
}

impl Outbound {
    /// Aborts the upstream request mid-body and waits for it to be torn down.
    async fn abort(self) {
        let _ = self
            .tx
            .send(Err(std::io::Error::other("upload refused by hb402")))
            .await;
        drop(self.tx);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}

/// Handles an upload whose headers were accepted by [`intake`] (and whose payment, if it is
/// priced, was verified). A payment is settled only for an item that verified and is new, and
/// released otherwise.
pub(crate) async fn handle(
    gate: &Gate,
    session: &mut Session,
    route: UploadRoute,
    claimed_id: Option<ItemId>,
    intake: Intake,
    mut paid: Option<PaidUpload>,
) -> Result<Stored, Refusal> {
    let result = store(gate, session, route, claimed_id, intake, paid.as_mut()).await;
    if let Some(paid) = &paid
        && !paid.verified.settled
    {
        paywall::release(gate, &paid.verified).await;
    }
    result
}

async fn store(
    gate: &Gate,
    session: &mut Session,
    route: UploadRoute,
    claimed_id: Option<ItemId>,
    intake: Intake,
    paid: Option<&mut PaidUpload>,
) -> Result<Stored, Refusal> {
    let Intake {
        opts,
        now,
        resource,
        ..
    } = intake;
    let limits = &gate.config.limits;
    let bucket = if opts.private {
        gate.config.upstream.private_bucket.clone()
    } else {
        gate.config.upstream.public_bucket.clone()
    };
    let mut verifier = StreamingVerifier::new(limits.max_header_bytes);
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let mut outbound: Option<Outbound> = None;
    let mut duplicate: Option<std::sync::Arc<ItemMeta>> = None;
    let mut plan: Option<(String, Option<u64>)> = None;
    let mut total: u64 = 0;
    tracing::debug!(?route, "upload started");

    let failure = loop {
        let chunk = match session.read_request_body().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break None,
            Err(e) => {
                break Some(ApiError::bad_request(format!(
                    "the request body could not be read: {e}"
                )));
            }
        };
        total += chunk.len() as u64;
        if total > limits.max_upload_bytes {
            break Some(ApiError::payload_too_large(format!(
                "the item exceeds {} bytes",
                limits.max_upload_bytes
            )));
        }
        let header = match verifier.push(&chunk) {
            Ok(header) => header.cloned(),
            Err(e) => break Some(ApiError::new(400, e.code(), e.to_string())),
        };
        pending.push_back(chunk);
        if let Some(header) = header {
            let id = header.id();
            if let Some(claimed) = claimed_id.filter(|c| *c != id) {
                break Some(ApiError::new(
                    400,
                    "id_mismatch",
                    format!("the key names {claimed} but the item's id is {id}"),
                ));
            }
            let tag_expires = match header.tag("Expires") {
                None => None,
                Some(v) => match std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                {
                    Some(t) => Some(t),
                    None => {
                        break Some(ApiError::new(
                            400,
                            "invalid_expires_tag",
                            "the Expires tag is not a unix time",
                        ));
                    }
                },
            };
            let expires_at = upload_expiry(
                tag_expires,
                opts.expires_at,
                opts.expiry_days,
                gate.config.expiry.default_days,
                now,
            );
            if expires_at.is_some_and(|t| t <= now) {
                break Some(ApiError::new(
                    400,
                    "already_expired",
                    "the item's Expires tag is in the past",
                ));
            }
            let key = gate.upstream.item_key(&id.to_string());
            match gate.items.known(&id.to_string()).await {
                Ok(Some(meta)) => duplicate = Some(meta),
                Ok(None) => {
                    if let Err(e) = gate.upstream.ensure_bucket(&bucket).await {
                        break Some(ApiError::bad_gateway(e.to_string()));
                    }
                    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
                    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(
                        rx,
                        |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
                    ));
                    let put = gate.upstream.put_object(
                        &bucket,
                        &key,
                        body,
                        opts.content_length,
                        lifecycle_days(expires_at, now),
                    );
                    outbound = Some(Outbound {
                        tx,
                        task: tokio::spawn(put),
                    });
                }
                Err(e) => break Some(e),
            }
            plan = Some((key, expires_at));
        }
        // Release everything but the latest chunk.
        if let Some(out) = &outbound {
            while pending.len() > 1 {
                let chunk = pending.pop_front().expect("more than one chunk");
                if out.tx.send(Ok(chunk)).await.is_err() {
                    break;
                }
            }
        } else if duplicate.is_some() {
            // Nothing goes upstream for a duplicate: keep only the latest chunk.
            while pending.len() > 1 {
                pending.pop_front();
            }
        }
    };

    if let Some(error) = failure {
        if let Some(out) = outbound {
            out.abort().await;
        }
        return Err(error.into());
    }
    let verified = match verifier.finish() {
        Ok(v) => v,
        Err(e) => {
            if let Some(out) = outbound {
                out.abort().await;
            }
            return Err(ApiError::new(400, e.code(), e.to_string()).into());
        }
    };
    let (key, expires_at) = plan.expect("a verified item has a header");
    if let Some(meta) = duplicate {
        // Already stored: nothing to pay for.
        return Ok(Stored {
            status: 200,
            body: receipt(&meta),
            headers: Vec::new(),
        });
    }
    let out = outbound.expect("the upload was opened when the header arrived");
    // Paid before it is stored: the node holds an incomplete object until the last chunk.
    let mut headers = Vec::new();
    if let Some(paid) = paid {
        let req = session.req_header().clone();
        match paywall::settle(gate, &req, &mut paid.verified, &paid.offers, &resource).await {
            Ok(header) => headers.push(header),
            Err(prepared) => {
                out.abort().await;
                return Err(Refusal::Payment(prepared));
            }
        }
    }
    for chunk in pending {
        if out.tx.send(Ok(chunk)).await.is_err() {
            break;
        }
    }
    drop(out.tx);
    let stored = match out.task.await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("upload task failed: {e}")),
    };
    if let Err(e) = stored {
        tracing::warn!(error = %e, settled = !headers.is_empty(), "node refused the upload");
        return Err(Refusal::Error(
            ApiError::bad_gateway(format!("the node did not store the item: {e}")),
            headers,
        ));
    }
    let meta = ItemMeta::from_header(
        &verified.header,
        bucket,
        key,
        verified.size,
        opts.private,
        expires_at,
        Some(now),
    );
    gate.items.remember(meta.clone()).await?;
    tracing::info!(id = %meta.id, size = meta.size, private = meta.private, "item stored");
    Ok(Stored {
        status: 201,
        body: receipt(&meta),
        headers,
    })
}
