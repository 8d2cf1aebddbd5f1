//! Uploads: the DataItem is verified while it streams to the node, the node never receives a
//! complete object unless the item is valid, and a priced upload is paid only for an item the
//! node has stored.
//!
//! The body is written to the node with a streaming `PutObject` opened as soon as the item's id
//! is known. The latest chunk is always held back; only when the whole item has been read and its
//! signature verified is it released. An invalid, truncated or oversized item aborts the upstream
//! request mid-body, so the node stores nothing (hyperbeam-s3.md §1.3: PutObject buffers the
//! whole body). Once the node has acknowledged the object, the payment is settled; if settlement
//! fails (or its outcome is unknown), the new object is deleted and the payer is told so: nothing
//! is stored unpaid and nothing is charged unstored.
//!
//! No upload makes an item less available to anyone else: each bucket holds its own copy (a
//! private copy never hides a public one), a copy's lifetime only ever grows, and a copy the node
//! lost is stored again. Who may store private copies is the operator's choice
//! (`uploads.private`).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use hb402_ans104::{ItemId, StreamingVerifier};
use serde_json::json;
use tokio::sync::mpsc;

use crate::config::PrivateUploads;
use crate::error::ApiError;
use crate::gate::Gate;
use crate::items::now_secs;
use crate::lease::CopyLease;
use crate::meta::ItemMeta;
use crate::metrics::UploadResult;
use crate::payment::{self, Hold, Offered, Payment};
use crate::policy::{lifecycle_days, upload_expiry};
use crate::reply::{Refusal, Reply};
use crate::route::UploadTarget;

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    /// A header is malformed or out of bounds.
    #[error("{0}")]
    BadHeader(String),
    /// Private uploads need the admin key or the upload key.
    #[error("private uploads need a key")]
    PrivateUnauthorized,
    /// Private uploads are off.
    #[error("private uploads are disabled")]
    PrivateDisabled,
    /// A priced upload without `Content-Length`.
    #[error("length required")]
    LengthRequired,
    /// Larger than `limits.max_upload_bytes`.
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    /// Not a valid DataItem.
    #[error("{code}: {message}")]
    Invalid {
        /// A stable code (`invalid_signature`, …).
        code: &'static str,
        /// What is wrong, with its byte offset.
        message: String,
    },
    /// The raw PUT's key names another id.
    #[error("the key names {claimed} but the item is {id}")]
    IdMismatch {
        /// In the URL.
        claimed: ItemId,
        /// The item's.
        id: ItemId,
    },
    /// The item's `Expires` tag is not a unix time.
    #[error("invalid Expires tag")]
    BadExpiresTag,
    /// Its expiry has passed.
    #[error("already expired")]
    AlreadyExpired,
    /// The request body could not be read.
    #[error("body unreadable: {0}")]
    BodyUnreadable(String),
    /// The price does not fit in 256 bits.
    #[error("price overflow")]
    PriceOverflow,
    /// The node did not store it (the detail is logged).
    #[error("node failed: {0}")]
    NodeFailed(String),
    /// Another upload of the same copy is in progress.
    #[error("an upload of this item is in progress")]
    InProgress,
    /// `limits.max_concurrent_uploads` uploads are in progress.
    #[error("too many uploads in progress")]
    Busy,
    /// `limits.max_uploads_per_client` uploads of this client are in progress.
    #[error("too many uploads in progress from this client")]
    ClientBusy,
    /// The body took longer than `limits.max_upload_seconds`.
    #[error("the upload took too long")]
    TooSlow,
    /// The node holds a copy of this item too large for hb402 to verify: what it is and how
    /// long it lives are unknown, so it is left as it is.
    #[error("the node's copy cannot be verified")]
    Unverifiable,
}

impl UploadError {
    /// Status, code, message and extra headers: called only by [`crate::reply::rescue`].
    pub(crate) fn into_api(self, request_id: &str) -> (ApiError, Vec<(&'static str, String)>) {
        let e = match self {
            UploadError::BadHeader(m) => ApiError::bad_request(m),
            UploadError::PrivateUnauthorized => {
                return (
                    ApiError::unauthorized(
                        "private uploads need Authorization: Bearer <upload key>",
                    ),
                    vec![("www-authenticate", "Bearer".to_owned())],
                );
            }
            UploadError::PrivateDisabled => {
                ApiError::forbidden("this gateway does not store private items")
            }
            UploadError::LengthRequired => ApiError::new(
                411,
                "length_required",
                "uploads are priced by size: send a Content-Length",
            ),
            UploadError::TooLarge(max) => {
                ApiError::payload_too_large(format!("at most {max} bytes are accepted"))
            }
            UploadError::Invalid { code, message } => ApiError::new(400, code, message),
            UploadError::IdMismatch { claimed, id } => ApiError::new(
                400,
                "id_mismatch",
                format!("the key names {claimed} but the item's id is {id}"),
            ),
            UploadError::BadExpiresTag => ApiError::new(
                400,
                "invalid_expires_tag",
                "the Expires tag is not a unix time",
            ),
            UploadError::AlreadyExpired => ApiError::new(
                400,
                "already_expired",
                "the item's Expires tag is in the past",
            ),
            UploadError::BodyUnreadable(detail) => {
                tracing::debug!(request_id, %detail, "upload body unreadable");
                ApiError::bad_request("the request body could not be read")
            }
            UploadError::PriceOverflow => ApiError::bad_request("the upload's price overflows"),
            UploadError::NodeFailed(detail) => {
                tracing::warn!(request_id, %detail, "node did not store the upload");
                ApiError::bad_gateway("the node did not store the item; nothing was charged")
            }
            UploadError::InProgress => {
                return (
                    ApiError::new(
                        409,
                        "upload_in_progress",
                        "another upload of this item is in progress; retry when it is done",
                    ),
                    vec![("retry-after", "5".to_owned())],
                );
            }
            UploadError::Busy => {
                return (
                    ApiError::service_unavailable(
                        "too_many_uploads",
                        "too many uploads are in progress; retry shortly",
                    ),
                    vec![("retry-after", "5".to_owned())],
                );
            }
            UploadError::ClientBusy => {
                return (
                    ApiError::new(
                        429,
                        "too_many_uploads",
                        "this client has too many uploads in progress; retry when one is done",
                    ),
                    vec![("retry-after", "5".to_owned())],
                );
            }
            UploadError::TooSlow => ApiError::new(
                408,
                "upload_timeout",
                "the upload took longer than this gateway allows",
            ),
            UploadError::Unverifiable => ApiError::new(
                409,
                "unverifiable_copy",
                "the node holds a copy of this item too large to be verified here; nothing was stored",
            ),
        };
        (e, vec![])
    }

    /// Whether the client is to blame (a failure that counts against its payer).
    fn clients_fault(&self) -> bool {
        matches!(
            self,
            UploadError::Invalid { .. }
                | UploadError::IdMismatch { .. }
                | UploadError::TooLarge(_)
                | UploadError::BadExpiresTag
                | UploadError::AlreadyExpired
                | UploadError::BodyUnreadable(_)
                | UploadError::TooSlow
        )
    }

    fn metric(&self) -> UploadResult {
        match self {
            UploadError::TooLarge(_) => UploadResult::TooLarge,
            UploadError::NodeFailed(_) => UploadResult::UpstreamError,
            UploadError::Invalid { .. } | UploadError::IdMismatch { .. } => UploadResult::Invalid,
            _ => UploadResult::Rejected,
        }
    }
}

/// What an upload's request headers say (read before any body byte).
#[derive(Debug, Default)]
pub(crate) struct UploadHeaders<'a> {
    /// `x-private`.
    pub(crate) private: Option<&'a str>,
    /// `x-expiry-days`.
    pub(crate) expiry_days: Option<&'a str>,
    /// `x-expires-at`.
    pub(crate) expires_at: Option<&'a str>,
    /// `Content-Length`.
    pub(crate) content_length: Option<&'a str>,
    /// `Authorization`.
    pub(crate) authorization: Option<&'a [u8]>,
}

/// An upload about to be read: where it goes, until when, and what it costs.
#[derive(Debug)]
pub(crate) struct Intake {
    private: bool,
    expires_at: Option<u64>,
    expiry_days: Option<u32>,
    content_length: Option<u64>,
    now: u64,
    claimed_id: Option<ItemId>,
    /// The offers to pay before the item is stored; `None` when the upload is free.
    pub(crate) offered: Option<Offered>,
}

/// Where the request body comes from (the proxy's session).
#[async_trait::async_trait]
pub(crate) trait BodySource: Send {
    /// The next chunk; `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String>;
    /// Bytes read so far.
    fn bytes_read(&self) -> u64;
}

fn bearer_matches(gate: &Gate, authorization: Option<&[u8]>) -> bool {
    let Some(value) = authorization else {
        return false;
    };
    let scheme = b"bearer ";
    let Some(token) = value
        .split_at_checked(scheme.len())
        .filter(|(s, _)| s.eq_ignore_ascii_case(scheme))
        .map(|(_, t)| t.trim_ascii())
    else {
        return false;
    };
    // Both keys are compared (in constant time), whichever matches.
    let admin = gate
        .config
        .admin
        .bearer_key
        .as_ref()
        .is_some_and(|k| k.matches(token));
    let upload = gate
        .config
        .uploads
        .key
        .as_ref()
        .is_some_and(|k| k.matches(token));
    admin | upload
}

fn private(gate: &Gate, h: &UploadHeaders<'_>, bucket: Option<&str>) -> Result<bool, UploadError> {
    let asked = match h.private.map(str::trim) {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
        Some(_) => {
            return Err(UploadError::BadHeader(
                "x-private must be true or false".into(),
            ));
        }
    };
    let up = &gate.config.upstream;
    let private = match bucket {
        Some(b) if b == up.private_bucket => true,
        Some(_) if asked => {
            return Err(UploadError::BadHeader(
                "x-private: true conflicts with a PUT into the public bucket".into(),
            ));
        }
        _ => asked,
    };
    if private {
        match gate.config.uploads.private {
            PrivateUploads::Open => {}
            PrivateUploads::Off => return Err(UploadError::PrivateDisabled),
            PrivateUploads::Restricted if bearer_matches(gate, h.authorization) => {}
            PrivateUploads::Restricted => return Err(UploadError::PrivateUnauthorized),
        }
    }
    Ok(private)
}

/// Reads an upload's headers and prices it, before any of its body is read. A priced upload
/// is priced by its declared length, so it must declare one.
pub(crate) fn intake(
    gate: &Gate,
    h: &UploadHeaders<'_>,
    target: &UploadTarget,
) -> Result<Intake, UploadError> {
    let now = now_secs();
    let config = &gate.config;
    let max_days = config.expiry.max_days;
    let private = private(gate, h, target.bucket.as_deref())?;
    let expiry_days = h
        .expiry_days
        .map(|v| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|d| (1..=max_days).contains(d))
                .ok_or_else(|| {
                    UploadError::BadHeader(format!(
                        "x-expiry-days must be a whole number of days from 1 to {max_days}"
                    ))
                })
        })
        .transpose()?;
    let latest = now + u64::from(max_days) * 86_400;
    let expires_at = h
        .expires_at
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|&t| t > now && t <= latest)
                .ok_or_else(|| {
                    UploadError::BadHeader(format!(
                        "x-expires-at must be a unix time in the future, at most {max_days} days away"
                    ))
                })
        })
        .transpose()?;
    let content_length = h
        .content_length
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| UploadError::BadHeader("invalid Content-Length".into()))
        })
        .transpose()?;
    let max = config.limits.max_upload_bytes;
    if content_length.is_some_and(|len| len > max) {
        return Err(UploadError::TooLarge(max));
    }
    let offered = price(gate, target, content_length, expiry_days, expires_at, now)?;
    Ok(Intake {
        private,
        expires_at,
        expiry_days,
        content_length,
        now,
        claimed_id: target.claimed_id,
        offered,
    })
}

fn price(
    gate: &Gate,
    target: &UploadTarget,
    content_length: Option<u64>,
    expiry_days: Option<u32>,
    expires_at: Option<u64>,
    now: u64,
) -> Result<Option<Offered>, UploadError> {
    let config = &gate.config;
    let payments = &config.payments;
    let Some(price) = payments
        .upload_price
        .as_ref()
        .filter(|_| payments.enabled())
    else {
        return Ok(None);
    };
    let bytes = content_length.ok_or(UploadError::LengthRequired)?;
    let days = match (expiry_days, expires_at) {
        (Some(days), _) => Some(days),
        // Bounded by `expiry.max_days` above, so it fits; never a wrap.
        (None, Some(at)) => Some(
            u32::try_from(at.saturating_sub(now).div_ceil(86_400))
                .map_err(|_| UploadError::PriceOverflow)?,
        ),
        (None, None) => (config.expiry.default_days > 0).then_some(config.expiry.default_days),
    };
    let resource = hb402_x402::ResourceInfo {
        url: format!("{}{}", config.listen.public_base_url, target.path),
        description: Some("Storage of one ANS-104 DataItem".to_owned()),
        mime_type: Some("application/json".to_owned()),
    };
    let offers = price
        .offers(
            &payments.registry,
            &payments.accept,
            payments.max_timeout_seconds,
            bytes,
            days,
            &resource,
        )
        .map_err(|_| UploadError::PriceOverflow)?;
    Ok((!offers.is_empty()).then_some(Offered {
        offers,
        resource,
        item: None,
        served: None,
    }))
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
    /// How long the node may take to take one chunk.
    chunk_timeout: Duration,
}

impl Outbound {
    /// Sends one chunk; `false` if the node stopped taking them.
    async fn send(&self, chunk: Bytes) -> bool {
        matches!(
            tokio::time::timeout(self.chunk_timeout, self.tx.send(Ok(chunk))).await,
            Ok(Ok(()))
        )
    }

    /// Aborts the upstream request mid-body and waits (bounded) for it to be torn down.
    async fn abort(self) {
        let _ = self
            .tx
            .try_send(Err(std::io::Error::other("upload refused by hb402")));
        drop(self.tx);
        self.task.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }

    /// Ends the body and waits (bounded) for the node's answer.
    async fn complete(self, answer_timeout: Duration) -> Result<(), String> {
        drop(self.tx);
        match tokio::time::timeout(answer_timeout, self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(e)) => Err(format!("upload task failed: {e}")),
            Err(_) => Err("the node did not answer in time".into()),
        }
    }
}

/// What the item's header decided.
struct Placement {
    id: ItemId,
    bucket: String,
    key: String,
    expires_at: Option<u64>,
    /// Whether a failed payment must delete the object (it is new, not an existing copy).
    new_object: bool,
}

/// What to do once the header is known.
enum Plan {
    /// Store (new, lost, or to extend its lifetime).
    Store(Placement, Outbound),
    /// Already stored for at least as long: answer without writing.
    Duplicate(std::sync::Arc<ItemMeta>),
}

/// Handles an upload whose headers were accepted by [`intake`] (and whose payment, if it is
/// priced, is held). The payment is settled only for an item the node stored; it is finalised
/// here in every case.
pub(crate) async fn handle(
    gate: &Gate,
    body: &mut dyn BodySource,
    intake: Intake,
    hold: Option<Hold>,
) -> Result<Reply, Refusal> {
    let payer = hold.as_ref().map(|h| (h.payer().to_owned(), h.client()));
    let mut lease = None;
    let result = store(gate, body, &intake, hold, &mut lease).await;
    if let Some(lease) = lease {
        lease.release().await;
    }
    if let (Err((Refusal::Upload(e), _)), Some((payer, client))) = (&result, &payer)
        && e.clients_fault()
    {
        // A payment verified for an item that then fails is the payer's failure too.
        gate.limiter.failed(payer, *client);
    }
    let bytes = body.bytes_read();
    let label = match &result {
        Ok((reply, _)) if reply.status == 201 => UploadResult::Stored,
        Ok(_) => UploadResult::Duplicate,
        Err((Refusal::Payment(_), _)) => UploadResult::Unpaid,
        Err((Refusal::Upload(e), _)) => e.metric(),
        Err(_) => UploadResult::UpstreamError,
    };
    gate.metrics.record_upload(label, bytes);
    match result {
        Ok((reply, payment)) => {
            payment::finish(gate, payment, payment::Delivery::Whole).await;
            Ok(reply)
        }
        Err((refusal, payment)) => {
            payment::finish(gate, payment, payment::Delivery::None).await;
            Err(refusal)
        }
    }
}

type Outcome = Result<(Reply, Option<Payment>), (Refusal, Option<Payment>)>;

async fn store(
    gate: &Gate,
    body: &mut dyn BodySource,
    intake: &Intake,
    hold: Option<Hold>,
    lease: &mut Option<CopyLease>,
) -> Outcome {
    let held = hold.map(Payment::Held);
    let (plan, pending, verified) = match receive(gate, body, intake, lease).await {
        Ok(v) => v,
        Err(e) => return Err((e, held)),
    };
    let (placement, out) = match plan {
        // Already stored for at least as long: nothing to pay for (a fresh payment is given
        // back when the upload is finalised). A retry of a payment already pending or settled
        // has been charged, or will be: it ends settled, with what it bought (already there).
        Plan::Duplicate(meta) => {
            return match held {
                Some(Payment::Held(hold)) if hold.resumed() => match hold.settle(gate).await {
                    Ok(settled) => {
                        let mut reply = Reply::json(200, &receipt(&meta));
                        let (name, value) = settled.header();
                        reply.headers.push((name, value.to_owned()));
                        Ok((reply, Some(Payment::Settled(settled))))
                    }
                    Err(refusal) => Err((refusal.into(), None)),
                },
                held => Ok((Reply::json(200, &receipt(&meta)), held)),
            };
        }
        Plan::Store(placement, out) => (placement, out),
    };
    for chunk in pending {
        if !out.send(chunk).await {
            break;
        }
    }
    let answer_timeout = gate.config.upstream.write_timeout + gate.config.upstream.read_timeout;
    if let Err(detail) = out.complete(answer_timeout).await {
        return Err((UploadError::NodeFailed(detail).into(), held));
    }
    gate.items.taken(&placement.bucket, &placement.id).await;
    // The node holds the object: now it is paid for, or removed.
    let mut headers = vec![("content-type", crate::error::JSON_CONTENT_TYPE.to_owned())];
    let payment = match held {
        Some(Payment::Held(hold)) => match hold.settle(gate).await {
            Ok(settled) => {
                let (name, value) = settled.header();
                headers.push((name, value.to_owned()));
                Some(Payment::Settled(settled))
            }
            Err(refusal) => {
                if placement.new_object
                    && let Err(e) = gate
                        .upstream
                        .delete_object(&placement.bucket, &placement.key)
                        .await
                {
                    tracing::error!(error = %e, id = %placement.id, "unpaid upload could not be deleted");
                }
                return Err((refusal.into(), None));
            }
        },
        other => other,
    };
    let meta = ItemMeta::from_header(
        &verified.header,
        placement.bucket,
        placement.key,
        verified.size,
        intake.private,
        placement.expires_at,
        Some(intake.now),
    );
    if let Err(e) = gate.items.remember(meta.clone()).await {
        // Stored and paid: the metadata is learned again from the node on the next read.
        tracing::error!(error = %e, id = %meta.id, "stored item's metadata not recorded");
    }
    tracing::info!(id = %meta.id, size = meta.size, private = meta.private, "item stored");
    Ok((
        Reply::new(201, headers, Bytes::from(receipt(&meta).to_string())),
        payment,
    ))
}

/// Reads the body through the verifier, opening the node's upload once the header says where;
/// returns the plan, the chunk held back, and the verified item.
async fn receive(
    gate: &Gate,
    body: &mut dyn BodySource,
    intake: &Intake,
    lease: &mut Option<CopyLease>,
) -> Result<(Plan, VecDeque<Bytes>, hb402_ans104::VerifiedItem), Refusal> {
    let limits = &gate.config.limits;
    let started = std::time::Instant::now();
    let mut verifier = StreamingVerifier::new(limits.max_header_bytes);
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let mut plan: Option<Plan> = None;
    let mut total: u64 = 0;
    let failure = loop {
        // The time limit holds however slowly (or not at all) the bytes come.
        let left = limits.max_upload_time.saturating_sub(started.elapsed());
        let chunk = match tokio::time::timeout(left, body.next_chunk()).await {
            Err(_) => break Some(UploadError::TooSlow.into()),
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break None,
            Ok(Err(e)) => break Some(UploadError::BodyUnreadable(e).into()),
        };
        total += chunk.len() as u64;
        if total > limits.max_upload_bytes {
            break Some(UploadError::TooLarge(limits.max_upload_bytes).into());
        }
        let header = match verifier.push(&chunk) {
            Ok(header) => header.cloned(),
            Err(e) => break Some(invalid(&e)),
        };
        pending.push_back(chunk);
        if let Some(header) = header {
            match place(gate, intake, &header, lease).await {
                Ok(p) => plan = Some(p),
                Err(e) => break Some(e),
            }
        }
        // Release everything but the latest chunk (a duplicate sends nothing upstream).
        while pending.len() > 1 {
            let chunk = pending.pop_front().unwrap_or_default();
            if let Some(Plan::Store(_, out)) = &plan
                && !out.send(chunk).await
            {
                break;
            }
        }
    };
    let abort = |plan: Option<Plan>| async move {
        if let Some(Plan::Store(_, out)) = plan {
            out.abort().await;
        }
    };
    if let Some(error) = failure {
        abort(plan).await;
        return Err(error);
    }
    let verified = match verifier.finish() {
        Ok(v) => v,
        Err(e) => {
            abort(plan).await;
            return Err(invalid(&e));
        }
    };
    match plan {
        Some(plan) => Ok((plan, pending, verified)),
        // A verified item always has a header.
        None => Err(UploadError::Invalid {
            code: "truncated",
            message: "the item ended before its header".into(),
        }
        .into()),
    }
}

fn invalid(e: &hb402_ans104::Error) -> Refusal {
    UploadError::Invalid {
        code: e.code(),
        message: e.to_string(),
    }
    .into()
}

/// Decides, from the item's header, where it goes and whether it needs writing.
async fn place(
    gate: &Gate,
    intake: &Intake,
    header: &hb402_ans104::Header,
    lease: &mut Option<CopyLease>,
) -> Result<Plan, Refusal> {
    let now = intake.now;
    let id = header.id();
    if let Some(claimed) = intake.claimed_id.filter(|c| *c != id) {
        return Err(UploadError::IdMismatch { claimed, id }.into());
    }
    let tag_expires = match header.tag("Expires") {
        None => None,
        Some(v) => Some(
            std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(UploadError::BadExpiresTag)?,
        ),
    };
    let expires_at = upload_expiry(
        tag_expires,
        intake.expires_at,
        intake.expiry_days,
        gate.config.expiry.default_days,
        now,
    );
    if expires_at.is_some_and(|t| t <= now) {
        return Err(UploadError::AlreadyExpired.into());
    }
    let up = &gate.config.upstream;
    let bucket = if intake.private {
        up.private_bucket.clone()
    } else {
        up.public_bucket.clone()
    };
    let key = gate.upstream.item_key(&id.to_string());
    // From here to the end of the upload, this copy is this upload's alone.
    *lease = Some(
        CopyLease::take(&gate.store, &bucket, &id.to_string())
            .await?
            .ok_or(UploadError::InProgress)?,
    );
    let new_object = match decide(gate, &bucket, &id, expires_at, now).await? {
        Decision::Write { new_object } => new_object,
        Decision::Duplicate(meta) => {
            // Nothing to write: the copy is free for others while this body is checked.
            if let Some(lease) = lease.take() {
                lease.release().await;
            }
            return Ok(Plan::Duplicate(meta));
        }
    };
    let out = open_put(gate, &bucket, &key, intake, expires_at).await?;
    Ok(Plan::Store(
        Placement {
            id,
            bucket,
            key,
            expires_at,
            new_object,
        },
        out,
    ))
}

/// Whether an upload writes the copy.
enum Decision {
    /// Written; `new_object` when nothing (of the item, and alive) is there yet.
    Write { new_object: bool },
    /// Stored for at least as long already.
    Duplicate(std::sync::Arc<ItemMeta>),
}

/// Decides from what the node holds, even a copy this hb402 has no record of: an upload never
/// shortens or deletes what it did not write. Called under the copy's lease.
async fn decide(
    gate: &Gate,
    bucket: &str,
    id: &ItemId,
    expires_at: Option<u64>,
    now: u64,
) -> Result<Decision, Refusal> {
    let existing = match gate.items.current(bucket, id).await {
        Ok(existing) => existing,
        Err(crate::items::ItemsError::TooLargeToVerify { .. }) => {
            return Err(UploadError::Unverifiable.into());
        }
        Err(e) => return Err(e.into()),
    };
    let Some(meta) = existing else {
        return Ok(Decision::Write { new_object: true });
    };
    // An expired copy is replaced; a copy the node lost is stored again.
    if meta.expires_at.is_some_and(|at| at <= now) {
        return Ok(Decision::Write { new_object: true });
    }
    Ok(
        match gate.upstream.object_size(&meta.bucket, &meta.key).await? {
            None => Decision::Write { new_object: true },
            Some(_) if extends(meta.expires_at, expires_at) => {
                Decision::Write { new_object: false }
            }
            Some(_) => Decision::Duplicate(meta),
        },
    )
}

/// Opens the node's streaming `PutObject`; chunks are sent through the returned [`Outbound`].
async fn open_put(
    gate: &Gate,
    bucket: &str,
    key: &str,
    intake: &Intake,
    expires_at: Option<u64>,
) -> Result<Outbound, Refusal> {
    gate.upstream.ensure_bucket(bucket).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let stream =
        reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
    let put = gate.upstream.put_object(
        bucket,
        key,
        stream,
        intake.content_length,
        lifecycle_days(expires_at, intake.now),
    );
    Ok(Outbound {
        tx,
        task: tokio::spawn(put),
        chunk_timeout: gate.config.upstream.write_timeout,
    })
}

/// The least an upload must add to a copy's lifetime to write it again: the node's lifecycle
/// counts whole days, and a smaller step (a second) let anyone take the copy's lease again and
/// again for a trifle, keeping its owner from extending it.
const MIN_EXTENSION_SECONDS: u64 = 86_400;

/// Whether a new lifetime is longer than the stored one by a day at least (`None`: never
/// expires).
fn extends(stored: Option<u64>, new: Option<u64>) -> bool {
    match (stored, new) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(old), Some(new)) => new >= old.saturating_add(MIN_EXTENSION_SECONDS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_only_grow() {
        assert!(extends(Some(10), Some(10 + 86_400)));
        assert!(!extends(Some(10), Some(10 + 86_399)));
        assert!(!extends(Some(10), Some(11)));
        assert!(extends(Some(10), None));
        assert!(!extends(Some(10), Some(10)));
        assert!(!extends(Some(10), Some(9)));
        assert!(!extends(None, Some(9)));
        assert!(!extends(None, None));
    }
}
