//! State that outlives a request: item metadata, payment replay locks, receipts and the payment
//! ledger. [`Store`] is the interface; [`RedbStore`] keeps it in an embedded redb file (one
//! node), [`RedisStore`] in a Redis that a fleet of sidecars shares.
//!
//! Time: operations that depend on "now" (lock and receipt expiry) read the store's [`Clock`], so
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

/// A settled payment's receipt: for a short window the payer may read the same resource again
/// without paying (a broken download is not paid twice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// What the payment bought (the resource URL or item id).
    pub resource: String,
    /// Who paid (the `from` address).
    pub payer: String,
    /// Network, as offered (`base-sepolia`, `eip155:84532`).
    pub network: String,
    /// The settlement transaction.
    pub transaction: String,
    /// Until when the receipt grants reads (unix seconds, exclusive).
    pub valid_until: u64,
}

/// Where a payment is in its life.
///
/// `Reserved → Verified → Settled | Failed | Released`, and `Reserved → Failed | Released`
/// (refused before verification); nothing is settled unverified. `Settled`, `Failed` and
/// `Released` are final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PaymentState {
    /// The replay lock is held; nothing checked remotely yet.
    Reserved,
    /// The facilitator verified the authorization.
    Verified,
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
        matches!(
            (self, next),
            (PaymentState::Reserved, PaymentState::Verified)
                | (
                    PaymentState::Reserved | PaymentState::Verified,
                    PaymentState::Failed { .. } | PaymentState::Released
                )
                | (PaymentState::Verified, PaymentState::Settled { .. })
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
    /// The replay-lock key the payment holds (chain, asset, from, nonce).
    pub lock_key: String,
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

/// hb402's persistent state.
///
/// Locks: a key (for payments, `(chain, asset, from, nonce)`) is either free, locked until a time
/// (a request is using it), or spent until a time (the authorization was settled and stays
/// unusable until its `validBefore`). Expired entries count as free.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The metadata of an item, if known.
    async fn get_meta(&self, id: &str) -> Result<Option<ItemMeta>, StoreError>;

    /// Stores (or replaces) an item's metadata.
    async fn put_meta(&self, meta: &ItemMeta) -> Result<(), StoreError>;

    /// Checks the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Atomically takes `key` until `until` (unix seconds) if it is free or its previous lock or
    /// spent mark has expired. `true`: this caller holds it; `false`: someone else does.
    async fn try_lock(&self, key: &str, until: u64) -> Result<bool, StoreError>;

    /// Frees a lock taken with [`Store::try_lock`]. A spent mark is never released (an
    /// authorization settled once stays spent).
    async fn release(&self, key: &str) -> Result<(), StoreError>;

    /// Marks `key` spent until `until`: [`Store::try_lock`] refuses it until then.
    async fn mark_spent(&self, key: &str, until: u64) -> Result<(), StoreError>;

    /// Stores a receipt under `key` (e.g. a hash of payer and resource), replacing any.
    async fn put_receipt(&self, key: &str, receipt: &Receipt) -> Result<(), StoreError>;

    /// The receipt under `key`, if it is still valid.
    async fn get_receipt(&self, key: &str) -> Result<Option<Receipt>, StoreError>;

    /// Appends a payment in state [`PaymentState::Reserved`]; returns its id.
    async fn ledger_append(&self, payment: &NewPayment) -> Result<u64, StoreError>;

    /// Moves a payment to `state`, if the state machine allows it.
    async fn ledger_update(&self, id: u64, state: PaymentState) -> Result<(), StoreError>;

    /// Up to `limit` entries with an id greater than `since`, oldest first (page with the last
    /// id returned).
    async fn ledger_list(&self, since: u64, limit: usize)
    -> Result<Vec<PaymentRecord>, StoreError>;

    /// Deletes expired locks, spent marks and receipts; returns how many.
    async fn purge_expired(&self) -> Result<u64, StoreError>;
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
            },
            state: PaymentState::Settled {
                transaction: "0xt".into(),
            },
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["state"], "settled");
        assert_eq!(v["transaction"], "0xt");
        assert_eq!(v["amount"], "10000");
        assert_eq!(serde_json::from_value::<PaymentRecord>(v).unwrap(), r);
    }
}
