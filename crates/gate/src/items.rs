//! Item metadata: the in-memory cache (moka, weighed in bytes), then the store, then the node.
//!
//! Each copy of an item is its own: the same item may sit in the public and in the private
//! bucket, under different lifetimes. Metadata learned from the node is trusted only once the
//! whole object has been read and its signature verified against its id (an object whose bytes
//! or tags were changed behind hb402's back is not that item); concurrent first reads of one copy
//! share one such verification.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use hb402_ans104::ItemId;
use moka::future::Cache;

use crate::config::Config;
use crate::meta::ItemMeta;
use crate::metrics::MetaSource;
use crate::store::{Store, StoreError};
use crate::upstream::{Upstream, UpstreamError};

/// Where a copy is looked for when it is not known yet.
#[derive(Debug, Clone, Copy)]
pub enum Location<'a> {
    /// In this bucket, at hb402's key layout (`{key_prefix}{id}.ans104`).
    Bucket(&'a str),
    /// The bucket and key a share link names.
    Named {
        /// Bucket.
        bucket: &'a str,
        /// Key.
        key: &'a str,
    },
}

impl Location<'_> {
    /// The bucket.
    pub fn bucket(&self) -> &str {
        match self {
            Location::Bucket(b) | Location::Named { bucket: b, .. } => b,
        }
    }
}

/// Why metadata could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ItemsError {
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The node failed.
    #[error("node: {0}")]
    Node(String),
    /// The node no longer holds the copy.
    #[error("the node no longer holds the copy")]
    Gone,
    /// The object is larger than `limits.max_verify_bytes`: it cannot be verified.
    #[error("the object is {size} bytes, more than the {max} that may be verified")]
    TooLargeToVerify {
        /// Its size.
        size: u64,
        /// The bound.
        max: u64,
    },
}

impl From<StoreError> for ItemsError {
    fn from(e: StoreError) -> Self {
        ItemsError::Store(e.to_string())
    }
}

impl From<UpstreamError> for ItemsError {
    fn from(e: UpstreamError) -> Self {
        ItemsError::Node(e.to_string())
    }
}

/// Metadata of items, cached.
#[derive(Debug)]
pub struct Items {
    cache: Cache<CopyKey, Arc<ItemMeta>>,
    /// Copies recently found missing, so that a stream of requests for ids nobody stored costs
    /// the node one lookup per id and interval, not one per request.
    missing: Cache<CopyKey, ()>,
    /// Whole items, verified, per copy (`None`: item bytes are not cached).
    bodies: Option<Cache<CopyKey, Bytes>>,
    /// KiB of item bytes that answers from memory may hold while they are being sent.
    in_flight: Arc<tokio::sync::Semaphore>,
    store: Arc<dyn Store>,
    upstream: Arc<Upstream>,
    config: Arc<Config>,
}

/// A whole item from the edge cache, with its share of the in-flight budget (released when
/// the answer that sends it is dropped).
#[derive(Debug)]
pub struct Body {
    /// The item's bytes.
    pub bytes: Bytes,
    /// Whether memory had them (else they were just read from the node).
    pub hit: bool,
    /// Its share of the in-flight budget: keep it until the bytes are sent.
    pub permit: tokio::sync::OwnedSemaphorePermit,
}

impl Body {
    /// Bytes `first..=last`, if the item has them (they share the item's memory).
    pub fn slice(&self, first: u64, last: u64) -> Option<Bytes> {
        let first = usize::try_from(first).ok()?;
        let last = usize::try_from(last).ok()?;
        (first <= last && last < self.bytes.len()).then(|| self.bytes.slice(first..=last))
    }
}

/// The unix time now.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How many recent misses are remembered, and for how long.
const MISSING_ENTRIES: u64 = 100_000;
const MISSING_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// A copy in memory: whether it is in the private bucket, and its id (raw bytes: a cache hit
/// costs no encoding).
type CopyKey = (bool, ItemId);

/// What looking a copy up found, shared by concurrent lookups.
#[derive(Debug, Clone)]
enum Lookup {
    Missing,
    Failed(ItemsError),
}

impl Items {
    /// A resolver over `store` and `upstream`.
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, upstream: Arc<Upstream>) -> Self {
        let cache = Cache::builder()
            .max_capacity(config.cache.metadata_bytes)
            .weigher(|_: &CopyKey, meta: &Arc<ItemMeta>| {
                u32::try_from(meta.weight()).unwrap_or(u32::MAX)
            })
            .time_to_live(config.cache.metadata_ttl)
            .build();
        let missing = Cache::builder()
            .max_capacity(MISSING_ENTRIES)
            .time_to_live(MISSING_TTL)
            .build();
        let bodies = (config.cache.item_bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(config.cache.item_bytes)
                .weigher(|_: &CopyKey, bytes: &Bytes| {
                    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
                })
                .time_to_live(config.cache.item_ttl)
                .build()
        });
        let in_flight = Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(config.cache.item_bytes.div_ceil(1024))
                .unwrap_or(usize::MAX)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        ));
        Items {
            cache,
            missing,
            bodies,
            in_flight,
            store,
            upstream,
            config,
        }
    }

    /// The metadata of `id` where `location` says, or `None` if no such copy exists.
    pub async fn find(
        &self,
        id: &ItemId,
        location: Location<'_>,
    ) -> Result<Option<(Arc<ItemMeta>, MetaSource)>, ItemsError> {
        let Some(key) = self.key(location.bucket(), id) else {
            // Only the served buckets are cached (and only they are ever looked in).
            return Ok(None);
        };
        if let Some(meta) = self.cache.get(&key).await {
            return Ok(Some((meta, MetaSource::Memory)));
        }
        if self.missing.contains_key(&key) {
            return Ok(None);
        }
        // Boxed: the slow path's future is large, and most lookups never take it.
        Box::pin(self.look_up(id.to_string(), key, location)).await
    }

    fn key(&self, bucket: &str, id: &ItemId) -> Option<CopyKey> {
        let up = &self.config.upstream;
        match bucket {
            b if b == up.public_bucket => Some((false, *id)),
            b if b == up.private_bucket => Some((true, *id)),
            _ => None,
        }
    }

    fn key_of(&self, bucket: &str, id: &str) -> Option<CopyKey> {
        self.key(bucket, &id.parse().ok()?)
    }

    /// The store, then the node; concurrent lookups of one copy share one.
    async fn look_up(
        &self,
        id: String,
        key: CopyKey,
        location: Location<'_>,
    ) -> Result<Option<(Arc<ItemMeta>, MetaSource)>, ItemsError> {
        // 0 memory (another lookup filled it), 1 store, 2 node.
        let source = AtomicU8::new(0);
        let found = self
            .cache
            .try_get_with(key, async {
                if let Some(meta) = self
                    .store
                    .get_meta(location.bucket(), &id)
                    .await
                    .map_err(|e| Lookup::Failed(e.into()))?
                {
                    source.store(1, Ordering::Relaxed);
                    return Ok(Arc::new(meta));
                }
                source.store(2, Ordering::Relaxed);
                match self.learn(&id, location).await {
                    Ok(Some(meta)) => Ok(Arc::new(meta)),
                    Ok(None) => Err(Lookup::Missing),
                    Err(e) => Err(Lookup::Failed(e)),
                }
            })
            .await;
        let source = match source.load(Ordering::Relaxed) {
            1 => MetaSource::Store,
            2 => MetaSource::Upstream,
            _ => MetaSource::Memory,
        };
        match found {
            Ok(meta) => Ok(Some((meta, source))),
            Err(e) => match e.as_ref() {
                Lookup::Missing => {
                    self.missing.insert(key, ()).await;
                    Ok(None)
                }
                Lookup::Failed(e) => Err(e.clone()),
            },
        }
    }

    /// Reads the copy whole from the node and verifies it; its metadata, if it is the item.
    async fn learn(
        &self,
        id: &str,
        location: Location<'_>,
    ) -> Result<Option<ItemMeta>, ItemsError> {
        let (bucket, object) = match location {
            Location::Bucket(bucket) => (bucket.to_owned(), self.upstream.item_key(id)),
            Location::Named { bucket, key } => (bucket.to_owned(), key.to_owned()),
        };
        let Some(size) = self.upstream.object_size(&bucket, &object).await? else {
            return Ok(None);
        };
        let max = self.config.limits.max_verify_bytes;
        if size > max {
            return Err(ItemsError::TooLargeToVerify { size, max });
        }
        // Kept for the item cache only within the in-flight budget (concurrent first reads of
        // many items would otherwise each hold a whole item).
        let keeping = self
            .cacheable(size)
            .then(|| {
                let kib = u32::try_from(size.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
                Arc::clone(&self.in_flight).try_acquire_many_owned(kib).ok()
            })
            .flatten();
        let keep = keeping.is_some();
        let (item, bytes) = match self
            .upstream
            .read_verified(
                &bucket,
                &object,
                size,
                self.config.limits.max_header_bytes,
                keep,
            )
            .await
        {
            Ok(read) => read,
            Err(UpstreamError::Corrupt(reason)) => {
                // Not a valid item: never served, under any id.
                tracing::warn!(%bucket, key = %object, %reason, "stored object is not a valid DataItem");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        if item.header.id().to_string() != id {
            // The object at this key is another item: never serve it under this id.
            tracing::warn!(%bucket, key = %object, "stored object's id does not match its key");
            return Ok(None);
        }
        let expires_at = item
            .header
            .tag("Expires")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse().ok());
        let private = bucket == self.config.upstream.private_bucket;
        let meta = ItemMeta::from_header(
            &item.header,
            bucket,
            object,
            item.size,
            private,
            expires_at,
            None,
        );
        if let (Some(bodies), Some(bytes), Some(key)) =
            (&self.bodies, bytes, self.key(&meta.bucket, &item.id))
        {
            bodies.insert(key, bytes).await;
        }
        // An upload of this copy may have recorded it while it was being read (its object is on
        // the node before its payment settles): what the upload recorded (its paid lifetime)
        // stands, never what the object's tags say.
        if !self.store.put_meta_new(&meta).await? {
            return Ok(self.store.get_meta(&meta.bucket, id).await?);
        }
        Ok(Some(meta))
    }

    /// Whether an item of `size` bytes is kept in memory.
    fn cacheable(&self, size: u64) -> bool {
        self.bodies.is_some() && size <= self.config.cache.item_max_bytes
    }

    /// The whole object of a copy: from memory, or read once from the node and kept if it is
    /// the item (concurrent misses share the read). `None` when the item is not kept in memory,
    /// or when answers from memory already hold as many bytes as `cache.item_bytes` (the read is
    /// then streamed from the node). Only called once a read of this copy was decided from its
    /// metadata; the answer keeps the returned [`Body`] (its share of the budget) until sent.
    pub async fn body(&self, meta: &ItemMeta) -> Result<Option<Body>, ItemsError> {
        let (Some(bodies), true) = (&self.bodies, self.cacheable(meta.size)) else {
            return Ok(None);
        };
        let Some((key, id)) = meta
            .id
            .parse::<ItemId>()
            .ok()
            .and_then(|id| Some((self.key(&meta.bucket, &id)?, id)))
        else {
            return Ok(None);
        };
        let kib = u32::try_from(meta.size.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_many_owned(kib) else {
            return Ok(None);
        };
        if let Some(bytes) = bodies.get(&key).await {
            return Ok(Some(Body {
                bytes,
                hit: true,
                permit,
            }));
        }
        let bytes = bodies
            .try_get_with(key, self.read_body(meta, id))
            .await
            .map_err(|e| (*e).clone())?;
        Ok(Some(Body {
            bytes,
            hit: false,
            permit,
        }))
    }

    /// Reads a copy's object whole and checks it is the item its metadata describes.
    async fn read_body(&self, meta: &ItemMeta, id: ItemId) -> Result<Bytes, ItemsError> {
        let max_header = self.config.limits.max_header_bytes;
        let read = self
            .upstream
            .read_verified(&meta.bucket, &meta.key, meta.size, max_header, true)
            .await;
        match read {
            Ok((item, Some(bytes))) if item.id == id && item.size == meta.size => Ok(bytes),
            Ok(_) | Err(UpstreamError::Corrupt(_)) => {
                tracing::warn!(bucket = %meta.bucket, key = %meta.key, "stored object is not the item it was");
                Err(ItemsError::Node("the stored object is not the item".into()))
            }
            // The device answers 500 for a missing key: a copy the node lost is not found.
            Err(e @ UpstreamError::Status { .. }) => {
                match self.upstream.object_size(&meta.bucket, &meta.key).await? {
                    None => Err(ItemsError::Gone),
                    Some(_) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Stores and caches a copy's metadata.
    pub async fn remember(&self, meta: ItemMeta) -> Result<(), StoreError> {
        self.store.put_meta(&meta).await?;
        self.drop_body(&meta.bucket, &meta.id).await;
        if let Some(key) = self.key_of(&meta.bucket, &meta.id) {
            self.missing.invalidate(&key).await;
            self.cache.insert(key, Arc::new(meta)).await;
        }
        Ok(())
    }

    /// The node has just taken a copy: a recent miss of it (the upload's own lookup) is stale.
    pub async fn taken(&self, bucket: &str, id: &ItemId) {
        if let Some(key) = self.key(bucket, id) {
            self.missing.invalidate(&key).await;
        }
    }

    /// Forgets a copy.
    pub async fn forget(&self, bucket: &str, id: &str) -> Result<(), StoreError> {
        self.store.delete_meta(bucket, id).await?;
        self.drop_body(bucket, id).await;
        if let Some(key) = self.key_of(bucket, id) {
            self.cache.invalidate(&key).await;
        }
        Ok(())
    }

    /// A copy's metadata as it is now: hb402's record, else what the node holds (read whole and
    /// verified, then recorded). The recent-miss cache is not consulted: an upload must know
    /// whether the node holds a copy this hb402 has no record of (stored before it was put in
    /// front of the node, through another hb402, or before its state was lost), or it would
    /// treat someone's object as its own to shorten or delete.
    pub async fn current(
        &self,
        bucket: &str,
        id: &ItemId,
    ) -> Result<Option<Arc<ItemMeta>>, ItemsError> {
        if let Some(meta) = self.known(bucket, &id.to_string()).await? {
            return Ok(Some(meta));
        }
        let Some(key) = self.key(bucket, id) else {
            return Ok(None);
        };
        self.missing.invalidate(&key).await;
        Ok(self
            .find(id, Location::Bucket(bucket))
            .await?
            .map(|(meta, _)| meta))
    }

    async fn drop_body(&self, bucket: &str, id: &str) {
        if let (Some(bodies), Some(key)) = (&self.bodies, self.key_of(bucket, id)) {
            bodies.invalidate(&key).await;
        }
    }

    /// A copy's metadata if already known (cache or store), without asking the node.
    pub async fn known(&self, bucket: &str, id: &str) -> Result<Option<Arc<ItemMeta>>, StoreError> {
        if let Some(key) = self.key_of(bucket, id)
            && let Some(meta) = self.cache.get(&key).await
        {
            return Ok(Some(meta));
        }
        Ok(self.store.get_meta(bucket, id).await?.map(Arc::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    /// A slow reader keeps the item it is being sent: answers from memory in flight at once
    /// hold at most `cache.item_bytes`; beyond, reads are streamed from the node (`None`).
    #[tokio::test]
    async fn answers_from_memory_in_flight_hold_at_most_the_cache_size() {
        let text = "version = 1\n[cache]\nitem_bytes = 4096\nitem_max_bytes = 3000\n";
        let config = Config::from_toml(
            text,
            std::path::Path::new("t.toml"),
            &Overrides::default(),
            &|_| None,
        )
        .unwrap();
        let config = Arc::new(config);
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let upstream = Arc::new(Upstream::new(&config.upstream).unwrap());
        let items = Items::new(Arc::clone(&config), store, upstream);
        let id = "Q9qsw4QGrcQxfA3Fr9yW9Yk9Bxz8tEAGYJKqcn0Ghuo";
        let meta = ItemMeta {
            id: id.into(),
            bucket: config.upstream.public_bucket.clone(),
            key: format!("dataitems/{id}.ans104"),
            size: 3000,
            data_offset: 1000,
            content_type: None,
            owner_address: String::new(),
            signature_type: 1,
            tags: vec![],
            expires_at: None,
            private: false,
            uploaded_at: None,
        };
        let key = items.key_of(&meta.bucket, id).unwrap();
        let bodies = items.bodies.as_ref().unwrap();
        bodies.insert(key, Bytes::from(vec![7u8; 3000])).await;
        let first = items.body(&meta).await.unwrap().expect("from memory");
        assert!(first.hit);
        assert!(
            items.body(&meta).await.unwrap().is_none(),
            "over the budget"
        );
        drop(first);
        assert!(items.body(&meta).await.unwrap().is_some());
        // The private copy of the same item is another entry: its bytes are its own.
        let private = ItemMeta {
            bucket: config.upstream.private_bucket.clone(),
            private: true,
            ..meta.clone()
        };
        let private_key = items.key_of(&private.bucket, id).unwrap();
        assert!(bodies.get(&private_key).await.is_none());
    }
}
