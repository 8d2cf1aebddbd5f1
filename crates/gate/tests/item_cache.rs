//! The edge cache of item bytes: hot items are served from memory, only ever after they verified
//! against their id, and every read is still decided from the item's metadata first.

mod common;

use std::time::Duration;

use common::{Harness, Options, item, now};
use hb402_devnode::RouteKind;
use serde_json::Value;

async fn upload(h: &Harness, bytes: Vec<u8>, headers: &[(&str, &str)]) -> Value {
    let mut req = h.client.post(format!("{}/upload", h.url)).body(bytes);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

async fn get(h: &Harness, path: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let mut req = h.client.get(format!("{}{path}", h.url));
    if let Some(range) = range {
        req = req.header("range", range);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

/// Writes `bytes` at an item's key on the node, behind hb402's back.
async fn put_on_node(h: &Harness, id: &str, bytes: Vec<u8>) {
    let resp = reqwest::Client::new()
        .put(format!(
            "{}/~s3@1.0/offchain-dataitems/dataitems/{id}.ans104",
            h.node().url()
        ))
        .header(
            "authorization",
            hb402_devnode::authorization_header(h.node().access_key_id()),
        )
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_items_are_served_from_memory_whole_or_by_range() {
    let h = Harness::start().await;
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let it = item(1, vec![], &data);
    let id = it.id().to_string();
    upload(&h, it.to_bytes(), &[]).await;
    let gets = h.node_requests(RouteKind::GetObject);
    assert_eq!(get(&h, &format!("/{id}"), None).await, (200, data.clone()));
    assert_eq!(h.node_requests(RouteKind::GetObject), gets + 1);
    // From memory: every representation, every range, no request to the node.
    assert_eq!(get(&h, &format!("/{id}"), None).await, (200, data.clone()));
    assert_eq!(
        get(&h, &format!("/binary/{id}"), None).await,
        (200, it.to_bytes())
    );
    assert_eq!(
        get(&h, &format!("/{id}"), Some("bytes=10-19")).await,
        (206, data[10..20].to_vec())
    );
    assert_eq!(
        get(&h, &format!("/{id}"), Some("bytes=-5")).await,
        (206, data[data.len() - 5..].to_vec())
    );
    assert_eq!(
        get(&h, &format!("/resolve/{id}"), Some("bytes=2999-")).await,
        (206, data[2999..].to_vec())
    );
    let (status, _) = get(&h, &format!("/{id}"), Some("bytes=3000-")).await;
    assert_eq!(status, 416);
    assert_eq!(h.node_requests(RouteKind::GetObject), gets + 1);
    assert_eq!(
        common::metric(
            &h,
            r#"hb402_cache_requests_total{cache="items",result="hit"}"#
        )
        .await,
        5.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_reads_share_one_read_of_the_node() {
    let h = Harness::start().await;
    let it = item(2, vec![], &[7u8; 200_000]);
    let id = it.id().to_string();
    upload(&h, it.to_bytes(), &[]).await;
    let gets = h.node_requests(RouteKind::GetObject);
    let reads: Vec<_> = (0..16)
        .map(|_| {
            let (client, url) = (h.client.clone(), format!("{}/{id}", h.url));
            tokio::spawn(async move {
                let resp = client.get(url).send().await.unwrap();
                (resp.status().as_u16(), resp.bytes().await.unwrap().len())
            })
        })
        .collect();
    for read in reads {
        assert_eq!(read.await.unwrap(), (200, 200_000));
    }
    assert_eq!(h.node_requests(RouteKind::GetObject), gets + 1);
}

/// Bytes changed on the node behind hb402's back (same length, same key) are not the item: they
/// are never kept nor served, and the item is served again once the node holds it again.
#[tokio::test(flavor = "multi_thread")]
async fn bytes_changed_on_the_node_are_never_served() {
    let h = Harness::start().await;
    let it = item(3, vec![], b"the genuine bytes");
    let id = it.id().to_string();
    upload(&h, it.to_bytes(), &[]).await;
    let mut forged = it.to_bytes();
    let n = forged.len();
    forged[n - 17..].copy_from_slice(b"the FORGED  bytes");
    put_on_node(&h, &id, forged).await;
    for path in [format!("/{id}"), format!("/binary/{id}")] {
        let (status, body) = get(&h, &path, None).await;
        assert_eq!(status, 502, "{path}");
        assert!(!String::from_utf8_lossy(&body).contains("FORGED"));
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "bad_gateway");
    }
    put_on_node(&h, &id, it.to_bytes()).await;
    assert_eq!(
        get(&h, &format!("/{id}"), None).await,
        (200, b"the genuine bytes".to_vec())
    );
}

/// Expiry is decided per read from the item's metadata: an item kept in memory still expires.
#[tokio::test(flavor = "multi_thread")]
async fn an_item_in_memory_still_expires() {
    let h = Harness::start().await;
    let it = item(4, vec![], b"short-lived");
    let id = it.id().to_string();
    let at = now() + 2;
    upload(&h, it.to_bytes(), &[("x-expires-at", &at.to_string())]).await;
    assert_eq!(get(&h, &format!("/{id}"), None).await.0, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while now() <= at {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = get(&h, &format!("/{id}"), None).await;
    assert_eq!(status, 410);
    assert!(!String::from_utf8_lossy(&body).contains("short-lived"));
}

/// Items above `cache.item_max_bytes` (and every item when `cache.item_bytes = 0`) stream from
/// the node on every read.
#[tokio::test(flavor = "multi_thread")]
async fn large_items_and_a_disabled_cache_stream_from_the_node() {
    for (toml, small_is_kept) in [
        ("[cache]\nitem_max_bytes = 4096\n", true),
        ("[cache]\nitem_bytes = 0\n", false),
    ] {
        let h = Harness::start_with(Options {
            extra_toml: toml.into(),
            ..Options::default()
        })
        .await;
        let small = item(5, vec![], &[1u8; 1000]);
        let large = item(6, vec![], &[2u8; 8000]);
        upload(&h, small.to_bytes(), &[]).await;
        upload(&h, large.to_bytes(), &[]).await;
        for _ in 0..3 {
            assert_eq!(get(&h, &format!("/{}", small.id()), None).await.0, 200);
            let (status, body) = get(&h, &format!("/{}", large.id()), None).await;
            assert_eq!((status, body.len()), (200, 8000));
        }
        let reads = h.node_requests(RouteKind::GetObject);
        assert_eq!(reads, if small_is_kept { 1 + 3 } else { 3 + 3 }, "{toml}");
    }
}

/// Regression (from an attack on the running proxy): item bytes were kept by id, so a private
/// copy's reads kept serving the public copy from memory after the public object was removed on
/// the node. Each copy's bytes are kept, verified and read again on their own.
#[tokio::test(flavor = "multi_thread")]
async fn each_copy_is_kept_on_its_own() {
    let h = Harness::start_with(Options {
        extra_toml: "[cache]\nitem_ttl_seconds = 1\n".into(),
        ..Options::default()
    })
    .await;
    let it = item(7, vec![], b"in both buckets");
    let id = it.id().to_string();
    let bearer = format!("Bearer {}", common::ADMIN_KEY);
    upload(
        &h,
        it.to_bytes(),
        &[("x-private", "true"), ("authorization", &bearer)],
    )
    .await;
    upload(&h, it.to_bytes(), &[]).await;
    let link = common::sign(&h, "/sign", &format!("dataitems/{id}.ans104"), &[]).await;
    let link: Value = link.json().await.unwrap();
    let token = link["signed_url"]
        .as_str()
        .unwrap()
        .rsplit_once("token=")
        .unwrap()
        .1
        .to_owned();
    let private = format!("/resolve/{id}?token={token}");
    assert_eq!(get(&h, &format!("/{id}"), None).await.0, 200);
    // The public object is removed on the node, behind hb402's back.
    h.remove_on_node(&id).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..3 {
        assert_eq!(
            get(&h, &private, None).await,
            (200, b"in both buckets".to_vec())
        );
        assert_eq!(get(&h, &format!("/{id}"), None).await.0, 404);
    }
}
