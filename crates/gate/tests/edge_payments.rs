//! The paywall, attacked: each test pins one class of attack on payments that got through
//! before the payment lifecycle was made one typed value, through the real proxy with a local
//! chain (anvil with USDC), the reference facilitator (or a scripted one where a fault must be
//! forced) and payments made by the unmodified reference clients.

mod common;

use std::sync::{Arc, Mutex};

use alloy::primitives::B256;
use base64::Engine as _;
use common::{Harness, Options, item, metric, raw};
use hb402_ans104::Tag;
use hb402_testkit::{
    BUYER_ACCOUNT, FACILITATOR_ACCOUNT, Facilitator, LocalChain, PAYEE_ACCOUNT, PayClient,
    PayOptions, PaymentOptions, pay, pay_with, payments,
};
use serde_json::{Value, json};

const PRICE: u128 = 10_000;

fn decode(header: &str) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(header)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Facilitator-mode payments with a 0.01 USDC price on text; `payments` adds keys to
/// `[payments]`, `extra` adds tables.
fn paid_toml(facilitator_url: &str, payments: &str, extra: &str) -> String {
    format!(
        "[payments]\nmode = \"facilitator\"\nfacilitator_url = \"{facilitator_url}\"\n\
         verify_timeout_seconds = 5\nsettle_timeout_seconds = 5\n{payments}\
         [[payments.accept]]\nnetwork = \"base-sepolia\"\npay_to = \"{}\"\n\
         [[pricing.rules]]\ncontent_types = [\"text/*\"]\nprice = \"0.01\"\n{extra}",
        PAYEE_ACCOUNT.address_checksummed()
    )
}

/// A chain with USDC, the reference facilitator on it, and hb402 taking payments through it
/// ([`paid_toml`]'s configuration), optionally behind a recording relay.
async fn paid_stack(
    payments: &str,
    extra: &str,
    relay: bool,
) -> (LocalChain, Facilitator, Harness) {
    let chain = LocalChain::start().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let h = Harness::start_with(Options {
        extra_toml: paid_toml(facilitator.url(), payments, extra),
        relay,
        ..Options::default()
    })
    .await;
    (chain, facilitator, h)
}

async fn upload(h: &Harness, it: &hb402_ans104::DataItem, extra: &[(&str, &str)]) -> Value {
    let mut req = h
        .client
        .post(format!("{}/upload", h.url))
        .body(it.to_bytes());
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.unwrap()
}

fn text_item(seed: u8, data: &[u8]) -> hb402_ans104::DataItem {
    item(seed, vec![Tag::new("Content-Type", "text/plain")], data)
}

/// The offer of a 402 as `payments()` takes them: `{v2, v1, resource}` (offer `index`).
async fn requirements(h: &Harness, path: &str, index: usize) -> Value {
    let resp = h
        .client
        .get(format!("{}{path}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402, "{path}");
    let v2 = decode(resp.headers()["payment-required"].to_str().unwrap());
    let v1: Value = resp.json().await.unwrap();
    json!({"v2": v2["accepts"][index], "v1": v1["accepts"][index], "resource": v2["resource"]})
}

/// A fresh v2 payment header for the offer at `path`, signed by the buyer (or `key`).
async fn payment_for(h: &Harness, path: &str, key: Option<B256>) -> String {
    let paid = payments(PaymentOptions {
        requirements: Some(requirements(h, path, 0).await),
        signer_key: key,
        ..PaymentOptions::default()
    })
    .await;
    paid["v2"]["header"].as_str().unwrap().to_owned()
}

async fn ledger(h: &Harness) -> Vec<Value> {
    let resp = h
        .client
        .get(format!("{}/admin/payments?limit=1000", h.admin_url))
        .bearer_auth(common::ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    body["payments"].as_array().unwrap().clone()
}

/// Regression (class 1): the token of a paywalled link (`POST /sign/402`) was only checked
/// against its terms on `/protected/resolve/…`; the same `?token=` on `/resolve/<key>`, `/<id>`
/// or `/binary/<id>` served the private item at whatever the pricing rules said (free).
#[tokio::test(flavor = "multi_thread")]
async fn a_paywalled_links_token_opens_only_its_paywalled_route() {
    let (chain, _facilitator, h) = paid_stack("", "", false).await;
    let it = item(
        51,
        vec![Tag::new("Content-Type", "image/png")],
        b"paywalled pixels",
    );
    upload(
        &h,
        &it,
        &[
            ("x-private", "true"),
            ("authorization", &format!("Bearer {}", common::ADMIN_KEY)),
        ],
    )
    .await;
    let id = it.id().to_string();
    let key = format!("dataitems/{id}.ans104");
    let payee = PAYEE_ACCOUNT.address_checksummed();
    let receipt = common::sign_paywalled(&h, &key, &payee, "0.01").await;
    let token = receipt["token"].as_str().unwrap();
    for path in [
        format!("/resolve/{key}?token={token}"),
        format!("/resolve/{id}?token={token}"),
        format!("/{id}?token={token}"),
        format!("/binary/{id}?token={token}"),
        format!("/~s3@1.0/hb402-private/{key}?token={token}"),
    ] {
        let resp = h
            .client
            .get(format!("{}{path}", h.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let body = resp.text().await.unwrap();
        assert!(
            body.contains("invalid_token") && !body.contains("pixels"),
            "{path}: {body}"
        );
    }
    // Its own route asks for the link's price, and a stock client pays it.
    let protected = receipt["protected_url"].as_str().unwrap();
    assert_eq!(h.client.get(protected).send().await.unwrap().status(), 402);
    let before = chain.usdc_balance(PAYEE_ACCOUNT.address).await;
    let paid = pay(PayClient::Fetch, protected, BUYER_ACCOUNT.private_key).await;
    assert_eq!(
        (paid.status, paid.body.as_slice()),
        (200, &b"paywalled pixels"[..])
    );
    assert_eq!(
        chain.usdc_balance(PAYEE_ACCOUNT.address).await,
        before + PRICE
    );
}

/// Regression (class 7): facilitator and RPC error text went verbatim into 402 bodies and
/// headers (`error sending request for url (http://…/verify)`), and the node's into 502s: an
/// RPC URL with an API key would leak the same way.
#[tokio::test(flavor = "multi_thread")]
async fn clients_never_see_facilitator_or_node_error_text() {
    let closed = common::free_port();
    let facilitator_url = format!("http://127.0.0.1:{closed}/v1/apikey-SECRET123/");
    let h = Harness::start_with(Options {
        extra_toml: paid_toml(&facilitator_url, "", ""),
        ..Options::default()
    })
    .await;
    let it = text_item(61, b"priced");
    upload(&h, &it, &[]).await;
    let path = format!("/{}", it.id());
    let header = payment_for(&h, &path, None).await;
    let resp = raw(
        &h.url,
        &format!("GET {path} HTTP/1.1\r\npayment-signature: {header}"),
        b"",
    )
    .await;
    assert_eq!(resp.status, 402);
    let everything = resp.all_text();
    let required = decode(resp.header("payment-required").unwrap()).to_string();
    for leak in [
        "SECRET123",
        &format!(":{closed}"),
        "error sending",
        "apikey",
    ] {
        assert!(!everything.contains(leak), "{leak} in {everything}");
        assert!(!required.contains(leak), "{leak} in {required}");
    }
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["error"], "unexpected_verify_error");
    assert!(body["request_id"].is_string());

    // The node unreachable: a 502 that names nothing of it.
    let gone = common::free_port();
    let orphan = Harness::start_with(Options {
        node_url: Some(format!("http://127.0.0.1:{gone}")),
        ..Options::default()
    })
    .await;
    let resp = raw(&orphan.url, &format!("GET /{} HTTP/1.1", it.id()), b"").await;
    assert_eq!(resp.status, 502);
    assert!(
        !resp.all_text().contains(&format!(":{gone}")),
        "{}",
        resp.all_text()
    );
    assert!(
        !resp.all_text().contains("error sending"),
        "{}",
        resp.all_text()
    );
}

/// Regression (class 8): a priced upload settled before the node acknowledged the object; when
/// the PutObject then failed the payer was charged and got a 502.
#[tokio::test(flavor = "multi_thread")]
async fn a_priced_upload_is_charged_only_once_the_node_stored_it() {
    let uploads = "[pricing.uploads]\nminimum = \"0.01\"\n";
    let (chain, _facilitator, h) = paid_stack("", uploads, true).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("item.ans104");
    let it = text_item(71, b"stored only when paid");
    std::fs::write(&file, it.to_bytes()).unwrap();
    let payee = PAYEE_ACCOUNT.address;
    let before = chain.usdc_balance(payee).await;
    let relay = h.relay.as_ref().unwrap();
    relay.fail_puts(500);
    let options = PayOptions {
        data_file: Some(file.clone()),
        ..PayOptions::default()
    };
    let url = format!("{}/upload", h.url);
    let result = pay_with(
        PayClient::Fetch,
        &url,
        BUYER_ACCOUNT.private_key,
        options.clone(),
    )
    .await;
    assert_eq!(
        result.status,
        502,
        "{}",
        String::from_utf8_lossy(&result.body)
    );
    assert!(result.payment_response.is_none());
    assert_eq!(
        chain.usdc_balance(payee).await,
        before,
        "charged for nothing"
    );
    assert!(ledger(&h).await.is_empty(), "no settlement was attempted");
    // The node works again: the same client stores it, paying once.
    relay.fail_puts(0);
    let result = pay_with(PayClient::Fetch, &url, BUYER_ACCOUNT.private_key, options).await;
    assert_eq!(
        result.status,
        201,
        "{}",
        String::from_utf8_lossy(&result.body)
    );
    assert_eq!(chain.usdc_balance(payee).await, before + PRICE);
    let resp = h
        .client
        .get(format!("{}/{}", h.url, it.id()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402, "stored, and priced to read");
}

/// Regression (class 8): a settlement still pending at its deadline marked the authorization
/// spent and answered 402; the retry was refused as a duplicate, so the payer paid and never got
/// the content. Now the answer says it is pending (504, `Retry-After`), and retrying the same
/// payment — even on a restarted hb402 — converges to the content, paid once.
#[tokio::test(flavor = "multi_thread")]
async fn a_pending_settlement_converges_to_the_content_on_retry() {
    let chain = LocalChain::start().await;
    // State that outlives the first hb402: a Redis, as a fleet shares.
    let redis = hb402_testkit::RedisServer::start().await;
    let node_dir = tempfile::tempdir().unwrap();
    let mut node_config = hb402_devnode::DevnodeConfig::new(node_dir.path());
    node_config.listen = "127.0.0.1:0".parse().unwrap();
    let node = hb402_devnode::Devnode::start(node_config).await.unwrap();
    // Both instances are one gateway to its clients: one public URL.
    let local = format!(
        "[listen]\npublic_base_url = \"https://gw.example\"\n\
         [store]\nkind = \"redis\"\nredis_url = \"{}\"\n\
         [payments]\nmode = \"local\"\nrpc_url = \"{}\"\n\
         operator_key = \"${{HB402_TEST_OPERATOR_KEY}}\"\nchain_id = 84532\n\
         settle_timeout_seconds = 2\n\
         [[payments.accept]]\nnetwork = \"base-sepolia\"\npay_to = \"{}\"\n\
         [[pricing.rules]]\nprice = \"0.01\"\n",
        redis.url(),
        chain.rpc_url(),
        PAYEE_ACCOUNT.address_checksummed()
    );
    let options = || Options {
        extra_toml: local.clone(),
        node_url: Some(node.url()),
        ..Options::default()
    };
    let payee = PAYEE_ACCOUNT.address;
    let it = text_item(81, b"worth the wait");
    let path = format!("/{}", it.id());
    let header;
    {
        let h = Harness::start_with(options()).await;
        upload(&h, &it, &[]).await;
        header = payment_for(&h, &path, None).await;
        // Blocks stop: the transaction is sent but not mined before the deadline.
        chain.rpc("evm_setAutomine", json!([false])).await;
        let before = chain.usdc_balance(payee).await;
        let resp = h
            .client
            .get(format!("{}{path}", h.url))
            .header("payment-signature", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 504);
        assert!(resp.headers().contains_key("retry-after"));
        let settlement = decode(resp.headers()["payment-response"].to_str().unwrap());
        assert_eq!(settlement["errorReason"], "settlement_pending");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "settlement_pending");
        assert_eq!(chain.usdc_balance(payee).await, before);
        // Still pending: the retry says so again, and nothing is sent twice.
        let resp = h
            .client
            .get(format!("{}{path}", h.url))
            .header("payment-signature", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 504);
        let rows = ledger(&h).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["state"], "pending");
    }
    // hb402 restarts; the transaction is mined meanwhile.
    let before = chain.usdc_balance(payee).await;
    chain.rpc("evm_mine", json!([])).await;
    chain.rpc("evm_setAutomine", json!([true])).await;
    assert_eq!(chain.usdc_balance(payee).await, before + PRICE);
    let h = Harness::start_with(options()).await;
    let resp = h
        .client
        .get(format!("{}{path}", h.url))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let settlement = decode(resp.headers()["payment-response"].to_str().unwrap());
    assert_eq!(settlement["success"], true);
    assert_eq!(resp.bytes().await.unwrap(), "worth the wait");
    // Delivered: the same payment is now a replay, and nothing more was charged.
    let resp = h
        .client
        .get(format!("{}{path}", h.url))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    assert_eq!(chain.usdc_balance(payee).await, before + PRICE);
    let rows = ledger(&h).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["state"], "settled");
}

/// A facilitator that verifies everything and settles as the test says.
#[derive(Clone)]
struct Scripted {
    url: String,
    settle: Arc<Mutex<Value>>,
    settles: Arc<Mutex<usize>>,
    settle_delay: Arc<Mutex<std::time::Duration>>,
}

impl Scripted {
    async fn start() -> Scripted {
        use http_body_util::Full;
        use hyper::body::{Bytes, Incoming};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let settle = Arc::new(Mutex::new(
            json!({"success": true, "transaction": format!("0x{}", "ab".repeat(32)), "network": "eip155:84532"}),
        ));
        let settles = Arc::new(Mutex::new(0));
        let settle_delay = Arc::new(Mutex::new(std::time::Duration::ZERO));
        let (s, n, d) = (settle.clone(), settles.clone(), settle_delay.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, n, d) = (s.clone(), n.clone(), d.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<Incoming>| {
                            let (s, n, d) = (s.clone(), n.clone(), d.clone());
                            async move {
                                let body = if req.uri().path().ends_with("/settle") {
                                    *n.lock().unwrap() += 1;
                                    let delay = *d.lock().unwrap();
                                    tokio::time::sleep(delay).await;
                                    s.lock().unwrap().clone()
                                } else {
                                    json!({"isValid": true, "payer": BUYER_ACCOUNT.address_checksummed()})
                                };
                                let mut resp =
                                    hyper::Response::new(Full::new(Bytes::from(body.to_string())));
                                resp.headers_mut()
                                    .insert("content-type", "application/json".parse().unwrap());
                                Ok::<_, hyper::Error>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Scripted {
            url,
            settle,
            settles,
            settle_delay,
        }
    }

    fn settles_with(&self, answer: Value) {
        *self.settle.lock().unwrap() = answer;
    }

    fn settles_after(&self, delay: std::time::Duration) {
        *self.settle_delay.lock().unwrap() = delay;
    }
}

/// Regression (class 8): in facilitator mode, `success: false` after the transaction was
/// broadcast released the lock, and an upload whose settlement failed stayed stored, unpaid.
#[tokio::test(flavor = "multi_thread")]
async fn a_settlement_failure_after_broadcast_keeps_the_lock_and_a_failed_one_stores_nothing() {
    let facilitator = Scripted::start().await;
    let h = Harness::start_with(Options {
        extra_toml: paid_toml(
            &facilitator.url,
            "",
            "[pricing.uploads]\nminimum = \"0.01\"\n",
        ),
        relay: true,
        ..Options::default()
    })
    .await;
    let it = text_item(91, b"once");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("free.ans104");
    std::fs::write(&file, it.to_bytes()).unwrap();
    // The item itself is stored (paid) first.
    let stored = pay_with(
        PayClient::Fetch,
        &format!("{}/upload", h.url),
        BUYER_ACCOUNT.private_key,
        PayOptions {
            data_file: Some(file),
            ..PayOptions::default()
        },
    )
    .await;
    assert_eq!(stored.status, 201);
    let path = format!("/{}", it.id());
    let header = payment_for(&h, &path, None).await;
    let tx = format!("0x{}", "cd".repeat(32));
    facilitator.settles_with(json!({"success": false, "errorReason": "transaction_reverted_or_unknown", "transaction": tx, "network": "eip155:84532"}));
    let send = || async {
        h.client
            .get(format!("{}{path}", h.url))
            .header("payment-signature", &header)
            .send()
            .await
            .unwrap()
    };
    let resp = send().await;
    assert_eq!(
        resp.status(),
        504,
        "a broadcast settlement is not a failure"
    );
    // It did go through after all: the retry of the same payment gets the content.
    facilitator
        .settles_with(json!({"success": true, "transaction": tx, "network": "eip155:84532"}));
    let resp = send().await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), "once");
    assert_eq!(send().await.status(), 402);
    // The upload's settlement, the pending one and its retry: the replay asked for none.
    assert_eq!(*facilitator.settles.lock().unwrap(), 3);

    // A priced upload whose settlement fails outright: nothing stays stored.
    facilitator.settles_with(
        json!({"success": false, "errorReason": "insufficient_funds", "network": "eip155:84532"}),
    );
    let other = text_item(92, b"never stored");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unpaid.ans104");
    std::fs::write(&file, other.to_bytes()).unwrap();
    let relay = h.relay.as_ref().unwrap();
    let mark = relay.mark();
    let result = pay_with(
        PayClient::Fetch,
        &format!("{}/upload", h.url),
        BUYER_ACCOUNT.private_key,
        PayOptions {
            data_file: Some(file),
            ..PayOptions::default()
        },
    )
    .await;
    assert_eq!(
        result.status,
        402,
        "{}",
        String::from_utf8_lossy(&result.body)
    );
    let seen = relay.seen_since(mark);
    let key = format!("dataitems/{}.ans104", other.id());
    assert!(
        seen.iter()
            .any(|s| s.method == "PUT" && s.target.ends_with(&key))
    );
    assert!(
        seen.iter()
            .any(|s| s.method == "DELETE" && s.target.ends_with(&key)),
        "{seen:?}"
    );
    let node = reqwest::Client::new()
        .head(format!(
            "{}/~s3@1.0/offchain-dataitems/{key}",
            h.node().url()
        ))
        .header(
            "authorization",
            hb402_devnode::authorization_header("hb402-dev"),
        )
        .send()
        .await
        .unwrap();
    assert_ne!(node.status(), 200, "the unpaid object is gone");
}

/// Regression (class 9): the replay lock was released from two phases of one request, by key
/// alone, so a late release could free the lock a concurrent replay had just taken. Around a
/// request whose node read fails, twenty concurrent replays of its payment get one response and
/// one settlement.
#[tokio::test(flavor = "multi_thread")]
async fn replays_around_a_failed_read_settle_once() {
    let (chain, _facilitator, h) = paid_stack("", "", true).await;
    let it = text_item(101, b"exactly once");
    upload(&h, &it, &[]).await;
    let path = format!("/{}", it.id());
    let header = payment_for(&h, &path, None).await;
    let before = chain.usdc_balance(PAYEE_ACCOUNT.address).await;
    let relay = h.relay.as_ref().unwrap();
    relay.fail_gets(1, 503);
    let url = format!("{}{path}", h.url);
    let first = h
        .client
        .get(&url)
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 502);
    assert_eq!(chain.usdc_balance(PAYEE_ACCOUNT.address).await, before);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let client = h.client.clone();
            let (url, header) = (url.clone(), header.clone());
            tokio::spawn(async move {
                let resp = client
                    .get(&url)
                    .header("payment-signature", &header)
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), resp.bytes().await.unwrap())
            })
        })
        .collect();
    let mut served = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            200 => {
                served += 1;
                assert_eq!(body, "exactly once");
            }
            // Used already, or in use by another of them right now: send it again later.
            402 | 504 => assert!(!body.starts_with(b"exactly once")),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(served, 1);
    assert_eq!(
        chain.usdc_balance(PAYEE_ACCOUNT.address).await,
        before + PRICE
    );
    let settled = ledger(&h)
        .await
        .iter()
        .filter(|p| p["state"] == "settled")
        .count();
    assert_eq!(settled, 1);
    assert_eq!(
        metric(
            &h,
            "hb402_facilitator_duration_seconds_count{op=\"settle\"}"
        )
        .await,
        1.0
    );
}

/// Regression (class 10): every payment passing the local checks added a permanent ledger row
/// and a facilitator call; an unfunded throwaway key was enough to grow the ledger forever.
#[tokio::test(flavor = "multi_thread")]
async fn failed_payments_leave_no_ledger_rows_and_a_failing_payer_is_throttled() {
    // The default budget: ten failures per payer in ten minutes.
    let (_chain, _facilitator, h) = paid_stack("", "", false).await;
    let it = text_item(111, b"not for free");
    upload(&h, &it, &[]).await;
    let path = format!("/{}", it.id());
    let url = format!("{}{path}", h.url);
    // Throwaway keys with no USDC: each refused by the facilitator, none leaves a row.
    for seed in 1u8..=4 {
        let key = B256::from([seed.wrapping_add(0x40); 32]);
        let header = payment_for(&h, &path, Some(key)).await;
        let resp = h
            .client
            .get(&url)
            .header("payment-signature", header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 402);
    }
    assert!(ledger(&h).await.is_empty(), "{:?}", ledger(&h).await);
    // One payer failing again and again: after ten failures, refused without the facilitator.
    let key = B256::from([0x77; 32]);
    let verifies = || {
        metric(
            &h,
            "hb402_facilitator_duration_seconds_count{op=\"verify\"}",
        )
    };
    for attempt in 0..12 {
        let header = payment_for(&h, &path, Some(key)).await;
        let calls = verifies().await;
        let resp = h
            .client
            .get(&url)
            .header("payment-signature", header)
            .send()
            .await
            .unwrap();
        if attempt < 10 {
            assert_eq!(resp.status(), 402, "attempt {attempt}");
            assert_eq!(verifies().await, calls + 1.0);
        } else {
            assert_eq!(resp.status(), 429, "attempt {attempt}");
            assert!(resp.headers().contains_key("retry-after"));
            assert_eq!(verifies().await, calls, "the facilitator was asked");
        }
    }
    // An honest payer is unaffected.
    let paid = pay(PayClient::Legacy, &url, BUYER_ACCOUNT.private_key).await;
    assert_eq!(paid.status, 200);
    assert_eq!(ledger(&h).await.len(), 1);
}

/// Regression (class 11): x402 v1 matching took the first offer on the network, ignoring asset
/// and `payTo`: a v1 payment for the second of two offers on one network was refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_v1_payment_buys_the_offer_it_names() {
    let second = hb402_testkit::ANVIL_ACCOUNTS[3];
    let accept = format!(
        "[[payments.accept]]\nnetwork = \"base-sepolia\"\npay_to = \"{}\"\n",
        second.address_checksummed()
    );
    let (chain, _facilitator, h) = paid_stack("", &accept, false).await;
    let it = text_item(121, b"two payees");
    upload(&h, &it, &[]).await;
    let path = format!("/{}", it.id());
    let offer = requirements(&h, &path, 1).await;
    assert_eq!(offer["v1"]["payTo"], second.address_checksummed());
    let paid = payments(PaymentOptions {
        requirements: Some(offer),
        ..PaymentOptions::default()
    })
    .await;
    let before = chain.usdc_balance(second.address).await;
    let resp = h
        .client
        .get(format!("{}{path}", h.url))
        .header("x-payment", paid["v1"]["header"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-payment-response"));
    assert_eq!(resp.bytes().await.unwrap(), "two payees");
    assert_eq!(chain.usdc_balance(second.address).await, before + PRICE);
}

/// Regression (from an attack on the running proxy): three concurrent uploads of one new item,
/// each with its own payment, were each stored and each charged.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_paid_uploads_of_one_item_are_charged_once() {
    let uploads = "[pricing.uploads]\nper_mib = \"0.01\"\nminimum = \"0.01\"\n";
    let (chain, _facilitator, h) = paid_stack("", uploads, false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.ans104");
    let it = item(131, vec![], &vec![7u8; 3 << 20]);
    std::fs::write(&file, it.to_bytes()).unwrap();
    let payee = PAYEE_ACCOUNT.address;
    let before = chain.usdc_balance(payee).await;
    let url = format!("{}/upload", h.url);
    let tasks: Vec<_> = [1usize, 3, 4]
        .into_iter()
        .map(|buyer| {
            let (url, file) = (url.clone(), file.clone());
            tokio::spawn(async move {
                let options = PayOptions {
                    data_file: Some(file),
                    ..PayOptions::default()
                };
                let key = hb402_testkit::ANVIL_ACCOUNTS[buyer].private_key;
                pay_with(PayClient::Fetch, &url, key, options).await.status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses.sort();
    let stored = statuses.iter().filter(|s| **s == 201).count();
    assert!(stored >= 1, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 201 | 409)),
        "{statuses:?}"
    );
    // 0.01 USDC per MiB of the item, rounded up to the atomic unit.
    let price = (10_000 * it.to_bytes().len() as u128).div_ceil(1 << 20);
    assert_eq!(
        chain.usdc_balance(payee).await,
        before + price * stored as u128,
        "{statuses:?}"
    );
    assert_eq!(h.node().counters().objects_stored(), 1);
}

/// Regression (from an attack on the running proxy): an unspent authorization signed for one
/// resource bought another of the same price; and a priced upload refused before its body was
/// read reset the connection under a client still sending (it saw a send error, not the 402).
#[tokio::test(flavor = "multi_thread")]
async fn a_payment_buys_the_resource_it_names_and_refusals_reach_uploaders() {
    let h = Harness::start_with(Options {
        extra_toml: paid_toml(
            "http://127.0.0.1:9/",
            "",
            "[pricing.uploads]\nper_mib = \"0.01\"\n",
        ),
        ..Options::default()
    })
    .await;
    let a = text_item(141, b"resource a");
    let b = text_item(142, b"resource b");
    let dir = tempfile::tempdir().unwrap();
    // Items stored straight on the node: no upload payment needed for the read test.
    for it in [&a, &b] {
        let resp = reqwest::Client::new()
            .put(format!("{}/~s3@1.0/offchain-dataitems", h.node().url()))
            .header(
                "authorization",
                hb402_devnode::authorization_header("hb402-dev"),
            )
            .send()
            .await
            .unwrap();
        assert!(resp.status().as_u16() < 600);
        let resp = reqwest::Client::new()
            .put(format!(
                "{}/~s3@1.0/offchain-dataitems/dataitems/{}.ans104",
                h.node().url(),
                it.id()
            ))
            .header(
                "authorization",
                hb402_devnode::authorization_header("hb402-dev"),
            )
            .body(it.to_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let for_a = payment_for(&h, &format!("/{}", a.id()), None).await;
    let resp = h
        .client
        .get(format!("{}/{}", h.url, b.id()))
        .header("payment-signature", for_a)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_payment_requirements");
    assert_eq!(body["message"], "the payment was made for another resource");

    // Unpaid uploads of a few MiB: every client reads its 402.
    let big = item(143, vec![], &vec![3u8; 3 << 20]).to_bytes();
    let file = dir.path().join("big.ans104");
    std::fs::write(&file, &big).unwrap();
    for _ in 0..5 {
        let resp = reqwest::Client::new()
            .post(format!("{}/upload", h.url))
            .body(big.clone())
            .send()
            .await
            .expect("the 402 arrives, the connection is not reset under the client");
        assert_eq!(resp.status(), 402);
    }
}

/// Regression: an hb402 with no record of a copy the node holds (put in front of an existing
/// node, its state lost, or not sharing the store) took the copy for new: a verified payment
/// that then failed to settle deleted the owner's object. It now learns the copy from the node
/// first; a copy stored for at least as long is not written, and so never deleted.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_upload_never_deletes_a_copy_this_hb402_has_no_record_of() {
    use hb402_devnode::RouteKind;
    let owner = Harness::start().await;
    let it = text_item(131, b"the owner's copy");
    upload(&owner, &it, &[]).await;
    let facilitator = Scripted::start().await;
    facilitator.settles_with(
        json!({"success": false, "errorReason": "insufficient_funds", "network": "eip155:84532"}),
    );
    let h = Harness::start_with(Options {
        extra_toml: paid_toml(
            &facilitator.url,
            "",
            "[pricing.uploads]\nminimum = \"0.01\"\n",
        ),
        node_url: Some(owner.node().url()),
        ..Options::default()
    })
    .await;
    let (puts, deletes) = (
        owner.node_requests(RouteKind::PutObject),
        owner.node_requests(RouteKind::DeleteObject),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("item.ans104");
    std::fs::write(&file, it.to_bytes()).unwrap();
    let result = pay_with(
        PayClient::Fetch,
        &format!("{}/upload", h.url),
        BUYER_ACCOUNT.private_key,
        PayOptions {
            data_file: Some(file),
            ..PayOptions::default()
        },
    )
    .await;
    let body: Value = serde_json::from_slice(&result.body).unwrap_or(Value::Null);
    assert_eq!(result.status, 200, "already stored: {body}");
    assert_eq!(body["id"], it.id().to_string());
    assert!(result.payment_response.is_none(), "nothing to pay for");
    assert_eq!(*facilitator.settles.lock().unwrap(), 0);
    assert_eq!(owner.node_requests(RouteKind::PutObject), puts);
    assert_eq!(owner.node_requests(RouteKind::DeleteObject), deletes);
    let resp = owner
        .client
        .get(format!("{}/{}", owner.url, it.id()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), "the owner's copy");
}

/// Sends `header` as the payment for `path`; the response.
async fn pay_raw(h: &Harness, path: &str, header: &str) -> reqwest::Response {
    h.client
        .get(format!("{}{path}", h.url))
        .header("payment-signature", header)
        .send()
        .await
        .unwrap()
}

/// Regression (from an attack on the running proxy): the failure budget counted what was not
/// the payer's doing, and was checked before a retry was recognised. A facilitator outage
/// throttled every honest payer who tried meanwhile; and a payer throttled for other failures
/// could not collect a payment already charged (its retry got 429, and after `validBefore` a
/// 402). Now only the payer's own failures count, and the retry of a pending or settled payment
/// is always served.
#[tokio::test(flavor = "multi_thread")]
async fn the_failure_budget_counts_only_the_payers_faults_and_never_blocks_a_paid_retry() {
    // The facilitator is down: each try is refused (fail closed), none counts.
    let closed = common::free_port();
    let down = Harness::start_with(Options {
        extra_toml: paid_toml(
            &format!("http://127.0.0.1:{closed}/"),
            "max_failures_per_payer = 2\n",
            "",
        ),
        ..Options::default()
    })
    .await;
    let it = text_item(141, b"patience");
    upload(&down, &it, &[]).await;
    let path = format!("/{}", it.id());
    for attempt in 0..5 {
        let header = payment_for(&down, &path, None).await;
        let resp = pay_raw(&down, &path, &header).await;
        assert_eq!(resp.status(), 402, "attempt {attempt}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "unexpected_verify_error");
    }

    // A payment pending; then the same payer fails twice (its funds) and is throttled.
    let facilitator = Scripted::start().await;
    let h = Harness::start_with(Options {
        extra_toml: paid_toml(&facilitator.url, "max_failures_per_payer = 2\n", ""),
        ..Options::default()
    })
    .await;
    upload(&h, &it, &[]).await;
    let tx = format!("0x{}", "ef".repeat(32));
    facilitator.settles_with(json!({"success": false, "errorReason": "settlement_pending", "transaction": tx, "network": "eip155:84532"}));
    let pending = payment_for(&h, &path, None).await;
    assert_eq!(pay_raw(&h, &path, &pending).await.status(), 504);
    facilitator.settles_with(
        json!({"success": false, "errorReason": "insufficient_funds", "network": "eip155:84532"}),
    );
    for _ in 0..2 {
        let header = payment_for(&h, &path, None).await;
        assert_eq!(pay_raw(&h, &path, &header).await.status(), 402);
    }
    let header = payment_for(&h, &path, None).await;
    assert_eq!(pay_raw(&h, &path, &header).await.status(), 429);
    // The pending payment settled after all: its retry gets the content, throttled or not.
    facilitator
        .settles_with(json!({"success": true, "transaction": tx, "network": "eip155:84532"}));
    let resp = pay_raw(&h, &path, &pending).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), "patience");
    // A facilitator failing by itself does not count either.
    facilitator.settles_with(json!({"success": false, "errorReason": "unexpected_settle_error", "network": "eip155:84532"}));
    let other = Scripted::start().await;
    other.settles_with(json!({"success": false, "errorReason": "unexpected_settle_error", "network": "eip155:84532"}));
    let fresh = Harness::start_with(Options {
        extra_toml: paid_toml(&other.url, "max_failures_per_payer = 2\n", ""),
        ..Options::default()
    })
    .await;
    upload(&fresh, &it, &[]).await;
    for attempt in 0..4 {
        let header = payment_for(&fresh, &path, None).await;
        assert_eq!(
            pay_raw(&fresh, &path, &header).await.status(),
            402,
            "attempt {attempt}"
        );
    }
}

/// Regression (from an attack on the running proxy): each throwaway key has a fresh failure
/// budget, so one client could make the facilitator verify payment after payment from unfunded
/// keys. The client's address has a budget too.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_cycling_throwaway_keys_is_throttled() {
    let (_chain, _facilitator, h) = paid_stack("max_failures_per_client = 3\n", "", false).await;
    let it = text_item(151, b"not for throwaways");
    upload(&h, &it, &[]).await;
    let path = format!("/{}", it.id());
    let verifies = || {
        metric(
            &h,
            "hb402_facilitator_duration_seconds_count{op=\"verify\"}",
        )
    };
    for seed in 1u8..=5 {
        let key = B256::from([seed.wrapping_add(0x60); 32]);
        let header = payment_for(&h, &path, Some(key)).await;
        let calls = verifies().await;
        let resp = pay_raw(&h, &path, &header).await;
        if seed <= 3 {
            assert_eq!(resp.status(), 402, "key {seed}");
            assert_eq!(verifies().await, calls + 1.0);
        } else {
            assert_eq!(resp.status(), 429, "key {seed}");
            assert_eq!(verifies().await, calls, "the facilitator was asked");
        }
    }
}

/// Regression (from an attack on the running proxy): a payment charged after its settlement
/// was reported pending could not be collected once its `validBefore` had passed: the retry was
/// refused as expired. A pending (or settled, undelivered) payment is served to its retry
/// however late; an expired authorization never starts a new payment.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_retry_of_a_charged_payment_still_gets_the_content() {
    let chain = LocalChain::start().await;
    let local = format!(
        "[payments]\nmode = \"local\"\nrpc_url = \"{}\"\n\
         operator_key = \"${{HB402_TEST_OPERATOR_KEY}}\"\nchain_id = 84532\n\
         settle_timeout_seconds = 2\nmax_timeout_seconds = 12\n\
         [[payments.accept]]\nnetwork = \"base-sepolia\"\npay_to = \"{}\"\n\
         [[pricing.rules]]\nprice = \"0.01\"\n",
        chain.rpc_url(),
        PAYEE_ACCOUNT.address_checksummed()
    );
    let h = Harness::start_with(Options {
        extra_toml: local,
        ..Options::default()
    })
    .await;
    let it = text_item(161, b"late but paid");
    upload(&h, &it, &[]).await;
    let path = format!("/{}", it.id());
    let header = payment_for(&h, &path, None).await;
    let unused = payment_for(&h, &path, None).await;
    let valid_before = decode(&header)["payload"]["authorization"]["validBefore"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let payee = PAYEE_ACCOUNT.address;
    let before = chain.usdc_balance(payee).await;
    chain.rpc("evm_setAutomine", json!([false])).await;
    assert_eq!(pay_raw(&h, &path, &header).await.status(), 504);
    chain.rpc("evm_mine", json!([])).await;
    chain.rpc("evm_setAutomine", json!([true])).await;
    assert_eq!(chain.usdc_balance(payee).await, before + PRICE, "charged");
    // Past validBefore (bounded wait: the window is 12 s).
    while common::now() < valid_before {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let resp = pay_raw(&h, &path, &header).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), "late but paid");
    assert_eq!(pay_raw(&h, &path, &header).await.status(), 402, "delivered");
    // An expired authorization that was never used buys nothing.
    let resp = pay_raw(&h, &path, &unused).await;
    assert_eq!(resp.status(), 402);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"],
        "invalid_exact_evm_payload_authorization_valid_before"
    );
    assert_eq!(chain.usdc_balance(payee).await, before + PRICE);
}

/// A fresh payment for uploading `it` with `headers`, signed by `key` (the offer of its 402).
async fn upload_payment(
    h: &Harness,
    it: &hb402_ans104::DataItem,
    headers: &[(&str, &str)],
    key: B256,
) -> String {
    let mut req = h
        .client
        .post(format!("{}/upload", h.url))
        .body(it.to_bytes());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let v2 = decode(resp.headers()["payment-required"].to_str().unwrap());
    let v1: Value = resp.json().await.unwrap();
    let paid = payments(PaymentOptions {
        requirements: Some(
            json!({"v2": v2["accepts"][0], "v1": v1["accepts"][0], "resource": v2["resource"]}),
        ),
        signer_key: Some(key),
        ..PaymentOptions::default()
    })
    .await;
    paid["v2"]["header"].as_str().unwrap().to_owned()
}

async fn paid_upload(
    h: &Harness,
    it: &hb402_ans104::DataItem,
    headers: &[(&str, &str)],
    payment: &str,
) -> reqwest::Response {
    let mut req = h
        .client
        .post(format!("{}/upload", h.url))
        .header("payment-signature", payment)
        .body(it.to_bytes());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// Regression (from an attack on the running proxy): a new upload's object is on the node
/// before its payment settles. A read in that window learned the copy from the node (no
/// `Expires` tag: never expiring) and, finishing after the upload recorded it, replaced the
/// paid one-day lifetime: the item never expired and was never purged. What hb402 learns from
/// the node never replaces what an upload recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_during_an_uploads_settlement_never_replaces_its_lifetime() {
    use hb402_devnode::RouteKind;
    let facilitator = Scripted::start().await;
    let h = Harness::start_with(Options {
        extra_toml: paid_toml(
            &facilitator.url,
            "",
            "[pricing.uploads]\nminimum = \"0.01\"\n",
        ),
        relay: true,
        ..Options::default()
    })
    .await;
    let relay = h.relay.clone().unwrap();
    let it = item(151, vec![], b"paid for one day");
    let id = it.id().to_string();
    let one_day = [("x-expiry-days", "1")];
    let payment = upload_payment(&h, &it, &one_day, BUYER_ACCOUNT.private_key).await;
    facilitator.settles_after(std::time::Duration::from_millis(1500));
    let puts = h.node_requests(RouteKind::PutObject);
    // The upload's own lookup leaves a recent miss of the copy; the node taking the object
    // must end it, or reads in the next seconds would be told the item does not exist.
    let uploading = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (url, bytes) = (h.url[7..].to_owned(), it.to_bytes());
        tokio::spawn(async move {
            let mut socket = tokio::net::TcpStream::connect(url).await.unwrap();
            let head = format!(
                "POST /upload HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
                 x-expiry-days: 1\r\npayment-signature: {payment}\r\n\
                 content-length: {}\r\n\r\n",
                bytes.len()
            );
            socket.write_all(head.as_bytes()).await.unwrap();
            socket.write_all(&bytes).await.unwrap();
            let mut out = Vec::new();
            socket.read_to_end(&mut out).await.unwrap();
            let text = String::from_utf8_lossy(&out).into_owned();
            let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
            let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
            (
                status,
                serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
            )
        })
    };
    // The object is on the node, the payment settling: a read learns the copy, slowly.
    for _ in 0..1000 {
        if h.objects_stored() > 0 && h.node_requests(RouteKind::PutObject) > puts {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    relay.delay_gets(std::time::Duration::from_millis(2500));
    let reading = {
        let (client, url) = (h.client.clone(), format!("{}/{id}", h.url));
        tokio::spawn(async move { client.get(url).send().await.unwrap().status().as_u16() })
    };
    let (status, body) = uploading.await.unwrap();
    assert_eq!(status, 201, "{body}");
    let paid_until = body["expires_at"].as_u64().expect("a one-day lifetime");
    assert_eq!(reading.await.unwrap(), 200);
    relay.delay_gets(std::time::Duration::ZERO);
    let resp = h
        .client
        .get(format!("{}/{id}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("x-expires-at")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some(paid_until.to_string())
    );
}

/// Regression (from an attack on the running proxy): a retry re-checked expiry and duplicates
/// before it resolved its pending payment. A read paid while the item was on sale, settled
/// after it expired, got 410; of two uploads of one item both charged through pending
/// settlements, the second's retry got a free "already stored" and its charge stayed pending
/// in the ledger. A payment already charged (or being charged) now always ends settled, with
/// what it bought.
#[tokio::test(flavor = "multi_thread")]
async fn a_charged_payment_ends_with_what_it_bought_after_expiry_or_as_a_duplicate() {
    let chain = LocalChain::start().await;
    let toml = format!(
        "[payments]\nmode = \"local\"\nrpc_url = \"{}\"\n\
         operator_key = \"${{HB402_TEST_OPERATOR_KEY}}\"\nchain_id = 84532\n\
         settle_timeout_seconds = 2\n\
         [[payments.accept]]\nnetwork = \"base-sepolia\"\npay_to = \"{}\"\n\
         [[pricing.rules]]\ncontent_types = [\"text/*\"]\nprice = \"0.01\"\n\
         [pricing.uploads]\nminimum = \"0.01\"\n",
        chain.rpc_url(),
        PAYEE_ACCOUNT.address_checksummed()
    );
    let h = Harness::start_with(Options {
        extra_toml: toml,
        ..Options::default()
    })
    .await;
    let payee = PAYEE_ACCOUNT.address;
    let second = hb402_testkit::ANVIL_ACCOUNTS[3].private_key;

    // A read paid while the item is on sale, settled after it expired.
    let it = text_item(161, b"sold before it expired");
    let at = common::now() + 8;
    let lifetime = [("x-expires-at", at.to_string())];
    let lifetime: Vec<(&str, &str)> = lifetime.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let pay = upload_payment(&h, &it, &lifetime, BUYER_ACCOUNT.private_key).await;
    assert_eq!(paid_upload(&h, &it, &lifetime, &pay).await.status(), 201);
    let path = format!("/{}", it.id());
    let header = payment_for(&h, &path, None).await;
    chain.rpc("evm_setAutomine", json!([false])).await;
    assert_eq!(pay_raw(&h, &path, &header).await.status(), 504);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while common::now() <= at {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let before = chain.usdc_balance(payee).await;
    chain.rpc("evm_mine", json!([])).await;
    chain.rpc("evm_setAutomine", json!([true])).await;
    assert_eq!(chain.usdc_balance(payee).await, before + PRICE, "charged");
    let resp = pay_raw(&h, &path, &header).await;
    assert_eq!(resp.status(), 200);
    let settlement = decode(resp.headers()["payment-response"].to_str().unwrap());
    assert_eq!(settlement["success"], true);
    assert_eq!(resp.bytes().await.unwrap(), "sold before it expired");
    // Nothing new is sold.
    let resp = h
        .client
        .get(format!("{}{path}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 410);

    // Two uploads of one item, both charged through pending settlements.
    let it = item(162, vec![], b"stored once, paid twice");
    let days = [("x-expiry-days", "2")];
    let first = upload_payment(&h, &it, &days, BUYER_ACCOUNT.private_key).await;
    let other = upload_payment(&h, &it, &days, second).await;
    chain.rpc("evm_setAutomine", json!([false])).await;
    assert_eq!(paid_upload(&h, &it, &days, &first).await.status(), 504);
    assert_eq!(paid_upload(&h, &it, &days, &other).await.status(), 504);
    let before = chain.usdc_balance(payee).await;
    chain.rpc("evm_mine", json!([])).await;
    chain.rpc("evm_setAutomine", json!([true])).await;
    assert_eq!(chain.usdc_balance(payee).await, before + 2 * PRICE);
    assert_eq!(paid_upload(&h, &it, &days, &first).await.status(), 201);
    let resp = paid_upload(&h, &it, &days, &other).await;
    assert_eq!(resp.status(), 200, "already stored for as long");
    let settlement = decode(resp.headers()["payment-response"].to_str().unwrap());
    assert_eq!(settlement["success"], true);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], it.id().to_string());
    let rows = ledger(&h).await;
    assert!(
        rows.iter().all(|row| row["state"] == "settled"),
        "{rows:#?}"
    );
    assert_eq!(rows.len(), 4, "{rows:#?}");
}
