//! A `batch-settlement` payment: a cumulative voucher on an escrow channel, held for one request
//! like an `exact` authorization is.
//!
//! [`hold`] checks the voucher's signature first (no state: a payload that does not come from
//! the channel's payer never touches it), then reads the channel's record (and the chain, for a
//! channel hb402 does not know yet or whose mirrored state is older than `sync_seconds`),
//! checks the voucher's ceiling against what was charged and the balance, and takes the
//! channel for this request with a compare-and-swap from exactly the record it checked
//! against. Requests on one channel take turns, across a fleet sharing a store.
//!
//! [`ChannelHold::settle`] runs before any byte of the response: a deposit goes on chain (and
//! the read is refused if it does not land), a refund is paid, a voucher needs nothing. The
//! voucher's charge is committed by [`ChannelSettled::finish`] only once the whole response went
//! out: a response that fails or is cut short charges nothing, and the payer's next voucher
//! (one charge ahead) is answered with a 402 that carries the channel's state, from which the
//! stock client recovers. A crash between serving and committing thus never makes the payer
//! pay twice, and never loses a charge already committed: the record keeps the latest voucher
//! (the one claims use) until a higher one replaces it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hb402_x402::batch::{self, BatchPayload, BatchReason, ChannelView, CheckedBatch};
use hb402_x402::{DecodedPayment, Offer, encode_header};
use serde::Deserialize as _;
use serde_json::{Value, json};

use super::{Offered, PaymentRefusal, random_owner, required};
use crate::channels::{self, ClaimRow, Moved};
use crate::facilitator::Sent;
use crate::gate::Gate;
use crate::items::now_secs;
use crate::metrics::{ChannelAmount, ChannelEvent, FacilitatorOp, PaymentRequiredReason};
use crate::store::{ChannelHolder, ChannelRecord, PaymentKind as Kind};

/// How long a request waits for another one holding its channel.
const BUSY_WAIT: Duration = Duration::from_secs(2);

/// How often it looks again meanwhile.
const BUSY_POLL: Duration = Duration::from_millis(20);

const CHANNEL_BUSY: &str = "invalid_batch_settlement_evm_channel_busy";
const WITHDRAWAL_PENDING: &str = "invalid_batch_settlement_evm_withdrawal_pending";
const STATE_UNAVAILABLE: &str = "invalid_batch_settlement_evm_verification_state_unavailable";
const DEPOSIT_FAILED: &str = "invalid_batch_settlement_evm_deposit_transaction_failed";
const REFUND_FAILED: &str = "invalid_batch_settlement_evm_refund_transaction_failed";
const REFUND_NO_BALANCE: &str = "invalid_batch_settlement_evm_refund_no_balance";
const REFUND_AMOUNT_INVALID: &str = "invalid_batch_settlement_evm_refund_amount_invalid";
const DEPOSIT_BELOW_MIN: &str = "invalid_batch_settlement_evm_deposit_below_min_deposit";
const CLAIM_REFUSED: &str = "invalid_batch_settlement_evm_claim_simulation_failed";

/// A channel payment held for one request: the channel's record is held by it alone.
#[derive(Debug)]
pub(crate) struct ChannelHold {
    /// Keeps the hold this process's own while the request runs.
    live: channels::Live,
    /// The channel id, `0x`-hex.
    id: String,
    /// The record as stored, held by `owner`.
    record: ChannelRecord,
    owner: String,
    payload: BatchPayload,
    checked: CheckedBatch,
    /// What this request charges: the price, or its share for the bytes a range serves.
    charge: u128,
    offered: Offered,
    network: String,
    payer: String,
    /// The key that signed the voucher (the payer authorizer): what failures count against.
    signer: String,
    client: Option<IpAddr>,
}

/// A channel payment settled: the response may go out; its charge is committed once it did.
#[derive(Debug)]
pub(crate) struct ChannelSettled {
    /// Keeps the hold this process's own until the charge is committed.
    live: channels::Live,
    id: String,
    owner: String,
    charge: u128,
    /// The body length the charge is for.
    body: u64,
    max: u128,
    signature: String,
    payer: String,
    header: String,
    /// The record is final already (a refund).
    done: bool,
}

fn refused(gate: &Gate, offered: &Offered, code: &str, message: &str) -> PaymentRefusal {
    tracing::info!(code, "channel payment refused");
    gate.metrics.record_channel(ChannelEvent::Refused);
    required(offered, PaymentRequiredReason::Invalid, code, message)
}

/// A record for a channel hb402 has not seen: everything is read from the chain.
fn unseen(payload: &BatchPayload) -> ChannelRecord {
    ChannelRecord {
        version: 0,
        config: payload.parts().0.clone(),
        charged: 0,
        signed_max: 0,
        signature: String::new(),
        balance: 0,
        total_claimed: 0,
        withdraw_requested_at: 0,
        refund_nonce: 0,
        synced_at: 0,
        last_request_at: 0,
        refund_tried_at: 0,
        claim_refused_at: 0,
        holder: None,
    }
}

/// Checks a channel payment and holds its channel for this request.
pub(super) async fn hold(
    gate: &Gate,
    decoded: &DecodedPayment,
    offer: Offer,
    offered: Offered,
    client: Option<IpAddr>,
) -> Result<ChannelHold, PaymentRefusal> {
    let Some(channels) = gate.channels.as_ref() else {
        let message = "channel payments are not configured";
        return Err(refused(gate, &offered, "unexpected_verify_error", message));
    };
    let (terms, payload, signed) = signed_payload(gate, decoded, &offer, &offered)?;
    // The signer is known now (its signature verified): a signer or client whose channel
    // payments keep failing is refused for a while without reading the chain for it. Failures
    // count against the key that signed, not the payer a configuration names (anyone can name
    // someone else as the payer of a channel they authorize).
    let payer = signed.config.payer.to_checksum(None);
    let signer = match signed.config.payerAuthorizer {
        // A contract account signs as the payer (EIP-1271).
        a if a.is_zero() => payer.clone(),
        a => a.to_checksum(None),
    };
    if let Err(retry_after) = gate.limiter.check(&signer, client) {
        return Err(PaymentRefusal::Throttled { retry_after });
    }
    confirm_voucher(gate, channels, &signed.on_chain, &offered, client).await?;
    let failed = |code: &str, message: &str| {
        gate.limiter.failed(&signer, client);
        refused(gate, &offered, code, message)
    };
    let id = format!("{:#x}", signed.channel);
    let owner = random_owner();
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        // Listening before looking: a channel let go of meanwhile wakes this request.
        let released = channels.released();
        let wait = |released| async {
            if Instant::now() >= deadline {
                return Err(busy(gate, &offered));
            }
            let _ = tokio::time::timeout(BUSY_POLL, released).await;
            Ok(())
        };
        // When hb402 is the store's only writer, requests take turns on a channel in memory.
        let local = match channels.hold_locally(&id, &owner) {
            Ok(local) => local,
            Err(channels::Busy) => {
                wait(released).await?;
                continue;
            }
        };
        let stored = channels
            .get(gate.store.as_ref(), &id)
            .await
            .map_err(PaymentRefusal::Unavailable)?;
        let now = now_secs();
        let held = stored.as_ref().and_then(|r| r.holder.as_ref());
        if held.is_some_and(|h| h.until > now || channels.is_live(&h.owner)) {
            drop(local);
            wait(released).await?;
            continue;
        }
        let asked = Asked {
            payload: &payload,
            signed: &signed,
            terms: &terms,
            offer: &offer,
            offered: &offered,
            id: &id,
            client,
        };
        let (record, stale, checked) =
            match check_against(gate, channels, &asked, stored.as_ref(), now).await {
                Ok(found) => found,
                Err(why) => return Err(counted(gate, why, (&asked, stored.as_ref()), &failed)),
            };
        let (ids, held) = ((id.as_str(), owner.as_str()), local.is_some());
        let checked_record = (record, stale, checked.deposit > 0);
        if let Some(mine) = take(gate, ids, held, stored.as_ref(), checked_record, now).await? {
            return Ok(ChannelHold {
                live: match local {
                    Some(local) => local,
                    None => channels.live_in_store(gate.store.clone(), &id, &owner),
                },
                id,
                record: mine,
                owner,
                payer: payer.clone(),
                signer: signer.clone(),
                payload,
                checked,
                charge: charge_for(terms.amount, offered.served),
                network: offer.v2.network.clone(),
                offered,
                client,
            });
        }
    }
}

/// The offer's terms, the payload, and what its signature proves (no state read): a payload
/// not signed by its channel's payer is refused here.
fn signed_payload(
    gate: &Gate,
    decoded: &DecodedPayment,
    offer: &Offer,
    offered: &Offered,
) -> Result<(batch::BatchTerms, BatchPayload, CheckedBatch), PaymentRefusal> {
    let Some(terms) = offer.batch_terms() else {
        let message = "channel payments are not configured";
        return Err(refused(gate, offered, "unexpected_verify_error", message));
    };
    let Ok(payload) = BatchPayload::deserialize(decoded.payload.payload()) else {
        let message = "the batch-settlement payload could not be read";
        return Err(refused(gate, offered, BatchReason::Payload.code(), message));
    };
    let message = "the voucher is not valid for this offer";
    let signed = batch::check_signed(&payload, &terms)
        .map_err(|r| refused(gate, offered, r.code(), message))?;
    Ok((terms, payload, signed))
}

/// The 402 of a request whose channel another request held for longer than it waits.
fn busy(gate: &Gate, offered: &Offered) -> PaymentRefusal {
    gate.metrics.record_channel(ChannelEvent::Busy);
    let message = "another request is paying on this channel; try again";
    required(
        offered,
        PaymentRequiredReason::Replay,
        CHANNEL_BUSY,
        message,
    )
}

/// Takes channel `id` for `owner` from the record `stored` it was checked against: the record
/// as this request holds it, or `None` if the record changed meanwhile (look again). A hold
/// kept in this process (`local`) needs no write unless the chain was read (`stale`) or a lapsed
/// holder is to be cleared; a hold kept in the store names its owner and lapse time there. A
/// channel the chain has nothing in, paid by a `deposit`, is not stored yet (version 0): only
/// once its deposit landed, so that deposits that fail (anyone can send them, from fresh keys)
/// leave nothing behind.
async fn take(
    gate: &Gate,
    (id, owner): (&str, &str),
    local: bool,
    stored: Option<&ChannelRecord>,
    (checked, stale, deposit): (ChannelRecord, bool, bool),
    now: u64,
) -> Result<Option<ChannelRecord>, PaymentRefusal> {
    let Some(channels) = &gate.channels else {
        return Ok(None);
    };
    if stored.is_none() && checked.balance == 0 && deposit {
        return Ok(Some(ChannelRecord {
            version: 0,
            ..checked
        }));
    }
    if let Some(stored) = stored.filter(|s| local && !stale && s.holder.is_none()) {
        return Ok(Some(stored.clone()));
    }
    let mut mine = checked;
    mine.version = stored.map_or(1, |r| r.version + 1);
    mine.holder = (!local).then(|| ChannelHolder {
        owner: owner.to_owned(),
        until: now + channels.config.hold.as_secs(),
    });
    let taken = channels
        .swap(gate.store.as_ref(), id, stored, &mine)
        .await
        .map_err(PaymentRefusal::Unavailable)?;
    Ok(taken.then_some(mine))
}

/// Wakes the requests of this process waiting for a channel.
fn let_go(gate: &Gate) {
    if let Some(channels) = &gate.channels {
        channels.let_go();
    }
}

/// A channel payment being checked.
struct Asked<'a> {
    payload: &'a BatchPayload,
    signed: &'a CheckedBatch,
    terms: &'a batch::BatchTerms,
    offer: &'a Offer,
    offered: &'a Offered,
    id: &'a str,
    client: Option<IpAddr>,
}

/// Why a channel payment's state checks refused it.
enum Refused {
    /// The payer's doing (counted against its failure budget): the code and a message.
    Payers(&'static str, &'static str),
    /// The voucher is not the one the channel's state calls for: the corrective 402.
    Mismatch(PaymentRefusal),
    /// Anything else, answered as it is.
    Other(PaymentRefusal),
}

/// The answer to a payment [`check_against`] refused, counted against whom it is due:
/// `failed` (the signer and the client) for the payer's doing, but the client only for a
/// voucher no newer than one the payer signed before (claimed vouchers are public: anyone may
/// send them) and for a contract payer's mismatch (its signature check cost a call).
fn counted(
    gate: &Gate,
    why: Refused,
    (asked, stored): (&Asked<'_>, Option<&ChannelRecord>),
    failed: &dyn Fn(&str, &str) -> PaymentRefusal,
) -> PaymentRefusal {
    let replayed = stored.is_some_and(|r| asked.signed.max_claimable <= r.signed_max);
    let contract = !asked.signed.on_chain.is_empty();
    match why {
        Refused::Payers(code, message) if replayed => {
            gate.limiter.failed_client(asked.client);
            refused(gate, asked.offered, code, message)
        }
        Refused::Payers(code, message) => failed(code, message),
        Refused::Mismatch(refusal) => {
            if contract {
                gate.limiter.failed_client(asked.client);
            }
            refusal
        }
        Refused::Other(refusal) => refusal,
    }
}

/// [`confirm`] of a contract payer's voucher signature: it is the payer's once the chain says
/// so; until then a refusal counts against the client only (anyone can name a contract as
/// payer).
async fn confirm_voucher(
    gate: &Gate,
    channels: &channels::Channels,
    checks: &[batch::ChainSignature],
    offered: &Offered,
    client: Option<IpAddr>,
) -> Result<(), PaymentRefusal> {
    if let Some(first) = checks.first()
        && channels.payer_refused(first.signer)
    {
        gate.limiter.failed_client(client);
        let message = "this payer's code refused a claim lately; it pays for no channel for now";
        return Err(refused(gate, offered, CLAIM_REFUSED, message));
    }
    match confirm(gate, channels, checks, offered).await {
        Ok(()) => Ok(()),
        Err(Refused::Payers(code, message)) => {
            gate.limiter.failed_client(client);
            Err(refused(gate, offered, code, message))
        }
        Err(Refused::Mismatch(refusal) | Refused::Other(refusal)) => Err(refusal),
    }
}

/// Has the chain confirm `checks`, a contract payer's signatures (EIP-1271), one call each.
async fn confirm(
    gate: &Gate,
    channels: &channels::Channels,
    checks: &[batch::ChainSignature],
    offered: &Offered,
) -> Result<(), Refused> {
    for check in checks {
        match channels.accepts(check).await {
            Ok(true) => {}
            Ok(false) => {
                let message = "the signature is not the payer's";
                return Err(Refused::Payers(check.reason.code(), message));
            }
            Err(e) => {
                tracing::warn!(error = %e, "a contract signature could not be checked");
                let message = "the payer's signature could not be checked; try again";
                return Err(Refused::Other(refused(
                    gate,
                    offered,
                    STATE_UNAVAILABLE,
                    message,
                )));
            }
        }
    }
    Ok(())
}

/// The checks of a payment against its channel's record (`stored`, synced from the chain when
/// unseen, older than `sync_seconds` or under a pending withdrawal): the record as it should be
/// stored, whether it was synced, and the payload checked.
async fn check_against(
    gate: &Gate,
    channels: &channels::Channels,
    asked: &Asked<'_>,
    stored: Option<&ChannelRecord>,
    now: u64,
) -> Result<(ChannelRecord, bool, CheckedBatch), Refused> {
    let mut record = stored.cloned().unwrap_or_else(|| unseen(asked.payload));
    // A record taken over from a holder that lapsed (an instance that stopped mid-request) may
    // lag what that request did on chain (a refund, a deposit): read the chain again.
    let stale = stored.is_none_or(|r| r.holder.is_some())
        || now.saturating_sub(record.synced_at) >= channels.config.sync.as_secs()
        || record.withdraw_requested_at != 0;
    if stale && let Err(e) = channels.sync(&mut record, asked.signed.channel).await {
        tracing::warn!(error = %e, channel = %asked.id, "channel state could not be read");
        let message = "the channel's state could not be read; try again";
        // (The chain's fault: nobody's failure budget.)
        let refusal = refused(gate, asked.offered, STATE_UNAVAILABLE, message);
        return Err(Refused::Other(refusal));
    }
    let refund = matches!(asked.payload, BatchPayload::Refund { .. });
    if record.withdraw_requested_at != 0 && !refund {
        let message = "the payer started a withdrawal from this channel; it takes no more vouchers";
        return Err(Refused::Payers(WITHDRAWAL_PENDING, message));
    }
    // A refund would claim the unclaimed charges first, which the chain refuses.
    let claim_needed = !refund || record.charged > record.total_claimed;
    if record.claim_refused_at != 0 && claim_needed {
        // Content served on a voucher the chain will not pay is given away: whatever made
        // hb402 and the contract disagree, the channel stops taking vouchers.
        let message = "the chain refuses this channel's vouchers; it takes no more";
        // (The channel's state, not this payment's fault: nobody's failure budget.)
        return Err(Refused::Other(refused(
            gate,
            asked.offered,
            CLAIM_REFUSED,
            message,
        )));
    }
    let view = ChannelView {
        charged: record.charged,
        balance: record.balance,
        total_claimed: record.total_claimed,
    };
    let checked =
        match batch::check_state(asked.payload, asked.signed.clone(), asked.terms, &view, now) {
            Ok(checked) => checked,
            Err(r @ (BatchReason::CumulativeMismatch | BatchReason::CumulativeBelowClaimed)) => {
                let presented = asked.signed.max_claimable;
                let refusal = corrective(
                    gate,
                    asked.offered,
                    asked.offer,
                    (asked.id, &record),
                    presented,
                    r,
                );
                return Err(Refused::Mismatch(refusal));
            }
            Err(r) => return Err(Refused::Payers(r.code(), "the channel payment was refused")),
        };
    let min_deposit = asked
        .offer
        .batch
        .as_ref()
        .map_or(0, |b| u128::try_from(b.min_deposit).unwrap_or(u128::MAX));
    if checked.deposit > 0 && checked.deposit < min_deposit {
        let message = "the deposit is smaller than the offer's minDeposit";
        return Err(Refused::Payers(DEPOSIT_BELOW_MIN, message));
    }
    // A contract payer's deposit authorization (its voucher's was confirmed already).
    let deposit_checks = checked
        .on_chain
        .get(asked.signed.on_chain.len()..)
        .unwrap_or(&[]);
    confirm(gate, channels, deposit_checks, asked.offered).await?;
    Ok((record, stale, checked))
}

/// What a read charges of its price: all of it, or for a range its share of the bytes the
/// price is for, rounded up (many small ranges never cost less than the whole).
fn charge_for(price: u128, served: Option<(u64, u64)>) -> u128 {
    match served {
        Some((served, total)) if served < total => price
            .checked_mul(u128::from(served))
            .map_or(price, |p| p.div_ceil(u128::from(total))),
        _ => price,
    }
}

/// The channel's figures as the payment response and the corrective 402 carry them.
fn channel_state(id: &str, record: &ChannelRecord, charged: u128) -> Value {
    json!({
        "channelId": id,
        "balance": record.balance.to_string(),
        "totalClaimed": record.total_claimed.to_string(),
        "withdrawRequestedAt": record.withdraw_requested_at,
        "refundNonce": record.refund_nonce.to_string(),
        "chargedCumulativeAmount": charged.to_string(),
    })
}

/// The 402 for a voucher whose cumulative amount is not the channel's: its offer carries the
/// channel's state and the latest voucher, from which the payer's client resynchronises.
///
/// The latest voucher is also a refund request for the channel (a refund payload is a voucher
/// for exactly what was charged), so it is handed out only against a voucher above what was
/// claimed on chain (`presented`): one only the payer's client has, never one read from the
/// calldata of a claim. A client whose voucher is not above it resets to the chain's figures.
fn corrective(
    gate: &Gate,
    offered: &Offered,
    offer: &Offer,
    (id, record): (&str, &ChannelRecord),
    presented: u128,
    reason: BatchReason,
) -> PaymentRefusal {
    gate.metrics.record_channel(ChannelEvent::Corrected);
    let mut offered = offered.clone();
    for o in offered.offers.iter_mut().filter(|o| o.v2 == offer.v2) {
        let extra = &mut o.v2.extra;
        extra.insert(
            "channelState".into(),
            channel_state(id, record, record.charged),
        );
        if !record.signature.is_empty() && presented > record.total_claimed {
            let voucher = json!({
                "signedMaxClaimable": record.signed_max.to_string(),
                "signature": record.signature,
            });
            extra.insert("voucherState".into(), voucher);
        }
    }
    let message = "the voucher's cumulative amount is not the channel's; this answer carries the channel's state";
    required(
        &offered,
        PaymentRequiredReason::Invalid,
        reason.code(),
        message,
    )
}

impl ChannelHold {
    /// The payer's address.
    pub(crate) fn payer(&self) -> &str {
        &self.payer
    }

    /// The client's address.
    pub(crate) fn client(&self) -> Option<IpAddr> {
        self.client
    }

    /// Whether it asks for the channel's refund.
    pub(crate) fn is_refund(&self) -> bool {
        matches!(self.payload, BatchPayload::Refund { .. })
    }

    /// Settles it before the response goes out: a deposit lands on chain, a refund is paid, a
    /// voucher needs nothing (it is charged once the response went out whole).
    pub(crate) async fn settle(self, gate: &Gate) -> Result<ChannelSettled, PaymentRefusal> {
        match &self.payload {
            BatchPayload::Voucher { .. } => Ok(self.charging(String::new(), None)),
            BatchPayload::Deposit { .. } => self.deposit(gate).await,
            BatchPayload::Refund { .. } => self.refund(gate).await,
        }
    }

    /// The settled payment of a read: the response header says what it will charge.
    fn charging(self, transaction: String, deposited: Option<u128>) -> ChannelSettled {
        let charged = self.record.charged + self.charge;
        let response = json!({
            "success": true,
            "payer": self.payer,
            "transaction": transaction,
            "network": self.network,
            "amount": deposited.map(|d| d.to_string()).unwrap_or_default(),
            "extra": {
                "channelState": channel_state(&self.id, &self.record, charged),
                "chargedAmount": self.charge.to_string(),
            },
        });
        let (_, voucher) = self.payload.parts();
        ChannelSettled {
            live: self.live,
            header: encode_header(&response),
            charge: self.charge,
            body: self.offered.served.map_or(0, |(served, _)| served),
            max: self.checked.max_claimable,
            signature: voucher.signature.to_ascii_lowercase(),
            id: self.id,
            owner: self.owner,
            payer: self.payer,
            done: false,
        }
    }

    async fn deposit(mut self, gate: &Gate) -> Result<ChannelSettled, PaymentRefusal> {
        let (Some(channels), BatchPayload::Deposit { deposit, .. }) =
            (gate.channels.as_ref(), &self.payload)
        else {
            return Err(self.fail(gate, DEPOSIT_FAILED).await);
        };
        let (Some(auth), amount) = (
            &deposit.authorization.erc3009_authorization,
            self.checked.deposit,
        ) else {
            return Err(self.fail(gate, DEPOSIT_FAILED).await);
        };
        let signature = alloy::primitives::hex::decode(auth.signature.trim_start_matches("0x"))
            .unwrap_or_default();
        let started = Instant::now();
        let sent = channels
            .deposit(
                &self.checked.config,
                (amount, &self.payload, !self.checked.on_chain.is_empty()),
                auth,
                signature,
            )
            .await;
        gate.metrics
            .observe_facilitator(FacilitatorOp::Settle, started.elapsed());
        let Sent::Mined(tx) = sent else {
            tracing::warn!(?sent, payer = %self.payer, "deposit not made");
            if matches!(sent, Sent::Reverts | Sent::Reverted) {
                // The chain refuses it (no funds, a bad authorization): the payer's doing.
                gate.limiter.failed(&self.signer, self.client);
                return Err(self
                    .fail_as(gate, DEPOSIT_FAILED, ChannelEvent::Refused)
                    .await);
            }
            return Err(self.fail(gate, DEPOSIT_FAILED).await);
        };
        gate.metrics.record_channel(ChannelEvent::Deposit);
        gate.metrics
            .record_channel_amount(ChannelAmount::Deposited, amount);
        let mut moved = Moved::on(Kind::ChannelDeposit, &self.id, &self.checked.config, amount);
        moved.resource.clone_from(&self.offered.resource.url);
        moved.enter(gate, tx).await;
        // The balance as the chain has it now (another deposit may have landed meanwhile).
        let mut now = self.record.clone();
        if channels.sync(&mut now, self.checked.channel).await.is_err() {
            now.balance = now.balance.saturating_add(amount);
        }
        let (owner, local) = (self.owner.clone(), self.live.local());
        if self.record.version == 0 && self.store_first(gate, &now).await {
            return Ok(self.charging(tx.to_string(), Some(amount)));
        }
        channels::update(gate, &self.id, |r| {
            let mine = channels::held_by(r, &owner, local);
            if mine {
                r.balance = r.balance.max(now.balance);
                r.synced_at = now.synced_at;
            }
            mine
        })
        .await;
        self.record.balance = self.record.balance.max(now.balance);
        Ok(self.charging(tx.to_string(), Some(amount)))
    }

    /// Stores the record of a channel whose first deposit just landed (`now`: its figures on
    /// chain), held by this request; `false` if another request stored one meanwhile.
    async fn store_first(&mut self, gate: &Gate, now: &ChannelRecord) -> bool {
        let Some(channels) = &gate.channels else {
            return false;
        };
        let mut first = self.record.clone();
        (first.version, first.balance, first.synced_at) = (1, now.balance, now.synced_at);
        first.holder = (!self.live.local()).then(|| ChannelHolder {
            owner: self.owner.clone(),
            until: now_secs() + channels.config.hold.as_secs(),
        });
        let stored = channels.swap(gate.store.as_ref(), &self.id, None, &first);
        if !matches!(stored.await, Ok(true)) {
            return false;
        }
        self.record = first;
        true
    }

    async fn refund(self, gate: &Gate) -> Result<ChannelSettled, PaymentRefusal> {
        let Some(channels) = gate.channels.as_ref() else {
            return Err(self.fail(gate, REFUND_FAILED).await);
        };
        let record = &self.record;
        let remainder = record.balance.saturating_sub(record.charged);
        let amount = match self.checked.refund {
            _ if remainder == 0 => return Err(self.fail(gate, REFUND_NO_BALANCE).await),
            // Only whole refunds: a refund payload is not authenticated beyond the latest
            // voucher (which becomes public once claimed), so a partial one could be repeated
            // by anyone, each a transaction hb402 pays for. After a whole refund there is
            // nothing left to refund until the payer deposits again.
            Some(asked) if asked != remainder => {
                return Err(self.fail(gate, REFUND_AMOUNT_INVALID).await);
            }
            Some(_) | None => remainder,
        };
        // What was charged and not claimed yet is claimed in the same transaction, with the
        // payer's own refund voucher (its ceiling is exactly what was charged).
        let claim = (record.charged > record.total_claimed).then(|| ClaimRow {
            config: self.checked.config.clone(),
            max: self.checked.max_claimable,
            signature: self.checked.signature.clone(),
            total: record.charged,
        });
        let voucher = (
            self.checked.max_claimable,
            self.checked.signature.as_slice(),
        );
        let sent = channels
            .refund(
                &self.checked.config,
                (amount, record.refund_nonce),
                voucher,
                claim,
            )
            .await;
        let Sent::Mined(tx) = sent else {
            tracing::warn!(?sent, payer = %self.payer, "refund not made");
            return Err(self.refund_failed(gate, &sent).await);
        };
        let newly_claimed = record.charged - record.total_claimed;
        let (charged, max) = (record.charged, self.checked.max_claimable);
        let signature = self.payload.parts().1.signature.to_ascii_lowercase();
        let (owner, local) = (self.owner.clone(), self.live.local());
        let before = channels::update(gate, &self.id, |r| {
            if !channels::held_by(r, &owner, local) {
                return false;
            }
            r.holder = None;
            r.total_claimed = r.total_claimed.max(charged);
            r.balance = r.balance.saturating_sub(amount);
            r.refund_nonce += 1;
            r.signed_max = max;
            r.signature = signature.clone();
            true
        })
        .await;
        let_go(gate);
        if before.is_none() {
            tracing::error!(channel = %self.id, "refund paid but the channel's record was not updated; the next sync corrects it");
        }
        let channel = (self.id.as_str(), &self.checked.config);
        channels::refunded(gate, channel, (newly_claimed, amount), tx).await;
        let mut after = self.record.clone();
        after.balance = after.balance.saturating_sub(amount);
        after.total_claimed = charged;
        after.refund_nonce += 1;
        let response = json!({
            "success": true,
            "transaction": tx.to_string(),
            "network": self.network,
            "payer": self.payer,
            "amount": amount.to_string(),
            "extra": { "channelState": channel_state(&self.id, &after, charged) },
        });
        Ok(ChannelSettled {
            live: self.live,
            header: encode_header(&response),
            charge: 0,
            body: 0,
            max,
            signature,
            id: self.id,
            owner: self.owner,
            payer: self.payer,
            done: true,
        })
    }

    /// Gives the channel back and says why nothing was charged.
    async fn fail(self, gate: &Gate, code: &str) -> PaymentRefusal {
        let event = match code {
            REFUND_NO_BALANCE | REFUND_AMOUNT_INVALID => ChannelEvent::Refused,
            _ => ChannelEvent::ChainFailure,
        };
        self.fail_as(gate, code, event).await
    }

    /// The refusal of a refund the chain refused (`sent`), counted against the client (a
    /// refund's voucher is the latest, public once claimed: anyone may send it). A contract
    /// payer whose refund claimed charges is taken to refuse that claim: its channel takes no
    /// more vouchers nor refunds that claim, and its claim is tried again only later, not on
    /// every request.
    async fn refund_failed(self, gate: &Gate, sent: &Sent) -> PaymentRefusal {
        if matches!(sent, Sent::Reverts | Sent::Reverted) {
            gate.limiter.failed_client(self.client);
            let claimed = self.record.charged > self.record.total_claimed;
            if claimed && self.checked.config.payerAuthorizer.is_zero() {
                if let Some(channels) = &gate.channels {
                    channels.refuse_payer(self.checked.config.payer);
                }
                let now = now_secs();
                channels::update(gate, &self.id, |r| {
                    r.claim_refused_at = now;
                    true
                })
                .await;
            }
        }
        self.fail(gate, REFUND_FAILED).await
    }

    /// [`Self::fail`], counted as `event`.
    async fn fail_as(self, gate: &Gate, code: &str, event: ChannelEvent) -> PaymentRefusal {
        gate.metrics.record_channel(event);
        let message = match code {
            REFUND_NO_BALANCE => "the channel holds nothing that was not charged",
            REFUND_AMOUNT_INVALID => {
                "only a whole refund of what the channel holds uncharged is paid"
            }
            _ => "the transaction could not be made; nothing was charged",
        };
        let refusal = required(
            &self.offered,
            PaymentRequiredReason::SettleFailed,
            code,
            message,
        );
        self.release(gate).await;
        refusal
    }

    /// Gives the channel back: nothing was charged by this request.
    pub(crate) async fn release(self, gate: &Gate) {
        // A hold kept in this process only is let go of when `live` drops.
        if !self.live.local() {
            let owner = self.owner;
            channels::update(gate, &self.id, |r| {
                let mine = channels::held_by(r, &owner, false);
                if mine {
                    r.holder = None;
                }
                mine
            })
            .await;
        }
        drop(self.live);
        let_go(gate);
    }
}

impl ChannelSettled {
    /// The response header carrying the settlement.
    pub(crate) fn header(&self) -> (&'static str, &str) {
        ("payment-response", &self.header)
    }

    /// The payer's address.
    pub(crate) fn payer(&self) -> &str {
        &self.payer
    }

    /// The channel id.
    pub(crate) fn channel_id(&self) -> &str {
        &self.id
    }

    /// Commits the charge for what went out (all of it for a whole response, its share of the
    /// body for one cut short, nothing when not even the head went out) and gives the channel
    /// back.
    pub(crate) async fn finish(self, gate: &Gate, delivery: super::Delivery) {
        if self.done {
            return;
        }
        let now = now_secs();
        let ChannelSettled {
            live,
            id,
            owner,
            charge,
            body,
            max,
            signature,
            ..
        } = self;
        let charge = match delivery {
            super::Delivery::Whole => charge,
            super::Delivery::None => 0,
            super::Delivery::Head { body_bytes } => charge_for(charge, Some((body_bytes, body))),
        };
        let charges = charge > 0;
        let local = live.local();
        if local && !charges {
            // Nothing to write: the store names no holder of this channel.
            drop(live);
            let_go(gate);
            gate.metrics.record_channel(ChannelEvent::Uncharged);
            return;
        }
        let before = channels::update(gate, &id, |r| {
            if !channels::held_by(r, &owner, local) {
                return false;
            }
            r.holder = None;
            if charges {
                r.charged += charge;
                r.signed_max = max;
                r.signature = signature.clone();
                r.last_request_at = now;
            }
            true
        })
        .await;
        drop(live);
        let_go(gate);
        match (before, charges) {
            (Some(_), true) => {
                gate.metrics.record_channel(ChannelEvent::Voucher);
                gate.metrics
                    .record_channel_amount(ChannelAmount::Charged, charge);
            }
            (Some(_), false) => gate.metrics.record_channel(ChannelEvent::Uncharged),
            (None, _) => {
                tracing::error!(channel = %id, "the channel was taken over before the charge was committed; nothing was charged");
                gate.metrics.record_channel(ChannelEvent::Uncharged);
            }
        }
    }
}
