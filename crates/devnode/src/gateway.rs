//! The hybrid gateway, `GET /<id>` (`hb_gateway_s3:read/2`): the DataItem stored at
//! `offchain-dataitems/dataitems/<id>.ans104`, answered as an AO message — the data field as
//! the body, its tags as headers (so `Content-Type` comes from the item's tag), plus `id`,
//! `owner` (base64url of the owner's public key), `content-digest` and `ao-body-key: data`.
//! Like the node, the gateway does not verify the item it reads.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hb402_ans104::{DataItem, ItemId};
use sha2::{Digest as _, Sha256};

use crate::bundler::{DATAITEMS_BUCKET, dataitem_key};
use crate::clock;
use crate::reply::Reply;
use crate::server::State;

/// Header names a tag may not set: ones the gateway sets itself and ones that would break
/// HTTP framing or the connection.
const RESERVED: [&str; 20] = [
    "id",
    "owner",
    "status",
    "ao-body-key",
    "ao-types",
    "content-digest",
    "signature",
    "signature-input",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "host",
    "date",
    "server",
    "content-encoding",
];

fn reserved(name: &str) -> bool {
    RESERVED.contains(&name) || name.starts_with("access-control-")
}

/// Reads the item `id`.
pub(crate) async fn read(state: &Arc<State>, id: ItemId) -> Reply {
    let key = dataitem_key(&id);
    let now = clock::now_ms();
    let Ok((_, bytes)) = state
        .with_store(move |store| store.get(DATAITEMS_BUCKET, &key, now))
        .await
    else {
        return Reply::text(404, "not_found");
    };
    let item = match DataItem::parse(&bytes) {
        Ok(item) => item,
        Err(e) => {
            tracing::warn!(%id, error = %e, "gateway: the stored object is not a DataItem");
            return Reply::text(500, "the stored object is not a valid DataItem");
        }
    };
    let header = item.header();
    let mut reply = Reply::new(200);
    let mut seen: Vec<String> = Vec::new();
    for tag in header.tags() {
        let name = tag.name_str().to_ascii_lowercase();
        if reserved(&name) || seen.contains(&name) {
            continue;
        }
        // Tags that are not valid header names or values are left out.
        if reply.add_header(&name, &tag.value) {
            seen.push(name);
        }
    }
    let digest = STANDARD.encode(Sha256::digest(item.data()));
    reply
        .header("id", id.to_string())
        .header("owner", URL_SAFE_NO_PAD.encode(header.owner()))
        .header("content-digest", format!("sha-256=:{digest}:"))
        .header("ao-body-key", "data")
        .header("ao-types", "status=\"integer\"")
        .header("status", "200")
        .body(item.data().to_vec())
}
