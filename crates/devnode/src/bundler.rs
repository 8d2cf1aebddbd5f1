//! `POST /~bundler@1.0/item?codec-device=ans104@1.0` (and its alias `/~bundler@1.0/tx`):
//! HyperBEAM's bundler upload route (`dev_bundler:item/3`).
//!
//! The body is a raw signed ANS-104 DataItem. It is parsed and its signature verified with
//! `hb402-ans104`; a bad item gets `400` with the fields `error: invalid-item` and `details`.
//! A good one is stored where the hybrid gateway reads DataItems,
//! `offchain-dataitems/dataitems/<id>.ans104`, and answered `200` with the fields `id` and
//! `timestamp` (Unix milliseconds): as response headers always, and as a JSON body when the
//! request says exactly `Accept: application/json`.

use std::sync::Arc;

use bytes::Bytes;
use hb402_ans104::{DataItem, Error as ItemError, ItemId};
use hyper::HeaderMap;

use crate::clock;
use crate::query::Query;
use crate::reply::Reply;
use crate::server::State;

/// The bucket DataItems live in (`s3_bucket`, default `offchain-dataitems`).
pub const DATAITEMS_BUCKET: &str = "offchain-dataitems";

/// The key a DataItem is stored under: `dataitems/<id>.ans104`.
pub fn dataitem_key(id: &ItemId) -> String {
    format!("dataitems/{id}.ans104")
}

const CODEC: &str = "ans104@1.0";

/// Whether the request selects the `ans104@1.0` codec: `codec-device` in the query or as a
/// header, or `Content-Type: application/ans104`. Without it the node would parse the body
/// with its default codec and find no signed item.
fn selects_ans104(headers: &HeaderMap, raw_query: &str) -> bool {
    let in_query = Query::parse(raw_query)
        .ok()
        .and_then(|q| q.get("codec-device").map(|v| v == CODEC.as_bytes()))
        .unwrap_or(false);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    in_query
        || header("codec-device") == Some(CODEC)
        || header("content-type")
            .and_then(|ct| ct.split(';').next())
            .is_some_and(|ct| ct.trim().eq_ignore_ascii_case("application/ans104"))
}

/// Only this exact `Accept` value selects the JSON codec; a list gets the default codec.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "application/json")
}

/// A reply carrying message fields: as headers, plus a JSON body for `Accept: application/json`.
fn message(status: u16, fields: &[(&str, serde_json::Value)], json: bool) -> Reply {
    let mut reply = Reply::new(status);
    for (name, value) in fields {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        reply.add_header(name, text.as_bytes());
    }
    if json {
        let object: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        reply = reply
            .header("content-type", "application/json")
            .body(serde_json::Value::Object(object).to_string());
    }
    reply
}

fn invalid(details: &str, json: bool) -> Reply {
    message(
        400,
        &[
            ("status", 400.into()),
            ("error", "invalid-item".into()),
            ("details", details.into()),
        ],
        json,
    )
}

/// Handles one upload.
pub(crate) async fn upload(
    state: &Arc<State>,
    headers: &HeaderMap,
    raw_query: &str,
    body: Bytes,
) -> Reply {
    let json = wants_json(headers);
    if !selects_ans104(headers, raw_query) {
        return invalid("unsigned-item", json);
    }
    let item = match DataItem::parse(&body) {
        Ok(item) => item,
        Err(e) => {
            tracing::debug!(error = %e, "bundler upload: unparsable item");
            return invalid("malformed-item", json);
        }
    };
    if let Err(e) = item.verify() {
        tracing::debug!(error = %e, "bundler upload: signature check failed");
        let details = match e {
            ItemError::InvalidSignature | ItemError::UnverifiableSignatureType { .. } => {
                "signature-verification-failed"
            }
            _ => "malformed-item",
        };
        return invalid(details, json);
    }
    let id = item.id();
    let key = dataitem_key(&id);
    let now = clock::now_ms();
    let stored = state
        .with_store(move |store| {
            store.ensure_bucket(DATAITEMS_BUCKET)?;
            store.put(DATAITEMS_BUCKET, &key, &body, now, None)
        })
        .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "bundler upload: cannot store the item");
        return message(
            500,
            &[
                ("status", 500.into()),
                ("error", "cache-write-failed".into()),
            ],
            json,
        );
    }
    state.counters.record_stored();
    message(
        200,
        &[("id", id.to_string().into()), ("timestamp", now.into())],
        json,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn codec_selection() {
        let empty = HeaderMap::new();
        assert!(selects_ans104(&empty, "codec-device=ans104@1.0"));
        assert!(selects_ans104(&empty, "a=b&codec-device=ans104%401.0"));
        assert!(!selects_ans104(&empty, ""));
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/octet-stream"),
        );
        assert!(!selects_ans104(&headers, ""));
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/ans104"),
        );
        assert!(selects_ans104(&headers, ""));
        let mut headers = HeaderMap::new();
        headers.insert("codec-device", HeaderValue::from_static("ans104@1.0"));
        assert!(selects_ans104(&headers, ""));
    }

    #[test]
    fn json_only_for_the_exact_accept_value() {
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("application/json"));
        assert!(wants_json(&headers));
        headers.insert(
            "accept",
            HeaderValue::from_static("application/json, text/plain, */*"),
        );
        assert!(!wants_json(&headers));
    }
}
