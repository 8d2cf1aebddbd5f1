//! `batch-settlement` channels on chain: what hb402 reads of them and the transactions it sends
//! (deposits, claims, `settle`, cooperative refunds), and the sweeper that claims charged
//! vouchers and settles them on a schedule and at shutdown.
//!
//! Claims are signed by the receiver authorizer (`claimWithSignature`) and sent by the operator
//! key of local settlement, like every other transaction hb402 sends, or by a facilitator
//! ([`link`]). The sweeper claims every
//! channel with unclaimed charges each `claim_interval`, which the configuration bounds to a
//! third of the withdraw delay: a timed withdrawal a payer starts cannot finalize before what
//! hb402 charged on its channel is claimed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::SignerSync as _;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use async_trait::async_trait;
use hb402_x402::FacilitatorError;
use hb402_x402::batch::{
    BATCH_SETTLEMENT, ChannelConfig, ChannelVoucher, ClaimEntry, ERC3009_DEPOSIT_COLLECTOR,
    Erc3009DepositJson, IBatchSettlement, VoucherClaim, claim_batch_digest, erc3009_collector_data,
    refund_digest,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::BatchConfig;
use crate::facilitator::Sent;
use crate::gate::Gate;
use crate::items::now_secs;
use crate::metrics::{ChannelAmount, ChannelEvent};
use crate::store::{ChannelRecord, NewPayment, PaymentKind, PaymentState, Store, StoreError};

mod link;

pub(crate) use link::{Link, ViaFacilitator};
use link::{Purpose, claim_payload, refund_payload};

/// Vouchers claimed per transaction at most.
const CLAIMS_PER_TRANSACTION: usize = 100;

/// Claim transactions per sweep at most (the next sweep goes on).
const CLAIM_ROUNDS: usize = 20;

/// The most gas a transaction of one channel may use (a deposit, a contract payer's claim, a
/// refund): they may run code of the payer's (EIP-1271), which can spend more once mined than
/// when simulated. Enough for a claim and a wallet's signature check many times over.
const ONE_CHANNEL_GAS: u64 = 500_000;

/// How long after the chain refused a contract payer's claim it is tried again: its code may
/// refuse it on purpose, and each try costs gas.
const CONTRACT_CLAIM_RETRY_SECONDS: u64 = 3600;

/// How long a contract payer whose code refused a claim (or a refund's claim) is refused as
/// payer of any channel: its code showed it accepts vouchers it then refuses to pay.
const REFUSED_PAYER_TTL: Duration = Duration::from_secs(86_400);

/// Contract payers remembered as refused at most (the oldest are forgotten beyond).
const REFUSED_PAYERS: u64 = 100_000;

/// Read-modify-write attempts on one channel record before giving up.
const UPDATE_ATTEMPTS: usize = 8;

impl Memory {
    /// Drops the records the store has as they are here.
    fn forget_written(&mut self) {
        let unwritten = &self.unwritten;
        self.records.retain(|id, _| unwritten.contains(id));
    }
}

/// The chain side of channels: reads, and transactions through local settlement.
pub struct Channels {
    /// The configuration.
    pub(crate) config: BatchConfig,
    authorizer: PrivateKeySigner,
    link: Link,
    /// Reads of the chain (channel state, a contract payer's signature checks), in both modes.
    reads: crate::chain::ChainProbe,
    /// Contract payers whose code refused a claim: they pay for no channel for a while.
    refused_payers: moka::sync::Cache<Address, ()>,
    chain_id: u64,
    /// Woken whenever this process lets go of a channel, so that a request waiting for it
    /// goes on at once (other instances of a fleet are looked at again after a short wait).
    released: tokio::sync::Notify,
    /// When no other process writes the store (redb): the channel records this process read or
    /// changed, the authority for them. A change is a compare-and-swap here, written to the
    /// store behind it ([`Channels::write_behind`]): a voucher read neither reads nor waits for
    /// the store.
    memory: Option<std::sync::Mutex<Memory>>,
    /// Woken when a record changed in memory only.
    changed: tokio::sync::Notify,
    /// The id the last claim sweep stopped after: the next one goes on from there, so channels
    /// whose claims keep failing never hold up those listed after them.
    claim_cursor: std::sync::Mutex<String>,
    /// The owners of the channel holds this process's requests have now. A hold past its
    /// `until` is taken over only when its owner is not one of them: a request of this process
    /// that streams for longer than `hold_seconds` keeps its channel.
    live: std::sync::Mutex<std::collections::HashSet<String>>,
    /// When hb402 is the store's only writer: the channels its requests hold, by id (the
    /// holder is then kept here, not written to the store).
    local_holds: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// A channel hold of a request of this process; dropping it ends it.
#[derive(Debug)]
pub(crate) struct Live {
    channels: Arc<Channels>,
    owner: String,
    /// The channel, for a hold kept in this process only (not in the store).
    local: Option<String>,
}

impl Live {
    /// Whether the hold is kept in this process only (the store's record names no holder).
    pub(crate) fn local(&self) -> bool {
        self.local.is_some()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.channels.live_owners().remove(&self.owner);
        if let Some(id) = &self.local {
            let mut holds = self.channels.holds();
            if holds.get(id) == Some(&self.owner) {
                holds.remove(id);
            }
        }
    }
}

/// Another request of this process holds the channel.
#[derive(Debug)]
pub(crate) struct Busy;

/// Records kept in memory at most (those written to the store are dropped beyond).
const CACHED_CHANNELS: usize = 100_000;

/// How long a change stays in memory only, gathering others, before it is written.
pub(crate) const WRITE_BEHIND: Duration = Duration::from_millis(50);

/// How long after a failed write of channel records they are written again.
const WRITE_RETRY: Duration = Duration::from_secs(1);

/// The channel records of a process that is the store's only writer.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    records: std::collections::HashMap<String, ChannelRecord>,
    /// The ids whose record here is newer than the store's.
    unwritten: std::collections::HashSet<String>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("receiver_authorizer", &self.authorizer.address())
            .field("chain_id", &self.chain_id)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

/// One voucher to claim: its channel, ceiling and signature, and the channel's new total.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRow {
    pub(crate) config: ChannelConfig,
    pub(crate) max: u128,
    pub(crate) signature: Vec<u8>,
    pub(crate) total: u128,
}

impl Channels {
    /// Channels on `config.chain_id`, reaching it through `link`.
    ///
    /// `sole_writer`: no other process writes the store's channel records (an embedded file).
    pub(crate) fn new(
        config: BatchConfig,
        (link, reads): (Link, crate::chain::ChainProbe),
        sole_writer: bool,
    ) -> Result<Self, FacilitatorError> {
        let authorizer: PrivateKeySigner =
            String::from_utf8_lossy(config.receiver_authorizer_key.expose())
                .trim()
                .parse()
                .map_err(|_| FacilitatorError::Unsupported("invalid receiver authorizer".into()))?;
        Ok(Channels {
            chain_id: config.chain_id,
            config,
            authorizer,
            link,
            reads,
            refused_payers: moka::sync::Cache::builder()
                .max_capacity(REFUSED_PAYERS)
                .time_to_live(REFUSED_PAYER_TTL)
                .build(),
            released: tokio::sync::Notify::new(),
            memory: sole_writer.then(Default::default),
            changed: tokio::sync::Notify::new(),
            claim_cursor: std::sync::Mutex::default(),
            live: Default::default(),
            local_holds: Default::default(),
        })
    }

    fn live_owners(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn holds(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        self.local_holds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks `owner`'s hold (kept in the store) as one of this process's, until the returned
    /// value is dropped.
    pub(crate) fn live(self: &Arc<Self>, owner: &str) -> Live {
        self.live_owners().insert(owner.to_owned());
        Live {
            channels: self.clone(),
            owner: owner.to_owned(),
            local: None,
        }
    }

    /// [`Self::live`] for a hold kept in the store, which other instances of a fleet see: its
    /// lapse time is pushed back every half `hold_seconds` while the request runs, so that no
    /// other instance takes the channel over from a request still streaming.
    pub(crate) fn live_in_store(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        id: &str,
        owner: &str,
    ) -> Live {
        let live = self.live(owner);
        let (channels, id, owner) = (self.clone(), id.to_owned(), owner.to_owned());
        tokio::spawn(async move {
            let hold = channels.config.hold;
            loop {
                tokio::time::sleep(hold / 2).await;
                if !channels.is_live(&owner) || !channels.renew(store.as_ref(), &id, &owner).await {
                    return;
                }
            }
        });
        live
    }

    /// Pushes back the lapse of `owner`'s hold of channel `id`; `false` once it is not held by
    /// `owner` any more (or the store cannot say).
    async fn renew(&self, store: &dyn Store, id: &str, owner: &str) -> bool {
        let until = now_secs() + self.config.hold.as_secs();
        self.update(store, id, |r| match &mut r.holder {
            Some(holder) if holder.owner == owner => {
                holder.until = until;
                true
            }
            _ => false,
        })
        .await
        .is_some()
    }

    /// Changes channel `id`'s record with `change` (from whatever it is now); `change` returns
    /// `false` to leave it as it is. The record as it was before, once the change is stored.
    pub(crate) async fn update(
        &self,
        store: &dyn Store,
        id: &str,
        change: impl Fn(&mut ChannelRecord) -> bool,
    ) -> Option<ChannelRecord> {
        for _ in 0..UPDATE_ATTEMPTS {
            let current = match self.get(store, id).await {
                Ok(current) => current?,
                Err(e) => {
                    tracing::warn!(%id, error = %e, "channel record could not be read");
                    return None;
                }
            };
            let mut next = current.clone();
            if !change(&mut next) {
                return None;
            }
            next.version = current.version + 1;
            match self.swap(store, id, Some(&current), &next).await {
                Ok(true) => return Some(current),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%id, error = %e, "channel record could not be written");
                    return None;
                }
            }
        }
        tracing::warn!(%id, "channel record kept changing; not updated");
        None
    }

    /// When hb402 is the store's only writer, holds channel `id` for `owner` in this process
    /// (`Ok(None)`: holds are kept in the store; `Err`: another request holds it).
    pub(crate) fn hold_locally(
        self: &Arc<Self>,
        id: &str,
        owner: &str,
    ) -> Result<Option<Live>, Busy> {
        if self.memory.is_none() {
            return Ok(None);
        }
        {
            let mut holds = self.holds();
            if holds.contains_key(id) {
                return Err(Busy);
            }
            holds.insert(id.to_owned(), owner.to_owned());
        }
        self.live_owners().insert(owner.to_owned());
        Ok(Some(Live {
            channels: self.clone(),
            owner: owner.to_owned(),
            local: Some(id.to_owned()),
        }))
    }

    /// Whether `owner`'s hold belongs to a request of this process still running.
    pub(crate) fn is_live(&self, owner: &str) -> bool {
        self.live_owners().contains(owner)
    }

    fn memory(&self) -> Option<std::sync::MutexGuard<'_, Memory>> {
        let memory = self.memory.as_ref()?;
        Some(
            memory
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Channel `id`'s record.
    pub(crate) async fn get(
        &self,
        store: &dyn Store,
        id: &str,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        if let Some(record) = self.memory().and_then(|m| m.records.get(id).cloned()) {
            return Ok(Some(record));
        }
        let record = store.channel_get(id).await?;
        match (&record, self.memory()) {
            // What is in memory is newer than the store, if it got there meanwhile.
            (Some(stored), Some(mut memory)) => {
                if memory.records.len() >= CACHED_CHANNELS {
                    memory.forget_written();
                }
                let kept = memory.records.entry(id.to_owned()).or_insert_with(|| {
                    // The store's copy may predate what a previous run did just before it
                    // stopped (a refund, a claim): read from the chain again before it is used.
                    let mut loaded = stored.clone();
                    loaded.synced_at = 0;
                    loaded
                });
                Ok(Some(kept.clone()))
            }
            _ => Ok(record),
        }
    }

    /// Replaces channel `id`'s record with `new` if it is still `expected` (by version; `None`:
    /// there is none); `Ok(false)` when it is not. `new` carries a higher version.
    pub(crate) async fn swap(
        &self,
        store: &dyn Store,
        id: &str,
        expected: Option<&ChannelRecord>,
        new: &ChannelRecord,
    ) -> Result<bool, StoreError> {
        if self.memory.is_none() {
            return store.channel_swap(id, expected, Some(new)).await;
        }
        let known = self.memory().is_some_and(|m| m.records.contains_key(id));
        // Not in memory: the store has the latest (only written records are ever dropped).
        let stored = if known {
            None
        } else {
            store.channel_get(id).await?
        };
        let Some(mut memory) = self.memory() else {
            return Ok(false);
        };
        let current = memory.records.get(id).or(stored.as_ref());
        if current.map(|r| r.version) != expected.map(|r| r.version) {
            return Ok(false);
        }
        if memory.records.len() >= CACHED_CHANNELS {
            memory.forget_written();
        }
        memory.records.insert(id.to_owned(), new.clone());
        memory.unwritten.insert(id.to_owned());
        drop(memory);
        self.changed.notify_one();
        Ok(true)
    }

    /// Writes the records changed in memory since they were last written to `store`.
    pub(crate) async fn write_behind(&self, store: &dyn Store) -> Result<(), StoreError> {
        let rows: Vec<(String, ChannelRecord)> = match self.memory() {
            Some(memory) => memory
                .unwritten
                .iter()
                .filter_map(|id| Some((id.clone(), memory.records.get(id)?.clone())))
                .collect(),
            None => return Ok(()),
        };
        if rows.is_empty() {
            return Ok(());
        }
        store.channels_put(&rows).await?;
        if let Some(mut memory) = self.memory() {
            for (id, written) in &rows {
                if memory
                    .records
                    .get(id)
                    .is_some_and(|r| r.version == written.version)
                {
                    memory.unwritten.remove(id);
                }
            }
        }
        Ok(())
    }

    /// Done once a record changed in memory only.
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Whether the chain takes `check` as its signer's signature, as the contracts'
    /// `SignatureChecker` does for a contract account (EIP-1271 `isValidSignature` answering
    /// its selector), given at most [`SIGNATURE_CHECK_GAS`](crate::chain::SIGNATURE_CHECK_GAS):
    /// an account without code, or one whose check reverts or runs out of gas, does not.
    pub(crate) async fn accepts(
        &self,
        check: &hb402_x402::batch::ChainSignature,
    ) -> Result<bool, FacilitatorError> {
        self.reads
            .accepts(check.signer, check.digest, &check.signature)
            .await
            .map_err(|e| FacilitatorError::Unreachable(e.to_string()))
    }

    /// Remembers that contract payer `payer`'s code refused a claim on chain.
    pub(crate) fn refuse_payer(&self, payer: Address) {
        tracing::warn!(%payer, "a contract payer refused a claim; it pays for no channel for a day");
        self.refused_payers.insert(payer, ());
    }

    /// Whether contract payer `payer`'s code refused a claim lately.
    pub(crate) fn payer_refused(&self, payer: Address) -> bool {
        self.refused_payers.contains_key(&payer)
    }

    /// Done once this process lets go of some channel (from the moment it is made, even before
    /// it is awaited).
    pub(crate) fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }

    /// Wakes the requests waiting for a channel this process let go of.
    pub(crate) fn let_go(&self) {
        self.released.notify_waiters();
    }

    /// The chain channels live on.
    pub(crate) fn chain_id(&self) -> u64 {
        self.chain_id
    }

    async fn read<C: SolCall>(&self, call: C) -> Result<C::Return, FacilitatorError> {
        let out = self
            .reads
            .view(BATCH_SETTLEMENT, call.abi_encode().into())
            .await
            .map_err(|e| FacilitatorError::Unreachable(e.to_string()))?;
        C::abi_decode_returns(&out)
            .map_err(|e| FacilitatorError::Unreachable(format!("undecodable answer: {e}")))
    }

    /// Reads channel `id`'s figures on chain into `record`: balance, claimed total, a pending
    /// withdrawal, the refund nonce. What hb402 charged never falls below what was claimed.
    pub(crate) async fn sync(
        &self,
        record: &mut ChannelRecord,
        id: B256,
    ) -> Result<(), FacilitatorError> {
        let (channel, withdrawal, nonce) = tokio::try_join!(
            self.read(IBatchSettlement::channelsCall { channelId: id }),
            self.read(IBatchSettlement::pendingWithdrawalsCall { channelId: id }),
            self.read(IBatchSettlement::refundNonceCall { channelId: id }),
        )?;
        record.balance = channel.balance;
        record.total_claimed = record.total_claimed.max(channel.totalClaimed);
        record.charged = record.charged.max(record.total_claimed);
        record.withdraw_requested_at = withdrawal.initiatedAt.to::<u64>();
        record.refund_nonce = u128::try_from(nonce).unwrap_or(u128::MAX);
        record.synced_at = now_secs();
        Ok(())
    }

    /// Sends a deposit the payer authorized (ERC-3009 `receiveWithAuthorization` by the
    /// deposit collector); `payload`: the payer's, which a facilitator is given as it came.
    pub(crate) async fn deposit(
        &self,
        config: &ChannelConfig,
        (amount, payload, contract): (u128, &hb402_x402::batch::BatchPayload, bool),
        auth: &Erc3009DepositJson,
        signature: Vec<u8>,
    ) -> Sent {
        let (Ok(after), Ok(before)) = (
            U256::from_str_radix(&auth.valid_after, 10),
            U256::from_str_radix(&auth.valid_before, 10),
        ) else {
            return Sent::Reverts;
        };
        let call = IBatchSettlement::depositCall {
            config: config.clone(),
            amount,
            collector: ERC3009_DEPOSIT_COLLECTOR,
            collectorData: erc3009_collector_data(after, before, auth.salt, signature).into(),
        };
        if let Link::Facilitator(via) = &self.link {
            let Ok(payload) = serde_json::to_value(payload) else {
                return Sent::Reverts;
            };
            let offer = (config.receiver, config.token);
            let call = (amount, call.abi_encode().into());
            return via
                .settle(offer, call, payload, (Purpose::Deposit, contract))
                .await;
        }
        self.send(call.abi_encode(), Some(ONE_CHANNEL_GAS)).await
    }

    fn sign(&self, digest: &B256) -> Bytes {
        match self.authorizer.sign_hash_sync(digest) {
            Ok(signature) => Bytes::from(signature.as_bytes().to_vec()),
            // A local key signs any hash; an empty signature would only make the call revert.
            Err(_) => Bytes::new(),
        }
    }

    fn claim_call(&self, rows: &[ClaimRow]) -> IBatchSettlement::claimWithSignatureCall {
        let entries = rows
            .iter()
            .map(|r| ClaimEntry {
                channelId: hb402_x402::batch::channel_id(&r.config, self.chain_id),
                maxClaimableAmount: r.max,
                totalClaimed: r.total,
            })
            .collect();
        let signature = self.sign(&claim_batch_digest(entries, self.chain_id));
        let claims = rows
            .iter()
            .map(|r| VoucherClaim {
                voucher: ChannelVoucher {
                    channel: r.config.clone(),
                    maxClaimableAmount: r.max,
                },
                signature: Bytes::from(r.signature.clone()),
                totalClaimed: r.total,
            })
            .collect();
        IBatchSettlement::claimWithSignatureCall {
            claims,
            authorizerSignature: signature,
        }
    }

    /// Claims `rows` in one transaction.
    pub(crate) async fn claim(&self, rows: &[ClaimRow]) -> Sent {
        let call = self.claim_call(rows);
        match (&self.link, rows.first()) {
            (Link::Facilitator(via), Some(first)) => {
                let offer = (first.config.receiver, first.config.token);
                let payload = claim_payload(&call);
                let call = (0, call.abi_encode().into());
                let contract = rows.iter().any(|r| r.config.payerAuthorizer.is_zero());
                via.settle(offer, call, payload, (Purpose::Operator, contract))
                    .await
            }
            _ => {
                // A contract payer's claim is sent alone (its code runs in it).
                let contract = rows.iter().any(|r| r.config.payerAuthorizer.is_zero());
                let cap = contract.then_some(ONE_CHANNEL_GAS);
                self.send(call.abi_encode(), cap).await
            }
        }
    }

    /// Refunds `amount` of a channel to its payer, after claiming `claim` (what hb402 charged
    /// and has not claimed yet), in one transaction; `voucher`: the channel's latest (ceiling
    /// and signature), which a facilitator is shown.
    pub(crate) async fn refund(
        &self,
        config: &ChannelConfig,
        (amount, nonce): (u128, u128),
        voucher: (u128, &[u8]),
        claim: Option<ClaimRow>,
    ) -> Sent {
        let id = hb402_x402::batch::channel_id(config, self.chain_id);
        let nonce = U256::from(nonce);
        let refund = IBatchSettlement::refundWithSignatureCall {
            config: config.clone(),
            amount,
            nonce,
            signature: self.sign(&refund_digest(id, nonce, amount, self.chain_id)),
        };
        let claim = claim.map(|row| self.claim_call(&[row]));
        let input = match &claim {
            None => refund.abi_encode(),
            Some(claim) => IBatchSettlement::multicallCall {
                data: vec![claim.abi_encode().into(), refund.abi_encode().into()],
            }
            .abi_encode(),
        };
        if let Link::Facilitator(via) = &self.link {
            let payload = refund_payload(&refund, id, voucher, claim.as_ref());
            let offer = (config.receiver, config.token);
            let call = (0, input.into());
            let contract = config.payerAuthorizer.is_zero();
            return via
                .settle(offer, call, payload, (Purpose::Operator, contract))
                .await;
        }
        self.send(input, Some(ONE_CHANNEL_GAS)).await
    }

    /// Sweeps what was claimed for `receiver` in `token` to it; the amount swept and the
    /// transaction, or `None` when there was nothing to sweep or it failed.
    pub(crate) async fn settle(&self, receiver: Address, token: Address) -> Option<(u128, B256)> {
        let owed = self
            .read(IBatchSettlement::receiversCall { receiver, token })
            .await
            .ok()?;
        let due = owed.totalClaimed.checked_sub(owed.totalSettled)?;
        if due == 0 {
            return None;
        }
        let call = IBatchSettlement::settleCall { receiver, token }.abi_encode();
        let sent = match &self.link {
            Link::Facilitator(via) => {
                let payload = serde_json::json!({
                    "type": "settle",
                    "receiver": receiver,
                    "token": token,
                });
                let call = (0, call.into());
                via.settle((receiver, token), call, payload, (Purpose::Operator, false))
                    .await
            }
            Link::Local(_) => self.send(call, None).await,
        };
        match sent {
            Sent::Mined(tx) => Some((due, tx)),
            other => {
                tracing::warn!(?other, %receiver, "settle transaction failed");
                None
            }
        }
    }

    async fn send(&self, input: Vec<u8>, gas_cap: Option<u64>) -> Sent {
        match &self.link {
            Link::Local(local) => {
                local
                    .send_call(BATCH_SETTLEMENT, input.into(), gas_cap)
                    .await
            }
            // (Every transaction of a facilitator link is sent by its caller above.)
            Link::Facilitator(_) => Sent::Unsent,
        }
    }
}

/// What a channel transaction moved, as the ledger (`/admin/payments`) keeps it.
#[derive(Debug)]
pub(crate) struct Moved {
    pub(crate) kind: PaymentKind,
    /// The channel, or for a deposit the read it came with.
    pub(crate) resource: String,
    /// `channel:<id>`, or `settle:<payee>`.
    pub(crate) key: String,
    /// The payer (none for `settle`).
    pub(crate) payer: String,
    pub(crate) pay_to: Address,
    pub(crate) token: Address,
    pub(crate) amount: u128,
}

impl Moved {
    /// `amount` moved on channel `id` (of `config`).
    pub(crate) fn on(kind: PaymentKind, id: &str, config: &ChannelConfig, amount: u128) -> Self {
        Moved {
            kind,
            resource: id.to_owned(),
            key: format!("channel:{id}"),
            payer: config.payer.to_checksum(None),
            pay_to: config.receiver,
            token: config.token,
            amount,
        }
    }

    /// Enters it in the ledger as settled by `tx`. Nothing for a zero amount; a failure of the
    /// store is logged only (the ledger is an audit trail; the chain has the money).
    pub(crate) async fn enter(self, gate: &Gate, tx: B256) {
        let Some(channels) = &gate.channels else {
            return;
        };
        if self.amount == 0 {
            return;
        }
        let payment = NewPayment {
            resource: self.resource,
            network: format!("eip155:{}", channels.chain_id),
            asset: format!("{:#x}", self.token),
            payer: self.payer,
            pay_to: self.pay_to.to_checksum(None),
            amount: self.amount.to_string(),
            lock_key: self.key,
            kind: self.kind,
        };
        let settled = PaymentState::Settled {
            transaction: format!("{tx:#x}"),
        };
        let entered = match gate.store.ledger_append(&payment).await {
            Ok(id) => gate.store.ledger_update(id, settled).await,
            Err(e) => Err(e),
        };
        if let Err(e) = entered {
            tracing::error!(error = %e, kind = ?payment.kind, "ledger entry failed");
        }
    }
}

/// [`Channels::update`] in `gate`'s store.
pub(crate) async fn update(
    gate: &Gate,
    id: &str,
    change: impl Fn(&mut ChannelRecord) -> bool,
) -> Option<ChannelRecord> {
    let channels = gate.channels.as_ref()?;
    channels.update(gate.store.as_ref(), id, change).await
}

/// Claims every charged, unclaimed voucher (in transactions of up to
/// [`CLAIMS_PER_TRANSACTION`]); the amount claimed.
pub async fn claim_all(gate: &Gate) -> u128 {
    let Some(channels) = &gate.channels else {
        return 0;
    };
    // The listing below is the store's: what changed in memory only is written first.
    if let Err(e) = channels.write_behind(gate.store.as_ref()).await {
        tracing::warn!(error = %e, "channel records could not be written");
    }
    let mut claimed = 0;
    // Each channel once per sweep: one that is being read from keeps gaining charges, which
    // the next sweep claims (a sweep is not a loop chasing its reader).
    let mut done = std::collections::HashSet::new();
    let cursor = || {
        channels
            .claim_cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    // From where the last sweep stopped, through the end, then from the first once more.
    let mut after = cursor().clone();
    let mut wrapped = after.is_empty();
    for _ in 0..CLAIM_ROUNDS {
        let listed = match gate
            .store
            .channels_unclaimed(&after, CLAIMS_PER_TRANSACTION)
            .await
        {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(error = %e, "listing unclaimed channels failed");
                break;
            }
        };
        let Some((last, _)) = listed.last() else {
            if wrapped {
                break;
            }
            (wrapped, after) = (true, String::new());
            continue;
        };
        after = last.clone();
        let now = now_secs();
        let rows: Vec<(String, ClaimRow)> = listed
            .into_iter()
            .filter(|(id, record)| !done.contains(id) && claim_due(channels, record, now))
            .filter_map(|(id, record)| claim_row(channels, &record).map(|row| (id, row)))
            .collect();
        done.extend(rows.iter().map(|(id, _)| id.clone()));
        if rows.is_empty() {
            continue;
        }
        // A contract payer's vouchers are checked by its own code at claim time, which may
        // answer otherwise then, or cost more: each is claimed in a transaction of its own,
        // its gas capped.
        let (alone, together): (Vec<_>, Vec<_>) = collectable(gate, channels, rows)
            .await
            .into_iter()
            .partition(|(_, row)| row.config.payerAuthorizer.is_zero());
        claimed += claim_together(gate, channels, &together).await;
        for row in &alone {
            if channels.payer_refused(row.1.config.payer) {
                continue;
            }
            let one = std::slice::from_ref(row);
            claimed += claim_rows(gate, channels, one).await.unwrap_or(0);
        }
    }
    *cursor() = after;
    claimed
}

/// Whether a channel's claim is to be tried now (by a claim sweep or an idle refund): always,
/// but for a contract payer's whose claim the chain refused, tried again only
/// [`CONTRACT_CLAIM_RETRY_SECONDS`] later, and none of a payer refused lately (its code
/// refused one of its claims: the others would be refused too).
fn claim_due(channels: &Channels, record: &ChannelRecord, now: u64) -> bool {
    let config = &record.config;
    if !config.payer_authorizer.is_zero() {
        return true;
    }
    let refused = record.claim_refused_at;
    !channels.payer_refused(config.payer)
        && (refused == 0 || now >= refused.saturating_add(CONTRACT_CLAIM_RETRY_SECONDS))
}

/// Claims `rows` in one transaction; if it cannot be made (a row the chain refuses), each row
/// alone, so that one channel never holds up the claims of the others. The amount claimed.
async fn claim_together(gate: &Gate, channels: &Channels, rows: &[(String, ClaimRow)]) -> u128 {
    if rows.is_empty() {
        return 0;
    }
    match claim_rows(gate, channels, rows).await {
        Some(amount) => amount,
        None if rows.len() > 1 => {
            let mut amount = 0;
            for row in rows {
                amount += claim_rows(gate, channels, std::slice::from_ref(row))
                    .await
                    .unwrap_or(0);
            }
            amount
        }
        None => 0,
    }
}

/// Claims `rows` in one transaction and records it; the amount claimed, `None` if the
/// transaction failed.
async fn claim_rows(gate: &Gate, channels: &Channels, rows: &[(String, ClaimRow)]) -> Option<u128> {
    let only: Vec<ClaimRow> = rows.iter().map(|(_, r)| r.clone()).collect();
    let tx = match channels.claim(&only).await {
        Sent::Mined(tx) => tx,
        other => {
            gate.metrics.record_channel(ChannelEvent::ChainFailure);
            tracing::warn!(?other, vouchers = rows.len(), "claim transaction failed");
            // One channel's voucher alone, refused by the chain: it takes no more vouchers.
            if let ([(id, row)], Sent::Reverts | Sent::Reverted) = (rows, &other) {
                if row.config.payerAuthorizer.is_zero() {
                    channels.refuse_payer(row.config.payer);
                }
                tracing::error!(channel = %id, "the chain refuses this channel's latest voucher; it takes no more");
                let now = now_secs();
                update(gate, id, |r| {
                    r.claim_refused_at = now;
                    true
                })
                .await;
            }
            return None;
        }
    };
    gate.metrics.record_channel(ChannelEvent::Claim);
    let mut claimed = 0;
    for (id, row) in rows {
        let before = update(gate, id, |r| {
            r.total_claimed = r.total_claimed.max(row.total);
            r.claim_refused_at = 0;
            true
        })
        .await;
        let was = before.map_or(row.total, |b| b.total_claimed);
        let amount = row.total.saturating_sub(was);
        claimed += amount;
        gate.metrics
            .record_channel_amount(ChannelAmount::Claimed, amount);
        Moved::on(PaymentKind::ChannelClaim, id, &row.config, amount)
            .enter(gate, tx)
            .await;
    }
    tracing::info!(%tx, vouchers = rows.len(), "claimed");
    Some(claimed)
}

/// The rows as far as the chain lets them be claimed: each up to its channel's balance there
/// (charges beyond it — the payer withdrew while a read was being served — can never be
/// collected, and would make the claim revert; the record is told so), without the rows the
/// chain has claimed already.
async fn collectable(
    gate: &Gate,
    channels: &Channels,
    rows: Vec<(String, ClaimRow)>,
) -> Vec<(String, ClaimRow)> {
    let mut kept = Vec::with_capacity(rows.len());
    for (id, mut row) in rows {
        let chain_id = hb402_x402::batch::channel_id(&row.config, channels.chain_id);
        let Ok(on_chain) = channels
            .read(IBatchSettlement::channelsCall {
                channelId: chain_id,
            })
            .await
        else {
            // The next sweep tries again.
            continue;
        };
        if row.total > on_chain.balance {
            tracing::error!(channel = %id, charged = row.total, balance = on_chain.balance, "charges beyond the channel's balance cannot be claimed (its payer withdrew)");
            let balance = on_chain.balance;
            update(gate, &id, |r| {
                r.charged = r.charged.min(balance).max(r.total_claimed);
                r.balance = balance;
                true
            })
            .await;
            row.total = on_chain.balance;
        }
        if row.total <= on_chain.totalClaimed {
            let claimed = on_chain.totalClaimed;
            update(gate, &id, |r| {
                r.total_claimed = r.total_claimed.max(claimed);
                r.charged = r.charged.max(claimed);
                true
            })
            .await;
            continue;
        }
        kept.push((id, row));
    }
    kept
}

/// The claim of a record's charges, if it has unclaimed ones this gateway may claim.
fn claim_row(channels: &Channels, record: &ChannelRecord) -> Option<ClaimRow> {
    let config = record.config.typed()?;
    if !record.unclaimed()
        || record.signed_max < record.charged
        || config.receiverAuthorizer != channels.authorizer.address()
    {
        return None;
    }
    let signature =
        alloy::primitives::hex::decode(record.signature.trim_start_matches("0x")).ok()?;
    Some(ClaimRow {
        config,
        max: record.signed_max,
        signature,
        total: record.charged,
    })
}

/// Idle channels refunded per sweep at most (the next sweep goes on).
const IDLE_REFUNDS_PER_SWEEP: usize = 20;

/// Idle channels looked at per sweep: more than are refunded, so that channels held by
/// requests right now (which stay where they are in the listing) never use up the sweep.
const IDLE_LISTED_PER_SWEEP: usize = 5 * IDLE_REFUNDS_PER_SWEEP;

/// Refunds to their payers the deposits nobody paid with for `idle_refund_seconds`, claiming
/// what was charged on each channel in the same transaction; the amount refunded.
pub async fn refund_idle(gate: &Gate) -> u128 {
    let Some(channels) = &gate.channels else {
        return 0;
    };
    let Some(idle) = channels.config.idle_refund else {
        return 0;
    };
    if let Err(e) = channels.write_behind(gate.store.as_ref()).await {
        tracing::warn!(error = %e, "channel records could not be written");
    }
    let before = now_secs().saturating_sub(idle.as_secs());
    let listed = match gate
        .store
        .channels_idle(before, IDLE_LISTED_PER_SWEEP)
        .await
    {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!(error = %e, "listing idle channels failed");
            return 0;
        }
    };
    let (mut refunded, mut tried) = (0, 0);
    for (id, _) in listed {
        if tried == IDLE_REFUNDS_PER_SWEEP {
            break;
        }
        let owner = crate::payment::random_owner();
        // Held like a request holds it: no voucher is charged while the refund is made.
        let Some(live) = hold_for_sweep(gate, channels, &id, &owner).await else {
            continue;
        };
        tried += 1;
        let local = live.local();
        let done = refund_idle_channel(gate, channels, &id, (&owner, local), before).await;
        // The hold ends (the record was written without it, or is released here); a channel
        // that could not be refunded waits behind the other idle ones.
        if done.is_none() {
            let now = now_secs();
            channels
                .update(gate.store.as_ref(), &id, |r| {
                    let mine = held_by(r, &owner, local);
                    if mine {
                        r.holder = None;
                        r.refund_tried_at = now;
                    }
                    mine
                })
                .await;
        }
        drop(live);
        channels.let_go();
        refunded += done.unwrap_or(0);
    }
    refunded
}

/// Whether `record` is held by `owner`: named as its holder, or, for a hold kept in this process
/// only (`local`), with no holder named.
pub(crate) fn held_by(record: &ChannelRecord, owner: &str, local: bool) -> bool {
    match &record.holder {
        Some(holder) => holder.owner == owner,
        None => local,
    }
}

/// Holds channel `id` for `owner` as a request would, if nobody holds it.
async fn hold_for_sweep(
    gate: &Gate,
    channels: &Arc<Channels>,
    id: &str,
    owner: &str,
) -> Option<Live> {
    match channels.hold_locally(id, owner) {
        Ok(Some(live)) => Some(live),
        Err(Busy) => None,
        Ok(None) => {
            let now = now_secs();
            let until = now + channels.config.hold.as_secs();
            channels
                .update(gate.store.as_ref(), id, |r| {
                    let held = r.holder.as_ref();
                    if held.is_some_and(|h| h.until > now || channels.is_live(&h.owner)) {
                        return false;
                    }
                    r.holder = Some(crate::store::ChannelHolder {
                        owner: owner.to_owned(),
                        until,
                    });
                    true
                })
                .await?;
            Some(channels.live_in_store(gate.store.clone(), id, owner))
        }
    }
}

/// Refunds channel `id` (held by `owner`) if it is still idle since before `before` as the
/// chain has it now; the amount refunded, `None` if nothing was done.
async fn refund_idle_channel(
    gate: &Gate,
    channels: &Channels,
    id: &str,
    (owner, local): (&str, bool),
    before: u64,
) -> Option<u128> {
    let store = gate.store.as_ref();
    let mut record = channels.get(store, id).await.ok()??;
    // As it was before this sweep held it (its own hold is not activity).
    let idle = record.last_request_at.max(record.synced_at) < before;
    let config = record.config.typed()?;
    let chain_id = hb402_x402::batch::channel_id(&config, channels.chain_id);
    channels.sync(&mut record, chain_id).await.ok()?;
    let remainder = record.balance.saturating_sub(record.charged);
    let claim = match record.unclaimed() {
        true => Some(claim_row(channels, &record)?),
        false => None,
    };
    let claim_waits = claim.is_some() && !claim_due(channels, &record, now_secs());
    if !idle || remainder == 0 || record.withdraw_requested_at != 0 || claim_waits {
        // Not to be refunded now: the record as the chain has it (idle again from now).
        channels
            .update(store, id, |r| {
                let mine = held_by(r, owner, local);
                if mine {
                    r.holder = None;
                    r.balance = record.balance;
                    r.total_claimed = r.total_claimed.max(record.total_claimed);
                    r.charged = r.charged.max(r.total_claimed);
                    r.withdraw_requested_at = record.withdraw_requested_at;
                    r.refund_nonce = record.refund_nonce;
                    r.synced_at = record.synced_at;
                }
                mine
            })
            .await?;
        return Some(0);
    }
    let newly_claimed = record.charged - record.total_claimed;
    let signature = alloy::primitives::hex::decode(record.signature.trim_start_matches("0x"))
        .unwrap_or_default();
    let voucher = (record.signed_max, signature.as_slice());
    let tx = match channels
        .refund(&config, (remainder, record.refund_nonce), voucher, claim)
        .await
    {
        Sent::Mined(tx) => tx,
        other => {
            gate.metrics.record_channel(ChannelEvent::ChainFailure);
            tracing::warn!(channel = %id, ?other, "idle channel refund failed");
            // A contract payer's code refusing the claim in it: claimed again only later.
            let refused = matches!(other, Sent::Reverts | Sent::Reverted);
            if refused && newly_claimed > 0 && config.payerAuthorizer.is_zero() {
                channels.refuse_payer(config.payer);
                let now = now_secs();
                update(gate, id, |r| {
                    r.claim_refused_at = now;
                    true
                })
                .await;
            }
            return None;
        }
    };
    let charged = record.charged;
    let updated = channels
        .update(store, id, |r| {
            let mine = held_by(r, owner, local);
            if mine {
                r.holder = None;
                r.total_claimed = r.total_claimed.max(charged);
                r.balance = record.balance.saturating_sub(remainder);
                r.refund_nonce = record.refund_nonce + 1;
                r.synced_at = record.synced_at;
            }
            mine
        })
        .await;
    if updated.is_none() {
        tracing::error!(channel = %id, "refund paid but the channel's record was not updated; the next sync corrects it");
    }
    tracing::info!(channel = %id, %tx, refunded = remainder, "idle channel refunded");
    refunded(gate, (id, &config), (newly_claimed, remainder), tx).await;
    Some(remainder)
}

/// Counts and enters in the ledger a refund of channel `id` mined in `tx`: `claimed` claimed
/// with it, `amount` given back to the payer.
pub(crate) async fn refunded(
    gate: &Gate,
    (id, config): (&str, &ChannelConfig),
    (claimed, amount): (u128, u128),
    tx: B256,
) {
    let metrics = &gate.metrics;
    metrics.record_channel(ChannelEvent::Refund);
    metrics.record_channel_amount(ChannelAmount::Refunded, amount);
    metrics.record_channel_amount(ChannelAmount::Claimed, claimed);
    Moved::on(PaymentKind::ChannelClaim, id, config, claimed)
        .enter(gate, tx)
        .await;
    Moved::on(PaymentKind::ChannelRefund, id, config, amount)
        .enter(gate, tx)
        .await;
}

/// Sweeps what was claimed to each payee of the offers; the amount swept.
pub async fn settle_all(gate: &Gate) -> u128 {
    let Some(channels) = &gate.channels else {
        return 0;
    };
    let mut pairs: Vec<(Address, Address)> = gate
        .config
        .payments
        .accept
        .iter()
        .filter(|t| t.asset.chain_id == channels.chain_id())
        .map(|t| (t.pay_to, t.asset.address))
        .collect();
    pairs.sort();
    pairs.dedup();
    let mut swept = 0;
    for (receiver, token) in pairs {
        if let Some((amount, tx)) = channels.settle(receiver, token).await {
            gate.metrics.record_channel(ChannelEvent::Settle);
            gate.metrics
                .record_channel_amount(ChannelAmount::Settled, amount);
            swept += amount;
            let moved = Moved {
                kind: PaymentKind::ChannelSettle,
                resource: format!("settle:{receiver}"),
                key: format!("settle:{receiver}"),
                payer: String::new(),
                pay_to: receiver,
                token,
                amount,
            };
            moved.enter(gate, tx).await;
        }
    }
    swept
}

/// The sweeper: claims every `claim_interval`, settles every `settle_interval`, and both once
/// more at shutdown.
#[derive(Debug)]
pub struct Sweeper {
    gate: Arc<Gate>,
}

impl Sweeper {
    /// A sweeper over shared state.
    pub fn new(gate: Arc<Gate>) -> Self {
        Sweeper { gate }
    }
}

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(channels) = &self.gate.channels else {
            return;
        };
        let config = &channels.config;
        let mut tick = tokio::time::interval(config.claim_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut settle_at = Instant::now() + config.settle_interval;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    claim_all(&self.gate).await;
                    refund_idle(&self.gate).await;
                    if Instant::now() >= settle_at {
                        settle_all(&self.gate).await;
                        settle_at = Instant::now() + config.settle_interval;
                    }
                }
                _ = shutdown.changed() => {
                    // What was charged is claimed and swept before hb402 stops, within bounds.
                    let last = async {
                        claim_all(&self.gate).await;
                        settle_all(&self.gate).await;
                        if let Err(e) = channels.write_behind(self.gate.store.as_ref()).await {
                            tracing::warn!(error = %e, "channel records could not be written");
                        }
                    };
                    if tokio::time::timeout(SHUTDOWN_SWEEP, last).await.is_err() {
                        tracing::warn!("the shutdown sweep did not finish; the next start claims the rest");
                    }
                    return;
                }
            }
        }
    }
}

/// How long the sweep at shutdown may take.
const SHUTDOWN_SWEEP: Duration = Duration::from_secs(60);

/// Writes the channel records changed in memory to the store, [`WRITE_BEHIND`] after a change
/// (gathering the changes meanwhile), and once more at shutdown. Runs only when hb402 is the
/// store's only writer (its records are then kept in memory).
#[derive(Debug)]
pub struct RecordWriter {
    gate: Arc<Gate>,
}

impl RecordWriter {
    /// A writer over shared state.
    pub fn new(gate: Arc<Gate>) -> Self {
        RecordWriter { gate }
    }
}

#[async_trait]
impl BackgroundService for RecordWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(channels) = self.gate.channels.as_ref().filter(|c| c.memory.is_some()) else {
            return;
        };
        let store = self.gate.store.as_ref();
        loop {
            tokio::select! {
                () = channels.changed() => {}
                _ = shutdown.changed() => {
                    write_at_shutdown(channels, store).await;
                    return;
                }
            }
            tokio::time::sleep(WRITE_BEHIND).await;
            if let Err(e) = channels.write_behind(store).await {
                tracing::warn!(error = %e, "channel records could not be written; trying again in a second");
                // Tried again after a pause, changed or not (they stay in memory meanwhile).
                tokio::select! {
                    () = tokio::time::sleep(WRITE_RETRY) => channels.changed.notify_one(),
                    _ = shutdown.changed() => {
                        write_at_shutdown(channels, store).await;
                        return;
                    }
                }
            }
        }
    }
}

/// The last write of the channel records changed in memory, as hb402 stops.
async fn write_at_shutdown(channels: &Channels, store: &dyn Store) {
    if let Err(e) = channels.write_behind(store).await {
        tracing::error!(error = %e, "channel records could not be written at shutdown");
    }
}
