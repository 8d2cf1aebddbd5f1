//! The in-memory LRU behind `GET /~s3@1.0/cache/<bucket>/<key>` (`s3_nif`'s `SizedLruCache`):
//! bounded by total bytes and by entry count, keyed by `bucket:key`, never invalidated. A
//! cached object therefore stays readable on this route after it was overwritten, deleted or
//! expired, until it is evicted or the node restarts — as on the real node.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

/// The most entries the cache holds (the NIF's `LruCache` capacity).
pub(crate) const MAX_ENTRIES: usize = 10_000;

/// The most bytes the devnode's cache holds (the node's default is 2 GiB, `S3_CACHE_SIZE_GB`).
pub(crate) const MAX_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug)]
struct Entry {
    data: Bytes,
    etag: String,
    tick: u64,
}

/// A byte-bounded least-recently-used cache.
#[derive(Debug)]
pub(crate) struct ObjectCache {
    entries: HashMap<String, Entry>,
    by_age: BTreeMap<u64, String>,
    tick: u64,
    bytes: usize,
    max_bytes: usize,
    max_entries: usize,
}

impl ObjectCache {
    pub(crate) fn new(max_bytes: usize, max_entries: usize) -> ObjectCache {
        ObjectCache {
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            max_bytes,
            max_entries,
        }
    }

    fn cache_key(bucket: &str, key: &str) -> String {
        format!("{bucket}:{key}")
    }

    /// The cached bytes and ETag, marking the entry as recently used.
    pub(crate) fn get(&mut self, bucket: &str, key: &str) -> Option<(Bytes, String)> {
        let cache_key = Self::cache_key(bucket, key);
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(&cache_key)?;
        self.by_age.remove(&entry.tick);
        entry.tick = tick;
        self.by_age.insert(tick, cache_key);
        Some((entry.data.clone(), entry.etag.clone()))
    }

    fn remove(&mut self, cache_key: &str) {
        if let Some(old) = self.entries.remove(cache_key) {
            self.by_age.remove(&old.tick);
            self.bytes -= old.data.len();
        }
    }

    fn evict_oldest(&mut self) -> bool {
        match self.by_age.pop_first() {
            Some((_, cache_key)) => {
                if let Some(old) = self.entries.remove(&cache_key) {
                    self.bytes -= old.data.len();
                }
                true
            }
            None => false,
        }
    }

    /// Caches an object, evicting the least recently used entries to make room; an object
    /// larger than the whole cache is not cached.
    pub(crate) fn put(&mut self, bucket: &str, key: &str, data: Bytes, etag: String) {
        let cache_key = Self::cache_key(bucket, key);
        self.remove(&cache_key);
        if data.len() > self.max_bytes {
            return;
        }
        while self.bytes + data.len() > self.max_bytes || self.entries.len() >= self.max_entries {
            if !self.evict_oldest() {
                break;
            }
        }
        self.tick += 1;
        self.bytes += data.len();
        self.by_age.insert(self.tick, cache_key.clone());
        self.entries.insert(
            cache_key,
            Entry {
                data,
                etag,
                tick: self.tick,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let mut cache = ObjectCache::new(10, 100);
        cache.put("b", "one", Bytes::from_static(b"aaaa"), "1".into());
        cache.put("b", "two", Bytes::from_static(b"bbbb"), "2".into());
        assert!(cache.get("b", "one").is_some());
        cache.put("b", "three", Bytes::from_static(b"cccc"), "3".into());
        assert!(cache.get("b", "two").is_none());
        assert_eq!(cache.get("b", "one").unwrap().1, "1");
        assert!(cache.get("b", "three").is_some());
        cache.put("b", "huge", Bytes::from(vec![0; 11]), "h".into());
        assert!(cache.get("b", "huge").is_none());
    }

    #[test]
    fn evicts_by_entry_count() {
        let mut cache = ObjectCache::new(100, 2);
        cache.put("b", "1", Bytes::new(), String::new());
        cache.put("b", "2", Bytes::new(), String::new());
        cache.put("b", "3", Bytes::new(), String::new());
        assert!(cache.get("b", "1").is_none());
        assert!(cache.get("b", "2").is_some());
        assert!(cache.get("b", "3").is_some());
    }
}
