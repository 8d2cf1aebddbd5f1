//! The paywall end to end: hb402 in front of a devnode, the reference facilitator on anvil with
//! USDC at the Base Sepolia address, payments made by the unmodified reference clients' code.

mod common;

use base64::Engine as _;
use common::{Harness, Options, item};
use hb402_testkit::{
    FACILITATOR_ACCOUNT, Facilitator, LocalChain, PAYEE_ACCOUNT, PaymentOptions, payments,
};
use serde_json::{Value, json};

fn decode(header: &str) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(header)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn paid_harness(chain: &LocalChain, facilitator: &Facilitator) -> Harness {
    let _ = chain;
    Harness::start_with(Options {
        extra_toml: format!(
            "[payments]\nmode = \"facilitator\"\nfacilitator_url = \"{}\"\n\
             [[payments.accept]]\nnetwork = \"base-sepolia\"\npay_to = \"{}\"\n\
             [[pricing.rules]]\ncontent_types = [\"text/*\"]\nprice = \"0.01\"\n",
            facilitator.url(),
            PAYEE_ACCOUNT.address_checksummed()
        ),
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_priced_read_is_challenged_paid_settled_once_and_served() {
    let chain = LocalChain::start().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let h = paid_harness(&chain, &facilitator).await;
    let it = item(
        21,
        vec![hb402_ans104::Tag::new("Content-Type", "text/plain")],
        b"premium bytes",
    );
    let resp = h
        .client
        .post(format!("{}/upload", h.url))
        .body(it.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let url = format!("{}/resolve/{}", h.url, it.id());

    // The challenge: v2 header and v1 body, both complete.
    let resp = h.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let v2 = decode(resp.headers()["payment-required"].to_str().unwrap());
    let v1: Value = resp.json().await.unwrap();
    assert_eq!(v2["x402Version"], 2);
    assert_eq!(v2["resource"]["url"], url);
    let offer = v2["accepts"][0].clone();
    assert_eq!(offer["amount"], "10000");
    assert_eq!(offer["network"], "eip155:84532");
    assert_eq!(offer["asset"], "0x036CbD53842c5426634e7929541eC2318f3dCF7e");
    assert_eq!(v1["x402Version"], 1);
    let offer_v1 = v1["accepts"][0].clone();
    assert_eq!(offer_v1["network"], "base-sepolia");
    assert_eq!(offer_v1["maxAmountRequired"], "10000");
    assert_eq!(offer_v1["resource"], url);
    for field in [
        "description",
        "mimeType",
        "payTo",
        "maxTimeoutSeconds",
        "asset",
        "extra",
    ] {
        assert!(offer_v1.get(field).is_some(), "v1 offer lacks {field}");
    }
    // Browsers get a page.
    let page = h
        .client
        .get(&url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 402);
    assert!(page.text().await.unwrap().contains("0.01 USDC"));

    let payee = PAYEE_ACCOUNT.address;
    let requirements = json!({"v2": offer, "v1": offer_v1, "resource": v2["resource"]});
    let paid = payments(PaymentOptions {
        requirements: Some(requirements.clone()),
        ..PaymentOptions::default()
    })
    .await;

    // v2: pay, get the bytes and a PAYMENT-RESPONSE; the payee's balance rises by the price.
    let before = chain.usdc_balance(payee).await;
    let header = paid["v2"]["header"].as_str().unwrap();
    let resp = h
        .client
        .get(&url)
        .header("payment-signature", header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let settlement = decode(resp.headers()["payment-response"].to_str().unwrap());
    assert_eq!(settlement["success"], true);
    assert!(
        settlement["transaction"]
            .as_str()
            .unwrap()
            .starts_with("0x")
    );
    let receipt = resp.headers()["x-receipt"].to_str().unwrap().to_owned();
    // What was sold is the payer's alone: no shared cache in front may keep it for others.
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    assert_eq!(resp.bytes().await.unwrap(), "premium bytes");
    assert_eq!(chain.usdc_balance(payee).await, before + 10_000);
    let head = h.client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200, "HEAD is never charged");
    assert_eq!(head.headers()["cache-control"], "private, no-store");

    // A broken download is not paid twice: the receipt re-reads the same resource for free,
    // and only that resource.
    let resp = h
        .client
        .get(&url)
        .header("x-receipt", &receipt)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    assert_eq!(resp.bytes().await.unwrap(), "premium bytes");
    let other = format!("{}/{}", h.url, it.id());
    let resp = h
        .client
        .get(&other)
        .header("x-receipt", &receipt)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    assert_eq!(chain.usdc_balance(payee).await, before + 10_000);

    // The same authorization again: refused, nothing settled.
    let resp = h
        .client
        .get(&url)
        .header("payment-signature", header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "duplicate_settlement");
    assert_eq!(chain.usdc_balance(payee).await, before + 10_000);

    // v1 (legacy client): X-PAYMENT in, X-PAYMENT-RESPONSE out.
    let header = paid["v1"]["header"].as_str().unwrap();
    let resp = h
        .client
        .get(&url)
        .header("x-payment", header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let settlement = decode(resp.headers()["x-payment-response"].to_str().unwrap());
    assert_eq!(settlement["success"], true);
    assert_eq!(settlement["network"], "base-sepolia");
    assert_eq!(chain.usdc_balance(payee).await, before + 20_000);

    // HEAD is never charged; free content types are not priced.
    let resp = h.client.head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let free = item(
        22,
        vec![hb402_ans104::Tag::new("Content-Type", "image/png")],
        b"free",
    );
    h.client
        .post(format!("{}/upload", h.url))
        .body(free.to_bytes())
        .send()
        .await
        .unwrap();
    let resp = h
        .client
        .get(format!("{}/{}", h.url, free.id()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_payments_never_reach_the_facilitator_or_the_chain() {
    let chain = LocalChain::start().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let h = paid_harness(&chain, &facilitator).await;
    let it = item(
        23,
        vec![hb402_ans104::Tag::new("Content-Type", "text/plain")],
        b"x",
    );
    h.client
        .post(format!("{}/upload", h.url))
        .body(it.to_bytes())
        .send()
        .await
        .unwrap();
    let url = format!("{}/{}", h.url, it.id());
    let resp = h.client.get(&url).send().await.unwrap();
    let v2 = decode(resp.headers()["payment-required"].to_str().unwrap());
    let v1: Value = resp.json().await.unwrap();
    let requirements =
        json!({"v2": v2["accepts"][0], "v1": v1["accepts"][0], "resource": v2["resource"]});
    let paid = payments(PaymentOptions {
        requirements: Some(requirements),
        ..PaymentOptions::default()
    })
    .await;
    let payee = PAYEE_ACCOUNT.address;
    let before = chain.usdc_balance(payee).await;
    let logs_before = facilitator.logs().lines().count();

    let tamper = |edit: &dyn Fn(&mut Value)| {
        let mut p = paid["v2"]["payload"].clone();
        edit(&mut p);
        hb402_x402::encode_header(&p)
    };
    let cases = [
        (
            tamper(&|p| p["payload"]["authorization"]["value"] = "9999".into()),
            "invalid_exact_evm_payload_authorization_value_mismatch",
        ),
        (
            tamper(&|p| p["accepted"]["amount"] = "1".into()),
            "invalid_payment_requirements",
        ),
        (
            tamper(&|p| {
                p["payload"]["authorization"]["to"] = PAYEE_ACCOUNT
                    .address_checksummed()
                    .to_lowercase()
                    .replace("3c44", "3c45")
                    .into()
            }),
            "invalid_exact_evm_payload_recipient_mismatch",
        ),
        (
            tamper(&|p| p["payload"]["authorization"]["validBefore"] = "1000".into()),
            "invalid_exact_evm_payload_authorization_valid_before",
        ),
        (
            tamper(&|p| {
                p["payload"]["authorization"]["nonce"] = format!("0x{}", "ab".repeat(32)).into()
            }),
            "invalid_exact_evm_payload_signature",
        ),
        ("not-base64!".to_owned(), "invalid_payload"),
    ];
    for (header, reason) in cases {
        let resp = h
            .client
            .get(&url)
            .header("payment-signature", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 402, "{reason}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], reason);
    }
    assert_eq!(
        facilitator.logs().lines().count(),
        logs_before,
        "no refused payment reached the facilitator"
    );
    // A missing item with a valid payment: 404 and no settlement.
    let missing = format!("{}/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", h.url);
    let resp = h
        .client
        .get(&missing)
        .header("payment-signature", paid["v2"]["header"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(chain.usdc_balance(payee).await, before);
    // The untouched payment still works afterwards (its lock was never taken or was released).
    let resp = h
        .client
        .get(&url)
        .header("payment-signature", paid["v2"]["header"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(chain.usdc_balance(payee).await, before + 10_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_authorization_buys_one_response_even_concurrently() {
    let chain = LocalChain::start().await;
    let mut facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let h = paid_harness(&chain, &facilitator).await;
    let it = item(
        24,
        vec![hb402_ans104::Tag::new("Content-Type", "text/plain")],
        b"once",
    );
    h.client
        .post(format!("{}/upload", h.url))
        .body(it.to_bytes())
        .send()
        .await
        .unwrap();
    let url = format!("{}/{}", h.url, it.id());
    let resp = h.client.get(&url).send().await.unwrap();
    let v2 = decode(resp.headers()["payment-required"].to_str().unwrap());
    let v1: Value = resp.json().await.unwrap();
    let requirements =
        json!({"v2": v2["accepts"][0], "v1": v1["accepts"][0], "resource": v2["resource"]});
    let paid = payments(PaymentOptions {
        requirements: Some(requirements.clone()),
        ..PaymentOptions::default()
    })
    .await;
    let payee = PAYEE_ACCOUNT.address;
    let before = chain.usdc_balance(payee).await;
    let header = paid["v2"]["header"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (client, url, header) = (h.client.clone(), url.clone(), header.clone());
        tasks.push(tokio::spawn(async move {
            let resp = client
                .get(&url)
                .header("payment-signature", header)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.bytes().await.unwrap();
            (status, body)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => {
                ok += 1;
                assert_eq!(body, "once");
            }
            // Used already (402), or in use by a concurrent request right now (504: the same
            // payment may be sent again; it is never charged twice).
            402 => assert!(!body.starts_with(b"once")),
            504 => {
                let body: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(body["error"], "settlement_pending");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 1, "exactly one response for one authorization");
    assert_eq!(
        chain.usdc_balance(payee).await,
        before + 10_000,
        "exactly one settlement"
    );

    // With the facilitator gone, a fresh valid payment is refused and nothing is served.
    facilitator.kill();
    let fresh = payments(PaymentOptions {
        requirements: Some(requirements),
        ..PaymentOptions::default()
    })
    .await;
    let resp = h
        .client
        .get(&url)
        .header("payment-signature", fresh["v2"]["header"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unexpected_verify_error");
    assert_eq!(chain.usdc_balance(payee).await, before + 10_000);
}

/// The unmodified clients, as users run them: `@x402/fetch` (v2), legacy `x402-fetch` (v1) and
/// the PyPI `x402` client each pay for a read through hb402 and get the bytes; the payee's balance
/// rises by exactly the price each time.
#[tokio::test(flavor = "multi_thread")]
async fn every_real_client_pays_through_hb402() {
    use hb402_testkit::{BUYER_ACCOUNT, PayClient, pay};
    let chain = LocalChain::start().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let h = paid_harness(&chain, &facilitator).await;
    let payee = PAYEE_ACCOUNT.address;
    for (seed, client) in [
        (31u8, PayClient::Fetch),
        (32, PayClient::Legacy),
        (33, PayClient::Python),
    ] {
        let data = format!("paid with {client:?}");
        let it = item(
            seed,
            vec![hb402_ans104::Tag::new("Content-Type", "text/plain")],
            data.as_bytes(),
        );
        h.client
            .post(format!("{}/upload", h.url))
            .body(it.to_bytes())
            .send()
            .await
            .unwrap();
        let before = chain.usdc_balance(payee).await;
        let result = pay(
            client,
            &format!("{}/resolve/{}", h.url, it.id()),
            BUYER_ACCOUNT.private_key,
        )
        .await;
        assert_eq!(
            result.status,
            200,
            "{client:?}: {:?}",
            String::from_utf8_lossy(&result.body)
        );
        assert_eq!(result.body, data.as_bytes(), "{client:?}");
        let settlement = result.payment_response.expect("a settlement header");
        assert_eq!(settlement["success"], true, "{client:?}");
        assert_eq!(
            chain.usdc_balance(payee).await,
            before + 10_000,
            "{client:?}"
        );
    }
}

/// A fleet: two hb402 instances share one Redis; a payment used on one is refused on the other.
#[tokio::test(flavor = "multi_thread")]
async fn instances_sharing_redis_refuse_a_payment_used_on_either() {
    let redis = hb402_testkit::RedisServer::start().await;
    let chain = LocalChain::start().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    // One gateway to its clients: one public URL, one Redis.
    let extra = format!(
        "[listen]\npublic_base_url = \"https://fleet.example\"\n\
         [store]\nkind = \"redis\"\nredis_url = \"{}\"\n\
         [payments]\nmode = \"facilitator\"\nfacilitator_url = \"{}\"\n\
         [[payments.accept]]\nnetwork = \"base-sepolia\"\npay_to = \"{}\"\n\
         [[pricing.rules]]\nprice = \"0.01\"\n",
        redis.url(),
        facilitator.url(),
        PAYEE_ACCOUNT.address_checksummed()
    );
    let (a, b) = Harness::fleet(extra).await;
    let it = item(41, vec![], b"fleet");
    let resp = a
        .client
        .post(format!("{}/upload", a.url))
        .body(it.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // The metadata is shared: the second instance knows the item without asking the node.
    let resp = b
        .client
        .get(format!("{}/{}", b.url, it.id()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let v2 = decode(resp.headers()["payment-required"].to_str().unwrap());
    let v1: Value = resp.json().await.unwrap();
    let paid = payments(PaymentOptions {
        requirements: Some(
            json!({"v2": v2["accepts"][0], "v1": v1["accepts"][0], "resource": v2["resource"]}),
        ),
        ..PaymentOptions::default()
    })
    .await;
    let header = paid["v2"]["header"].as_str().unwrap();
    let payee = PAYEE_ACCOUNT.address;
    let before = chain.usdc_balance(payee).await;
    let resp = b
        .client
        .get(format!("{}/{}", b.url, it.id()))
        .header("payment-signature", header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = a
        .client
        .get(format!("{}/{}", a.url, it.id()))
        .header("payment-signature", header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "duplicate_settlement");
    assert_eq!(chain.usdc_balance(payee).await, before + 10_000);
}

/// Load's paywalled share link: `/sign/402` mints it, its own terms are the offer, a real client
/// pays it, and a path that disagrees with its token is refused without any charge.
#[tokio::test(flavor = "multi_thread")]
async fn load_compatible_paywalled_links() {
    use hb402_testkit::{BUYER_ACCOUNT, PayClient, pay};
    let chain = LocalChain::start().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let h = paid_harness(&chain, &facilitator).await;
    let it = item(
        51,
        vec![hb402_ans104::Tag::new("Content-Type", "image/png")],
        b"private pixels",
    );
    let resp = h
        .client
        .post(format!("{}/upload", h.url))
        .header("x-private", "true")
        .bearer_auth(common::ADMIN_KEY)
        .body(it.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let key = format!("dataitems/{}.ans104", it.id());
    let payee = PAYEE_ACCOUNT.address_checksummed();
    let receipt = common::sign_paywalled(&h, &key, &payee, "0.02").await;
    let url = receipt["protected_url"].as_str().unwrap().to_owned();

    // The offer is the link's: 0.02 USDC to its payee, whatever the pricing rules say.
    let resp = h.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let v2 = decode(resp.headers()["payment-required"].to_str().unwrap());
    assert_eq!(v2["accepts"][0]["amount"], "20000");
    assert_eq!(
        v2["accepts"][0]["payTo"],
        PAYEE_ACCOUNT.address_checksummed()
    );

    // A path that disagrees with the token is refused and never charged.
    let payee = PAYEE_ACCOUNT.address;
    let before = chain.usdc_balance(payee).await;
    let cheaper = url.replace("/0.02?", "/0.001?");
    assert_ne!(cheaper, url);
    let result = pay(PayClient::Fetch, &cheaper, BUYER_ACCOUNT.private_key).await;
    assert_eq!(result.status, 401);
    let no_token = url.split('?').next().unwrap().to_owned();
    assert_eq!(h.client.get(&no_token).send().await.unwrap().status(), 401);
    assert_eq!(chain.usdc_balance(payee).await, before);

    let result = pay(PayClient::Fetch, &url, BUYER_ACCOUNT.private_key).await;
    assert_eq!(
        result.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&result.body)
    );
    assert_eq!(result.body, b"private pixels");
    assert_eq!(chain.usdc_balance(payee).await, before + 20_000);
}

/// With `pricing.honour_item_tags`, an item's own signed tags set its price within the operator's
/// bound; above it the item is refused rather than given away.
#[tokio::test(flavor = "multi_thread")]
async fn item_tags_set_the_price_within_bounds() {
    use hb402_ans104::Tag;
    let chain = LocalChain::start().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let h = Harness::start_with(Options {
        extra_toml: format!(
            "[payments]\nmode = \"facilitator\"\nfacilitator_url = \"{}\"\n\
             [pricing]\nhonour_item_tags = true\nmax_item_price = \"0.05\"\n",
            facilitator.url()
        ),
        ..Options::default()
    })
    .await;
    let seller = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"; // anvil account #4
    let tags = |price: &str| {
        vec![
            Tag::new("X402-Price", price),
            Tag::new("X402-Pay-To", seller),
            Tag::new("X402-Network", "base-sepolia"),
        ]
    };
    let priced = item(61, tags("0.03"), b"priced by its owner");
    let greedy = item(62, tags("5"), b"too expensive");
    let plain = item(63, vec![], b"free");
    for it in [&priced, &greedy, &plain] {
        h.client
            .post(format!("{}/upload", h.url))
            .body(it.to_bytes())
            .send()
            .await
            .unwrap();
    }
    let resp = h
        .client
        .get(format!("{}/{}", h.url, priced.id()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let v2 = decode(resp.headers()["payment-required"].to_str().unwrap());
    assert_eq!(v2["accepts"][0]["amount"], "30000");
    assert_eq!(v2["accepts"][0]["payTo"], seller);
    let resp = h
        .client
        .get(format!("{}/{}", h.url, greedy.id()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = h
        .client
        .get(format!("{}/{}", h.url, plain.id()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let before = chain.usdc_balance(seller.parse().unwrap()).await;
    let result = hb402_testkit::pay(
        hb402_testkit::PayClient::Python,
        &format!("{}/{}", h.url, priced.id()),
        hb402_testkit::BUYER_ACCOUNT.private_key,
    )
    .await;
    assert_eq!(result.status, 200);
    assert_eq!(result.body, b"priced by its owner");
    assert_eq!(
        chain.usdc_balance(seller.parse().unwrap()).await,
        before + 30_000
    );
}

/// The offers of a 402 as `payments()` takes them: `{v2, v1, resource}`.
async fn requirements_of(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 402);
    let v2 = decode(resp.headers()["payment-required"].to_str().unwrap());
    let v1: Value = resp.json().await.unwrap();
    json!({"v2": v2["accepts"][0], "v1": v1["accepts"][0], "resource": v2["resource"]})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_priced_upload_is_paid_before_it_is_stored() {
    use hb402_testkit::{BUYER_ACCOUNT, PayClient, PayOptions, pay_with};
    let chain = LocalChain::start().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let h = Harness::start_with(Options {
        extra_toml: format!(
            "[payments]\nmode = \"facilitator\"\nfacilitator_url = \"{}\"\n\
             [[payments.accept]]\nnetwork = \"base-sepolia\"\npay_to = \"{}\"\n\
             [pricing.uploads]\nper_mib = \"0.1\"\nper_mib_day = \"0.001\"\nminimum = \"0.002\"\n",
            facilitator.url(),
            PAYEE_ACCOUNT.address_checksummed()
        ),
        ..Options::default()
    })
    .await;
    let payee = PAYEE_ACCOUNT.address;
    let upload = format!("{}/upload", h.url);
    let data = |seed: u8| vec![seed; 64 << 10];
    // What the operator asked for, computed here from the configuration's numbers.
    let price = |len: usize, days: u64| {
        let per_mib = 100_000 + 1_000 * days as usize;
        (per_mib * len).div_ceil(1 << 20).max(2_000).to_string()
    };

    // Without a payment: a 402 priced by size and days; nothing is stored.
    let first = item(71, vec![], &data(1)).to_bytes();
    let resp = h
        .client
        .post(&upload)
        .header("x-expiry-days", "30")
        .body(first.clone())
        .send()
        .await
        .unwrap();
    let offer = requirements_of(resp).await;
    assert_eq!(offer["v2"]["amount"], price(first.len(), 30));
    assert_eq!(offer["resource"]["url"], upload);
    let resp = h
        .client
        .post(&upload)
        .body(first.clone())
        .send()
        .await
        .unwrap();
    let offer = requirements_of(resp).await;
    assert_eq!(
        offer["v2"]["amount"],
        price(first.len(), 365),
        "no expiry: a year"
    );
    assert_eq!(h.objects_stored(), 0);

    // Without a declared length it cannot be priced.
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(first.clone())]);
    let resp = h
        .client
        .post(&upload)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 411);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "length_required");

    // Each real client pays and the item is stored; the payee gets exactly the price.
    let dir = tempfile::tempdir().unwrap();
    for (seed, client) in [
        (72, PayClient::Fetch),
        (73, PayClient::Legacy),
        (74, PayClient::Python),
    ] {
        let it = item(seed, vec![], &data(seed));
        let file = dir.path().join(format!("{seed}.ans104"));
        std::fs::write(&file, it.to_bytes()).unwrap();
        let before = chain.usdc_balance(payee).await;
        let result = pay_with(
            client,
            &upload,
            BUYER_ACCOUNT.private_key,
            PayOptions {
                data_file: Some(file),
                ..PayOptions::default()
            },
        )
        .await;
        assert_eq!(result.status, 201, "{}: {:?}", client.name(), result.body);
        let settlement = result.payment_response.expect("a settlement header");
        assert_eq!(settlement["success"], true);
        let paid: u128 = price(it.to_bytes().len(), 365).parse().unwrap();
        assert_eq!(chain.usdc_balance(payee).await, before + paid);
        let resp = h
            .client
            .get(format!("{}/{}", h.url, it.id()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap(), data(seed));
    }
    assert_eq!(h.objects_stored(), 3);

    // A tampered item with a good payment: refused, nothing stored, nothing settled; the
    // payment is released and then buys the genuine item of the same size.
    let genuine = item(75, vec![], &data(75)).to_bytes();
    let mut tampered = genuine.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let resp = h
        .client
        .post(&upload)
        .body(genuine.clone())
        .send()
        .await
        .unwrap();
    let requirements = requirements_of(resp).await;
    let signed = payments(PaymentOptions {
        requirements: Some(requirements),
        ..PaymentOptions::default()
    })
    .await;
    let header = signed["v2"]["header"].as_str().unwrap();
    let before = chain.usdc_balance(payee).await;
    let resp = h
        .client
        .post(&upload)
        .header("payment-signature", header)
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("payment-response").is_none());
    assert_eq!(chain.usdc_balance(payee).await, before);
    assert_eq!(h.objects_stored(), 3);
    let resp = h
        .client
        .post(&upload)
        .header("payment-signature", header)
        .body(genuine.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(resp.headers().get("payment-response").is_some());
    let paid: u128 = price(genuine.len(), 365).parse().unwrap();
    assert_eq!(chain.usdc_balance(payee).await, before + paid);
    assert_eq!(h.objects_stored(), 4);

    // The same payment never buys a second upload.
    let resp = h
        .client
        .post(&upload)
        .header("payment-signature", header)
        .body(genuine.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);

    // An item already stored is not charged again: the payment is released.
    let resp = h
        .client
        .post(&upload)
        .body(genuine.clone())
        .send()
        .await
        .unwrap();
    let signed = payments(PaymentOptions {
        requirements: Some(requirements_of(resp).await),
        ..PaymentOptions::default()
    })
    .await;
    let resp = h
        .client
        .post(&upload)
        .header(
            "payment-signature",
            signed["v2"]["header"].as_str().unwrap(),
        )
        .body(genuine)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("payment-response").is_none());
    assert_eq!(chain.usdc_balance(payee).await, before + paid);
}

/// A stand-in node on `addr` that answers every request with `status` (e.g. `503 Service
/// Unavailable`).
async fn failing_node(
    addr: std::net::SocketAddr,
    status: &'static str,
) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 65_536 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: 5\r\nconnection: close\r\n\r\nerror"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_item_or_a_failing_node_is_never_paid_for() {
    use hb402_ans104::Tag;
    let chain = LocalChain::start().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let mut h = paid_harness(&chain, &facilitator).await;
    let text = || vec![Tag::new("Content-Type", "text/plain")];
    let expiring = item(81, text(), b"soon gone");
    let kept = item(82, text(), b"kept bytes");
    let expires_at = common::now() + 3;
    for (it, expiry) in [(&expiring, Some(expires_at)), (&kept, None)] {
        let mut req = h
            .client
            .post(format!("{}/upload", h.url))
            .body(it.to_bytes());
        if let Some(at) = expiry {
            req = req.header("x-expires-at", at.to_string());
        }
        assert_eq!(req.send().await.unwrap().status(), 201);
    }
    // Payments signed while both are on sale.
    let mut signed = Vec::new();
    for it in [&expiring, &kept] {
        let url = format!("{}/{}", h.url, it.id());
        let resp = h.client.get(&url).send().await.unwrap();
        let paid = payments(PaymentOptions {
            requirements: Some(requirements_of(resp).await),
            ..PaymentOptions::default()
        })
        .await;
        signed.push((url, paid["v2"]["header"].as_str().unwrap().to_owned()));
    }
    let payee = PAYEE_ACCOUNT.address;
    let before = chain.usdc_balance(payee).await;

    // Expired: 410 from the second it expires, and the payment is not even looked at.
    while common::now() <= expires_at {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (url, header) = &signed[0];
    let resp = h
        .client
        .get(url)
        .header("payment-signature", header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 410);
    assert!(resp.headers().get("payment-response").is_none());

    // The node fails after the payment was verified: no content, no settlement, no ledger
    // entry. A node that answers 500 to everything (the device's "missing key", but also its
    // listing and its buckets) is failing, like one answering 503: a 502. The released
    // authorization stays usable, so one payment serves both attempts.
    let addr = h.node().addr();
    h.node.take().unwrap().shutdown().await.unwrap();
    let (url, header) = &signed[1];
    for (node_status, status) in [
        ("500 Internal Server Error", 502),
        ("503 Service Unavailable", 502),
    ] {
        let stub = failing_node(addr, node_status).await;
        let resp = h
            .client
            .get(url)
            .header("payment-signature", header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "node answered {node_status}");
        assert!(resp.headers().get("payment-response").is_none());
        assert!(!resp.text().await.unwrap().contains("kept bytes"));
        stub.abort();
        let _ = stub.await;
    }
    assert_eq!(chain.usdc_balance(payee).await, before);
    // Nothing was settled, so nothing entered the ledger; the released authorization stays the
    // payer's: it buys the item once the node is back (checked above by serving both attempts
    // with one payment).
    let ledger = h.ledger().await;
    assert_eq!(ledger["payments"], json!([]), "{url}");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_settlement_serves_every_client_without_a_facilitator() {
    use hb402_testkit::{BUYER_ACCOUNT, PayClient, pay};
    let chain = LocalChain::start().await;
    let h = Harness::start_with(Options {
        extra_toml: format!(
            "[payments]\nmode = \"local\"\nrpc_url = \"{}\"\n\
             operator_key = \"${{HB402_TEST_OPERATOR_KEY}}\"\nchain_id = 84532\n\
             [[payments.accept]]\nnetwork = \"base-sepolia\"\npay_to = \"{}\"\n\
             [[pricing.rules]]\nprice = \"0.02\"\n",
            chain.rpc_url(),
            PAYEE_ACCOUNT.address_checksummed()
        ),
        ..Options::default()
    })
    .await;
    let payee = PAYEE_ACCOUNT.address;
    for (seed, client) in [
        (91, PayClient::Fetch),
        (92, PayClient::Legacy),
        (93, PayClient::Python),
    ] {
        let data = format!("settled by hb402 itself, for {}", client.name());
        let it = item(seed, vec![], data.as_bytes());
        let resp = h
            .client
            .post(format!("{}/upload", h.url))
            .body(it.to_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let before = chain.usdc_balance(payee).await;
        let result = pay(
            client,
            &format!("{}/{}", h.url, it.id()),
            BUYER_ACCOUNT.private_key,
        )
        .await;
        assert_eq!(result.status, 200, "{}", client.name());
        assert_eq!(result.body, data.as_bytes());
        let settlement = result.payment_response.expect("a settlement header");
        assert_eq!(settlement["success"], true);
        assert!(
            settlement["transaction"]
                .as_str()
                .is_some_and(|t| t.len() == 66)
        );
        assert_eq!(chain.usdc_balance(payee).await, before + 20_000);
    }
}
