//! `POST /~s3@1.0/get-presigned` and the presigned URLs it issues.
//!
//! The real device asks the S3 backend's SDK for a SigV4 query-presigned `GetObject` URL on the
//! backend's public endpoint. The devnode plays that endpoint itself: its URLs point at
//! `http://<node>/s3/<bucket>/<key>` with the usual `X-Amz-*` query parameters, and the
//! signature is an HMAC-SHA256 with a key only this node holds, checked when the URL is used.
//! Like S3, using the URL needs no `Authorization`, and an expired or altered URL gets `403`.

use std::sync::Arc;

use bytes::Bytes;
use hyper::HeaderMap;
use sha2::{Digest as _, Sha256};

use crate::auth::joined_header;
use crate::clock;
use crate::query::Query;
use crate::range::{self, RangeOutcome};
use crate::reply::{DeviceResult, Reply};
use crate::server::State;
use crate::store::StoreError;

/// Bounds of `duration`, in seconds (`MIN/MAX_PRESIGNED_URL_DURATION` in `s3_nif`).
pub(crate) const MIN_DURATION: u64 = 1;
/// Seven days.
pub(crate) const MAX_DURATION: u64 = 7 * 24 * 3600;
/// `duration` when the request has none.
pub(crate) const DEFAULT_DURATION: u64 = 3600;

const REGION: &str = "us-east-1";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// A parsed presign request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PresignRequest {
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) duration: u64,
}

/// Reads the JSON body the way `dev_s3:get_presigned_url_handler/2` does: undecodable → 400
/// `Invalid JSON`; not an object → 400 `Invalid JSON format`; a field of the wrong type makes
/// the NIF call raise → 500 `S3 request failed`; a duration out of range → 500 with the NIF's
/// error text.
pub(crate) fn parse_request(body: &[u8]) -> Result<PresignRequest, DeviceResult> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| DeviceResult::err(400, "Invalid JSON"))?;
    let serde_json::Value::Object(fields) = value else {
        return Err(DeviceResult::err(400, "Invalid JSON format"));
    };
    let text = |name: &str| match fields.get(name) {
        None => Ok(String::new()),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(DeviceResult::Crash),
    };
    let bucket = text("bucket")?;
    let key = text("key")?;
    let duration = match fields.get("duration") {
        None => DEFAULT_DURATION,
        Some(v) => v.as_u64().ok_or(DeviceResult::Crash)?,
    };
    // The SDK reports the range error (and an unusable empty bucket or key) as an unmodelled
    // error, which the NIF renders with `to_string()`.
    if !(MIN_DURATION..=MAX_DURATION).contains(&duration) || bucket.is_empty() || key.is_empty() {
        return Err(DeviceResult::err(500, "unhandled error"));
    }
    Ok(PresignRequest {
        bucket,
        key,
        duration,
    })
}

/// HMAC-SHA256 (RFC 2104).
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Percent-encodes everything but the unreserved characters (and `/` when `keep_slash`), as
/// SigV4 does for paths and query values.
pub(crate) fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Strict percent-decoding of a path (`%XX` only; `+` stays `+`). `None` when the result is not
/// UTF-8 or an escape is malformed.
pub(crate) fn decode_path(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn signature(
    secret: &[u8; 32],
    bucket: &str,
    key: &str,
    date: &str,
    expires: &str,
    credential: &str,
) -> String {
    let message = format!("GET\n{bucket}\n{key}\n{date}\n{expires}\n{credential}");
    hex::encode(hmac_sha256(secret, message.as_bytes()))
}

/// The presigned URL for `request`, on `base` (`http://host:port`), valid from `now_secs`.
pub(crate) fn presigned_url(
    base: &str,
    access_key_id: &str,
    secret: &[u8; 32],
    request: &PresignRequest,
    now_secs: u64,
) -> String {
    let date = clock::amz_date(now_secs);
    let credential = format!("{access_key_id}/{}/{REGION}/s3/aws4_request", &date[..8]);
    let expires = request.duration.to_string();
    let sig = signature(
        secret,
        &request.bucket,
        &request.key,
        &date,
        &expires,
        &credential,
    );
    format!(
        "{base}/s3/{}/{}?x-id=GetObject&X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={}\
         &X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature={sig}",
        encode(&request.bucket, false),
        encode(&request.key, true),
        encode(&credential, false),
    )
}

/// Why a presigned URL is refused: the S3 error code and message (403 unless said otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    MissingParameters,
    InvalidAccessKeyId,
    SignatureDoesNotMatch,
    Expired,
}

impl Denied {
    fn code_and_message(self) -> (&'static str, &'static str) {
        match self {
            Denied::MissingParameters => (
                "AccessDenied",
                "Query-string authentication version 4 requires the X-Amz-Algorithm, \
                 X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and \
                 X-Amz-Expires parameters.",
            ),
            Denied::InvalidAccessKeyId => (
                "InvalidAccessKeyId",
                "The Access Key Id you provided does not exist in our records.",
            ),
            Denied::SignatureDoesNotMatch => (
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. \
                 Check your key and signing method.",
            ),
            Denied::Expired => ("AccessDenied", "Request has expired"),
        }
    }

    pub(crate) fn reply(self, bucket: &str, key: &str) -> Reply {
        let (code, message) = self.code_and_message();
        s3_error_xml(403, code, message, bucket, key)
    }
}

/// An S3 XML error document, as the S3 backend answers requests made with presigned URLs.
pub(crate) fn s3_error_xml(
    status: u16,
    code: &str,
    message: &str,
    bucket: &str,
    key: &str,
) -> Reply {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <Key>{key}</Key><BucketName>{bucket}</BucketName><Resource>/{bucket}/{key}</Resource></Error>"
    );
    Reply::new(status)
        .header("content-type", "application/xml")
        .body(body)
}

/// Checks a presigned `GET` of `bucket`/`key` (decoded) at `now_secs`.
pub(crate) fn check(
    method: &str,
    query: &Query,
    bucket: &str,
    key: &str,
    access_key_id: &str,
    secret: &[u8; 32],
    now_secs: u64,
) -> Result<(), Denied> {
    let param = |name: &str| {
        query
            .get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    };
    let (Some(algorithm), Some(credential), Some(date), Some(expires), Some(_), Some(given)) = (
        param("X-Amz-Algorithm"),
        param("X-Amz-Credential"),
        param("X-Amz-Date"),
        param("X-Amz-Expires"),
        param("X-Amz-SignedHeaders"),
        param("X-Amz-Signature"),
    ) else {
        return Err(Denied::MissingParameters);
    };
    if algorithm != ALGORITHM {
        return Err(Denied::MissingParameters);
    }
    if credential.split('/').next() != Some(access_key_id) {
        return Err(Denied::InvalidAccessKeyId);
    }
    let expected = signature(secret, bucket, key, &date, &expires, &credential);
    // The method is part of what S3 signs: a presigned GET used with another method fails.
    if method != "GET" || !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(Denied::SignatureDoesNotMatch);
    }
    let (Some(signed_at), Ok(lifetime)) = (clock::parse_amz_date(&date), expires.parse::<u64>())
    else {
        return Err(Denied::SignatureDoesNotMatch);
    };
    if now_secs > signed_at.saturating_add(lifetime) {
        return Err(Denied::Expired);
    }
    Ok(())
}

/// Answers a request for a presigned URL, as the S3 backend would: `200` (or `206` for a
/// range) with the object, `403` when the URL is expired, altered or incomplete, `404` when
/// the object is missing.
pub(crate) async fn serve(
    state: &Arc<State>,
    method: &str,
    raw_bucket: &str,
    raw_key: &str,
    raw_query: &str,
    headers: &HeaderMap,
) -> Reply {
    let (Some(bucket), Some(key)) = (decode_path(raw_bucket), decode_path(raw_key)) else {
        return Denied::SignatureDoesNotMatch.reply(raw_bucket, raw_key);
    };
    let now_ms = clock::now_ms();
    let checked = Query::parse(raw_query)
        .map_err(|_| Denied::MissingParameters)
        .and_then(|query| {
            check(
                method,
                &query,
                &bucket,
                &key,
                &state.access_key_id,
                &state.node_key.presign_secret,
                now_ms / 1000,
            )
        });
    if let Err(denied) = checked {
        return denied.reply(&bucket, &key);
    }
    let (b, k) = (bucket.clone(), key.clone());
    let (meta, data) = match state
        .with_store(move |store| store.get(&b, &k, now_ms))
        .await
    {
        Ok(found) => found,
        Err(StoreError::NoSuchKey) => {
            return s3_error_xml(
                404,
                "NoSuchKey",
                "The specified key does not exist.",
                &bucket,
                &key,
            );
        }
        Err(StoreError::NoSuchBucket | StoreError::InvalidBucketName) => {
            return s3_error_xml(
                404,
                "NoSuchBucket",
                "The specified bucket does not exist",
                &bucket,
                &key,
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "presigned GET: storage failure");
            return s3_error_xml(
                500,
                "InternalError",
                "We encountered an internal error, please try again.",
                &bucket,
                &key,
            );
        }
    };
    let data = Bytes::from(data);
    let reply = Reply::new(200)
        .header("content-type", "binary/octet-stream")
        .header("etag", &meta.etag)
        .header("last-modified", clock::http_date(meta.last_modified_ms))
        .header("accept-ranges", "bytes");
    let range_header = joined_header(headers, "range");
    match range::resolve(range_header.as_deref(), meta.size) {
        RangeOutcome::Full => reply.body(data),
        RangeOutcome::Partial { start, end } => {
            let mut reply = reply
                .header(
                    "content-range",
                    format!("bytes {start}-{end}/{}", meta.size),
                )
                .body(data.slice(start as usize..=end as usize));
            reply.status = hyper::StatusCode::PARTIAL_CONTENT;
            reply
        }
        RangeOutcome::Unsatisfiable => s3_error_xml(
            416,
            "InvalidRange",
            "The requested range is not satisfiable",
            &bucket,
            &key,
        )
        .header("content-range", format!("bytes */{}", meta.size)),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn parses_requests_like_the_device() {
        let ok = parse_request(br#"{"bucket":"b","key":"k"}"#).unwrap();
        assert_eq!(ok.duration, DEFAULT_DURATION);
        let err = |body: &[u8]| match parse_request(body) {
            Err(DeviceResult::Err { status, body }) => (status, body),
            Err(DeviceResult::Crash) => (500, "S3 request failed".into()),
            other => panic!("{other:?}"),
        };
        assert_eq!(err(b"{"), (400, "Invalid JSON".into()));
        assert_eq!(err(b""), (400, "Invalid JSON".into()));
        assert_eq!(err(b"[1]"), (400, "Invalid JSON format".into()));
        assert_eq!(err(br#"{"bucket":"b","key":"k","duration":0}"#).0, 500);
        assert_eq!(err(br#"{"bucket":"b","key":"k","duration":604801}"#).0, 500);
        assert_eq!(
            err(br#"{"bucket":"b","key":"k","duration":"60"}"#),
            (500, "S3 request failed".into())
        );
        assert_eq!(
            err(br#"{"bucket":1,"key":"k"}"#),
            (500, "S3 request failed".into())
        );
        assert!(parse_request(br#"{"bucket":"b","key":"k","duration":604800}"#).is_ok());
    }

    #[test]
    fn urls_verify_until_they_expire() {
        let secret = [7u8; 32];
        let request = PresignRequest {
            bucket: "bucket".into(),
            key: "dir/a b.txt".into(),
            duration: 60,
        };
        let url = presigned_url("http://127.0.0.1:1", "id", &secret, &request, 1_000_000);
        let (path, query) = url
            .strip_prefix("http://127.0.0.1:1/s3/bucket/")
            .unwrap()
            .split_once('?')
            .unwrap();
        assert_eq!(path, "dir/a%20b.txt");
        let key = decode_path(path).unwrap();
        let query = Query::parse(query).unwrap();
        let verify = |method: &str, key: &str, now: u64| {
            check(method, &query, "bucket", key, "id", &secret, now)
        };
        assert_eq!(verify("GET", &key, 1_000_060), Ok(()));
        assert_eq!(verify("GET", &key, 1_000_061), Err(Denied::Expired));
        assert_eq!(
            verify("GET", "dir/other", 1_000_000),
            Err(Denied::SignatureDoesNotMatch)
        );
        assert_eq!(
            verify("PUT", &key, 1_000_000),
            Err(Denied::SignatureDoesNotMatch)
        );
        assert_eq!(
            check(
                "GET",
                &query,
                "bucket",
                &key,
                "someone-else",
                &secret,
                1_000_000
            ),
            Err(Denied::InvalidAccessKeyId)
        );
        assert_eq!(
            check(
                "GET",
                &Query::default(),
                "bucket",
                &key,
                "id",
                &secret,
                1_000_000
            ),
            Err(Denied::MissingParameters)
        );
    }
}
