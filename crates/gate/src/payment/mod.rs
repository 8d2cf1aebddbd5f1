//! One payment, from the header that carries it to its end: a typed value consumed once.
//!
//! [`hold`] turns a payment header into a [`Hold`]: decode (bounded) → match an offer → local
//! checks (no network) → the replay lock on (chain, asset, from, nonce), taken with an owner
//! token → for a fresh authorization, the payer's (and client's) failure budget and the
//! facilitator's `/verify`. A `Hold` then ends in exactly
//! one of two ways, each consuming it:
//!
//! - [`Hold::settle`], once the response is ready: `Settled` (the content may go out),
//!   a failure (402, the lock is freed: nothing was paid), or an unknown outcome (the lock stays,
//!   marked pending; the client is told to retry the same payment);
//! - [`finish`] without settling (the node failed, the client left): the lock is given back
//!   exactly as it was taken — freed for a fresh payment, still pending for one whose earlier
//!   settlement is unknown, still settled-but-undelivered for one already paid.
//!
//! Every authorization thus ends as *settled with the content available to the payer* or *not
//! settled and no content*. A retry of a pending payment asks the settlement backend again and,
//! when a chain RPC is configured, reads the chain ([`crate::chain`]): the retry converges to the
//! content (it settled) or a 402 (it did not). A settled payment whose response never left
//! hb402 is delivered to the next request carrying it, without a second charge. A payment
//! delivered once is a replay ever after (until its `validBefore`, when the local checks refuse
//! it anyway).
//!
//! Fail closed everywhere (x402.md §3.1): anything that is not a clear success is a refusal, and
//! a lock is freed only when no settlement can have happened.

use std::net::IpAddr;
use std::time::Instant;

use alloy::primitives::B256;
use hb402_x402::facilitator::SETTLEMENT_PENDING;
use hb402_x402::{
    DecodedPayment, Offer, PaymentPayload, ResourceInfo, SettleResponse, V1, VerifyRequest,
    decode_payment, encode_header, match_offers, verify_locally,
};

use crate::chain::{Authorization, Outcome};

mod channel;
use crate::gate::Gate;
use crate::metrics::{
    AssetLabel, FacilitatorOp, NetworkLabel, PaymentRequiredReason, PaymentResult,
};
use crate::store::{LockRecord, LockState, NewPayment, PaymentKind, PaymentState, StoreError};
pub(crate) use channel::{ChannelHold, ChannelSettled};

/// How long a lock outlives its authorization's `validBefore` (clock skew between hb402 and the
/// chain): after that no settlement of it can happen any more.
const LOCK_GRACE_SECONDS: u64 = 120;

/// How long a lock whose settlement is pending, or settled and not delivered, outlives its
/// authorization's `validBefore`: its payer's retry is served (or told the outcome) meanwhile,
/// however late it comes.
const KEEP_UNRESOLVED_SECONDS: u64 = 86_400;

/// How long a client is asked to wait before retrying a payment whose outcome is unknown.
pub(crate) const RETRY_AFTER_SECONDS: u64 = 5;

/// What a priced request offers, and the resource it offers it for.
#[derive(Debug, Clone)]
pub(crate) struct Offered {
    /// The offers (never empty for a priced request).
    pub(crate) offers: Vec<Offer>,
    /// The resource.
    pub(crate) resource: ResourceInfo,
    /// The DataItem a read sells (`None` for an upload), shown on the browser paywall.
    pub(crate) item: Option<ItemFacts>,
    /// Of a read: the bytes it serves and the bytes the price is for (a range serves fewer). A
    /// voucher is charged for what is served; an `exact` payment pays the offer's amount.
    pub(crate) served: Option<(u64, u64)>,
}

/// What a buyer sees of the DataItem a read sells.
#[derive(Debug, Clone)]
pub(crate) struct ItemFacts {
    /// The item id.
    pub(crate) id: String,
    /// The content type served.
    pub(crate) content_type: String,
    /// The bytes the whole response carries (the data, or the whole item on binary routes).
    pub(crate) size: u64,
    /// When the item expires (unix seconds).
    pub(crate) expires_at: Option<u64>,
}

/// A 402 and why.
#[derive(Debug)]
pub(crate) struct Challenge {
    /// What is offered.
    pub(crate) offered: Offered,
    /// Metric label.
    pub(crate) label: PaymentRequiredReason,
    /// The x402 `error` code (hb402's, or a facilitator's checked to be a plain code).
    pub(crate) code: String,
    /// A message written by hb402.
    pub(crate) message: String,
    /// A failed settlement's response (header `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`).
    pub(crate) settlement: Option<(u32, SettleResponse)>,
}

/// Why a payment did not buy the request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PaymentRefusal {
    /// 402: pay (again).
    #[error("payment required: {}", .0.code)]
    Required(Box<Challenge>),
    /// 429: this payer failed too often; its payments are refused for a while.
    #[error("payer throttled for {retry_after} s")]
    Throttled {
        /// Seconds.
        retry_after: u64,
    },
    /// 504: the settlement's outcome is not known yet, or another request is using the same
    /// payment right now; send the same payment again.
    #[error("settlement pending")]
    Pending {
        /// The settlement response to show (`success: false`, `settlement_pending`).
        version: u32,
        /// What is known of it.
        settlement: Box<SettleResponse>,
    },
    /// 503: the state store failed, so no lock could be taken.
    #[error("store unavailable: {0}")]
    Unavailable(StoreError),
}

/// Where a held payment came from, which decides how it is given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A new authorization, verified by the facilitator.
    Fresh,
    /// A retry of one whose settlement's outcome was unknown.
    WasPending,
    /// A retry of one settled but never delivered.
    WasSettled,
}

/// The facts of one authorization.
#[derive(Debug, Clone)]
struct Paid {
    version: u32,
    chain_id: u64,
    request: VerifyRequest,
    network: String,
    network_label: NetworkLabel,
    asset_label: AssetLabel,
    payer: String,
    amount: String,
    authorization: Authorization,
    valid_before: u64,
    /// The refusal of an authorization past its `validBefore` (checked as of when it was still
    /// valid): it may only resume a payment already pending or settled, never start one.
    expired: Option<hb402_x402::Refusal>,
}

/// A payment held for one request: its replay lock is taken by this request alone.
#[derive(Debug)]
pub(crate) struct ExactHold {
    key: String,
    /// The lock as stored: every change compares against it.
    record: LockRecord,
    origin: Origin,
    paid: Paid,
    offered: Offered,
    ledger_id: Option<u64>,
    /// The client's address, for its failure budget.
    client: Option<IpAddr>,
}

/// A settled payment, its response header ready.
#[derive(Debug)]
pub(crate) struct ExactSettled {
    key: String,
    record: LockRecord,
    paid: Paid,
    header: (&'static str, String),
}

/// A request's payment, wherever it is.
#[derive(Debug)]
pub(crate) enum Payment {
    /// Taken, not settled.
    Held(Hold),
    /// Settled.
    Settled(Settled),
}

/// A payment held for one request, of either scheme.
#[derive(Debug)]
pub(crate) enum Hold {
    /// An `exact` authorization (EIP-3009), under its replay lock.
    Exact(Box<ExactHold>),
    /// A `batch-settlement` voucher, with its channel held.
    Channel(Box<ChannelHold>),
}

/// A settled payment, of either scheme.
#[derive(Debug)]
pub(crate) enum Settled {
    /// An `exact` authorization, transferred on chain.
    Exact(Box<ExactSettled>),
    /// A `batch-settlement` voucher, its charge committed once the response went out whole.
    Channel(Box<ChannelSettled>),
}

impl Hold {
    /// The payer's address.
    pub(crate) fn payer(&self) -> &str {
        match self {
            Hold::Exact(h) => h.payer(),
            Hold::Channel(h) => h.payer(),
        }
    }

    /// Whether it resumes a payment already pending or settled (not a fresh authorization).
    pub(crate) fn resumed(&self) -> bool {
        match self {
            Hold::Exact(h) => h.resumed(),
            Hold::Channel(_) => false,
        }
    }

    /// The client's address.
    pub(crate) fn client(&self) -> Option<IpAddr> {
        match self {
            Hold::Exact(h) => h.client(),
            Hold::Channel(h) => h.client(),
        }
    }

    /// Whether it asks for a channel's refund rather than paying for the resource.
    pub(crate) fn is_refund(&self) -> bool {
        matches!(self, Hold::Channel(h) if h.is_refund())
    }

    /// Settles it before the response goes out (see [`ExactHold::settle`],
    /// [`ChannelHold::settle`]). `Err` is what to answer instead of the content.
    pub(crate) async fn settle(self, gate: &Gate) -> Result<Settled, PaymentRefusal> {
        match self {
            Hold::Exact(h) => h.settle(gate).await.map(|s| Settled::Exact(Box::new(s))),
            Hold::Channel(h) => h.settle(gate).await.map(|s| Settled::Channel(Box::new(s))),
        }
    }
}

impl Settled {
    /// The response header carrying the settlement.
    pub(crate) fn header(&self) -> (&'static str, &str) {
        match self {
            Settled::Exact(s) => s.header(),
            Settled::Channel(s) => s.header(),
        }
    }

    /// The payer's address.
    pub(crate) fn payer(&self) -> &str {
        match self {
            Settled::Exact(s) => s.payer(),
            Settled::Channel(s) => s.payer(),
        }
    }

    /// Whether the payer gets a receipt to read the resource again: not for a voucher, whose
    /// charge stands only if the response goes out whole (a broken one charged nothing).
    pub(crate) fn grants_receipt(&self) -> bool {
        matches!(self, Settled::Exact(_))
    }

    /// The channel a refund was paid from.
    pub(crate) fn channel_id(&self) -> Option<&str> {
        match self {
            Settled::Channel(s) => Some(s.channel_id()),
            Settled::Exact(_) => None,
        }
    }
}

/// A random token naming one request's hold (128 bits from the thread's CSPRNG, seeded from the
/// OS: no system call per request).
pub(crate) fn random_owner() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    alloy::primitives::hex::encode(bytes)
}

fn now_secs() -> u64 {
    crate::items::now_secs()
}

/// A facilitator's reason, if it is a plain code; its free text is never repeated.
fn plain_code(reason: Option<&str>, fallback: &str) -> String {
    match reason {
        Some(r)
            if (1..=64).contains(&r.len())
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
        {
            r.to_owned()
        }
        _ => fallback.to_owned(),
    }
}

pub(super) fn required(
    offered: &Offered,
    label: PaymentRequiredReason,
    code: &str,
    message: impl Into<String>,
) -> PaymentRefusal {
    PaymentRefusal::Required(Box::new(Challenge {
        offered: offered.clone(),
        label,
        code: code.to_owned(),
        message: message.into(),
        settlement: None,
    }))
}

pub(crate) fn header_name(version: u32) -> &'static str {
    if version == V1 {
        "x-payment-response"
    } else {
        "payment-response"
    }
}

/// Checks a request's payment against what it is offered and holds it for this request;
/// `client` is the address it came from.
pub(crate) async fn hold(
    gate: &Gate,
    header: Option<&str>,
    offered: Offered,
    client: Option<IpAddr>,
) -> Result<Hold, PaymentRefusal> {
    let Some(header) = header else {
        return Err(required(
            &offered,
            PaymentRequiredReason::Missing,
            "payment_required",
            "Payment required",
        ));
    };
    let decoded = decode(gate, header, &offered)?;
    if let Some(offer) = match_offers(&offered.offers, &decoded.payload)
        .first()
        .filter(|o| o.batch.is_some())
    {
        let offer = (*offer).clone();
        return channel::hold(gate, &decoded, offer, offered, client)
            .await
            .map(|h| Hold::Channel(Box::new(h)));
    }
    let paid = check_locally(gate, &decoded, &offered)?;
    acquire(gate, paid, offered, client)
        .await
        .map(|h| Hold::Exact(Box::new(h)))
}

/// For a resource that may no longer be sold (an item past its expiry): the request's payment
/// only if it resumes one already pending or settled for it (its payer was charged, or will be,
/// while it was on sale); a fresh authorization is never started. `Ok(None)`: nothing to
/// resume; a payment in use by another request right now, or a store that cannot answer, is
/// passed on (504, 503) rather than taken for nothing to resume.
pub(crate) async fn resume(
    gate: &Gate,
    header: &str,
    offered: Offered,
    client: Option<IpAddr>,
) -> Result<Option<Hold>, PaymentRefusal> {
    // Only an `exact` payment can be pending or settled-undelivered: a voucher is charged
    // only once its response went out whole.
    let Ok(mut paid) =
        decode(gate, header, &offered).and_then(|d| check_locally(gate, &d, &offered))
    else {
        return Ok(None);
    };
    paid.expired.get_or_insert_with(|| {
        hb402_x402::Refusal::new(
            hb402_x402::Reason::InvalidPaymentRequirements,
            "the resource is no longer offered",
        )
    });
    match acquire(gate, paid, offered, client).await {
        Ok(hold) => Ok(Some(Hold::Exact(Box::new(hold)))),
        Err(e @ (PaymentRefusal::Pending { .. } | PaymentRefusal::Unavailable(_))) => Err(e),
        Err(_) => Ok(None),
    }
}

/// Decodes a payment header (bounded); a v2 payload that names a resource must name this one.
fn decode(gate: &Gate, header: &str, offered: &Offered) -> Result<DecodedPayment, PaymentRefusal> {
    let max = gate.config.limits.max_payment_header_bytes;
    let decoded = decode_payment(header, max).map_err(|e| {
        required(
            offered,
            PaymentRequiredReason::Malformed,
            "invalid_payload",
            e.to_string(),
        )
    })?;
    // A v2 payload may name the resource it was signed for: then it is this one.
    if let PaymentPayload::V2(p) = &decoded.payload
        && p.resource
            .as_ref()
            .is_some_and(|r| r.url != offered.resource.url)
    {
        return Err(required(
            offered,
            PaymentRequiredReason::NoMatchingOffer,
            "invalid_payment_requirements",
            "the payment was made for another resource",
        ));
    }
    Ok(decoded)
}

/// Match and the local checks of an `exact` payment: no network, no state.
fn check_locally(
    gate: &Gate,
    decoded: &DecodedPayment,
    offered: &Offered,
) -> Result<Paid, PaymentRefusal> {
    let metrics = &gate.metrics;
    let refuse = |label: PaymentRequiredReason, code: &str, message: String| {
        required(offered, label, code, message)
    };
    let candidates = match_offers(&offered.offers, &decoded.payload);
    let Some(first) = candidates.first() else {
        return Err(refuse(
            PaymentRequiredReason::NoMatchingOffer,
            "invalid_payment_requirements",
            "the payment does not match any offer of this resource".into(),
        ));
    };
    let now = now_secs();
    let (offer, local, expired) = match first_verified(gate, &candidates, &decoded.payload, now) {
        Ok((offer, local)) => (offer, local, None),
        Err(refusal) => match when_valid(gate, &candidates, &decoded.payload, now, &refusal) {
            Some((offer, local)) => (offer, local, Some(refusal)),
            None => {
                metrics.record_payment(&network_label(gate, first), PaymentResult::Rejected);
                return Err(refuse(
                    refusal.reason.into(),
                    refusal.reason.as_str(),
                    refusal.message,
                ));
            }
        },
    };
    let version = decoded.payload.version();
    let auth = &local.authorization;
    let network = match (&decoded.payload, &offer.v1) {
        (PaymentPayload::V1(_), Some(v1)) => v1.network.clone(),
        _ => offer.v2.network.clone(),
    };
    Ok(Paid {
        version,
        chain_id: offer.terms.asset.chain_id,
        request: VerifyRequest {
            x402_version: version,
            payment_payload: decoded.raw.clone(),
            payment_requirements: offer.requirements_json(version),
        },
        network,
        network_label: network_label(gate, offer),
        asset_label: AssetLabel::new(&offer.terms.asset),
        payer: auth.from.to_checksum(None),
        amount: offer.terms.amount.to_string(),
        authorization: Authorization {
            asset: offer.terms.asset.address,
            from: auth.from,
            to: auth.to,
            value: auth.value,
            nonce: auth.nonce,
        },
        valid_before: local.valid_before_secs(),
        expired,
    })
}

/// The first candidate offer the payment passes the local checks of (v1 names no asset: the
/// one whose domain its signature verifies under), or the first candidate's refusal.
fn first_verified<'a>(
    gate: &Gate,
    candidates: &[&'a Offer],
    payload: &PaymentPayload,
    now: u64,
) -> Result<(&'a Offer, hb402_x402::LocallyVerified), hb402_x402::Refusal> {
    let skew = gate.config.payments.skew_seconds;
    let mut first_refusal = None;
    for offer in candidates {
        match verify_locally(offer, payload, now, skew) {
            Ok(v) => return Ok((*offer, v)),
            Err(r) => {
                first_refusal.get_or_insert(r);
            }
        }
    }
    Err(first_refusal.unwrap_or_else(|| {
        hb402_x402::Refusal::new(hb402_x402::Reason::InvalidPayload, "no offer verifies")
    }))
}

/// For a payment refused only because its `validBefore` has passed: the same checks as of just
/// before then. A payer whose settlement was pending (or settled, undelivered) at that time
/// still gets what it paid for on a late retry; nothing new is started with it ([`acquire`]).
fn when_valid<'a>(
    gate: &Gate,
    candidates: &[&'a Offer],
    payload: &PaymentPayload,
    now: u64,
    refusal: &hb402_x402::Refusal,
) -> Option<(&'a Offer, hb402_x402::LocallyVerified)> {
    use hb402_x402::exact::VALID_BEFORE_BUFFER_SECONDS;
    if refusal.reason != hb402_x402::Reason::ValidBefore {
        return None;
    }
    let (auth, _) = hb402_x402::exact::parse_exact_payload(payload.payload()).ok()?;
    let valid_before = u64::try_from(auth.valid_before).ok()?;
    if valid_before >= now.saturating_add(VALID_BEFORE_BUFFER_SECONDS) {
        // Not expired: too far in the future.
        return None;
    }
    let then = valid_before.checked_sub(VALID_BEFORE_BUFFER_SECONDS + 1)?;
    first_verified(gate, candidates, payload, then).ok()
}

fn network_label(gate: &Gate, offer: &Offer) -> NetworkLabel {
    let registry = &gate.config.payments.registry;
    match registry.network_by_chain(offer.terms.asset.chain_id) {
        Some(network) => NetworkLabel::new(network),
        // Offers are only built for registered networks.
        None => NetworkLabel::new(&hb402_x402::Network {
            v1_name: None,
            chain_id: offer.terms.asset.chain_id,
        }),
    }
}

fn lock_key(paid: &Paid) -> String {
    let a = &paid.authorization;
    format!(
        "x402:{}:{:#x}:{:#x}:{}",
        paid.chain_id, a.asset, a.from, a.nonce
    )
}

fn replay(gate: &Gate, paid: &Paid, offered: &Offered, message: &str) -> PaymentRefusal {
    gate.metrics
        .record_payment(&paid.network_label, PaymentResult::Replayed);
    required(
        offered,
        PaymentRequiredReason::Replay,
        "duplicate_settlement",
        message,
    )
}

/// The 504 that tells the client to send the same payment again (it is never charged twice):
/// its settlement's outcome is not known yet (`transaction`, if one was sent), or another
/// request is using it right now (its retry, a second tab) and may yet settle it and then fail
/// to deliver.
fn send_again(paid: &Paid, transaction: Option<String>) -> PaymentRefusal {
    PaymentRefusal::Pending {
        version: paid.version,
        settlement: Box::new(SettleResponse {
            success: false,
            error_reason: Some(SETTLEMENT_PENDING.to_owned()),
            error_message: None,
            payer: Some(paid.payer.clone()),
            transaction: transaction.unwrap_or_default(),
            network: paid.network.clone(),
        }),
    }
}

/// Takes the replay lock: a fresh authorization is then verified; a pending or
/// settled-but-undelivered one is taken over by this request.
async fn acquire(
    gate: &Gate,
    paid: Paid,
    offered: Offered,
    client: Option<IpAddr>,
) -> Result<ExactHold, PaymentRefusal> {
    let store = &gate.store;
    let key = lock_key(&paid);
    let owner = random_owner();
    let fresh = LockRecord {
        state: LockState::Held,
        owner: owner.clone(),
        until: paid.valid_before.saturating_add(LOCK_GRACE_SECONDS),
        ledger_id: None,
        transaction: None,
    };
    // A few rounds: the record may change between the failed swap and the read.
    for _ in 0..3 {
        let taken = store
            .lock_swap(&key, None, Some(&fresh))
            .await
            .map_err(PaymentRefusal::Unavailable)?;
        if taken {
            let hold = ExactHold {
                key,
                record: fresh,
                origin: Origin::Fresh,
                paid,
                offered,
                ledger_id: None,
                client,
            };
            return hold.start(gate).await;
        }
        let Some(current) = store
            .lock_get(&key)
            .await
            .map_err(PaymentRefusal::Unavailable)?
        else {
            continue;
        };
        let origin = match current.state {
            LockState::Held => return Err(send_again(&paid, current.transaction)),
            LockState::Delivered => {
                let used = "this payment authorization was already used; sign a new one";
                return Err(replay(gate, &paid, &offered, used));
            }
            LockState::Pending => Origin::WasPending,
            LockState::Settled => Origin::WasSettled,
        };
        let mine = LockRecord {
            state: LockState::Held,
            owner: owner.clone(),
            ..current.clone()
        };
        if store
            .lock_swap(&key, Some(&current), Some(&mine))
            .await
            .map_err(PaymentRefusal::Unavailable)?
        {
            tracing::info!(payer = %paid.payer, ?origin, "payment taken over by its retry");
            return Ok(ExactHold {
                key,
                ledger_id: mine.ledger_id,
                record: mine,
                origin,
                paid,
                offered,
                client,
            });
        }
    }
    Err(send_again(&paid, None))
}

/// How a settlement attempt ended.
enum Verdict {
    Settled(String),
    Failed(String),
    Unknown(Option<String>),
}

impl ExactHold {
    /// The payer's address.
    pub(crate) fn payer(&self) -> &str {
        &self.paid.payer
    }

    /// Whether it resumes a payment already pending or settled (not a fresh authorization).
    pub(crate) fn resumed(&self) -> bool {
        self.origin != Origin::Fresh
    }

    /// The client's address.
    pub(crate) fn client(&self) -> Option<IpAddr> {
        self.client
    }

    /// A fresh authorization: refused if it expired (only a pending or settled payment may be
    /// resumed late) or its payer or client is over its failure budget, else verified.
    async fn start(self, gate: &Gate) -> Result<ExactHold, PaymentRefusal> {
        if let Some(refusal) = self.paid.expired.clone() {
            gate.metrics
                .record_payment(&self.paid.network_label, PaymentResult::Rejected);
            let refusal = required(
                &self.offered,
                refusal.reason.into(),
                refusal.reason.as_str(),
                refusal.message,
            );
            self.give_back(gate).await;
            return Err(refusal);
        }
        if let Err(retry_after) = gate.limiter.check(&self.paid.payer, self.client) {
            gate.metrics
                .record_payment(&self.paid.network_label, PaymentResult::Throttled);
            self.give_back(gate).await;
            return Err(PaymentRefusal::Throttled { retry_after });
        }
        self.verify(gate).await
    }

    /// The facilitator's `/verify` of a fresh authorization; on any refusal the lock is freed.
    async fn verify(self, gate: &Gate) -> Result<ExactHold, PaymentRefusal> {
        let Some(facilitator) = &gate.facilitator else {
            let refusal = required(
                &self.offered,
                PaymentRequiredReason::FacilitatorUnavailable,
                "unexpected_verify_error",
                "payments are not configured",
            );
            self.give_back(gate).await;
            return Err(refusal);
        };
        let started = Instant::now();
        let verdict = facilitator.verify(&self.paid.request).await;
        gate.metrics
            .observe_facilitator(FacilitatorOp::Verify, started.elapsed());
        let (label, result, code, message) = match verdict {
            Ok(v) if v.is_valid => return Ok(self),
            Ok(v) => {
                // Refused: the payer's failure (or its client's).
                tracing::info!(payer = %self.paid.payer, reason = ?v.invalid_reason, "payment refused on verification");
                gate.limiter.failed(&self.paid.payer, self.client);
                (
                    PaymentRequiredReason::VerifyFailed,
                    PaymentResult::VerifyFailed,
                    plain_code(v.invalid_reason.as_deref(), "invalid_payment"),
                    "the facilitator refused the payment",
                )
            }
            // Fail closed: an unreachable, slow or incoherent facilitator is a refusal (and
            // nobody's fault).
            Err(e) => {
                tracing::warn!(error = %e, payer = %self.paid.payer, "facilitator /verify failed");
                (
                    PaymentRequiredReason::FacilitatorUnavailable,
                    PaymentResult::FacilitatorError,
                    "unexpected_verify_error".to_owned(),
                    "the payment could not be verified now; try again",
                )
            }
        };
        gate.metrics
            .record_payment(&self.paid.network_label, result);
        let refusal = required(&self.offered, label, &code, message);
        self.give_back(gate).await;
        Err(refusal)
    }

    /// Settles (or, for a payment already settled, delivers) it. `Err` is what to answer
    /// instead of the content.
    pub(crate) async fn settle(mut self, gate: &Gate) -> Result<ExactSettled, PaymentRefusal> {
        // The ledger records money that may move: a payment gets its entry when its settlement
        // is attempted, never for a payment only verified and given back.
        if self.origin == Origin::Fresh {
            self.ledger_id = ledger_append(gate, &self).await;
        }
        let verdict = match self.origin {
            Origin::WasSettled => {
                Verdict::Settled(self.record.transaction.clone().unwrap_or_default())
            }
            Origin::Fresh | Origin::WasPending => self.attempt(gate).await,
        };
        match verdict {
            Verdict::Settled(tx) => Ok(self.settled(gate, tx).await),
            Verdict::Failed(reason) => Err(self.failed(gate, reason).await),
            Verdict::Unknown(tx) => Err(self.pending(gate, tx).await),
        }
    }

    /// One settlement attempt, read against the chain when its outcome is not clear.
    async fn attempt(&self, gate: &Gate) -> Verdict {
        let Some(facilitator) = &gate.facilitator else {
            return Verdict::Failed("unexpected_settle_error".into());
        };
        let started = Instant::now();
        let result = facilitator.settle(&self.paid.request).await;
        gate.metrics
            .observe_facilitator(FacilitatorOp::Settle, started.elapsed());
        let verdict = match result {
            Ok(s) if s.success => Verdict::Settled(s.transaction),
            // Broadcast but not confirmed, or confirmed as failed: the chain knows which.
            Ok(s)
                if s.error_reason.as_deref() == Some(SETTLEMENT_PENDING)
                    || !s.transaction.is_empty() =>
            {
                Verdict::Unknown(Some(s.transaction).filter(|t| !t.is_empty()))
            }
            // A retry's settlement may fail because its earlier attempt used the authorization.
            Ok(s) if self.origin == Origin::WasPending => {
                tracing::info!(reason = ?s.error_reason, "retried settlement refused");
                Verdict::Unknown(self.record.transaction.clone())
            }
            Ok(s) => {
                tracing::info!(payer = %self.paid.payer, reason = ?s.error_reason, "settlement failed");
                Verdict::Failed(plain_code(s.error_reason.as_deref(), "settlement_failed"))
            }
            // No answer: it may have been broadcast.
            Err(e) => {
                tracing::warn!(error = %e, payer = %self.paid.payer, "facilitator /settle failed");
                Verdict::Unknown(self.record.transaction.clone())
            }
        };
        match verdict {
            Verdict::Unknown(hint) => self.read_chain(gate, hint).await,
            other => other,
        }
    }

    /// Resolves an unknown outcome from the chain, when hb402 can read it.
    async fn read_chain(&self, gate: &Gate, hint: Option<String>) -> Verdict {
        let Some(chain) = &gate.chain else {
            return Verdict::Unknown(hint);
        };
        let tx = hint.as_deref().and_then(|t| t.parse::<B256>().ok());
        match chain.outcome(&self.paid.authorization, tx).await {
            Ok(Outcome::Transferred(tx)) => Verdict::Settled(tx.to_string()),
            Ok(Outcome::UsedOtherwise) => Verdict::Failed("authorization_used_otherwise".into()),
            // Unused once it can no longer be used: it never will be.
            Ok(Outcome::Unused) if now_secs() >= self.paid.valid_before => {
                Verdict::Failed("settlement_expired".into())
            }
            Ok(Outcome::Unused) => Verdict::Unknown(hint),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the settlement's outcome");
                Verdict::Unknown(hint)
            }
        }
    }

    async fn settled(self, gate: &Gate, tx: String) -> ExactSettled {
        let delivered = LockRecord {
            state: LockState::Delivered,
            transaction: Some(tx.clone()),
            ledger_id: self.ledger_id,
            ..self.record.clone()
        };
        swap(gate, &self.key, Some(&self.record), Some(&delivered)).await;
        if self.origin != Origin::WasSettled {
            ledger(
                gate,
                self.ledger_id,
                PaymentState::Settled {
                    transaction: tx.clone(),
                },
            )
            .await;
            let metrics = &gate.metrics;
            metrics.record_payment(&self.paid.network_label, PaymentResult::Settled);
            if let Ok(atomic) = self.paid.amount.parse::<u64>() {
                metrics.record_paid(&self.paid.network_label, &self.paid.asset_label, atomic);
            }
        }
        let response = SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer: Some(self.paid.payer.clone()),
            transaction: tx,
            network: self.paid.network.clone(),
        };
        ExactSettled {
            key: self.key,
            record: delivered,
            header: (header_name(self.paid.version), encode_header(&response)),
            paid: self.paid,
        }
    }

    async fn failed(self, gate: &Gate, reason: String) -> PaymentRefusal {
        swap(gate, &self.key, Some(&self.record), None).await;
        ledger(
            gate,
            self.ledger_id,
            PaymentState::Failed {
                reason: reason.clone(),
            },
        )
        .await;
        if payers_fault(&reason) {
            gate.limiter.failed(&self.paid.payer, self.client);
        }
        gate.metrics
            .record_payment(&self.paid.network_label, PaymentResult::SettleFailed);
        let response = SettleResponse {
            success: false,
            error_reason: Some(reason.clone()),
            error_message: None,
            payer: Some(self.paid.payer.clone()),
            transaction: String::new(),
            network: self.paid.network.clone(),
        };
        PaymentRefusal::Required(Box::new(Challenge {
            offered: self.offered,
            label: PaymentRequiredReason::SettleFailed,
            code: reason,
            message: "the payment could not be settled; nothing was charged".into(),
            settlement: Some((self.paid.version, response)),
        }))
    }

    async fn pending(self, gate: &Gate, tx: Option<String>) -> PaymentRefusal {
        let pending = LockRecord {
            state: LockState::Pending,
            owner: String::new(),
            transaction: tx.clone().or(self.record.transaction.clone()),
            ledger_id: self.ledger_id,
            until: unresolved_until(&self.record, &self.paid),
        };
        swap(gate, &self.key, Some(&self.record), Some(&pending)).await;
        if self.origin == Origin::Fresh {
            ledger(
                gate,
                self.ledger_id,
                PaymentState::Pending {
                    transaction: tx.clone(),
                },
            )
            .await;
        }
        gate.metrics
            .record_payment(&self.paid.network_label, PaymentResult::Pending);
        send_again(&self.paid, pending.transaction)
    }

    /// Gives the lock back as it was taken: nothing was settled by this request.
    async fn give_back(self, gate: &Gate) {
        let back = match self.origin {
            Origin::Fresh => None,
            Origin::WasPending => Some(LockRecord {
                state: LockState::Pending,
                owner: String::new(),
                ..self.record.clone()
            }),
            Origin::WasSettled => Some(LockRecord {
                state: LockState::Settled,
                owner: String::new(),
                ..self.record.clone()
            }),
        };
        swap(gate, &self.key, Some(&self.record), back.as_ref()).await;
    }
}

impl ExactSettled {
    /// The response header carrying the settlement.
    pub(crate) fn header(&self) -> (&'static str, &str) {
        (self.header.0, &self.header.1)
    }

    /// The payer's address.
    pub(crate) fn payer(&self) -> &str {
        &self.paid.payer
    }

    /// The response never left hb402: the payer may fetch it with the same payment.
    async fn undelivered(self, gate: &Gate) {
        let back = LockRecord {
            state: LockState::Settled,
            owner: String::new(),
            until: unresolved_until(&self.record, &self.paid),
            ..self.record.clone()
        };
        swap(gate, &self.key, Some(&self.record), Some(&back)).await;
        tracing::info!(payer = %self.paid.payer, "settled payment not delivered; its retry will be served");
    }
}

/// When a pending or settled-undelivered lock lapses: long enough for a late retry.
fn unresolved_until(record: &LockRecord, paid: &Paid) -> u64 {
    record
        .until
        .max(paid.valid_before.saturating_add(KEEP_UNRESOLVED_SECONDS))
}

/// Whether a failed settlement's reason is the payer's doing (its funds, its authorization),
/// not the backend's: only those count against its failure budget.
fn payers_fault(reason: &str) -> bool {
    !(reason.starts_with("unexpected_")
        || matches!(
            reason,
            "settlement_failed" | "settlement_expired" | "invalid_transaction_state"
        ))
}

/// How much of a response went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Nothing, or an error answer.
    None,
    /// The head (with the settlement) and this much of the body, not all of it.
    Head {
        /// Body bytes written.
        body_bytes: u64,
    },
    /// The whole response.
    Whole,
}

/// Ends a request's payment: the one place every payment is finalised. An `exact` payment is
/// delivered once its head (with the settlement) was sent; a voucher is charged only once the
/// whole response was.
pub(crate) async fn finish(gate: &Gate, payment: Option<Payment>, delivery: Delivery) {
    match payment {
        None => {}
        Some(Payment::Held(Hold::Exact(hold))) => {
            if hold.origin == Origin::Fresh {
                gate.metrics
                    .record_payment(&hold.paid.network_label, PaymentResult::Released);
            }
            hold.give_back(gate).await;
        }
        Some(Payment::Held(Hold::Channel(hold))) => hold.release(gate).await,
        Some(Payment::Settled(Settled::Exact(settled))) if delivery == Delivery::None => {
            settled.undelivered(gate).await;
        }
        Some(Payment::Settled(Settled::Exact(_))) => {}
        Some(Payment::Settled(Settled::Channel(settled))) => {
            settled.finish(gate, delivery).await;
        }
    }
}

/// A lock change whose expected state this request owns; a failure is logged (the lock then
/// lapses at its `until`, never earlier).
async fn swap(gate: &Gate, key: &str, expected: Option<&LockRecord>, new: Option<&LockRecord>) {
    match gate.store.lock_swap(key, expected, new).await {
        Ok(true) => {}
        Ok(false) => tracing::error!(%key, "payment lock changed under its owner"),
        Err(e) => tracing::error!(%key, error = %e, "payment lock could not be updated"),
    }
}

async fn ledger_append(gate: &Gate, hold: &ExactHold) -> Option<u64> {
    let payment = NewPayment {
        resource: hold.offered.resource.url.clone(),
        network: hold.paid.network.clone(),
        asset: format!("{:#x}", hold.paid.authorization.asset),
        payer: hold.paid.payer.clone(),
        pay_to: hold.paid.authorization.to.to_checksum(None),
        amount: hold.paid.amount.clone(),
        lock_key: hold.key.clone(),
        kind: PaymentKind::Exact,
    };
    match gate.store.ledger_append(&payment).await {
        Ok(id) => Some(id),
        // The ledger is an audit trail: its failure does not change the answer.
        Err(e) => {
            tracing::error!(error = %e, "ledger append failed");
            None
        }
    }
}

async fn ledger(gate: &Gate, id: Option<u64>, state: PaymentState) {
    if let Some(id) = id
        && let Err(e) = gate.store.ledger_update(id, state).await
    {
        tracing::error!(id, error = %e, "ledger update failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_codes_pass_through() {
        assert_eq!(
            plain_code(Some("insufficient_funds"), "x"),
            "insufficient_funds"
        );
        for text in [
            "error sending request for url (http://10.0.0.1:8545/?key=abc)",
            "Insufficient",
            "",
            "a-b",
        ] {
            assert_eq!(plain_code(Some(text), "invalid_payment"), "invalid_payment");
        }
        assert_eq!(plain_code(None, "fallback"), "fallback");
        assert_eq!(plain_code(Some(&"a".repeat(65)), "f"), "f");
    }
}
