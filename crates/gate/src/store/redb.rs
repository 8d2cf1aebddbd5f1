//! [`Store`] in an embedded redb file: the default for a single hb402 beside one node.
//!
//! redb is synchronous, so every operation runs on tokio's blocking pool. Its write transactions
//! are serialised, which makes [`Store::try_lock`] an atomic check-and-insert.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use async_trait::async_trait;

use super::{
    Clock, NewPayment, PaymentRecord, PaymentState, Receipt, Store, StoreError, system_clock,
};
use crate::meta::ItemMeta;

/// Item id → JSON [`ItemMeta`].
const ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("items");
/// Lock key → (until, spent).
const LOCKS: TableDefinition<&str, (u64, bool)> = TableDefinition::new("locks");
/// Receipt key → JSON [`Receipt`].
const RECEIPTS: TableDefinition<&str, &[u8]> = TableDefinition::new("receipts");
/// Ledger id → JSON [`PaymentRecord`].
const LEDGER: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger");

fn backend(e: impl Into<::redb::Error>) -> StoreError {
    StoreError::Backend(e.into().to_string())
}

/// The redb-backed store.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    clock: Clock,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates, with its parent directories) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_clock(path, system_clock())
    }

    /// Like [`RedbStore::open`], reading "now" from `clock` (tests inject one).
    pub fn open_with_clock(path: &Path, clock: Clock) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| open_err(e.to_string()))?;
        }
        let db = Database::create(path).map_err(|e| open_err(e.to_string()))?;
        // Create every table once, so readers never meet a missing one.
        let txn = db.begin_write().map_err(backend)?;
        {
            txn.open_table(ITEMS).map_err(backend)?;
            txn.open_table(LOCKS).map_err(backend)?;
            txn.open_table(RECEIPTS).map_err(backend)?;
            txn.open_table(LEDGER).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        Ok(RedbStore {
            db: Arc::new(db),
            path: path.to_owned(),
            clock,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the blocking pool with the database and the current time.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database, u64) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let clock = Arc::clone(&self.clock);
        tokio::task::spawn_blocking(move || f(&db, clock()))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get_meta(&self, id: &str) -> Result<Option<ItemMeta>, StoreError> {
        let id = id.to_owned();
        self.run(move |db, _| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(ITEMS).map_err(backend)?;
            let Some(value) = table.get(id.as_str()).map_err(backend)? else {
                return Ok(None);
            };
            Ok(Some(serde_json::from_slice(value.value())?))
        })
        .await
    }

    async fn put_meta(&self, meta: &ItemMeta) -> Result<(), StoreError> {
        let id = meta.id.clone();
        let json = serde_json::to_vec(meta)?;
        self.run(move |db, _| {
            let txn = db.begin_write().map_err(backend)?;
            txn.open_table(ITEMS)
                .map_err(backend)?
                .insert(id.as_str(), json.as_slice())
                .map_err(backend)?;
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|db, _| {
            let txn = db.begin_read().map_err(backend)?;
            txn.open_table(ITEMS)
                .map_err(backend)?
                .len()
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn try_lock(&self, key: &str, until: u64) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.run(move |db, now| {
            let txn = db.begin_write().map_err(backend)?;
            let taken = {
                let mut table = txn.open_table(LOCKS).map_err(backend)?;
                let held = table
                    .get(key.as_str())
                    .map_err(backend)?
                    .is_some_and(|v| v.value().0 > now);
                if !held {
                    table
                        .insert(key.as_str(), (until, false))
                        .map_err(backend)?;
                }
                !held
            };
            if taken {
                txn.commit().map_err(backend)?;
            } else {
                txn.abort().map_err(backend)?;
            }
            Ok(taken)
        })
        .await
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.run(move |db, _| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut table = txn.open_table(LOCKS).map_err(backend)?;
                let spent = table
                    .get(key.as_str())
                    .map_err(backend)?
                    .map(|v| v.value().1);
                if spent == Some(false) {
                    table.remove(key.as_str()).map_err(backend)?;
                }
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn mark_spent(&self, key: &str, until: u64) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.run(move |db, _| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut table = txn.open_table(LOCKS).map_err(backend)?;
                // Never shorten an existing spent mark.
                let until = match table.get(key.as_str()).map_err(backend)? {
                    Some(v) if v.value().1 => v.value().0.max(until),
                    _ => until,
                };
                table.insert(key.as_str(), (until, true)).map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn put_receipt(&self, key: &str, receipt: &Receipt) -> Result<(), StoreError> {
        let key = key.to_owned();
        let json = serde_json::to_vec(receipt)?;
        self.run(move |db, _| {
            let txn = db.begin_write().map_err(backend)?;
            txn.open_table(RECEIPTS)
                .map_err(backend)?
                .insert(key.as_str(), json.as_slice())
                .map_err(backend)?;
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn get_receipt(&self, key: &str) -> Result<Option<Receipt>, StoreError> {
        let key = key.to_owned();
        self.run(move |db, now| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(RECEIPTS).map_err(backend)?;
            let Some(value) = table.get(key.as_str()).map_err(backend)? else {
                return Ok(None);
            };
            let receipt: Receipt = serde_json::from_slice(value.value())?;
            Ok((receipt.valid_until > now).then_some(receipt))
        })
        .await
    }

    async fn ledger_append(&self, payment: &NewPayment) -> Result<u64, StoreError> {
        let payment = payment.clone();
        self.run(move |db, now| {
            let txn = db.begin_write().map_err(backend)?;
            let id = {
                let mut table = txn.open_table(LEDGER).map_err(backend)?;
                let last = table.last().map_err(backend)?.map_or(0, |(k, _)| k.value());
                let id = last + 1;
                let record = PaymentRecord {
                    id,
                    created_at: now,
                    updated_at: now,
                    payment,
                    state: PaymentState::Reserved,
                };
                let json = serde_json::to_vec(&record)?;
                table.insert(id, json.as_slice()).map_err(backend)?;
                id
            };
            txn.commit().map_err(backend)?;
            Ok(id)
        })
        .await
    }

    async fn ledger_update(&self, id: u64, state: PaymentState) -> Result<(), StoreError> {
        self.run(move |db, now| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut table = txn.open_table(LEDGER).map_err(backend)?;
                let mut record: PaymentRecord = match table.get(id).map_err(backend)? {
                    Some(v) => serde_json::from_slice(v.value())?,
                    None => return Err(StoreError::UnknownPayment(id)),
                };
                if !record.state.may_become(&state) {
                    return Err(StoreError::InvalidTransition {
                        id,
                        from: record.state.name(),
                        to: state.name(),
                    });
                }
                record.state = state;
                record.updated_at = now;
                let json = serde_json::to_vec(&record)?;
                table.insert(id, json.as_slice()).map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn ledger_list(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<Vec<PaymentRecord>, StoreError> {
        self.run(move |db, _| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(LEDGER).map_err(backend)?;
            let range = table
                .range::<u64>((Bound::Excluded(since), Bound::Unbounded))
                .map_err(backend)?;
            let mut out = Vec::with_capacity(limit.min(1024));
            for entry in range.take(limit) {
                let (_, value) = entry.map_err(backend)?;
                out.push(serde_json::from_slice(value.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.run(move |db, now| {
            let txn = db.begin_write().map_err(backend)?;
            let removed = {
                let mut locks = txn.open_table(LOCKS).map_err(backend)?;
                let before = locks.len().map_err(backend)?;
                locks.retain(|_, (until, _)| until > now).map_err(backend)?;
                let mut removed = before - locks.len().map_err(backend)?;

                let mut receipts = txn.open_table(RECEIPTS).map_err(backend)?;
                let before = receipts.len().map_err(backend)?;
                receipts
                    .retain(|_, json| {
                        // An undecodable receipt grants nothing: drop it too.
                        serde_json::from_slice::<Receipt>(json).is_ok_and(|r| r.valid_until > now)
                    })
                    .map_err(backend)?;
                removed += before - receipts.len().map_err(backend)?;
                removed
            };
            txn.commit().map_err(backend)?;
            Ok(removed)
        })
        .await
    }
}
