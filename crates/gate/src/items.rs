//! Item metadata resolution: the in-memory cache (moka), then the store, then the head of the
//! object upstream (read with as many ranged reads as the header needs). What is learnt is kept.

use std::sync::Arc;

use hb402_ans104::ItemId;
use moka::future::Cache;

use crate::config::Config;
use crate::error::ApiError;
use crate::meta::ItemMeta;
use crate::metrics::MetaSource;
use crate::store::Store;
use crate::upstream::{Upstream, UpstreamError};

/// Where to look for an item not yet known.
#[derive(Debug, Clone, Copy)]
pub enum Location<'a> {
    /// The public bucket, at the configured key.
    Public,
    /// The bucket and key a share link names.
    Named {
        /// Bucket.
        bucket: &'a str,
        /// Key.
        key: &'a str,
    },
}

/// Metadata of items, cached.
#[derive(Debug)]
pub struct Items {
    cache: Cache<String, Arc<ItemMeta>>,
    store: Arc<dyn Store>,
    upstream: Arc<Upstream>,
    config: Arc<Config>,
}

/// The unix time now.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn upstream_error(e: UpstreamError) -> ApiError {
    tracing::warn!(error = %e, "node error while reading item metadata");
    ApiError::bad_gateway(format!("the node could not be read: {e}"))
}

impl Items {
    /// A resolver over `store` and `upstream`.
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, upstream: Arc<Upstream>) -> Self {
        let cache = Cache::builder()
            .max_capacity(config.cache.metadata_entries)
            .time_to_live(config.cache.metadata_ttl)
            .build();
        Items {
            cache,
            store,
            upstream,
            config,
        }
    }

    /// The metadata of `id`, or `None` if the item does not exist where it is looked for.
    pub async fn find(
        &self,
        id: &ItemId,
        location: Location<'_>,
    ) -> Result<Option<(Arc<ItemMeta>, MetaSource)>, ApiError> {
        let key = id.to_string();
        if let Some(meta) = self.cache.get(&key).await {
            return Ok(Some((meta, MetaSource::Memory)));
        }
        if let Some(meta) = self
            .store
            .get_meta(&key)
            .await
            .map_err(|e| ApiError::new(503, "store_unavailable", e.to_string()))?
        {
            let meta = Arc::new(meta);
            self.cache.insert(key, meta.clone()).await;
            return Ok(Some((meta, MetaSource::Store)));
        }
        let (bucket, object) = match location {
            Location::Public => (
                self.config.upstream.public_bucket.clone(),
                self.upstream.item_key(&key),
            ),
            Location::Named { bucket, key } => (bucket.to_owned(), key.to_owned()),
        };
        let Some(size) = self
            .upstream
            .object_size(&bucket, &object)
            .await
            .map_err(upstream_error)?
        else {
            return Ok(None);
        };
        let header = self
            .upstream
            .read_header(&bucket, &object, size, self.config.limits.max_header_bytes)
            .await
            .map_err(upstream_error)?;
        if header.id() != *id {
            // The object at this key is another item: never serve it under this id.
            tracing::warn!(%bucket, key = %object, "stored object's id does not match its key");
            return Ok(None);
        }
        let expires_at = header
            .tag("Expires")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse().ok());
        let private = bucket == self.config.upstream.private_bucket;
        let meta = ItemMeta::from_header(&header, bucket, object, size, private, expires_at, None);
        self.remember(meta.clone()).await?;
        Ok(Some((Arc::new(meta), MetaSource::Upstream)))
    }

    /// Stores and caches metadata.
    pub async fn remember(&self, meta: ItemMeta) -> Result<(), ApiError> {
        self.store
            .put_meta(&meta)
            .await
            .map_err(|e| ApiError::new(503, "store_unavailable", e.to_string()))?;
        self.cache.insert(meta.id.clone(), Arc::new(meta)).await;
        Ok(())
    }

    /// Metadata already known (cache or store), without asking the node.
    pub async fn known(&self, id: &str) -> Result<Option<Arc<ItemMeta>>, ApiError> {
        if let Some(meta) = self.cache.get(id).await {
            return Ok(Some(meta));
        }
        Ok(self
            .store
            .get_meta(id)
            .await
            .map_err(|e| ApiError::new(503, "store_unavailable", e.to_string()))?
            .map(Arc::new))
    }
}
