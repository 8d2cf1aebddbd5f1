//! [`Store`] in an embedded redb file: the default for a single hb402 beside one node.
//!
//! redb is synchronous, so reads run on tokio's blocking pool. Writes go to one writer thread
//! that commits them in groups: the writes waiting while a commit is being made durable are
//! applied, in order, in the next transaction, and made durable together (one `fsync` for the
//! group instead of one per write). Each write's answer is given only once its group is durable;
//! writes see every write before them, so compare-and-swap stays atomic. A group fails as one
//! (every write in it gets the error) when the file fails.
//!
//! Channel records are the exception: a voucher read changes its channel's record, and an
//! `fsync` each would bound a channel to a few hundred reads a second. hb402, the file's only
//! writer, keeps them in memory and writes them behind (every 50 ms, the changes of each
//! channel in one write); a group of channel writes only is committed without `fsync` (it is
//! visible at once, and atomic) and made durable by the next durable commit, at most
//! [`LAZY_FOR`] later. A crash can thus lose the last moments of charges: the payee's loss, never
//! a double charge of the buyer (its next voucher is corrected from the record), and never a
//! claimed voucher (claims are on chain, and after a restart a channel's record is read again
//! from the chain before it is used).

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use async_trait::async_trait;

use super::{
    ChannelRecord, Clock, LockRecord, NewPayment, PaymentRecord, PaymentState, Purged, Store,
    StoreError, item_key, purgeable, system_clock,
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
/// Channel id → record (JSON).
const CHANNELS: TableDefinition<&str, &[u8]> = TableDefinition::new("channels");
/// Channels with charges not yet claimed.
const UNCLAIMED: TableDefinition<&str, ()> = TableDefinition::new("channels_unclaimed");
/// (last active, channel id) of the channels holding a deposit not charged yet.
const REFUNDABLE: TableDefinition<(u64, &str), ()> = TableDefinition::new("channels_refundable");

fn backend(e: impl Into<::redb::Error>) -> StoreError {
    StoreError::Backend(e.into().to_string())
}

/// The most writes one transaction takes.
const MAX_GROUP: usize = 512;

/// The shortest time between the starts of two commits.
const COMMIT_PACE: std::time::Duration = std::time::Duration::from_millis(2);

/// How long a commit without `fsync` stays the last one before a durable commit follows.
const LAZY_FOR: std::time::Duration = std::time::Duration::from_millis(100);

/// A write, run inside its group's transaction (it answers with how to deliver its result once
/// the group is committed or failed, and whether the file failed under it), and whether it
/// must be durable when answered.
struct Job {
    run: Run,
    durable: bool,
}

/// The body of a [`Job`].
type Run = Box<dyn FnOnce(&WriteTransaction, u64) -> Ran + Send>;

struct Ran {
    file_failed: bool,
    deliver: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
}

/// The writer thread: its queue, and the thread, joined when the last store handle goes (so the
/// file is closed before it can be opened again).
struct Writer {
    queue: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Applies queued writes in groups until every store handle is gone.
fn write_groups(db: Arc<Database>, clock: Clock, queue: std::sync::mpsc::Receiver<Job>) {
    // (when the last commit started, whether its group had more than one write)
    let mut last_commit: Option<(std::time::Instant, bool)> = None;
    // Since when the last commit is not durable yet.
    let mut lazy_since: Option<std::time::Instant> = None;
    loop {
        let first = match lazy_since {
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
            Some(since) => {
                let left = LAZY_FOR.saturating_sub(since.elapsed());
                match queue.recv_timeout(left) {
                    Ok(job) => job,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        make_durable(&db);
                        lazy_since = None;
                        continue;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        make_durable(&db);
                        break;
                    }
                }
            }
        };
        // A busy store's commits are paced: after a group of several writes, the next commit
        // starts COMMIT_PACE after it at the earliest, with whatever arrived meanwhile. Fewer,
        // larger commits (each one `fsync`); a store written one write at a time never waits.
        let wait = last_commit
            .filter(|(_, busy)| *busy)
            .and_then(|(at, _)| COMMIT_PACE.checked_sub(at.elapsed()));
        if let Some(wait) = wait {
            std::thread::sleep(wait);
        }
        let started = std::time::Instant::now();
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let durable = jobs.iter().any(|j| j.durable);
        let mut txn = match db.begin_write() {
            Ok(txn) => txn,
            // Dropped unrun: each waiting write is told the store failed.
            Err(e) => {
                tracing::error!(error = %e, "store: cannot begin a write");
                continue;
            }
        };
        if !durable && txn.set_durability(::redb::Durability::None).is_ok() {
            lazy_since.get_or_insert(started);
        } else {
            lazy_since = None;
        }
        // Only commits that `fsync` are worth pacing.
        last_commit = Some((started, jobs.len() > 1 && lazy_since.is_none()));
        let now = clock();
        let ran: Vec<Ran> = jobs.into_iter().map(|job| (job.run)(&txn, now)).collect();
        let failed = if ran.iter().any(|r| r.file_failed) {
            let _ = txn.abort();
            Some("a write of its group failed".to_owned())
        } else {
            txn.commit().err().map(|e| e.to_string())
        };
        for r in ran {
            (r.deliver)(match &failed {
                None => Ok(()),
                Some(reason) => Err(StoreError::Backend(reason.clone())),
            });
        }
    }
}

/// Commits nothing, durably: the commits before it become durable.
fn make_durable(db: &Database) {
    let made = match db.begin_write() {
        Ok(txn) => txn.commit().map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = made {
        tracing::error!(error = %e, "store: recent channel changes could not be made durable");
    }
}

/// The redb-backed store.
#[derive(Clone)]
pub struct RedbStore {
    writer: Arc<Writer>,
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
            txn.open_table(CHANNELS).map_err(backend)?;
            txn.open_table(UNCLAIMED).map_err(backend)?;
            index_refundable(&txn)?;
        }
        txn.commit().map_err(backend)?;
        let db = Arc::new(db);
        let (queue, jobs) = std::sync::mpsc::channel();
        let (writer_db, writer_clock) = (Arc::clone(&db), Arc::clone(&clock));
        let thread = std::thread::Builder::new()
            .name("hb402-store".into())
            .spawn(move || write_groups(writer_db, writer_clock, jobs))
            .map_err(|e| open_err(e.to_string()))?;
        Ok(RedbStore {
            writer: Arc::new(Writer {
                queue: Some(queue),
                thread: Some(thread),
            }),
            db,
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

impl RedbStore {
    /// Queues `f` for the writer and waits until its group is durable: its result then.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction, u64) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_with(true, f).await
    }

    /// [`Self::write`], durable when answered or (`durable: false`) within [`LAZY_FOR`].
    async fn write_with<T, F>(&self, durable: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction, u64) -> Result<T, StoreError> + Send + 'static,
    {
        let stopped = || StoreError::Task("the store's writer stopped".into());
        let (answer, answered) = tokio::sync::oneshot::channel();
        let run: Run = Box::new(move |txn: &WriteTransaction, now| {
            let result = f(txn, now);
            Ran {
                file_failed: matches!(result, Err(StoreError::Backend(_))),
                deliver: Box::new(move |committed: Result<(), StoreError>| {
                    let _ = answer.send(committed.and(result));
                }) as Box<dyn FnOnce(Result<(), StoreError>) + Send>,
            }
        });
        let job = Job { run, durable };
        let queue = self.writer.queue.as_ref().ok_or_else(stopped)?;
        queue.send(job).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
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

fn read_channel(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<ChannelRecord>, StoreError> {
    match table.get(id).map_err(backend)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

/// Fills the index of refundable channels if it is empty (a file written before it existed).
fn index_refundable(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut index = txn.open_table(REFUNDABLE).map_err(backend)?;
    if !index.is_empty().map_err(backend)? {
        return Ok(());
    }
    let table = txn.open_table(CHANNELS).map_err(backend)?;
    for entry in table.iter().map_err(backend)? {
        let (id, json) = entry.map_err(backend)?;
        let record: ChannelRecord = serde_json::from_slice(json.value())?;
        if let Some(since) = record.refundable_since() {
            index.insert((since, id.value()), ()).map_err(backend)?;
        }
    }
    Ok(())
}

/// A channel record as written: its JSON and its places in the indexes.
struct ChannelRow {
    json: Vec<u8>,
    unclaimed: bool,
    refundable_since: Option<u64>,
}

impl ChannelRow {
    fn of(record: &ChannelRecord) -> Result<Self, StoreError> {
        Ok(ChannelRow {
            json: serde_json::to_vec(record)?,
            unclaimed: record.unclaimed(),
            refundable_since: record.refundable_since(),
        })
    }
}

/// Writes channel `id`'s record (`None`: deletes it) and its places in the indexes, in place of
/// `old` (the record stored now).
fn write_channel(
    txn: &WriteTransaction,
    id: &str,
    old: Option<&ChannelRecord>,
    new: Option<&ChannelRow>,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(CHANNELS).map_err(backend)?;
    match new {
        Some(row) => table
            .insert(id, row.json.as_slice())
            .map(drop)
            .map_err(backend)?,
        None => table.remove(id).map(drop).map_err(backend)?,
    }
    let mut index = txn.open_table(UNCLAIMED).map_err(backend)?;
    if new.is_some_and(|r| r.unclaimed) {
        index.insert(id, ()).map(drop).map_err(backend)?;
    } else {
        index.remove(id).map(drop).map_err(backend)?;
    }
    let mut refundable = txn.open_table(REFUNDABLE).map_err(backend)?;
    if let Some(since) = old.and_then(ChannelRecord::refundable_since) {
        refundable.remove((since, id)).map_err(backend)?;
    }
    if let Some(since) = new.and_then(|r| r.refundable_since) {
        refundable.insert((since, id), ()).map_err(backend)?;
    }
    Ok(())
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
        self.write(move |txn, _| {
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
            Ok(())
        })
        .await
    }

    async fn put_meta_new(&self, meta: &ItemMeta) -> Result<bool, StoreError> {
        let key = item_key(&meta.bucket, &meta.id);
        let json = serde_json::to_vec(meta)?;
        let expires_at = meta.expires_at;
        self.write(move |txn, _| {
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
            Ok(true)
        })
        .await
    }

    async fn delete_meta(&self, bucket: &str, id: &str) -> Result<(), StoreError> {
        let key = item_key(bucket, id);
        self.write(move |txn, _| {
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
            Ok(())
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

    async fn channel_get(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        let id = id.to_owned();
        self.run(move |db, _| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(CHANNELS).map_err(backend)?;
            read_channel(&table, &id)
        })
        .await
    }

    async fn channel_swap(
        &self,
        id: &str,
        expected: Option<&ChannelRecord>,
        new: Option<&ChannelRecord>,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let expected = expected.map(|r| r.version);
        let new = new.map(ChannelRow::of).transpose()?;
        self.write_with(false, move |txn, _| {
            let old = {
                let table = txn.open_table(CHANNELS).map_err(backend)?;
                read_channel(&table, &id)?
            };
            if old.as_ref().map(|r| r.version) != expected {
                return Ok(false);
            }
            write_channel(txn, &id, old.as_ref(), new.as_ref())?;
            Ok(true)
        })
        .await
    }

    async fn channels_put(&self, records: &[(String, ChannelRecord)]) -> Result<(), StoreError> {
        let rows = records
            .iter()
            .map(|(id, record)| Ok((id.clone(), record.version, ChannelRow::of(record)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.write_with(false, move |txn, _| {
            for (id, version, row) in &rows {
                let old = {
                    let table = txn.open_table(CHANNELS).map_err(backend)?;
                    read_channel(&table, id)?
                };
                if old.as_ref().is_none_or(|old| old.version < *version) {
                    write_channel(txn, id, old.as_ref(), Some(row))?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn channels_idle(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<(String, ChannelRecord)>, StoreError> {
        self.run(move |db, _| {
            let txn = db.begin_read().map_err(backend)?;
            let index = txn.open_table(REFUNDABLE).map_err(backend)?;
            let table = txn.open_table(CHANNELS).map_err(backend)?;
            let mut out = Vec::new();
            let range = index
                .range::<(u64, &str)>(..(before, ""))
                .map_err(backend)?;
            for entry in range.take(limit) {
                let (key, _) = entry.map_err(backend)?;
                let id = key.value().1.to_owned();
                if let Some(record) = read_channel(&table, &id)? {
                    out.push((id, record));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn channels_unclaimed(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, ChannelRecord)>, StoreError> {
        let after = after.to_owned();
        self.run(move |db, _| {
            let txn = db.begin_read().map_err(backend)?;
            let index = txn.open_table(UNCLAIMED).map_err(backend)?;
            let table = txn.open_table(CHANNELS).map_err(backend)?;
            let mut out = Vec::new();
            let range = index
                .range::<&str>((Bound::Excluded(after.as_str()), Bound::Unbounded))
                .map_err(backend)?;
            for entry in range.take(limit) {
                let (id, _) = entry.map_err(backend)?;
                let id = id.value().to_owned();
                if let Some(record) = read_channel(&table, &id)? {
                    out.push((id, record));
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
        self.write(move |txn, now| {
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
            Ok(swapped)
        })
        .await
    }

    async fn ledger_append(&self, payment: &NewPayment) -> Result<u64, StoreError> {
        let payment = payment.clone();
        self.write(move |txn, now| {
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
            Ok(id)
        })
        .await
    }

    async fn ledger_update(&self, id: u64, state: PaymentState) -> Result<(), StoreError> {
        self.write(move |txn, now| {
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
            Ok(())
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
        self.write(move |txn, now| {
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
            Ok(purged)
        })
        .await
    }
}
