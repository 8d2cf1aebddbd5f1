//! State that outlives a request: item metadata, payment replay locks and the payment ledger. [`Store`] is the interface; [`RedbStore`] keeps it in an embedded redb file (one
//! node), [`RedisStore`] in a Redis that a fleet of sidecars shares.
//!
//! Time: operations that depend on "now" (lock expiry) read the store's [`Clock`], so
//! tests inject one and a fleet's stores can agree on a single source.

mod redb;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::meta::ItemMeta;

pub use self::redb::RedbStore;
pub use self::redis::{RedisOptions, RedisStore};

/// The unix time in seconds, as a store sees it.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's file or directory could not be created or opened.
    #[error("cannot open the store at {path}: {reason}")]
    Open {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The storage engine failed (I/O, corruption, transaction).
    #[error("store backend error: {0}")]
    Backend(String),
    /// A stored value could not be encoded or decoded.
    #[error("store encoding error: {0}")]
    Encoding(#[from] serde_json::Error),
    /// A blocking store task did not complete.
    #[error("store task failed: {0}")]
    Task(String),
    /// No ledger entry has this id.
    #[error("no payment {0} in the ledger")]
    UnknownPayment(u64),
    /// The payment state machine forbids this change.
    #[error("payment {id}: cannot go from {from} to {to}")]
    InvalidTransition {
        /// The entry.
        id: u64,
        /// Its current state.
        from: &'static str,
        /// The state asked for.
        to: &'static str,
    },
}

/// Where an authorization's replay lock stands. One record per `(chain, asset, from, nonce)`;
/// every change is a compare-and-swap of the whole record ([`Store::lock_swap`]), so two requests
/// can never both believe they hold it.
///
/// `Held → Delivered` (settled, response sent) · `Held → Settled` (settled, nothing delivered yet:
/// the same payment may fetch its response) · `Held → Pending` (the settlement's outcome is not
/// known) · `Held → free` (released: never settled). `Pending` and `Settled` are taken again
/// (`→ Held`) by the request that retries the same payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockState {
    /// A request is using the authorization.
    Held,
    /// Settlement was attempted and its outcome is unknown: kept locked until it is known.
    Pending,
    /// Settled on chain; the payer has not received what it paid for yet.
    Settled,
    /// Settled and delivered: any further use is a replay.
    Delivered,
}

/// A replay lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// Where it stands.
    pub state: LockState,
    /// The request that holds it (a random token), or empty when none does.
    pub owner: String,
    /// When it lapses (unix seconds, store clock): once the authorization can no longer be used.
    pub until: u64,
    /// The ledger entry of the payment.
    #[serde(default)]
    pub ledger_id: Option<u64>,
    /// The settlement transaction, once one is known.
    #[serde(default)]
    pub transaction: Option<String>,
}

/// Where a payment is in its life.
///
/// `Verified → Settled | Failed | Released | Pending`, `Pending → Settled | Failed | Released`;
/// `Reserved` is only read from older ledgers. Nothing is settled unverified. `Settled`,
/// `Failed` and `Released` are final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PaymentState {
    /// The replay lock is held; nothing checked remotely yet (older ledgers only).
    Reserved,
    /// The facilitator verified the authorization.
    Verified,
    /// Settlement was attempted; its outcome is not known yet.
    Pending {
        /// The transaction, when one was reported.
        #[serde(default)]
        transaction: Option<String>,
    },
    /// Settled on chain.
    Settled {
        /// The transaction hash.
        transaction: String,
    },
    /// Verification or settlement failed.
    Failed {
        /// Why.
        reason: String,
    },
    /// Abandoned without settlement (e.g. the node failed): the payer owes nothing.
    Released,
}

impl PaymentState {
    /// The state's name.
    pub fn name(&self) -> &'static str {
        match self {
            PaymentState::Reserved => "reserved",
            PaymentState::Verified => "verified",
            PaymentState::Pending { .. } => "pending",
            PaymentState::Settled { .. } => "settled",
            PaymentState::Failed { .. } => "failed",
            PaymentState::Released => "released",
        }
    }

    /// Whether no further change is allowed.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            PaymentState::Settled { .. } | PaymentState::Failed { .. } | PaymentState::Released
        )
    }

    /// Whether the state machine allows going from `self` to `next`.
    pub fn may_become(&self, next: &PaymentState) -> bool {
        use PaymentState as S;
        matches!(
            (self, next),
            (S::Reserved, S::Verified)
                | (
                    S::Reserved | S::Verified | S::Pending { .. },
                    S::Failed { .. } | S::Released
                )
                | (S::Verified | S::Pending { .. }, S::Settled { .. })
                | (S::Verified, S::Pending { .. })
        )
    }
}

/// A payment as it enters the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPayment {
    /// The resource paid for.
    pub resource: String,
    /// Network, as offered.
    pub network: String,
    /// Asset contract address.
    pub asset: String,
    /// Payer (`from`).
    pub payer: String,
    /// Recipient (`to`).
    pub pay_to: String,
    /// Amount in atomic units, as a decimal string (may exceed 64 bits).
    pub amount: String,
    /// The replay-lock key the payment holds (chain, asset, from, nonce); for a channel's
    /// transaction, the channel (`channel:<id>`) or the payee swept to (`settle:<payee>`).
    pub lock_key: String,
    /// What moved the money (entries of older ledgers: `exact`).
    #[serde(default)]
    pub kind: PaymentKind,
}

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    /// An `exact` payment: one transfer for one request.
    #[default]
    Exact,
    /// A deposit into a `batch-settlement` channel (`resource`: the read it came with).
    ChannelDeposit,
    /// A channel's vouchers claimed on chain: `amount` newly claimed (`resource`: the channel).
    ChannelClaim,
    /// A channel's uncharged rest refunded to its payer (`resource`: the channel).
    ChannelRefund,
    /// Claimed funds swept to the payee (`settle`; no payer).
    ChannelSettle,
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// Ledger id, increasing from 1 in insertion order.
    pub id: u64,
    /// When it was appended (unix seconds, store clock).
    pub created_at: u64,
    /// When it last changed.
    pub updated_at: u64,
    /// What was appended.
    #[serde(flatten)]
    pub payment: NewPayment,
    /// Where it is now.
    #[serde(flatten)]
    pub state: PaymentState,
}

/// What one [`Store::purge`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Lapsed replay locks.
    pub locks: u64,
    /// Ledger entries that ended without a settlement and are older than the retention.
    pub ledger: u64,
}

/// A `batch-settlement` channel as its receiver keeps it: what was charged, the latest voucher
/// (the claim it allows), the chain's figures as last read, and the request that holds the
/// channel, if one does (requests on one channel take turns, across a fleet).
///
/// Amounts are decimal strings in the stored JSON (they exceed what JSON numbers hold exactly).
/// Changes are compared by `version`, which every change raises: a record stored by an older
/// hb402 (fewer fields) still changes from what a newer one read of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRecord {
    /// Raised by every change.
    pub version: u64,
    /// The channel's configuration, as its payer sent it.
    pub config: hb402_x402::batch::ChannelConfigJson,
    /// The sum of what was charged on the channel.
    #[serde(with = "decimal")]
    pub charged: u128,
    /// The latest voucher's ceiling (what a claim may take, up to `charged`).
    #[serde(with = "decimal")]
    pub signed_max: u128,
    /// The latest voucher's signature, hex.
    pub signature: String,
    /// The channel's balance on chain, as last read.
    #[serde(with = "decimal")]
    pub balance: u128,
    /// Claimed on chain, as last read (or as claimed by hb402 since).
    #[serde(with = "decimal")]
    pub total_claimed: u128,
    /// When the payer asked for a timed withdrawal (unix seconds), 0 if it did not.
    pub withdraw_requested_at: u64,
    /// The next `refundWithSignature` nonce.
    #[serde(with = "decimal")]
    pub refund_nonce: u128,
    /// When the chain's figures were read (unix seconds).
    pub synced_at: u64,
    /// When a request last paid on the channel (unix seconds).
    pub last_request_at: u64,
    /// When hb402 last tried to refund the channel as idle and could not (unix seconds), 0 if
    /// it never did: such a channel waits its turn behind the other idle ones.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refund_tried_at: u64,
    /// When the chain refused a claim of this channel's latest voucher alone (unix seconds), 0
    /// if it did not since: the channel then takes no more vouchers.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub claim_refused_at: u64,
    /// The request that holds the channel now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<ChannelHolder>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl ChannelRecord {
    /// Whether some of what was charged is not claimed on chain yet.
    pub fn unclaimed(&self) -> bool {
        self.charged > self.total_claimed
    }

    /// When the channel was last active (its last paid read, the last read of its state on
    /// chain, a refund hb402 tried, or a hold a request left in the store, lapsed or not), if it
    /// holds a deposit not charged yet: how idle channels are found.
    pub fn refundable_since(&self) -> Option<u64> {
        let held = self.holder.as_ref().map_or(0, |h| h.until);
        let active = self.last_request_at.max(self.synced_at).max(held);
        (self.balance > self.charged).then(|| active.max(self.refund_tried_at))
    }
}

/// The request holding a channel: only its owner changes the record until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelHolder {
    /// A random token of the request.
    pub owner: String,
    /// When the hold lapses (unix seconds, store clock) if its request never lets go.
    pub until: u64,
}

/// `u128` as a decimal string.
mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() || text.len() > 39 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(serde::de::Error::custom("not a decimal amount"));
        }
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The key of an item's metadata: the same item may be stored in the public and the private
/// bucket, and each copy is its own.
pub fn item_key(bucket: &str, id: &str) -> String {
    format!("{bucket}/{id}")
}

/// hb402's persistent state.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The metadata of the copy of item `id` in `bucket`, if known.
    async fn get_meta(&self, bucket: &str, id: &str) -> Result<Option<ItemMeta>, StoreError>;

    /// Stores (or replaces) a copy's metadata.
    async fn put_meta(&self, meta: &ItemMeta) -> Result<(), StoreError>;

    /// Stores a copy's metadata unless the copy already has a record (atomically); whether it
    /// did. What hb402 learns from the node never replaces what an upload recorded.
    async fn put_meta_new(&self, meta: &ItemMeta) -> Result<bool, StoreError>;

    /// Forgets a copy's metadata.
    async fn delete_meta(&self, bucket: &str, id: &str) -> Result<(), StoreError>;

    /// Up to `limit` copies that expired at or before `before`, earliest first.
    async fn expired_items(&self, before: u64, limit: usize) -> Result<Vec<ItemMeta>, StoreError>;

    /// Checks the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// The lock under `key`, or `None` when there is none or it has lapsed.
    async fn lock_get(&self, key: &str) -> Result<Option<LockRecord>, StoreError>;

    /// Replaces the lock under `key` with `new` (`None` deletes it) if it is exactly `expected`
    /// (`None`: absent or lapsed). `true` when swapped.
    async fn lock_swap(
        &self,
        key: &str,
        expected: Option<&LockRecord>,
        new: Option<&LockRecord>,
    ) -> Result<bool, StoreError>;

    /// Appends a verified payment; returns its id.
    async fn ledger_append(&self, payment: &NewPayment) -> Result<u64, StoreError>;

    /// Moves a payment to `state`, if the state machine allows it.
    async fn ledger_update(&self, id: u64, state: PaymentState) -> Result<(), StoreError>;

    /// Up to `limit` entries with an id greater than `since`, oldest first (page with the last
    /// id returned).
    async fn ledger_list(&self, since: u64, limit: usize)
    -> Result<Vec<PaymentRecord>, StoreError>;

    /// Deletes lapsed locks, and ledger entries that ended without a settlement (failed,
    /// released) and last changed before `ledger_before`.
    async fn purge(&self, ledger_before: u64) -> Result<Purged, StoreError>;

    /// The record of channel `id` (its hex channel id), if hb402 keeps one.
    async fn channel_get(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError>;

    /// Replaces channel `id`'s record with `new` (`None`: deletes it) if the stored one has
    /// `expected`'s version (`None`: there is none). `Ok(false)` when it has not. `new` must
    /// carry a higher version than `expected`.
    async fn channel_swap(
        &self,
        id: &str,
        expected: Option<&ChannelRecord>,
        new: Option<&ChannelRecord>,
    ) -> Result<bool, StoreError>;

    /// Writes channel records as they are, unless the store has a record of the same or a
    /// higher version: for a process that is the store's only writer and writes its records
    /// behind (it keeps their latest versions in memory). The default compares and swaps each.
    async fn channels_put(&self, records: &[(String, ChannelRecord)]) -> Result<(), StoreError> {
        for (id, record) in records {
            // Each failed swap saw a change by another writer; a few are enough.
            for _ in 0..8 {
                let current = self.channel_get(id).await?;
                if current
                    .as_ref()
                    .is_some_and(|c| c.version >= record.version)
                {
                    break;
                }
                if self
                    .channel_swap(id, current.as_ref(), Some(record))
                    .await?
                {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Up to `limit` channels holding a deposit not charged yet, last active before `before`
    /// ([`ChannelRecord::refundable_since`]), least recently active first.
    async fn channels_idle(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<(String, ChannelRecord)>, StoreError>;

    /// Up to `limit` channels with charges not yet claimed whose id sorts after `after` (`""`:
    /// from the first), in id order: pages through them all, whatever the first ones are.
    async fn channels_unclaimed(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, ChannelRecord)>, StoreError>;
}

/// Whether a ledger entry may be purged: it ended without moving money, before `before`.
pub(crate) fn purgeable(record_state: &PaymentState, updated_at: u64, before: u64) -> bool {
    matches!(
        record_state,
        PaymentState::Failed { .. } | PaymentState::Released
    ) && updated_at < before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_state_machine() {
        let settled = PaymentState::Settled {
            transaction: "0x1".into(),
        };
        let failed = PaymentState::Failed { reason: "x".into() };
        use PaymentState::*;
        assert!(Reserved.may_become(&Verified));
        assert!(Reserved.may_become(&Released));
        assert!(Reserved.may_become(&failed));
        assert!(!Reserved.may_become(&settled));
        assert!(Verified.may_become(&settled));
        assert!(Verified.may_become(&Released));
        assert!(!Verified.may_become(&Reserved));
        assert!(!Verified.may_become(&Verified));
        assert!(!settled.may_become(&Released));
        assert!(!Released.may_become(&settled));
        assert!(!failed.may_become(&Verified));
        let pending = Pending { transaction: None };
        assert!(Verified.may_become(&pending));
        assert!(pending.may_become(&settled));
        assert!(pending.may_become(&Released));
        assert!(!pending.may_become(&Verified));
        assert!(!settled.may_become(&pending));
    }

    #[test]
    fn records_serialise_flat() {
        let r = PaymentRecord {
            id: 1,
            created_at: 2,
            updated_at: 3,
            payment: NewPayment {
                resource: "r".into(),
                network: "base".into(),
                asset: "0xa".into(),
                payer: "0xb".into(),
                pay_to: "0xc".into(),
                amount: "10000".into(),
                lock_key: "k".into(),
                kind: Default::default(),
            },
            state: PaymentState::Settled {
                transaction: "0xt".into(),
            },
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["state"], "settled");
        assert_eq!(v["transaction"], "0xt");
        assert_eq!(v["amount"], "10000");
        assert_eq!(v["kind"], "exact");
        assert_eq!(
            serde_json::from_value::<PaymentRecord>(v.clone()).unwrap(),
            r
        );
        // An entry an older hb402 wrote has no kind: it was an `exact` payment.
        let mut older = v;
        older.as_object_mut().unwrap().remove("kind");
        assert_eq!(serde_json::from_value::<PaymentRecord>(older).unwrap(), r);
        let mut claim = r.clone();
        claim.payment.kind = PaymentKind::ChannelClaim;
        let v = serde_json::to_value(&claim).unwrap();
        assert_eq!(v["kind"], "channel_claim");
        assert_eq!(serde_json::from_value::<PaymentRecord>(v).unwrap(), claim);
    }
}
