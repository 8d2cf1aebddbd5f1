//! The proxy end to end, in process: a devnode upstream, hb402 in front, real HTTP.

mod common;

use std::time::Duration;

use common::{Harness, Options, fixture, item, now};
use hb402_ans104::{DataItem, Tag};
use hb402_devnode::RouteKind;
use serde_json::Value;

/// Valid arbundles-made items of every signature type.
const FIXTURES: [&str; 5] = [
    "arweave_tags_target_anchor.ans104",
    "arweave_big_header.ans104",
    "ed25519_tags_target_anchor.ans104",
    "ethereum_tags.ans104",
    "solana_hex.ans104",
];

async fn upload(
    h: &Harness,
    route: &str,
    bytes: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let id = DataItem::parse(&bytes)
        .map(|i| i.id().to_string())
        .unwrap_or_default();
    let (method, path) = match route {
        "s3" => (
            reqwest::Method::PUT,
            format!("/~s3@1.0/offchain-dataitems/dataitems/{id}.ans104"),
        ),
        "bundler" => (
            reqwest::Method::POST,
            "/~bundler@1.0/item?codec-device=ans104@1.0".to_owned(),
        ),
        other => (reqwest::Method::POST, other.to_owned()),
    };
    let mut req = h
        .client
        .request(method, format!("{}{path}", h.url))
        .header("content-type", "application/octet-stream")
        .body(bytes);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn get(h: &Harness, path: &str, range: Option<&str>) -> reqwest::Response {
    let mut req = h.client.get(format!("{}{path}", h.url));
    if let Some(r) = range {
        req = req.header("range", r);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_through_every_route_read_back_byte_exact() {
    // Every upload route × every signature type (arbundles-made items), each route on a fresh
    // node so that no upload is a duplicate of another route's.
    for route in ["bundler", "/tx", "/upload", "s3", "/~bundler@1.0/tx"] {
        let h = Harness::start().await;
        for name in FIXTURES {
            upload_and_read_back(&h, name, route).await;
        }
    }
}

async fn upload_and_read_back(h: &Harness, name: &str, route: &str) {
    let bytes = fixture(name);
    let item = DataItem::parse(&bytes).unwrap();
    let id = item.id().to_string();
    let stored_before = h.objects_stored();
    let (status, body) = upload(h, route, bytes.clone(), &[]).await;
    assert_eq!(status, 201, "{name} via {route}: {body}");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["owner"], item.header().owner_address());
    assert_eq!(body["size"], bytes.len());
    assert_eq!(body["private"], false);
    assert_eq!(body["expires_at"], Value::Null);
    assert_eq!(h.objects_stored(), stored_before + 1, "{name}");

    for path in [format!("/{id}"), format!("/resolve/{id}")] {
        let resp = get(h, &path, None).await;
        assert_eq!(resp.status(), 200, "{name} {path}");
        let expected = item
            .header()
            .content_type()
            .unwrap_or("application/octet-stream");
        assert_eq!(resp.headers()["content-type"], expected, "{name}");
        assert_eq!(resp.bytes().await.unwrap(), item.data(), "{name} {path}");
    }
    for path in [
        format!("/binary/{id}"),
        format!("/~s3@1.0/offchain-dataitems/dataitems/{id}.ans104"),
    ] {
        let resp = get(h, &path, None).await;
        assert_eq!(resp.status(), 200, "{name} {path}");
        assert_eq!(resp.bytes().await.unwrap(), bytes, "{name} {path}");
    }
    // HEAD: headers only, from metadata.
    let gets = h.node_requests(RouteKind::GetObject);
    let resp = h
        .client
        .head(format!("{}/{id}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        item.data().len().to_string()
    );
    assert_eq!(
        h.node_requests(RouteKind::GetObject),
        gets,
        "HEAD never reads the object"
    );

    // The same item again: 200 with the same answer and no second write.
    let puts = h.node_requests(RouteKind::PutObject);
    let (status, again) = upload(h, route, bytes.clone(), &[]).await;
    assert_eq!(status, 200, "{name}");
    assert_eq!(again, body);
    assert_eq!(h.node_requests(RouteKind::PutObject), puts);
}

#[tokio::test(flavor = "multi_thread")]
async fn items_stored_on_the_node_directly_are_read_with_any_header_size() {
    let h = Harness::start().await;
    // Written through the node's own bundler route: hb402 learns the header from the object.
    let bytes = fixture("arweave_big_header.ans104");
    let item = DataItem::parse(&bytes).unwrap();
    assert!(item.header().data_offset() > 2048);
    let resp = h
        .client
        .post(format!(
            "{}/~bundler@1.0/item?codec-device=ans104@1.0",
            h.node().url()
        ))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = get(&h, &format!("/resolve/{}", item.id()), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), item.data());
    let missing = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let resp = get(&h, &format!("/{missing}"), None).await;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn ranges_follow_rfc_9110() {
    let h = Harness::start().await;
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let item = item(
        1,
        vec![Tag::new("Content-Type", "application/x-test")],
        &data,
    );
    let id = item.id().to_string();
    assert_eq!(upload(&h, "/upload", item.to_bytes(), &[]).await.0, 201);
    let cases: [(&str, usize, usize); 5] = [
        ("bytes=0-0", 0, 0),
        ("bytes=999-999", 999, 999),
        ("bytes=-10", 990, 999),
        ("bytes=500-", 500, 999),
        ("bytes=10-2000", 10, 999),
    ];
    for (range, first, last) in cases {
        let resp = get(&h, &format!("/{id}"), Some(range)).await;
        assert_eq!(resp.status(), 206, "{range}");
        assert_eq!(
            resp.headers()["content-range"],
            format!("bytes {first}-{last}/1000"),
            "{range}"
        );
        assert_eq!(resp.headers()["content-type"], "application/x-test");
        assert_eq!(resp.bytes().await.unwrap(), &data[first..=last], "{range}");
    }
    // Ranges on the whole item are relative to the item.
    let whole = item.to_bytes();
    let resp = get(&h, &format!("/binary/{id}"), Some("bytes=-5")).await;
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers()["content-range"],
        format!(
            "bytes {}-{}/{}",
            whole.len() - 5,
            whole.len() - 1,
            whole.len()
        )
    );
    assert_eq!(resp.bytes().await.unwrap(), &whole[whole.len() - 5..]);
    // Beyond the end.
    let gets = h.node_requests(RouteKind::GetObject);
    let resp = get(&h, &format!("/{id}"), Some("bytes=1000-")).await;
    assert_eq!(resp.status(), 416);
    assert_eq!(resp.headers()["content-range"], "bytes */1000");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "range_not_satisfiable");
    assert_eq!(h.node_requests(RouteKind::GetObject), gets);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_truncated_and_oversized_uploads_store_nothing() {
    let h = Harness::start_with(Options {
        extra_toml: "[limits]\nmax_upload_bytes = 4096".into(),
        ..Options::default()
    })
    .await;
    let stored = h.objects_stored();

    let (status, body) = upload(&h, "/upload", fixture("tampered_data.ans104"), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_signature")),
        "{body}"
    );

    let whole = fixture("ethereum_tags.ans104");
    let (status, body) = upload(&h, "/tx", whole[..whole.len() - 3].to_vec(), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_signature")),
        "{body}"
    );
    let (status, body) = upload(&h, "/tx", whole[..150].to_vec(), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("truncated_item")),
        "{body}"
    );

    let (status, body) = upload(&h, "/upload", b"\x09\x00not an item".to_vec(), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_signature_type"))
    );

    // Declared too large: refused before reading.
    let big = item(2, vec![], &vec![7u8; 8000]).to_bytes();
    let (status, body) = upload(&h, "/upload", big.clone(), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    // Too large while streaming (no Content-Length).
    let stream = futures_util::stream::iter(
        big.chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let resp = h
        .client
        .post(format!("{}/upload", h.url))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    // A PUT whose key names another id.
    let other = fixture("ed25519_minimal.ans104");
    let wrong_id = DataItem::parse(&fixture("solana_hex.ans104")).unwrap().id();
    let resp = h
        .client
        .put(format!(
            "{}/~s3@1.0/offchain-dataitems/dataitems/{wrong_id}.ans104",
            h.url
        ))
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "id_mismatch");

    assert_eq!(
        h.objects_stored(),
        stored,
        "nothing reached the node as a complete object"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_by_header_by_tag_and_by_the_node_lifecycle() {
    // Item bytes kept in memory are read from the node again after a second.
    let h = Harness::start_with(Options {
        day_seconds: 1,
        extra_toml: "[cache]\nitem_ttl_seconds = 1\n".into(),
        ..Options::default()
    })
    .await;
    // By header: a few seconds of life.
    let a = item(3, vec![], b"short-lived");
    let at = now() + 2;
    let (status, body) = upload(
        &h,
        "/upload",
        a.to_bytes(),
        &[("x-expires-at", &at.to_string())],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expires_at"], at);
    assert_eq!(get(&h, &format!("/{}", a.id()), None).await.status(), 200);

    // By tag: the signed Expires tag, earliest wins.
    let b = item(
        4,
        vec![Tag::new("Expires", (now() + 2).to_string())],
        b"tagged",
    );
    let (status, body) = upload(&h, "/upload", b.to_bytes(), &[("x-expiry-days", "30")]).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["expires_at"].as_u64().unwrap() <= now() + 2);
    let past = item(5, vec![Tag::new("Expires", "1000")], b"already gone");
    assert_eq!(upload(&h, "/upload", past.to_bytes(), &[]).await.0, 400);

    // Wait (bounded) until both expired; then 410 without any upstream read.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while now() <= at + 1 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gets = h.node_requests(RouteKind::GetObject);
    let heads = h.node_requests(RouteKind::HeadObject);
    for id in [a.id(), b.id()] {
        for path in [format!("/{id}"), format!("/binary/{id}")] {
            let resp = get(&h, &path, None).await;
            assert_eq!(resp.status(), 410, "{path}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"], "expired");
        }
    }
    assert_eq!(
        h.node_requests(RouteKind::GetObject),
        gets,
        "expired items are never fetched"
    );
    assert_eq!(h.node_requests(RouteKind::HeadObject), heads);

    // By the node's lifecycle (a day is one second on this devnode): hb402's own expiry is a
    // day away, but the object is gone upstream, which is a clean 404 once the item's bytes
    // are read from the node again.
    let c = item(6, vec![], b"lifecycle");
    let (status, _) = upload(&h, "/upload", c.to_bytes(), &[("x-expiry-days", "1")]).await;
    assert_eq!(status, 201);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let resp = get(&h, &format!("/{}", c.id()), None).await;
        if resp.status() == 404 {
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"], "not_found");
            break;
        }
        assert_eq!(resp.status(), 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the node never expired the object"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn token(bucket: &str, key: &str, exp: i64) -> String {
    hb402_gate::share::mint(
        common::SHARE_SECRET.as_bytes(),
        &hb402_gate::share::ShareClaims {
            bucket_name: bucket.into(),
            load_acc: "load_acc_test".into(),
            dataitem_key: key.into(),
            exp,
            iat: now() as i64,
            payee: None,
            amount: None,
            network: None,
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn private_items_need_a_valid_link_and_refusals_never_go_upstream() {
    let h = Harness::start().await;
    let secret = item(
        7,
        vec![Tag::new("Content-Type", "text/plain")],
        b"for your eyes only",
    );
    let id = secret.id().to_string();
    let bearer = format!("Bearer {}", common::ADMIN_KEY);
    let private = [("x-private", "true"), ("authorization", bearer.as_str())];
    let (status, body) = upload(&h, "/upload", secret.to_bytes(), &private).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["private"], true);
    let key = format!("dataitems/{id}.ans104");
    let other = item(8, vec![], b"other").id().to_string();

    let gets = h.node_requests(RouteKind::GetObject);
    let later = now() as i64 + 600;
    let tampered = {
        let t = token("hb402-private", &key, later);
        let mut b = t.into_bytes();
        let n = b.len();
        b[n - 2] = if b[n - 2] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    // Without a link, `/resolve/<id>` names the public copy: there is none, and the answer does
    // not reveal that a private one exists.
    let resp = get(&h, &format!("/resolve/{id}"), None).await;
    assert_eq!(resp.status(), 404);
    for (label, query) in [
        (
            "expired",
            format!("?token={}", token("hb402-private", &key, now() as i64 - 1)),
        ),
        ("tampered", format!("?token={tampered}")),
        (
            "other key",
            format!(
                "?token={}",
                token("hb402-private", &format!("dataitems/{other}.ans104"), later)
            ),
        ),
    ] {
        let resp = get(&h, &format!("/resolve/{id}{query}"), None).await;
        assert_eq!(resp.status(), 401, "{label}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].is_string(), "{label}");
    }
    // A valid link naming the public bucket names a copy that does not exist there: each
    // bucket's copy is its own, and the private one is not served through it.
    let other_bucket = token("offchain-dataitems", &key, later);
    let resp = get(&h, &format!("/resolve/{id}?token={other_bucket}"), None).await;
    assert_eq!(resp.status(), 404);
    // The raw S3 route is no way around it.
    let resp = get(&h, &format!("/~s3@1.0/hb402-private/{key}"), None).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        h.node_requests(RouteKind::GetObject),
        gets,
        "unauthorized reads never go upstream"
    );

    let good = token("hb402-private", &key, later);
    let resp = get(&h, &format!("/resolve/{id}?token={good}"), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    assert_eq!(resp.bytes().await.unwrap(), secret.data());

    // A link minted on the admin listener, in Load's form (`/resolve/<key>?token=`), works as is.
    let resp = common::sign(&h, "/sign", &key, &[("x-expires-minutes", "5")]).await;
    assert_eq!(resp.status(), 200);
    let minted: Value = resp.json().await.unwrap();
    let url = minted["signed_url"].as_str().unwrap();
    assert!(url.starts_with(&h.url), "{url}");
    let resp = h.client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    assert_eq!(resp.bytes().await.unwrap(), secret.data());
    // The same token on another key's path is refused.
    let token = url.split("token=").nth(1).unwrap();
    let resp = get(
        &h,
        &format!("/resolve/dataitems/{other}.ans104?token={token}"),
        None,
    )
    .await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_have_bounded_labels_on_the_admin_listener() {
    let h = Harness::start().await;
    let it = item(10, vec![], b"counted");
    assert_eq!(upload(&h, "/upload", it.to_bytes(), &[]).await.0, 201);
    assert_eq!(get(&h, &format!("/{}", it.id()), None).await.status(), 200);
    assert_eq!(
        get(&h, &format!("/{}", it.id()), Some("bytes=0-1"))
            .await
            .status(),
        206
    );
    assert_eq!(
        get(
            &h,
            "/resolve/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            None
        )
        .await
        .status(),
        404
    );
    let expected = [
        r#"hb402_requests_total{outcome="ok",route="data"} 1"#,
        r#"hb402_requests_total{outcome="partial",route="data"} 1"#,
        r#"hb402_requests_total{outcome="not_found",route="data"} 1"#,
        r#"hb402_requests_total{outcome="ok",route="upload"} 1"#,
        r#"hb402_uploads_total{result="stored"} 1"#,
        // The item's bytes were read from the node once, then served from memory.
        r#"hb402_cache_requests_total{cache="items",result="miss"} 1"#,
        r#"hb402_cache_requests_total{cache="items",result="hit"} 1"#,
        "hb402_upstream_duration_seconds_count 1",
    ];
    // A request is counted in its logging phase, just after its response: poll (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = h
            .client
            .get(format!("{}/metrics", h.admin_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if expected.iter().all(|line| text.contains(line)) || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for line in expected {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    // No id, address or raw path ever becomes a label value.
    assert!(!text.contains(&it.id().to_string()));
    assert!(text.contains("hb402_build_info"));
}

#[tokio::test(flavor = "multi_thread")]
async fn only_allowed_pass_through_reaches_the_node_and_preflight_is_answered() {
    let h = Harness::start().await;
    // The default allow list: the node's informational routes.
    let resp = get(&h, "/~meta@1.0/info/address", None).await;
    assert_eq!(resp.status(), 200);
    // The node's S3 API and its unauthenticated cache are hb402's, and refused.
    for path in [
        "/~s3@1.0/",
        "/~s3@1.0/offchain-dataitems",
        "/~s3@1.0/cache/offchain-dataitems/x",
    ] {
        let resp = get(&h, path, None).await;
        assert_eq!(resp.status(), 403, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "forbidden");
    }
    // Anything else is not forwarded.
    let resp = get(&h, "/~hyperbuddy@1.0/dashboard", None).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(h.node_requests(hb402_devnode::RouteKind::Other), 0);
    let id = item(9, vec![], b"x").id();
    let resp = h
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/{id}", h.url))
        .header("origin", "https://example.org")
        .header("access-control-request-headers", "payment-signature")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let allow = resp.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(
        allow.contains("PAYMENT-SIGNATURE")
            && allow.contains("X-PAYMENT")
            && allow.contains("Range")
    );
    let resp = h
        .client
        .delete(format!("{}/{id}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}
