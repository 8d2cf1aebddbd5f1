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
    Clock, LockRecord, NewPayment, PaymentRecord, PaymentState, Purged, Store, StoreError,
    item_key, purgeable, system_clock,
};
use crate::meta::ItemMeta;

/// `bucket/id` → JSON [`ItemMeta`].
const ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("items_v2");
/// (expires at, `bucket/id`) for every copy that expires: the janitor's work list.
const EXPIRIES: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiries");
/// Lock key → JSON [`LockRecord`].
const LOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("locks_v2");
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
            txn.open_table(EXPIRIES).map_err(backend)?;
            txn.open_table(LOCKS).map_err(backend)?;
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

/// The lock under `key` as stored, lapsed or not.
fn read_lock(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<LockRecord>, StoreError> {
    match table.get(key).map_err(backend)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get_meta(&self, bucket: &str, id: &str) -> Result<Option<ItemMeta>, StoreError> {
        let key = item_key(bucket, id);
        self.run(move |db, _| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(ITEMS).map_err(backend)?;
            let Some(value) = table.get(key.as_str()).map_err(backend)? else {
                return Ok(None);
            };
            Ok(Some(serde_json::from_slice(value.value())?))
        })
        .await
    }

    async fn put_meta(&self, meta: &ItemMeta) -> Result<(), StoreError> {
        let key = item_key(&meta.bucket, &meta.id);
        let json = serde_json::to_vec(meta)?;
        let expires_at = meta.expires_at;
        self.run(move |db, _| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut items = txn.open_table(ITEMS).map_err(backend)?;
                let mut expiries = txn.open_table(EXPIRIES).map_err(backend)?;
                let old: Option<ItemMeta> = match items.get(key.as_str()).map_err(backend)? {
                    Some(v) => serde_json::from_slice(v.value()).ok(),
                    None => None,
                };
                if let Some(at) = old.and_then(|m| m.expires_at) {
                    expiries.remove((at, key.as_str())).map_err(backend)?;
                }
                if let Some(at) = expires_at {
                    expiries.insert((at, key.as_str()), ()).map_err(backend)?;
                }
                items
                    .insert(key.as_str(), json.as_slice())
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn put_meta_new(&self, meta: &ItemMeta) -> Result<bool, StoreError> {
        let key = item_key(&meta.bucket, &meta.id);
        let json = serde_json::to_vec(meta)?;
        let expires_at = meta.expires_at;
        self.run(move |db, _| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut items = txn.open_table(ITEMS).map_err(backend)?;
                if items.get(key.as_str()).map_err(backend)?.is_some() {
                    return Ok(false);
                }
                let mut expiries = txn.open_table(EXPIRIES).map_err(backend)?;
                if let Some(at) = expires_at {
                    expiries.insert((at, key.as_str()), ()).map_err(backend)?;
                }
                items
                    .insert(key.as_str(), json.as_slice())
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn delete_meta(&self, bucket: &str, id: &str) -> Result<(), StoreError> {
        let key = item_key(bucket, id);
        self.run(move |db, _| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut items = txn.open_table(ITEMS).map_err(backend)?;
                let old: Option<ItemMeta> = match items.remove(key.as_str()).map_err(backend)? {
                    Some(v) => serde_json::from_slice(v.value()).ok(),
                    None => None,
                };
                if let Some(at) = old.and_then(|m| m.expires_at) {
                    txn.open_table(EXPIRIES)
                        .map_err(backend)?
                        .remove((at, key.as_str()))
                        .map_err(backend)?;
                }
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn expired_items(&self, before: u64, limit: usize) -> Result<Vec<ItemMeta>, StoreError> {
        self.run(move |db, _| {
            let txn = db.begin_read().map_err(backend)?;
            let expiries = txn.open_table(EXPIRIES).map_err(backend)?;
            let items = txn.open_table(ITEMS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in expiries
                .range::<(u64, &str)>((0, "")..=(before, "\u{10FFFF}"))
                .map_err(backend)?
            {
                if out.len() == limit {
                    break;
                }
                let (key, _) = entry.map_err(backend)?;
                let (_, name) = key.value();
                if let Some(v) = items.get(name).map_err(backend)? {
                    out.push(serde_json::from_slice(v.value())?);
                }
            }
            Ok(out)
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

    async fn lock_get(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        let key = key.to_owned();
        self.run(move |db, now| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(LOCKS).map_err(backend)?;
            Ok(read_lock(&table, &key)?.filter(|r| r.until > now))
        })
        .await
    }

    async fn lock_swap(
        &self,
        key: &str,
        expected: Option<&LockRecord>,
        new: Option<&LockRecord>,
    ) -> Result<bool, StoreError> {
        let key = key.to_owned();
        let expected = expected.cloned();
        let new = new.map(serde_json::to_vec).transpose()?;
        self.run(move |db, now| {
            let txn = db.begin_write().map_err(backend)?;
            let swapped = {
                let mut table = txn.open_table(LOCKS).map_err(backend)?;
                let current = read_lock(&table, &key)?.filter(|r| r.until > now);
                if current == expected {
                    match &new {
                        Some(json) => {
                            table
                                .insert(key.as_str(), json.as_slice())
                                .map_err(backend)?;
                        }
                        None => {
                            table.remove(key.as_str()).map_err(backend)?;
                        }
                    }
                    true
                } else {
                    false
                }
            };
            if swapped {
                txn.commit().map_err(backend)?;
            } else {
                txn.abort().map_err(backend)?;
            }
            Ok(swapped)
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
                    state: PaymentState::Verified,
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

    async fn purge(&self, ledger_before: u64) -> Result<Purged, StoreError> {
        self.run(move |db, now| {
            let txn = db.begin_write().map_err(backend)?;
            let purged = {
                let mut locks = txn.open_table(LOCKS).map_err(backend)?;
                let before = locks.len().map_err(backend)?;
                locks
                    .retain(|_, json| {
                        // An undecodable lock holds nothing: drop it too.
                        serde_json::from_slice::<LockRecord>(json).is_ok_and(|r| r.until > now)
                    })
                    .map_err(backend)?;
                let locks_removed = before - locks.len().map_err(backend)?;

                let mut ledger = txn.open_table(LEDGER).map_err(backend)?;
                let before = ledger.len().map_err(backend)?;
                ledger
                    .retain(|_, json| {
                        serde_json::from_slice::<PaymentRecord>(json)
                            .map_or(true, |r| !purgeable(&r.state, r.updated_at, ledger_before))
                    })
                    .map_err(backend)?;
                Purged {
                    locks: locks_removed,
                    ledger: before - ledger.len().map_err(backend)?,
                }
            };
            txn.commit().map_err(backend)?;
            Ok(purged)
        })
        .await
    }
}
