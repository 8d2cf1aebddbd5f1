//! The `~s3@1.0` device: one handler per operation of `dev_s3.erl`, each producing the
//! [`DeviceResult`] the Erlang handler would, with the error texts the `s3_nif` NIF produces
//! from the S3 SDK's errors.

use std::sync::Arc;

use bytes::Bytes;
use hyper::HeaderMap;

use crate::auth::{authorized, joined_header};
use crate::clock;
use crate::listing::{self, ListParams};
use crate::presign;
use crate::query::Query;
use crate::range::{self, RangeOutcome};
use crate::reply::DeviceResult;
use crate::route::S3Op;
use crate::server::State;
use crate::store::{ObjectMeta, StoreError};
use crate::xml;

/// Bounds of `x-amz-meta-expiry-days` (`MIN/MAX_OBJECT_EXPIRY_DAYS` in `s3_nif`).
pub(crate) const MIN_EXPIRY_DAYS: i64 = 1;
/// See [`MIN_EXPIRY_DAYS`].
pub(crate) const MAX_EXPIRY_DAYS: i64 = 365;

/// The most keys one DeleteObjects request may name.
const MAX_DELETE_KEYS: usize = 1000;

/// S3 error codes the backend can answer, with the messages MinIO gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    NoSuchBucket,
    NoSuchKey,
    BucketAlreadyOwnedByYou,
    InvalidBucketName,
    KeyTooLongError,
    InvalidRange,
    InvalidArgument,
    MalformedXml,
    InternalError,
}

impl Code {
    fn name(self) -> &'static str {
        match self {
            Code::NoSuchBucket => "NoSuchBucket",
            Code::NoSuchKey => "NoSuchKey",
            Code::BucketAlreadyOwnedByYou => "BucketAlreadyOwnedByYou",
            Code::InvalidBucketName => "InvalidBucketName",
            Code::KeyTooLongError => "KeyTooLongError",
            Code::InvalidRange => "InvalidRange",
            Code::InvalidArgument => "InvalidArgument",
            Code::MalformedXml => "MalformedXML",
            Code::InternalError => "InternalError",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Code::NoSuchBucket => "The specified bucket does not exist",
            Code::NoSuchKey => "The specified key does not exist.",
            Code::BucketAlreadyOwnedByYou => {
                "Your previous request to create the named bucket succeeded and you already own it."
            }
            _ => "",
        }
    }
}

impl From<&StoreError> for Code {
    fn from(e: &StoreError) -> Code {
        match e {
            StoreError::NoSuchBucket => Code::NoSuchBucket,
            StoreError::NoSuchKey => Code::NoSuchKey,
            StoreError::BucketAlreadyOwnedByYou => Code::BucketAlreadyOwnedByYou,
            StoreError::InvalidBucketName => Code::InvalidBucketName,
            StoreError::KeyTooLong => Code::KeyTooLongError,
            StoreError::Io(_) => Code::InternalError,
        }
    }
}

/// The NIF functions, which differ in the errors the SDK models for them and in how they
/// format an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nif {
    GetObject,
    HeadObject,
    ListObjects,
    CreateBucket,
    PutObject,
    DeleteObject,
    DeleteObjects,
}

/// `500` with the text the NIF returns: `"Error: "` (`"Error "` for put_object) followed by
/// the SDK error's `Display` — `Code: message` for errors the SDK models for that operation,
/// `unhandled error (Code)` for the others.
fn nif_error(nif: Nif, code: Code) -> DeviceResult {
    let modeled = match nif {
        Nif::GetObject => code == Code::NoSuchKey,
        Nif::ListObjects => code == Code::NoSuchBucket,
        Nif::CreateBucket => code == Code::BucketAlreadyOwnedByYou,
        _ => false,
    };
    let display = if nif == Nif::HeadObject {
        // HEAD error replies carry no body; the SDK names every 404 `NotFound`.
        match code {
            Code::NoSuchBucket | Code::NoSuchKey => "NotFound".to_owned(),
            _ => "unhandled error".to_owned(),
        }
    } else if modeled {
        format!("{}: {}", code.name(), code.message())
    } else {
        format!("unhandled error ({})", code.name())
    };
    let prefix = if nif == Nif::PutObject {
        "Error "
    } else {
        "Error: "
    };
    DeviceResult::err(500, format!("{prefix}{display}"))
}

fn store_error(nif: Nif, e: &StoreError) -> DeviceResult {
    if let StoreError::Io(io) = e {
        tracing::error!(error = %io, "storage failure");
    }
    nif_error(nif, Code::from(e))
}

/// What `x-amz-meta-expiry-days` asks for, read like `dev_s3:put_object_handler/5`:
/// `binary_to_integer/1`, anything unparsable counting as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// Absent, unparsable, zero or negative: no expiry.
    Never,
    /// 1–365 days.
    Days(u64),
    /// More than 365: the NIF refuses before writing.
    OutOfRange,
    /// Not an `i32`: the NIF call raises `badarg`.
    NotAnInt32,
}

fn parse_expiry(headers: &HeaderMap) -> Expiry {
    let Some(raw) = joined_header(headers, "x-amz-meta-expiry-days") else {
        return Expiry::Never;
    };
    let digits = raw
        .strip_prefix(b"-")
        .or_else(|| raw.strip_prefix(b"+"))
        .unwrap_or(&raw);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Expiry::Never;
    }
    let Some(value) = std::str::from_utf8(&raw)
        .ok()
        .and_then(|text| text.parse::<i128>().ok())
        .and_then(|v| i32::try_from(v).ok())
    else {
        return Expiry::NotAnInt32;
    };
    let value = i64::from(value);
    if value < MIN_EXPIRY_DAYS {
        Expiry::Never
    } else if value > MAX_EXPIRY_DAYS {
        Expiry::OutOfRange
    } else {
        Expiry::Days(value as u64)
    }
}

/// The request facts a device handler reads.
#[derive(Debug)]
pub(crate) struct S3Request<'a> {
    pub(crate) headers: &'a HeaderMap,
    pub(crate) query: &'a str,
    pub(crate) body: Bytes,
}

/// Runs one device operation.
pub(crate) async fn handle(state: &Arc<State>, op: S3Op, request: S3Request<'_>) -> DeviceResult {
    let needs_auth = !matches!(
        op,
        S3Op::ListBuckets | S3Op::Cache { .. } | S3Op::Reject { .. } | S3Op::Crash
    );
    // `dev_s3:load_s3_credentials/1` asserts parity; a failed assertion is an exception.
    if needs_auth && !authorized(request.headers, &state.access_key_id) {
        return DeviceResult::Crash;
    }
    match op {
        S3Op::ListBuckets => DeviceResult::err(501, "ListBucketsCommand not implemented yet"),
        S3Op::Reject { status, body } => DeviceResult::err(status, body),
        S3Op::Crash => DeviceResult::Crash,
        S3Op::CreateBucket { bucket } => create_bucket(state, bucket).await,
        S3Op::HeadBucket { bucket } => head_bucket(state, bucket).await,
        S3Op::ListObjects { bucket } => list_objects(state, bucket, request.query).await,
        S3Op::DeleteObjects { bucket } => delete_objects(state, bucket, &request.body).await,
        S3Op::PutObject { bucket, key } => put_object(state, bucket, key, request).await,
        S3Op::GetObject { bucket, key } => get_object(state, bucket, key, request.headers).await,
        S3Op::HeadObject { bucket, key } => head_object(state, bucket, key).await,
        S3Op::DeleteObject { bucket, key } => delete_object(state, bucket, key).await,
        S3Op::Presign => presign_url(state, &request.body),
        S3Op::Cache { bucket, key } => cached_object(state, bucket, key).await,
    }
}

fn object_fields(meta: &ObjectMeta, content_length: u64) -> Vec<(&'static str, String)> {
    vec![
        ("etag", meta.etag.clone()),
        ("last-modified", clock::http_date(meta.last_modified_ms)),
        // The device never stores a content type, so the backend's default applies.
        ("content-type", "binary/octet-stream".to_owned()),
        ("content-length", content_length.to_string()),
        ("accept-ranges", "bytes".to_owned()),
    ]
}

async fn create_bucket(state: &Arc<State>, bucket: String) -> DeviceResult {
    let location = format!("/{bucket}");
    match state
        .with_store(move |store| store.create_bucket(&bucket))
        .await
    {
        Ok(()) => DeviceResult::Ok {
            status: 200,
            fields: vec![("location", location)],
            body: Bytes::new(),
        },
        Err(e) => store_error(Nif::CreateBucket, &e),
    }
}

async fn head_bucket(state: &Arc<State>, bucket: String) -> DeviceResult {
    if state
        .with_store(move |store| Ok(store.bucket_exists(&bucket)))
        .await
        .unwrap_or(false)
    {
        DeviceResult::Ok {
            status: 200,
            fields: vec![
                ("x-amz-bucket-region", "us-east-1".to_owned()),
                ("x-amz-access-point-alias", "false".to_owned()),
            ],
            body: Bytes::new(),
        }
    } else {
        // Every NIF error becomes this reply.
        DeviceResult::err(404, "NoSuchBucket")
    }
}

fn utf8(bytes: Option<&[u8]>) -> Option<String> {
    // A binary that is not UTF-8 cannot be decoded as the NIF's `String`: `badarg`.
    bytes.map_or(Some(String::new()), |b| String::from_utf8(b.to_vec()).ok())
}

async fn list_objects(state: &Arc<State>, bucket: String, raw_query: &str) -> DeviceResult {
    let Ok(query) = Query::parse(raw_query) else {
        return DeviceResult::Crash;
    };
    let (Some(prefix), Some(delimiter), Some(marker), Some(max_keys)) = (
        utf8(query.get("prefix")),
        utf8(query.get("delimiter")),
        utf8(query.get("marker")),
        utf8(query.get("max-keys")),
    ) else {
        return DeviceResult::Crash;
    };
    // The NIF passes `max-keys` only when it parses as an i32; otherwise the default applies.
    let max_keys = match max_keys.parse::<i32>() {
        Ok(n) if n < 0 => return nif_error(Nif::ListObjects, Code::InvalidArgument),
        Ok(n) => (n as usize).min(listing::MAX_KEYS),
        Err(_) => listing::MAX_KEYS,
    };
    let now = clock::now_ms();
    let name = bucket.clone();
    let objects = match state.with_store(move |store| store.list(&name, now)).await {
        Ok(objects) => objects,
        Err(e) => return store_error(Nif::ListObjects, &e),
    };
    let params = ListParams {
        prefix,
        delimiter,
        marker,
        max_keys,
    };
    let page = listing::list_v1(&objects, &params);
    let body = xml::list_bucket_result(
        xml::ListEcho {
            bucket: &bucket,
            prefix: &params.prefix,
            marker: &params.marker,
            delimiter: &params.delimiter,
            max_keys,
        },
        &page,
    );
    DeviceResult::Ok {
        status: 200,
        fields: vec![
            ("content-type", "application/xml".to_owned()),
            ("accept-ranges", "bytes".to_owned()),
        ],
        body: Bytes::from(body),
    }
}

async fn delete_objects(state: &Arc<State>, bucket: String, body: &[u8]) -> DeviceResult {
    let Ok(keys) = xml::extract_keys(body)
        .into_iter()
        .map(String::from_utf8)
        .collect::<Result<Vec<String>, _>>()
    else {
        return DeviceResult::Crash;
    };
    let deleted = keys.clone();
    let result = state
        .with_store(move |store| {
            if !crate::store::valid_bucket_name(&bucket) {
                return Err(StoreError::InvalidBucketName);
            }
            if !store.bucket_exists(&bucket) {
                return Err(StoreError::NoSuchBucket);
            }
            if keys.is_empty() || keys.len() > MAX_DELETE_KEYS {
                return Ok(false);
            }
            for key in &keys {
                match store.delete(&bucket, key) {
                    Ok(()) | Err(StoreError::KeyTooLong) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(true)
        })
        .await;
    match result {
        Ok(true) => DeviceResult::Ok {
            status: 200,
            fields: vec![
                ("content-type", "application/xml".to_owned()),
                ("accept-ranges", "bytes".to_owned()),
            ],
            body: Bytes::from(xml::delete_result(&deleted)),
        },
        Ok(false) => nif_error(Nif::DeleteObjects, Code::MalformedXml),
        Err(e) => store_error(Nif::DeleteObjects, &e),
    }
}

async fn put_object(
    state: &Arc<State>,
    bucket: String,
    key: String,
    request: S3Request<'_>,
) -> DeviceResult {
    let now = clock::now_ms();
    let expires_at = match parse_expiry(request.headers) {
        Expiry::Never => None,
        Expiry::Days(days) => {
            Some(now.saturating_add(days.saturating_mul(state.day_seconds).saturating_mul(1000)))
        }
        // The range check comes before anything is written (`add_expiry_rule_if_needed`).
        Expiry::OutOfRange => return DeviceResult::err(500, "Error unhandled error"),
        Expiry::NotAnInt32 => return DeviceResult::Crash,
    };
    let body = request.body;
    match state
        .with_store(move |store| store.put(&bucket, &key, &body, now, expires_at))
        .await
    {
        Ok(meta) => {
            state.counters.record_stored();
            DeviceResult::Ok {
                status: 200,
                fields: vec![("etag", meta.etag), ("accept-ranges", "bytes".to_owned())],
                body: Bytes::new(),
            }
        }
        Err(e) => store_error(Nif::PutObject, &e),
    }
}

async fn get_object(
    state: &Arc<State>,
    bucket: String,
    key: String,
    headers: &HeaderMap,
) -> DeviceResult {
    let range_header = joined_header(headers, "range");
    let now = clock::now_ms();
    let (meta, data) = match state
        .with_store(move |store| store.get(&bucket, &key, now))
        .await
    {
        Ok(found) => found,
        Err(e) => return store_error(Nif::GetObject, &e),
    };
    // The device passes `Range` to S3 and answers 200 whatever S3 said: the body is only the
    // requested bytes, the status does not tell.
    let body = match range::resolve(range_header.as_deref(), meta.size) {
        RangeOutcome::Full => Bytes::from(data),
        RangeOutcome::Partial { start, end } => {
            Bytes::from(data).slice(start as usize..=end as usize)
        }
        RangeOutcome::Unsatisfiable => return nif_error(Nif::GetObject, Code::InvalidRange),
    };
    DeviceResult::Ok {
        status: 200,
        fields: object_fields(&meta, body.len() as u64),
        body,
    }
}

async fn head_object(state: &Arc<State>, bucket: String, key: String) -> DeviceResult {
    let now = clock::now_ms();
    match state
        .with_store(move |store| store.head(&bucket, &key, now))
        .await
    {
        Ok(meta) => DeviceResult::Ok {
            status: 200,
            fields: object_fields(&meta, meta.size),
            body: Bytes::new(),
        },
        Err(e) => store_error(Nif::HeadObject, &e),
    }
}

async fn delete_object(state: &Arc<State>, bucket: String, key: String) -> DeviceResult {
    match state
        .with_store(move |store| store.delete(&bucket, &key))
        .await
    {
        Ok(()) => DeviceResult::Ok {
            status: 204,
            fields: vec![
                ("x-amz-delete-marker", "false".to_owned()),
                ("x-amz-version-id", String::new()),
            ],
            body: Bytes::new(),
        },
        Err(e) => store_error(Nif::DeleteObject, &e),
    }
}

fn presign_url(state: &Arc<State>, body: &[u8]) -> DeviceResult {
    match presign::parse_request(body) {
        Ok(request) => {
            let url = presign::presigned_url(
                &state.public_base,
                &state.access_key_id,
                &state.node_key.presign_secret,
                &request,
                clock::now_ms() / 1000,
            );
            DeviceResult::Ok {
                status: 200,
                fields: vec![("content-type", "text/plain".to_owned())],
                body: Bytes::from(url),
            }
        }
        Err(result) => result,
    }
}

async fn cached_object(state: &Arc<State>, bucket: String, key: String) -> DeviceResult {
    let cached = state.cache().get(&bucket, &key);
    let (data, etag) = match cached {
        Some(hit) => hit,
        None => {
            let now = clock::now_ms();
            let (b, k) = (bucket.clone(), key.clone());
            match state.with_store(move |store| store.get(&b, &k, now)).await {
                Ok((meta, data)) => {
                    let data = Bytes::from(data);
                    state
                        .cache()
                        .put(&bucket, &key, data.clone(), meta.etag.clone());
                    (data, meta.etag)
                }
                Err(_) => return DeviceResult::err(404, "Error: failed to retrieve cached object"),
            }
        }
    };
    DeviceResult::Ok {
        status: 200,
        fields: vec![
            ("etag", etag),
            ("content-type", "binary/octet-stream".to_owned()),
        ],
        body: data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn expiry(value: &str) -> Expiry {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amz-meta-expiry-days",
            HeaderValue::from_str(value).unwrap(),
        );
        parse_expiry(&headers)
    }

    #[test]
    fn reads_expiry_days_like_binary_to_integer() {
        assert_eq!(parse_expiry(&HeaderMap::new()), Expiry::Never);
        assert_eq!(expiry("1"), Expiry::Days(1));
        assert_eq!(expiry("+365"), Expiry::Days(365));
        assert_eq!(expiry("366"), Expiry::OutOfRange);
        assert_eq!(expiry("0"), Expiry::Never);
        assert_eq!(expiry("-5"), Expiry::Never);
        assert_eq!(expiry("abc"), Expiry::Never);
        assert_eq!(expiry(" 5"), Expiry::Never);
        assert_eq!(expiry("5.0"), Expiry::Never);
        assert_eq!(expiry("2147483648"), Expiry::NotAnInt32);
        assert_eq!(
            expiry("99999999999999999999999999999999999999999"),
            Expiry::NotAnInt32
        );
    }

    #[test]
    fn renders_nif_errors() {
        let text = |nif, code| match nif_error(nif, code) {
            DeviceResult::Err { status: 500, body } => body,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            text(Nif::GetObject, Code::NoSuchKey),
            "Error: NoSuchKey: The specified key does not exist."
        );
        assert_eq!(
            text(Nif::GetObject, Code::NoSuchBucket),
            "Error: unhandled error (NoSuchBucket)"
        );
        assert_eq!(
            text(Nif::PutObject, Code::NoSuchBucket),
            "Error unhandled error (NoSuchBucket)"
        );
        assert_eq!(text(Nif::HeadObject, Code::NoSuchKey), "Error: NotFound");
        assert_eq!(
            text(Nif::ListObjects, Code::NoSuchBucket),
            "Error: NoSuchBucket: The specified bucket does not exist"
        );
    }
}
