//! File-backed buckets and objects, standing in for the node's S3 backend (MinIO).
//!
//! Layout under the data directory:
//!
//! ```text
//! buckets/<bucket>/                 one directory per bucket (names follow the S3 rules)
//! buckets/<bucket>/<sha256(key)>.data   the object's bytes
//! buckets/<bucket>/<sha256(key)>.json   its metadata: key, size, ETag, times
//! ```
//!
//! Keys never touch the file system tree: a file is named by the SHA-256 of its key, so `..`,
//! absolute paths, long keys and odd bytes cannot escape or break the directory. An in-memory
//! index, rebuilt from the `.json` files at start, answers lookups and listings.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::DevnodeError;

/// The longest key S3 accepts, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 1024;

/// What the store keeps about an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ObjectMeta {
    /// The object's key.
    pub(crate) key: String,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// The S3 ETag, quoted: `"<md5 hex>"`.
    pub(crate) etag: String,
    /// When it was written, in milliseconds since the epoch.
    pub(crate) last_modified_ms: u64,
    /// When it expires (the lifecycle deletes it), in milliseconds since the epoch.
    pub(crate) expires_at_ms: Option<u64>,
}

impl ObjectMeta {
    fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| now_ms < at)
    }
}

/// Why a storage operation failed, named after the S3 error code the backend would return.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The bucket does not exist.
    #[error("NoSuchBucket")]
    NoSuchBucket,
    /// The key does not exist (or has expired).
    #[error("NoSuchKey")]
    NoSuchKey,
    /// `CreateBucket` of a bucket that already exists.
    #[error("BucketAlreadyOwnedByYou")]
    BucketAlreadyOwnedByYou,
    /// The bucket name breaks the S3 naming rules.
    #[error("InvalidBucketName")]
    InvalidBucketName,
    /// The key is longer than 1024 bytes.
    #[error("KeyTooLongError")]
    KeyTooLong,
    /// The file system failed.
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
}

/// The S3 bucket naming rules: 3–63 characters of `a-z`, `0-9`, `.` and `-`, starting and
/// ending with a letter or digit, no `..`, not shaped like an IPv4 address.
pub(crate) fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    let edge_ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b.first().is_some_and(edge_ok)
        && b.last().is_some_and(edge_ok)
        && !name.contains("..")
        && !(name.split('.').count() == 4
            && name
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|c| c.is_ascii_digit())))
}

/// The quoted MD5 ETag S3 gives a single-part upload.
pub(crate) fn etag_of(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(data)))
}

fn file_stem(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

type Index = BTreeMap<String, BTreeMap<String, ObjectMeta>>;

/// The object store. Methods block on file I/O; call them from a blocking context.
#[derive(Debug)]
pub(crate) struct Store {
    buckets_dir: PathBuf,
    index: RwLock<Index>,
}

impl Store {
    /// Opens (creating when missing) the store under `data_dir` and rebuilds the index.
    pub(crate) fn open(data_dir: &Path) -> Result<Store, DevnodeError> {
        let buckets_dir = data_dir.join("buckets");
        let dir_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DevnodeError::DataDir { path, source }
        };
        fs::create_dir_all(&buckets_dir).map_err(dir_err(&buckets_dir))?;
        let mut index = Index::new();
        for entry in fs::read_dir(&buckets_dir).map_err(dir_err(&buckets_dir))? {
            let entry = entry.map_err(dir_err(&buckets_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !path.is_dir() || !valid_bucket_name(&name) {
                tracing::warn!(path = %path.display(), "ignoring unexpected entry in the data directory");
                continue;
            }
            let objects = load_bucket(&path)?;
            index.insert(name, objects);
        }
        Ok(Store {
            buckets_dir,
            index: RwLock::new(index),
        })
    }

    fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.buckets_dir.join(bucket)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// `CreateBucket`: fails when the name is invalid or the bucket exists.
    pub(crate) fn create_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        if !valid_bucket_name(bucket) {
            return Err(StoreError::InvalidBucketName);
        }
        let mut index = self.write();
        if index.contains_key(bucket) {
            return Err(StoreError::BucketAlreadyOwnedByYou);
        }
        fs::create_dir_all(self.bucket_dir(bucket))?;
        index.insert(bucket.to_owned(), BTreeMap::new());
        Ok(())
    }

    /// Creates the bucket unless it exists.
    pub(crate) fn ensure_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        match self.create_bucket(bucket) {
            Ok(()) | Err(StoreError::BucketAlreadyOwnedByYou) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether the bucket exists (`HeadBucket`).
    pub(crate) fn bucket_exists(&self, bucket: &str) -> bool {
        self.read().contains_key(bucket)
    }

    fn check(index: &Index, bucket: &str, key: &str) -> Result<(), StoreError> {
        if !valid_bucket_name(bucket) {
            return Err(StoreError::InvalidBucketName);
        }
        if !index.contains_key(bucket) {
            return Err(StoreError::NoSuchBucket);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(StoreError::KeyTooLong);
        }
        Ok(())
    }

    /// `PutObject`: writes the bytes, then the metadata, each through a rename, and returns the
    /// new metadata.
    pub(crate) fn put(
        &self,
        bucket: &str,
        key: &str,
        data: &[u8],
        now_ms: u64,
        expires_at_ms: Option<u64>,
    ) -> Result<ObjectMeta, StoreError> {
        let mut index = self.write();
        Self::check(&index, bucket, key)?;
        let meta = ObjectMeta {
            key: key.to_owned(),
            size: data.len() as u64,
            etag: etag_of(data),
            last_modified_ms: now_ms,
            expires_at_ms,
        };
        let dir = self.bucket_dir(bucket);
        let stem = file_stem(key);
        write_through_rename(&dir.join(format!("{stem}.data")), data)?;
        let json = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
        write_through_rename(&dir.join(format!("{stem}.json")), &json)?;
        index
            .get_mut(bucket)
            .ok_or(StoreError::NoSuchBucket)?
            .insert(key.to_owned(), meta.clone());
        Ok(meta)
    }

    /// `HeadObject`: the metadata of a live object.
    pub(crate) fn head(
        &self,
        bucket: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<ObjectMeta, StoreError> {
        let index = self.read();
        Self::check(&index, bucket, key)?;
        index
            .get(bucket)
            .and_then(|objects| objects.get(key))
            .filter(|meta| meta.is_live(now_ms))
            .cloned()
            .ok_or(StoreError::NoSuchKey)
    }

    /// `GetObject`: the metadata and bytes of a live object.
    pub(crate) fn get(
        &self,
        bucket: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<(ObjectMeta, Vec<u8>), StoreError> {
        // Holding the read lock keeps a concurrent put from swapping the file under us.
        let index = self.read();
        Self::check(&index, bucket, key)?;
        let meta = index
            .get(bucket)
            .and_then(|objects| objects.get(key))
            .filter(|meta| meta.is_live(now_ms))
            .cloned()
            .ok_or(StoreError::NoSuchKey)?;
        let data = fs::read(
            self.bucket_dir(bucket)
                .join(format!("{}.data", file_stem(key))),
        )?;
        Ok((meta, data))
    }

    /// `DeleteObject`: removes the object; deleting a missing key succeeds, as in S3.
    pub(crate) fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let mut index = self.write();
        Self::check(&index, bucket, key)?;
        self.remove_locked(&mut index, bucket, key)
    }

    fn remove_locked(&self, index: &mut Index, bucket: &str, key: &str) -> Result<(), StoreError> {
        let dir = self.bucket_dir(bucket);
        let stem = file_stem(key);
        for suffix in ["json", "data"] {
            match fs::remove_file(dir.join(format!("{stem}.{suffix}"))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        if let Some(objects) = index.get_mut(bucket) {
            objects.remove(key);
        }
        Ok(())
    }

    /// The live objects of a bucket, sorted by key.
    pub(crate) fn list(&self, bucket: &str, now_ms: u64) -> Result<Vec<ObjectMeta>, StoreError> {
        if !valid_bucket_name(bucket) {
            return Err(StoreError::InvalidBucketName);
        }
        let index = self.read();
        let objects = index.get(bucket).ok_or(StoreError::NoSuchBucket)?;
        Ok(objects
            .values()
            .filter(|meta| meta.is_live(now_ms))
            .cloned()
            .collect())
    }

    /// Deletes every expired object (the lifecycle scan) and returns how many went.
    pub(crate) fn sweep(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut index = self.write();
        let expired: Vec<(String, String)> = index
            .iter()
            .flat_map(|(bucket, objects)| {
                objects
                    .values()
                    .filter(|meta| !meta.is_live(now_ms))
                    .map(|meta| (bucket.clone(), meta.key.clone()))
            })
            .collect();
        for (bucket, key) in &expired {
            self.remove_locked(&mut index, bucket, key)?;
        }
        Ok(expired.len())
    }
}

fn write_through_rename(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// Reads a bucket directory: every `.json` whose name matches its key's hash and whose
/// `.data` has the recorded size. Leftover temporary files are removed; anything else that
/// does not fit is skipped with a warning.
fn load_bucket(dir: &Path) -> Result<BTreeMap<String, ObjectMeta>, DevnodeError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DevnodeError::DataDir { path, source }
    };
    let mut objects = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".tmp") {
            fs::remove_file(&path).map_err(io_err(&path))?;
            continue;
        }
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let meta: ObjectMeta = match serde_json::from_slice(&bytes) {
            Ok(meta) => meta,
            Err(e) => {
                return Err(DevnodeError::Corrupt {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let data_len = fs::metadata(dir.join(format!("{stem}.data"))).map(|m| m.len());
        if file_stem(&meta.key) != stem || data_len.ok() != Some(meta.size) {
            tracing::warn!(path = %path.display(), "skipping an object whose files do not match");
            continue;
        }
        objects.insert(meta.key.clone(), meta);
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in ["abc", "offchain-dataitems", "a.b-c", "123"] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in [
            "ab",
            "ABC",
            "-abc",
            "abc-",
            "a..b",
            "..",
            "a/b",
            "192.168.1.1",
            &"a".repeat(64),
        ] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn etag_is_quoted_md5() {
        assert_eq!(etag_of(b""), "\"d41d8cd98f00b204e9800998ecf8427e\"");
    }

    #[test]
    fn objects_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.create_bucket("bucket").unwrap();
            store
                .put("bucket", "../../etc/passwd", b"x", 1_000, None)
                .unwrap();
            store
                .put("bucket", "a/b", b"hello", 2_000, Some(10_000))
                .unwrap();
            assert!(matches!(
                store.create_bucket("bucket"),
                Err(StoreError::BucketAlreadyOwnedByYou)
            ));
        }
        let store = Store::open(dir.path()).unwrap();
        let (meta, data) = store.get("bucket", "a/b", 5_000).unwrap();
        assert_eq!(data, b"hello");
        assert_eq!(meta.size, 5);
        assert_eq!(meta.expires_at_ms, Some(10_000));
        assert_eq!(
            store.get("bucket", "../../etc/passwd", 5_000).unwrap().1,
            b"x"
        );
        // Nothing was written outside the bucket directory.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("buckets")]);
    }

    #[test]
    fn expired_objects_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create_bucket("bucket").unwrap();
        store.put("bucket", "k", b"v", 0, Some(100)).unwrap();
        assert!(store.head("bucket", "k", 99).is_ok());
        assert!(matches!(
            store.head("bucket", "k", 100),
            Err(StoreError::NoSuchKey)
        ));
        assert!(store.list("bucket", 100).unwrap().is_empty());
        assert_eq!(store.sweep(100).unwrap(), 1);
        assert_eq!(store.list("bucket", 0).unwrap().len(), 0);
    }

    #[test]
    fn errors_name_the_s3_code() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(matches!(
            store.put("nope", "k", b"", 0, None),
            Err(StoreError::NoSuchBucket)
        ));
        assert!(matches!(
            store.create_bucket("A_B"),
            Err(StoreError::InvalidBucketName)
        ));
        store.create_bucket("bucket").unwrap();
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            store.put("bucket", &long, b"", 0, None),
            Err(StoreError::KeyTooLong)
        ));
        assert!(matches!(
            store.get("bucket", "k", 0),
            Err(StoreError::NoSuchKey)
        ));
        store.delete("bucket", "k").unwrap();
    }
}
