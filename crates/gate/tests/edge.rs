//! The edge, attacked as an outsider would: each test pins one class of attack that got
//! through before the edge was closed, through the real proxy (a devnode behind a recording
//! relay, raw HTTP requests sent byte for byte), and proves what did — and did not — reach the
//! node. The payment classes are in `edge_payments.rs`.

mod common;

use common::{Harness, Options, item, raw};
use hb402_ans104::{DataItem, SigningKey, Tag};
use hb402_devnode::RouteKind;
use serde_json::Value;

/// An `Authorization` header the device would accept (it checks only the key id), marked so
/// that the relay's records show whether it was forwarded.
const ATTACKER_AUTH: &str = "AWS4-HMAC-SHA256 Credential=hb402-dev/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=attacker-marker";

fn bearer() -> String {
    format!("authorization: Bearer {}", common::ADMIN_KEY)
}

async fn post_item(h: &Harness, bytes: Vec<u8>, extra: &[&str]) -> (u16, Value) {
    let mut head = format!("POST /upload HTTP/1.1\r\ncontent-length: {}", bytes.len());
    for line in extra {
        head.push_str("\r\n");
        head.push_str(line);
    }
    let resp = raw(&h.url, &head, &bytes).await;
    (
        resp.status,
        serde_json::from_slice(&resp.body).unwrap_or(Value::Null),
    )
}

async fn get_path(h: &Harness, path: &str) -> common::RawResponse {
    raw(&h.url, &format!("GET {path} HTTP/1.1"), b"").await
}

/// Regression (class 2): the node's S3 API answered through the public listener for any path
/// hb402 did not recognise, with the client's `Authorization`: listing the private bucket,
/// reading a private item by a trailing slash, a doubled slash or percent-encoding, overwriting
/// and deleting items, bulk deletes, the unauthenticated cache route.
#[tokio::test(flavor = "multi_thread")]
async fn the_nodes_s3_api_is_unreachable_in_any_spelling() {
    let h = Harness::start_with(Options {
        relay: true,
        ..Options::default()
    })
    .await;
    let public = item(
        1,
        vec![Tag::new("Content-Type", "text/plain")],
        b"public bytes",
    );
    let secret = item(
        2,
        vec![Tag::new("Content-Type", "text/plain")],
        b"secret bytes",
    );
    let (status, _) = post_item(&h, public.to_bytes(), &[]).await;
    assert_eq!(status, 201);
    let (status, body) = post_item(&h, secret.to_bytes(), &["x-private: true", &bearer()]).await;
    assert_eq!(status, 201, "{body}");
    let (id, pid) = (public.id().to_string(), secret.id().to_string());
    let forged = item(3, vec![], b"forged").to_bytes();
    let relay = h.relay.as_ref().unwrap();
    let mark = relay.mark();
    let auth = format!("authorization: {ATTACKER_AUTH}");

    // (method, target, expected status); every request also carries the device's credentials.
    let attacks: Vec<(&str, String, u16)> = vec![
        ("GET", "/~s3@1.0/hb402-private".into(), 403),
        ("GET", "/~s3@1.0/hb402-private/".into(), 403),
        ("GET", "//~s3@1.0//hb402-private".into(), 403),
        ("GET", "/%7Es3%401.0/hb402-private".into(), 403),
        ("GET", "/~S3@1.0/hb402-private".into(), 403),
        (
            "GET",
            "/~s3@1.0/hb402-private?prefix=dataitems/".into(),
            403,
        ),
        ("GET", "/~s3@1.0/".into(), 403),
        (
            "GET",
            format!("/~s3@1.0/hb402-private/dataitems/{pid}.ans104"),
            401,
        ),
        (
            "GET",
            format!("/~s3@1.0/hb402-private/dataitems/{pid}.ans104/"),
            401,
        ),
        (
            "GET",
            format!("/~s3@1.0/hb402-private//dataitems/{pid}.ans104"),
            401,
        ),
        (
            "GET",
            format!("/~s3@1.0/hb402-private/dataitems/{pid}%2eans104"),
            401,
        ),
        (
            "GET",
            format!("/~s3@1.0/hb402-private/%64ataitems/{pid}.ans104"),
            401,
        ),
        (
            "HEAD",
            format!("/~s3@1.0/hb402-private/dataitems/{pid}.ans104/"),
            401,
        ),
        (
            "GET",
            format!("/~s3@1.0/cache/hb402-private/dataitems/{pid}.ans104"),
            403,
        ),
        (
            "GET",
            format!("//~s3@1.0/cache/hb402-private/dataitems/{pid}.ans104"),
            403,
        ),
        (
            "GET",
            format!("/~s3@1.0/x/../cache/hb402-private/dataitems/{pid}.ans104"),
            403,
        ),
        (
            "DELETE",
            format!("/~s3@1.0/offchain-dataitems/dataitems/{id}.ans104"),
            403,
        ),
        (
            "DELETE",
            format!("/~s3@1.0/offchain-dataitems/dataitems/{id}.ans104/"),
            403,
        ),
        (
            "DELETE",
            format!("//~s3@1.0/offchain-dataitems//dataitems/{id}.ans104"),
            403,
        ),
        ("POST", "/~s3@1.0/offchain-dataitems?delete".into(), 403),
        ("POST", "/~s3@1.0/offchain-dataitems/?delete".into(), 403),
        ("POST", "/~s3@1.0/get-presigned".into(), 403),
        ("PUT", "/~s3@1.0/attacker-bucket".into(), 403),
        ("GET", format!("/{pid}/data"), 404),
        ("GET", format!("/{pid}~json@1.0"), 404),
        ("GET", format!("/{pid}&x=1"), 404),
        ("GET", format!("/{pid}.ans104"), 404),
        (
            "GET",
            "/~meta@1.0/info/../../~s3@1.0/hb402-private".into(),
            403,
        ),
        (
            "GET",
            "/~meta@1.0/info/%2e%2e/%2E%2E/~s3@1.0/hb402-private".into(),
            403,
        ),
        (
            "GET",
            "/~meta@1.0/info/..%2f..%2f~s3@1.0/hb402-private".into(),
            400,
        ),
        ("GET", "/~meta@1.0/info/~s3@1.0".into(), 404),
        ("GET", format!("/~meta@1.0/info/{pid}"), 404),
        (
            "GET",
            "/~meta@1.0/info?path=/~s3@1.0/hb402-private".into(),
            400,
        ),
        ("GET", "/~cache@1.0/read".into(), 404),
        ("GET", "/".into(), 404),
        ("GET", "/../~s3@1.0/hb402-private".into(), 400),
        ("GET", "/a%00b".into(), 400),
    ];
    for (method, target, expected) in &attacks {
        let body: &[u8] = if *method == "POST" || *method == "PUT" {
            b"<Delete><Object><Key>dataitems/x.ans104</Key></Object></Delete>"
        } else {
            b""
        };
        let head = format!(
            "{method} {target} HTTP/1.1\r\n{auth}\r\ncontent-length: {}",
            body.len()
        );
        let resp = raw(&h.url, &head, body).await;
        assert_eq!(resp.status, *expected, "{method} {target}: {}", resp.text());
        if *method != "HEAD" {
            let error: Value = serde_json::from_slice(&resp.body).unwrap_or_else(|_| {
                panic!("{method} {target}: not a JSON refusal: {}", resp.text())
            });
            assert!(error["error"].is_string() && error["request_id"].is_string());
        }
        assert!(!resp.text().contains("secret bytes"), "{method} {target}");
    }
    // An absolute-form request target is the same path.
    let resp = raw(
        &h.url,
        &format!("GET http://{}/~s3@1.0/hb402-private HTTP/1.1", &h.url[7..]),
        b"",
    )
    .await;
    assert_eq!(resp.status, 403);

    // Overwrites through the object route are uploads: verified, and the key must name the item.
    for target in [
        format!("/~s3@1.0/offchain-dataitems/dataitems/{id}.ans104/"),
        format!("/~s3@1.0/offchain-dataitems//dataitems/{id}.ans104"),
        format!("/~s3@1.0/offchain-dataitems/dataitems/{id}%2Eans104"),
    ] {
        let head = format!(
            "PUT {target} HTTP/1.1\r\n{auth}\r\ncontent-length: {}",
            forged.len()
        );
        let resp = raw(&h.url, &head, &forged).await;
        assert_eq!(resp.status, 400, "PUT {target}: {}", resp.text());
    }

    // What reached the node: object reads and writes hb402 decided on, with its own
    // credentials, and hb402's own one-key listings (is a key there?), nothing else.
    for seen in relay.seen_since(mark) {
        if let Some((path, query)) = seen.target.split_once('?') {
            let key = query
                .strip_prefix("prefix=dataitems/")
                .and_then(|q| q.strip_suffix(".ans104&max-keys=1"));
            assert!(
                seen.method == "GET"
                    && ["/~s3@1.0/offchain-dataitems", "/~s3@1.0/hb402-private"].contains(&path)
                    && key.is_some_and(|k| k.len() == 43 && !k.contains(['&', '/', '='])),
                "{} {} reached the node",
                seen.method,
                seen.target
            );
            continue;
        }
        assert!(
            matches!(seen.method.as_str(), "GET" | "HEAD"),
            "{} {} reached the node",
            seen.method,
            seen.target
        );
        assert!(
            !seen.target.contains("/cache/") && seen.target.matches('/').count() >= 3,
            "{} {} reached the node",
            seen.method,
            seen.target
        );
        assert!(
            seen.headers
                .iter()
                .all(|(_, v)| !v.contains("attacker-marker")),
            "the client's credentials reached the node: {seen:?}"
        );
    }
    let counters = h.node().counters();
    for kind in [
        RouteKind::DeleteObject,
        RouteKind::DeleteObjects,
        RouteKind::ListBuckets,
        RouteKind::Cache,
        RouteKind::Presign,
    ] {
        assert_eq!(counters.requests(kind), 0, "{kind:?}");
    }
    // Nothing was changed: the public item is intact, the private one still private.
    let resp = get_path(&h, &format!("/{id}")).await;
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (200, &b"public bytes"[..])
    );
    assert_eq!(get_path(&h, &format!("/{pid}")).await.status, 404);
}

/// Regression (class 2): pass-through forwarded the raw path and every client header, the
/// client's `Authorization` and cookies included, and a body after a `GET`.
#[tokio::test(flavor = "multi_thread")]
async fn pass_through_forwards_only_the_canonical_allowed_path_and_harmless_headers() {
    let h = Harness::start_with(Options {
        relay: true,
        ..Options::default()
    })
    .await;
    let relay = h.relay.as_ref().unwrap();
    let mark = relay.mark();
    let head = format!(
        "GET //~meta@1.0/./info/%61ddress/ HTTP/1.1\r\nauthorization: {ATTACKER_AUTH}\r\n\
         cookie: session=attacker-marker\r\nx-forwarded-for: attacker-marker\r\n\
         accept: application/json\r\nuser-agent: edge-test"
    );
    let resp = raw(&h.url, &head, b"").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = relay.seen_since(mark);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target, "/~meta@1.0/info/address");
    assert!(
        seen[0]
            .headers
            .iter()
            .all(|(_, v)| !v.contains("attacker-marker")),
        "{seen:?}"
    );
    assert_eq!(seen[0].header("accept"), Some("application/json"));
    assert_eq!(seen[0].header("user-agent"), Some("edge-test"));

    // A body on a forwarded route is refused, never relayed (no request smuggling).
    let smuggled = b"GET /~s3@1.0/hb402-private HTTP/1.1\r\nhost: node\r\n\r\n";
    for target in [
        "/~meta@1.0/info/address".to_owned(),
        format!("/{}", item(5, vec![], b"x").id()),
    ] {
        let head = format!(
            "GET {target} HTTP/1.1\r\ncontent-length: {}",
            smuggled.len()
        );
        let resp = raw(&h.url, &head, smuggled).await;
        assert_eq!(resp.status, 400, "{target}: {}", resp.text());
        let head = format!("GET {target} HTTP/1.1\r\ntransfer-encoding: chunked");
        let chunked = format!(
            "{:x}\r\n{}\r\n0\r\n\r\n",
            smuggled.len(),
            String::from_utf8_lossy(smuggled)
        );
        let resp = raw(&h.url, &head, chunked.as_bytes()).await;
        assert_eq!(resp.status, 400, "{target} chunked: {}", resp.text());
    }
    assert_eq!(
        relay.seen_since(mark).len(),
        1,
        "{:?}",
        relay.seen_since(mark)
    );
    // Other methods on the allowed prefix are refused.
    let resp = raw(
        &h.url,
        "POST /~meta@1.0/info HTTP/1.1\r\ncontent-length: 0",
        b"",
    )
    .await;
    assert_eq!(resp.status, 405);
    assert_eq!(h.node().counters().requests(RouteKind::ListObjects), 0);

    // Absolute-form targets (any scheme, any authority) reach the node in origin form.
    for (scheme, authority) in [
        ("ftp", "e"),
        ("https", "e"),
        ("http", "node.internal:1"),
        ("x-y", "e"),
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = format!("{scheme}://{authority}/~meta@1.0/info/address");
        let mark = relay.mark();
        let mut socket = tokio::net::TcpStream::connect(&h.url[7..]).await.unwrap();
        let request =
            format!("GET {target} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        socket.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{target}: {answer}");
        let seen = relay.seen_since(mark);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].target, "/~meta@1.0/info/address", "{target}");
    }
}

/// Regression (class 3): metadata learned from the node was never checked against the item's
/// id. After a restart or on another sidecar, an object overwritten on the node was served under
/// the item's id, and its tampered `X402-Pay-To` tag steered payments.
#[tokio::test(flavor = "multi_thread")]
async fn bytes_and_tags_learned_from_the_node_are_trusted_only_once_verified() {
    const PAYEE: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
    const THIEF: &str = "0x90F79bf6EB2c4f870365E785982E1f101E93b906";
    let toml = "[payments]\nmode = \"facilitator\"\nfacilitator_url = \"http://127.0.0.1:9/\"\n\
                [pricing]\nhonour_item_tags = true\nmax_item_price = \"1\"\n";
    let a = Harness::start_with(Options {
        extra_toml: toml.into(),
        ..Options::default()
    })
    .await;
    let priced = item(
        11,
        vec![
            Tag::new("X402-Price", "0.01"),
            Tag::new("X402-Pay-To", PAYEE),
            Tag::new("X402-Network", "base-sepolia"),
        ],
        b"priced bytes",
    );
    let plain = item(
        12,
        vec![Tag::new("Content-Type", "text/plain")],
        b"original bytes",
    );
    let untouched = item(
        13,
        vec![Tag::new("Content-Type", "text/plain")],
        b"untouched",
    );
    for it in [&priced, &plain, &untouched] {
        assert_eq!(post_item(&a, it.to_bytes(), &[]).await.0, 201);
    }
    // Someone with the node's key id rewrites two objects in place, keeping their ids: the
    // payee tag of one, the data of the other.
    let node = a.node();
    let put = |id: String, bytes: Vec<u8>| {
        let url = format!(
            "{}/~s3@1.0/offchain-dataitems/dataitems/{id}.ans104",
            node.url()
        );
        async move {
            let resp = reqwest::Client::new()
                .put(url)
                .header(
                    "authorization",
                    hb402_devnode::authorization_header("hb402-dev"),
                )
                .body(bytes)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
    };
    let mut tampered = priced.to_bytes();
    let at = tampered
        .windows(PAYEE.len())
        .position(|w| w == PAYEE.as_bytes())
        .unwrap();
    tampered[at..at + THIEF.len()].copy_from_slice(THIEF.as_bytes());
    assert_eq!(DataItem::parse(&tampered).unwrap().id(), priced.id());
    put(priced.id().to_string(), tampered).await;
    let mut forged = plain.to_bytes();
    let n = forged.len();
    forged[n - 14..].copy_from_slice(b"forged bytes!!");
    put(plain.id().to_string(), forged).await;

    // A second sidecar on the same node, knowing nothing yet, learns from the node.
    let b = Harness::start_with(Options {
        extra_toml: toml.into(),
        node_url: Some(node.url()),
        ..Options::default()
    })
    .await;
    let resp = get_path(&b, &format!("/{}", priced.id())).await;
    assert_eq!(resp.status, 404, "{}", resp.all_text());
    assert!(
        !resp.all_text().contains(&THIEF[2..]),
        "{}",
        resp.all_text()
    );
    let resp = get_path(&b, &format!("/{}", plain.id())).await;
    assert_eq!(resp.status, 404, "{}", resp.all_text());
    assert!(!resp.text().contains("forged"));
    // An object that is the item it claims to be is learned and served.
    let resp = get_path(&b, &format!("/{}", untouched.id())).await;
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (200, &b"untouched"[..])
    );
}

/// Regression (class 4): upload headers are not signed, and the first uploader decided for
/// everyone: a stranger's private (or one-day) copy made the owner's public upload "already
/// stored", and an item the node had lost could never be stored again.
#[tokio::test(flavor = "multi_thread")]
async fn no_upload_makes_an_item_less_available_to_anyone_else() {
    // By default, only key holders store private copies.
    let strict = Harness::start().await;
    let it = item(21, vec![], b"owner's bytes");
    let (status, body) = post_item(&strict, it.to_bytes(), &["x-private: true"]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = post_item(
        &strict,
        it.to_bytes(),
        &[
            "x-private: true",
            "authorization: Bearer wrong-key-0123456789",
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(strict.objects_stored(), 0);

    let h = Harness::start_with(Options {
        extra_toml: "[uploads]\nprivate = \"open\"\n".into(),
        ..Options::default()
    })
    .await;
    let id = it.id().to_string();
    // A stranger stores a private copy first; the owner's public upload still stores one.
    let (status, body) = post_item(&h, it.to_bytes(), &["x-private: true"]).await;
    assert_eq!((status, &body["private"]), (201, &Value::Bool(true)));
    let (status, body) = post_item(&h, it.to_bytes(), &[]).await;
    assert_eq!(
        (status, &body["private"]),
        (201, &Value::Bool(false)),
        "{body}"
    );
    let resp = get_path(&h, &format!("/{id}")).await;
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (200, &b"owner's bytes"[..])
    );

    // A stranger stores a one-day copy; the owner's upload without expiry makes it permanent,
    // and a later, shorter lifetime changes nothing.
    let kept = item(22, vec![], b"keep me");
    let kid = kept.id().to_string();
    let (status, body) = post_item(&h, kept.to_bytes(), &["x-expiry-days: 1"]).await;
    assert_eq!(status, 201);
    assert!(body["expires_at"].is_u64());
    let (status, body) = post_item(&h, kept.to_bytes(), &[]).await;
    assert_eq!((status, &body["expires_at"]), (201, &Value::Null), "{body}");
    let (status, body) = post_item(&h, kept.to_bytes(), &["x-expiry-days: 2"]).await;
    assert_eq!((status, &body["expires_at"]), (200, &Value::Null), "{body}");
    let resp = get_path(&h, &format!("/{kid}")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-expires-at"), None);

    // The node loses an object: the next upload stores it again.
    let lost = item(23, vec![], b"lost and found");
    let lid = lost.id().to_string();
    assert_eq!(post_item(&h, lost.to_bytes(), &[]).await.0, 201);
    h.remove_on_node(&lid).await;
    assert_eq!(get_path(&h, &format!("/{lid}")).await.status, 404);
    let (status, body) = post_item(&h, lost.to_bytes(), &[]).await;
    assert_eq!(status, 201, "{body}");
    let resp = get_path(&h, &format!("/{lid}")).await;
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (200, &b"lost and found"[..])
    );
}

/// Regression: an hb402 with no record of a copy the node holds took it for new, so an upload
/// with a shorter lifetime rewrote the owner's copy to expire (and the janitor then deleted it).
/// The copy is learned from the node first; lifetimes only grow, whoever stored the copy.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_never_shortens_a_copy_this_hb402_has_no_record_of() {
    let owner = Harness::start().await;
    let it = item(24, vec![], b"stored before hb402 knew of it");
    let id = it.id().to_string();
    assert_eq!(post_item(&owner, it.to_bytes(), &[]).await.0, 201);
    let stranger = Harness::start_with(Options {
        node_url: Some(owner.node().url()),
        ..Options::default()
    })
    .await;
    let puts = owner.node_requests(RouteKind::PutObject);
    let (status, body) = post_item(&stranger, it.to_bytes(), &["x-expiry-days: 1"]).await;
    assert_eq!((status, &body["expires_at"]), (200, &Value::Null), "{body}");
    assert_eq!(owner.node_requests(RouteKind::PutObject), puts, "rewritten");
    let resp = get_path(&stranger, &format!("/{id}")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-expires-at"), None);
    // A longer lifetime than the node's copy has is still an extension: with none, none is.
    let (status, _) = post_item(&stranger, it.to_bytes(), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(owner.node_requests(RouteKind::PutObject), puts);
}

/// Regression (class 5): a type-3 (Ethereum) item with its recovery byte flipped verified, so
/// the same content got a second id.
#[tokio::test(flavor = "multi_thread")]
async fn an_ethereum_item_with_a_flipped_recovery_byte_is_refused() {
    let h = Harness::start().await;
    let key = SigningKey::ethereum_from_bytes(&[7; 32]).unwrap();
    let genuine = DataItem::sign(&key, None, None, vec![], b"one id per content".to_vec()).unwrap();
    let mut bytes = genuine.to_bytes();
    bytes[2 + 64] = if bytes[2 + 64] == 27 { 28 } else { 27 };
    let twin = DataItem::parse(&bytes).unwrap().id().to_string();
    assert_ne!(twin, genuine.id().to_string());
    let (status, body) = post_item(&h, bytes.clone(), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_signature")),
        "{body}"
    );
    let head = format!(
        "PUT /~s3@1.0/offchain-dataitems/dataitems/{twin}.ans104 HTTP/1.1\r\ncontent-length: {}",
        bytes.len()
    );
    assert_eq!(raw(&h.url, &head, &bytes).await.status, 400);
    assert_eq!(h.objects_stored(), 0);
    assert_eq!(post_item(&h, genuine.to_bytes(), &[]).await.0, 201);
}

/// Regression (class 6): `x-expires-at` had no upper bound and the day count was cast with
/// `as u32`: an expiry 2³² days away wrapped to zero days, and the per-day price with it.
#[tokio::test(flavor = "multi_thread")]
async fn upload_lifetimes_are_bounded_and_their_price_never_wraps() {
    let h = Harness::start_with(Options {
        extra_toml:
            "[payments]\nmode = \"facilitator\"\nfacilitator_url = \"http://127.0.0.1:9/\"\n\
                     [[payments.accept]]\nnetwork = \"base-sepolia\"\n\
                     pay_to = \"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC\"\n\
                     [pricing.uploads]\nper_mib_day = \"0.001\"\n"
                .into(),
        ..Options::default()
    })
    .await;
    let it = item(31, vec![], &[1; 4096]);
    let now = common::now();
    for header in [
        format!("x-expires-at: {}", now + (1u64 << 32) * 86_400),
        format!("x-expires-at: {}", now + 366 * 86_400),
        format!("x-expires-at: {}", u64::MAX),
        "x-expiry-days: 366".to_owned(),
        "x-expiry-days: 4294967296".to_owned(),
    ] {
        let (status, body) = post_item(&h, it.to_bytes(), &[&header]).await;
        assert_eq!(status, 400, "{header}: {body}");
    }
    // Within the bound: a price for every day asked.
    let (status, body) = post_item(
        &h,
        it.to_bytes(),
        &[&format!("x-expires-at: {}", now + 30 * 86_400)],
    )
    .await;
    assert_eq!(status, 402, "{body}");
    let amount: u64 = body["accepts"][0]["maxAmountRequired"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(amount > 0);
    assert_eq!(h.objects_stored(), 0);
}

/// Regression (class 11): uploaded HTML and SVG ran on the gateway's origin, served without
/// `nosniff` or a sandbox.
#[tokio::test(flavor = "multi_thread")]
async fn active_content_is_sandboxed_and_nothing_is_sniffed() {
    let h = Harness::start().await;
    for (seed, content_type, active) in [
        (41u8, "text/html", true),
        (42, "image/svg+xml", true),
        (43, "application/xhtml+xml", true),
        (44, "text/html; charset=utf-8", true),
        (45, "text/plain", false),
        (46, "image/png", false),
        // Browsers take the last type of a comma list: such a type is not passed on at all,
        // the item is served as bytes.
        (47, "image/png,text/html", false),
        (48, "text/plain, text/html", false),
        (49, "application/x-never-heard-of", true),
    ] {
        let it = item(
            seed,
            vec![Tag::new("Content-Type", content_type)],
            b"<script>alert(document.cookie)</script>",
        );
        assert_eq!(post_item(&h, it.to_bytes(), &[]).await.0, 201);
        for path in [format!("/{}", it.id()), format!("/resolve/{}", it.id())] {
            let resp = get_path(&h, &path).await;
            assert_eq!(resp.status, 200);
            assert_eq!(
                resp.header("x-content-type-options"),
                Some("nosniff"),
                "{content_type}"
            );
            if content_type.contains(',') {
                assert_eq!(
                    resp.header("content-type"),
                    Some("application/octet-stream")
                );
            }
            assert_eq!(
                resp.header("content-security-policy"),
                active.then_some("sandbox"),
                "{content_type}"
            );
        }
    }
}

/// An upload held open: the whole item but its last bytes, sent on a raw connection.
struct Stalled {
    socket: tokio::net::TcpStream,
    rest: Vec<u8>,
}

impl Stalled {
    async fn start(h: &Harness, bytes: &[u8], headers: &[&str]) -> Stalled {
        use tokio::io::AsyncWriteExt;
        let mut socket = tokio::net::TcpStream::connect(&h.url[7..]).await.unwrap();
        let mut head = format!(
            "POST /upload HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n",
            bytes.len()
        );
        for line in headers {
            head.push_str(line);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        socket.write_all(head.as_bytes()).await.unwrap();
        let split = bytes.len() - 4;
        socket.write_all(&bytes[..split]).await.unwrap();
        Stalled {
            socket,
            rest: bytes[split..].to_vec(),
        }
    }

    async fn finish(mut self) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.socket.write_all(&self.rest).await.unwrap();
        let mut out = Vec::new();
        self.socket.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out)
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap()
    }
}

/// Waits (bounded) until the node has been asked to store one more object than `before`.
async fn until_put_started(h: &Harness, before: u64) {
    for _ in 0..200 {
        if h.node_requests(RouteKind::PutObject) > before {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the first upload never reached the node");
}

/// Regression (from an attack on the running proxy): two uploads of one copy raced. While one
/// was open, another stored the item; the first then ended (a shorter lifetime, or a failed
/// payment deleting "its" new object) over the second's paid copy. Uploads of one copy now take
/// turns: the second is told to retry (409), and nothing of the first's decides for it.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_of_one_copy_take_turns() {
    let h = Harness::start().await;
    let it = item(51, vec![], &[9; 4096]);
    let id = it.id().to_string();
    let puts = h.node_requests(RouteKind::PutObject);
    let short = format!("x-expires-at: {}", common::now() + 3_600);
    let first = Stalled::start(&h, &it.to_bytes(), &[&short]).await;
    until_put_started(&h, puts).await;
    let (status, body) = post_item(&h, it.to_bytes(), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("upload_in_progress")),
        "{body}"
    );
    // The first upload ends with its short lifetime; the owner's retry then makes it permanent.
    assert_eq!(first.finish().await, 201);
    let (status, body) = post_item(&h, it.to_bytes(), &[]).await;
    assert_eq!((status, &body["expires_at"]), (201, &Value::Null), "{body}");
    let resp = get_path(&h, &format!("/{id}")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-expires-at"), None);
    // Other copies and other items are not held up.
    let other = item(52, vec![], b"other");
    let stalled = Stalled::start(&h, &it.to_bytes(), &["x-expiry-days: 1"]).await;
    assert_eq!(post_item(&h, other.to_bytes(), &[]).await.0, 201);
    assert_eq!(
        stalled.finish().await,
        200,
        "a shorter lifetime is a duplicate"
    );
}

/// Regression (from an attack on the running proxy): an upload that turned out to be a duplicate
/// kept its copy's lease until its body ended, so back-to-back duplicates (never charged) kept
/// the owner from extending the copy's lifetime. A duplicate lets go once its header is read.
#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_upload_does_not_hold_up_its_copy() {
    let h = Harness::start().await;
    let it = item(53, vec![], &[5; 4096]);
    assert_eq!(
        post_item(&h, it.to_bytes(), &["x-expiry-days: 1"]).await.0,
        201
    );
    let duplicate = Stalled::start(&h, &it.to_bytes(), &["x-expiry-days: 1"]).await;
    // The stalled upload's header has been read well before this.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body) = post_item(&h, it.to_bytes(), &[]).await;
    assert_eq!((status, &body["expires_at"]), (201, &Value::Null), "{body}");
    assert_eq!(duplicate.finish().await, 200);
}

/// Regression (from an attack on the running proxy): an upload whose body stopped coming held
/// its upload slot until the connection's read timeout (a minute), past
/// `limits.max_upload_seconds`, and then got a 400. It now ends at the limit with a 408.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upload_ends_at_the_upload_time_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start_with(Options {
        extra_toml: "[limits]\nmax_upload_seconds = 2\nmax_concurrent_uploads = 1\n".into(),
        ..Options::default()
    })
    .await;
    let it = item(54, vec![], &[6; 4096]);
    let mut socket = tokio::net::TcpStream::connect(&h.url[7..]).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        it.to_bytes().len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&it.to_bytes()[..10]).await.unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        socket.read_to_end(&mut out),
    )
    .await
    .expect("the stalled upload was never answered")
    .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"upload_timeout\""), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Its slot is free again.
    assert_eq!(post_item(&h, it.to_bytes(), &[]).await.0, 201);
}

/// Regression (from an attack on the running proxy): unverified upload bodies went to the node
/// with no bound on how many at once, and the node buffers each whole.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_in_progress_are_bounded() {
    let h = Harness::start_with(Options {
        extra_toml: "[limits]\nmax_concurrent_uploads = 1\n".into(),
        ..Options::default()
    })
    .await;
    let a = item(61, vec![], &[1; 4096]);
    let b = item(62, vec![], &[2; 4096]);
    let puts = h.node_requests(RouteKind::PutObject);
    let held = Stalled::start(&h, &a.to_bytes(), &[]).await;
    until_put_started(&h, puts).await;
    let head = format!(
        "POST /upload HTTP/1.1\r\ncontent-length: {}",
        b.to_bytes().len()
    );
    let resp = raw(&h.url, &head, &b.to_bytes()).await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.header("retry-after").is_some());
    assert_eq!(held.finish().await, 201);
    assert_eq!(post_item(&h, b.to_bytes(), &[]).await.0, 201);
}

/// Regression (from an attack on the running proxy): the device answers 500 both for a missing
/// key and for a failing store, and hb402 took every 500 for "absent". While the node's
/// HeadObject failed, a cheap one-day upload of someone's never-expiring item rewrote the copy
/// with a one-day life (and a failed payment would have deleted it). A 500 is now settled by
/// listing the key: a copy that is still there is never taken for lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_node_is_never_taken_for_a_lost_copy() {
    let h = Harness::start_with(Options {
        relay: true,
        ..Options::default()
    })
    .await;
    let relay = h.relay.clone().unwrap();
    let it = item(91, vec![], b"the owner's copy");
    let id = it.id().to_string();
    assert_eq!(post_item(&h, it.to_bytes(), &[]).await.0, 201);
    relay.fail_heads(500);
    let puts = h.node_requests(RouteKind::PutObject);
    let (status, body) = post_item(&h, it.to_bytes(), &["x-expiry-days: 1"]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("bad_gateway")),
        "{body}"
    );
    assert_eq!(
        h.node_requests(RouteKind::PutObject),
        puts,
        "nothing written"
    );
    relay.fail_heads(0);
    let resp = get_path(&h, &format!("/{id}")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-expires-at"), None);
    assert_eq!(resp.body, b"the owner's copy");
    // A copy the node really lost is stored again, even while its HEADs fail.
    h.remove_on_node(&id).await;
    relay.fail_heads(500);
    let (status, body) = post_item(&h, it.to_bytes(), &["x-expiry-days: 1"]).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["expires_at"].is_u64(), "{body}");
    relay.fail_heads(0);
    assert_eq!(
        get_path(&h, &format!("/{id}")).await.body,
        b"the owner's copy"
    );
}

/// Regression (from an attack on the running proxy): one client with slow bodies held every
/// upload slot of the gateway (free uploads need no payment to do so). Each client address has
/// at most `limits.max_uploads_per_client` uploads in progress.
#[tokio::test(flavor = "multi_thread")]
async fn one_client_cannot_hold_every_upload_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start_with(Options {
        extra_toml: "[limits]\nmax_uploads_per_client = 2\nmax_concurrent_uploads = 8\n".into(),
        ..Options::default()
    })
    .await;
    let items: Vec<_> = (0..4u8).map(|n| item(81 + n, vec![], &[n; 4096])).collect();
    let puts = h.node_requests(RouteKind::PutObject);
    let first = Stalled::start(&h, &items[0].to_bytes(), &[]).await;
    until_put_started(&h, puts).await;
    let second = Stalled::start(&h, &items[1].to_bytes(), &[]).await;
    until_put_started(&h, puts + 1).await;
    let (status, body) = post_item(&h, items[2].to_bytes(), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("too_many_uploads")),
        "{body}"
    );
    // Another client is not held up.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(h.url[7..].parse().unwrap()).await.unwrap();
    let bytes = items[3].to_bytes();
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        bytes.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    // The slots come back when the uploads end.
    assert_eq!(first.finish().await, 201);
    assert_eq!(second.finish().await, 201);
    assert_eq!(post_item(&h, items[2].to_bytes(), &[]).await.0, 201);
}

/// Regression (from an attack on the running proxy): a content-type rule priced `/<id>` but not
/// `/binary/<id>` or the raw route, which serve the same data inside the whole item (the rule
/// looked at the route's type, bytes).
#[tokio::test(flavor = "multi_thread")]
async fn the_whole_item_costs_what_its_data_costs() {
    let h = Harness::start_with(Options {
        extra_toml:
            "[payments]\nmode = \"facilitator\"\nfacilitator_url = \"http://127.0.0.1:9/\"\n\
                     [[payments.accept]]\nnetwork = \"base-sepolia\"\n\
                     pay_to = \"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC\"\n\
                     [[pricing.rules]]\ncontent_types = [\"text/*\"]\nprice = \"0.01\"\n"
                .into(),
        ..Options::default()
    })
    .await;
    let it = item(
        71,
        vec![Tag::new("Content-Type", "text/plain")],
        b"priced text",
    );
    let id = it.id().to_string();
    assert_eq!(post_item(&h, it.to_bytes(), &[]).await.0, 201);
    let secret = item(
        72,
        vec![Tag::new("Content-Type", "text/plain")],
        b"priced secret",
    );
    let sid = secret.id().to_string();
    assert_eq!(
        post_item(&h, secret.to_bytes(), &["x-private: true", &bearer()])
            .await
            .0,
        201
    );
    let link = common::sign(&h, "/sign", &format!("dataitems/{sid}.ans104"), &[]).await;
    let token = link.json::<Value>().await.unwrap()["signed_url"]
        .as_str()
        .unwrap()
        .rsplit_once("token=")
        .unwrap()
        .1
        .to_owned();
    for path in [
        format!("/{id}"),
        format!("/binary/{id}"),
        format!("/~s3@1.0/offchain-dataitems/dataitems/{id}.ans104"),
        format!("/resolve/{sid}?token={token}"),
        format!("/binary/{sid}?token={token}"),
        format!("/~s3@1.0/hb402-private/dataitems/{sid}.ans104?token={token}"),
    ] {
        let resp = get_path(&h, &path).await;
        assert_eq!(resp.status, 402, "{path}: {}", resp.text());
        assert!(!resp.text().contains("priced"), "{path}");
        let head = raw(&h.url, &format!("HEAD {path} HTTP/1.1"), b"").await;
        assert_eq!(head.status, 200, "HEAD {path}");
    }
}

/// Regression (from an attack on the running proxy): a pass-through handed the node's error
/// text and internal headers to the client, and a differently-cased path was forwarded as is.
#[tokio::test(flavor = "multi_thread")]
async fn pass_through_answers_never_carry_the_nodes_internals() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = format!("http://{}", listener.local_addr().unwrap());
    let status = std::sync::Arc::new(std::sync::Mutex::new("500 Internal Server Error"));
    let answer = status.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let status = *answer.lock().unwrap();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let body =
                    "badmatch priv_wallet=/srv/hb/wallet.json s3 endpoint http://10.0.0.5:9000";
                let reply = format!(
                    "HTTP/1.1 {status}\r\nserver: Cowboy\r\nx-internal-host: hb-node-7.internal:8734\r\n\
                     set-cookie: node=1\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    let h = Harness::start_with(Options {
        node_url: Some(node),
        ..Options::default()
    })
    .await;
    for (node_status, expected) in [
        ("500 Internal Server Error", 502),
        ("403 Forbidden", 403),
        ("404 Not Found", 404),
        ("200 OK", 200),
        // The reason phrase is the node's text too; a redirect's body as well.
        ("200 X ErlangError badmatch hb_ao:resolve/3", 200),
        ("302 Found", 502),
        ("301 Moved Permanently", 502),
    ] {
        *status.lock().unwrap() = node_status;
        let resp = get_path(&h, "/~meta@1.0/info/address").await;
        assert_eq!(resp.status, expected, "{node_status}");
        let all = resp.all_text().to_ascii_lowercase();
        assert!(
            !all.contains("x-internal-host")
                && !all.contains("cowboy")
                && !all.contains("set-cookie")
                && !all.contains("erlang"),
            "{all}"
        );
        if expected >= 300 {
            assert!(
                !all.contains("wallet") && !all.contains("10.0.0.5"),
                "{all}"
            );
            let body: Value = serde_json::from_slice(&resp.body).unwrap();
            assert!(body["request_id"].is_string());
        }
    }
    // Another spelling of an allowed prefix is not that prefix.
    assert_eq!(get_path(&h, "/~META@1.0/INFO/address").await.status, 404);
}

/// Regression (from an attack on the running proxy): any later second counted as a longer
/// lifetime, so anyone holding an item's bytes uploaded it again and again one second longer,
/// each time holding the copy's lease through a slow body for a trifle, and its owner never got
/// to extend it (409). A new lifetime writes the copy only if it is a day longer at least.
#[tokio::test(flavor = "multi_thread")]
async fn a_lifetime_grows_by_whole_days_only() {
    let h = Harness::start().await;
    let it = item(95, vec![], b"owned");
    let at = common::now() + 3 * 86_400;
    let (status, body) = post_item(&h, it.to_bytes(), &[&format!("x-expires-at: {at}")]).await;
    assert_eq!(
        (status, &body["expires_at"]),
        (201, &Value::from(at)),
        "{body}"
    );
    let puts = h.node_requests(RouteKind::PutObject);
    for later in [at + 1, at + 3_600, at + 86_399] {
        let (status, body) =
            post_item(&h, it.to_bytes(), &[&format!("x-expires-at: {later}")]).await;
        assert_eq!(
            (status, &body["expires_at"]),
            (200, &Value::from(at)),
            "{body}"
        );
    }
    assert_eq!(
        h.node_requests(RouteKind::PutObject),
        puts,
        "nothing written"
    );
    let longer = at + 86_400;
    let (status, body) = post_item(&h, it.to_bytes(), &[&format!("x-expires-at: {longer}")]).await;
    assert_eq!(
        (status, &body["expires_at"]),
        (201, &Value::from(longer)),
        "{body}"
    );
}
