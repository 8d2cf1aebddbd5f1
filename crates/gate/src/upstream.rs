//! The HyperBEAM node's `~s3@1.0` API as hb402 uses it outside the proxy path: object existence
//! and size, reading an item's header with ranged reads of any length, writing uploads, and
//! creating buckets. Compensates for the device's quirks (hyperbeam-s3.md §1.5): a ranged `GET`
//! answers 200 with only the requested bytes, and a missing key answers 500.

use std::collections::HashSet;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use hb402_ans104::{Header, HeaderParser, StreamingVerifier, VerifiedItem};
use reqwest::StatusCode;
use tokio::sync::Mutex;

use crate::config::UpstreamConfig;

/// First ranged read of an item's head; grown as the header parser asks for more.
const FIRST_READ: u64 = 4096;

/// Why the node could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// Could not connect, or the call timed out.
    #[error("node unreachable: {0}")]
    Unreachable(String),
    /// The node answered something unexpected.
    #[error("node answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Body excerpt.
        message: String,
    },
    /// The stored object is not a valid DataItem header, or not the item it should be.
    #[error("stored object is not a valid item: {0}")]
    Corrupt(String),
}

/// A client of the node's S3 API.
#[derive(Debug)]
pub struct Upstream {
    client: reqwest::Client,
    /// For uploads: no read bound while the body is still being sent (the caller bounds each
    /// chunk and the wait for the answer).
    writer: reqwest::Client,
    base: String,
    authorization: String,
    config: UpstreamConfig,
    buckets: Mutex<HashSet<String>>,
}

impl Upstream {
    /// A client for `config`.
    pub fn new(config: &UpstreamConfig) -> Result<Self, UpstreamError> {
        // Bounds are per connect and per read, never on a whole transfer: a large object takes
        // as long as it takes while it keeps moving.
        let builder = || {
            reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(config.connect_timeout)
                .pool_idle_timeout(Duration::from_secs(60))
        };
        let client = builder()
            .read_timeout(config.read_timeout)
            .build()
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        let writer = builder()
            .build()
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        Ok(Upstream {
            client,
            writer,
            base: format!("http://{}", config.authority),
            authorization: authorization_header(&config.access_key_id),
            config: config.clone(),
            buckets: Mutex::new(HashSet::new()),
        })
    }

    /// The `Authorization` header the device needs: only the access key id is checked
    /// (hyperbeam-s3.md §1.2).
    pub fn authorization(&self) -> &str {
        &self.authorization
    }

    /// The request path of an object.
    pub fn object_path(bucket: &str, key: &str) -> String {
        format!("/~s3@1.0/{bucket}/{key}")
    }

    /// The key of an item under the configured prefix.
    pub fn item_key(&self, id: &str) -> String {
        format!("{}{id}.ans104", self.config.key_prefix)
    }

    fn error(e: reqwest::Error) -> UpstreamError {
        UpstreamError::Unreachable(e.to_string())
    }

    /// The object's size, or `None` if it does not exist. The device answers 500 both for a
    /// missing key and for any other failure, so a 500 is settled by listing the key: only a
    /// listing without it means "absent". A node that fails otherwise is an error, never taken
    /// for a lost copy (an upload would then rewrite or delete a copy that is still there).
    pub async fn object_size(&self, bucket: &str, key: &str) -> Result<Option<u64>, UpstreamError> {
        let resp = self
            .client
            .head(format!("{}{}", self.base, Self::object_path(bucket, key)))
            .header("authorization", &self.authorization)
            .timeout(self.config.read_timeout)
            .send()
            .await
            .map_err(Self::error)?;
        match resp.status() {
            StatusCode::OK => resp
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map(Some)
                .ok_or_else(|| UpstreamError::Status {
                    status: 200,
                    message: "HeadObject without a Content-Length".into(),
                }),
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::INTERNAL_SERVER_ERROR if !self.listed(bucket, key).await? => Ok(None),
            status => Err(UpstreamError::Status {
                status: status.as_u16(),
                message: "unexpected HeadObject status".into(),
            }),
        }
    }

    /// Whether the bucket's listing holds `key` (ListObjects v1 from `key`, one entry: the key
    /// itself sorts first among the keys it prefixes); a bucket that does not exist holds none.
    async fn listed(&self, bucket: &str, key: &str) -> Result<bool, UpstreamError> {
        let url = format!(
            "{}/~s3@1.0/{bucket}?prefix={}&max-keys=1",
            self.base,
            query_escape(key)
        );
        let mut status = StatusCode::OK;
        // A second time when the bucket was created between the listing and the check (a
        // concurrent first upload to it).
        for _ in 0..2 {
            let resp = self
                .client
                .get(&url)
                .header("authorization", &self.authorization)
                .timeout(self.config.read_timeout)
                .send()
                .await
                .map_err(Self::error)?;
            status = resp.status();
            if status == StatusCode::OK {
                let listing = resp.text().await.map_err(Self::error)?;
                return Ok(listed_keys(&listing).any(|listed| listed == key));
            }
            // The device answers 500 for a missing bucket too; only a 404 HeadBucket says so.
            let bucket_url = format!("{}/~s3@1.0/{bucket}", self.base);
            if self.head_bucket(&bucket_url).await? == StatusCode::NOT_FOUND {
                return Ok(false);
            }
        }
        Err(UpstreamError::Status {
            status: status.as_u16(),
            message: "ListObjects failed".into(),
        })
    }

    /// Reads bytes `start..=end` of an object. The device answers 200 (not 206) with just those
    /// bytes; the length is checked.
    async fn read_range(
        &self,
        bucket: &str,
        key: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<u8>, UpstreamError> {
        let resp = self
            .client
            .get(format!("{}{}", self.base, Self::object_path(bucket, key)))
            .header("authorization", &self.authorization)
            .header("range", format!("bytes={start}-{end}"))
            .timeout(self.config.read_timeout)
            .send()
            .await
            .map_err(Self::error)?;
        let status = resp.status();
        if !matches!(status, StatusCode::OK | StatusCode::PARTIAL_CONTENT) {
            return Err(UpstreamError::Status {
                status: status.as_u16(),
                message: "ranged GetObject failed".into(),
            });
        }
        let bytes = resp.bytes().await.map_err(Self::error)?;
        if bytes.len() as u64 != end - start + 1 {
            return Err(UpstreamError::Corrupt(format!(
                "asked for {} bytes at {start}, got {}",
                end - start + 1,
                bytes.len()
            )));
        }
        Ok(bytes.to_vec())
    }

    /// Reads a whole object (`size` bytes) through the DataItem verifier: the item, only if it
    /// is a valid DataItem of exactly that size ([`UpstreamError::Corrupt`] otherwise), and its
    /// bytes when `keep` asks for them.
    pub async fn read_verified(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        max_header_bytes: usize,
        keep: bool,
    ) -> Result<(VerifiedItem, Option<Bytes>), UpstreamError> {
        let resp = self
            .client
            .get(format!("{}{}", self.base, Self::object_path(bucket, key)))
            .header("authorization", &self.authorization)
            .send()
            .await
            .map_err(Self::error)?;
        if resp.status() != StatusCode::OK {
            return Err(UpstreamError::Status {
                status: resp.status().as_u16(),
                message: "GetObject failed".into(),
            });
        }
        let mut verifier = StreamingVerifier::new(max_header_bytes);
        let mut kept = keep.then(|| BytesMut::with_capacity(usize::try_from(size).unwrap_or(0)));
        let mut body = resp.bytes_stream();
        let mut read = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Self::error)?;
            read += chunk.len() as u64;
            if read > size {
                return Err(UpstreamError::Corrupt(format!(
                    "the object is longer than its {size} bytes"
                )));
            }
            verifier
                .push(&chunk)
                .map_err(|e| UpstreamError::Corrupt(e.to_string()))?;
            if let Some(kept) = &mut kept {
                kept.extend_from_slice(&chunk);
            }
        }
        if read != size {
            return Err(UpstreamError::Corrupt(format!(
                "read {read} of the object's {size} bytes"
            )));
        }
        let item = verifier
            .finish()
            .map_err(|e| UpstreamError::Corrupt(e.to_string()))?;
        Ok((item, kept.map(BytesMut::freeze)))
    }

    /// Deletes an object; an object already gone is not an error.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), UpstreamError> {
        let resp = self
            .client
            .delete(format!("{}{}", self.base, Self::object_path(bucket, key)))
            .header("authorization", &self.authorization)
            .timeout(self.config.write_timeout)
            .send()
            .await
            .map_err(Self::error)?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            // The device answers 500 for a missing key (and every other failure): check.
            _ if self.object_size(bucket, key).await?.is_none() => Ok(()),
            status => Err(UpstreamError::Status {
                status,
                message: "DeleteObject failed".into(),
            }),
        }
    }

    /// Reads an item's header from the head of its object (`size` bytes long), with as many
    /// ranged reads as the header needs, up to `max_header_bytes`.
    pub async fn read_header(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        max_header_bytes: usize,
    ) -> Result<Header, UpstreamError> {
        let mut parser = HeaderParser::new(max_header_bytes);
        let mut offset = 0u64;
        let mut want = FIRST_READ;
        loop {
            if offset >= size {
                return Err(UpstreamError::Corrupt(parser.truncated().to_string()));
            }
            let end = (offset + want).min(size) - 1;
            let chunk = self.read_range(bucket, key, offset, end).await?;
            offset = end + 1;
            match parser.push(&chunk) {
                Ok(Some(parsed)) => return Ok(parsed.header),
                Ok(None) => {
                    // Read exactly what the parser now knows it needs (at least a little).
                    let needed = parser.needed().unwrap_or(0) as u64;
                    want = needed.saturating_sub(offset).max(1024);
                }
                Err(e) => return Err(UpstreamError::Corrupt(e.to_string())),
            }
        }
    }

    async fn head_bucket(&self, url: &str) -> Result<StatusCode, UpstreamError> {
        let resp = self
            .client
            .head(url)
            .header("authorization", &self.authorization)
            .timeout(self.config.read_timeout)
            .send()
            .await
            .map_err(Self::error)?;
        Ok(resp.status())
    }

    /// Creates `bucket` unless it is known to exist.
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<(), UpstreamError> {
        let mut known = self.buckets.lock().await;
        if known.contains(bucket) {
            return Ok(());
        }
        let url = format!("{}/~s3@1.0/{bucket}", self.base);
        if self.head_bucket(&url).await? != StatusCode::OK {
            let put = self
                .client
                .put(&url)
                .header("authorization", &self.authorization)
                .timeout(self.config.write_timeout)
                .send()
                .await
                .map_err(Self::error)?;
            // An existing bucket answers 500 (BucketAlreadyOwnedByYou); check again.
            if put.status() != StatusCode::OK && self.head_bucket(&url).await? != StatusCode::OK {
                return Err(UpstreamError::Status {
                    status: put.status().as_u16(),
                    message: format!("cannot create bucket {bucket}"),
                });
            }
        }
        known.insert(bucket.to_owned());
        Ok(())
    }

    /// Starts a PutObject whose body arrives through `body`; the returned future completes when
    /// the node has answered. No bound covers the whole transfer: the body's sender bounds each
    /// chunk, and the client's read bound covers the wait for the answer.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: reqwest::Body,
        content_length: Option<u64>,
        expiry_days: Option<u32>,
    ) -> impl std::future::Future<Output = Result<(), UpstreamError>> + Send + 'static {
        let mut req = self
            .writer
            .put(format!("{}{}", self.base, Self::object_path(bucket, key)))
            .header("authorization", &self.authorization)
            .header("content-type", "application/octet-stream");
        if let Some(len) = content_length {
            req = req.header("content-length", len);
        }
        if let Some(days) = expiry_days {
            req = req.header("x-amz-meta-expiry-days", days);
        }
        let req = req.body(body);
        async move {
            let resp = req.send().await.map_err(Self::error)?;
            let status = resp.status();
            if status == StatusCode::OK {
                Ok(())
            } else {
                let text = resp.text().await.unwrap_or_default();
                Err(UpstreamError::Status {
                    status: status.as_u16(),
                    message: text.chars().take(200).collect(),
                })
            }
        }
    }
}

/// `value` percent-encoded for a query string (unreserved characters and `/` kept).
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The keys of a ListObjects answer (`<Key>` text, XML entities decoded).
fn listed_keys(listing: &str) -> impl Iterator<Item = String> + '_ {
    listing.split("<Key>").skip(1).filter_map(|rest| {
        let text = &rest[..rest.find("</Key>")?];
        Some(
            text.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        )
    })
}

/// The dummy SigV4 `Authorization` header carrying the access key id.
pub fn authorization_header(access_key_id: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/20250101/us-east-1/s3/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=hb402"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_keys_are_read_exactly() {
        let xml = "<ListBucketResult><Contents><Key>a&amp;b&lt;c</Key><Size>1</Size></Contents>\
                   <Contents><Key>items/x.ans104</Key></Contents><Key>unclosed";
        let keys: Vec<_> = listed_keys(xml).collect();
        assert_eq!(keys, ["a&b<c", "items/x.ans104"]);
        assert_eq!(listed_keys("<ListBucketResult/>").count(), 0);
    }

    #[test]
    fn keys_are_escaped_for_the_query() {
        assert_eq!(query_escape("items/aZ-_.~9.ans104"), "items/aZ-_.~9.ans104");
        assert_eq!(query_escape("a b&c=d+é"), "a%20b%26c%3Dd%2B%C3%A9");
    }
}
