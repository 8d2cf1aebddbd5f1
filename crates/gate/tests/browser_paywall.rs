//! The browser paywall, paid by a person: headless Chromium opens hb402's 402 page with a test
//! wallet in it (EIP-6963 or `window.ethereum`, signing with anvil's development accounts), and
//! the page connects, switches chains, signs, pays through hb402's local settlement on a real
//! chain and shows the item. Every scenario checks what the person saw and where the money went.

mod common;

use base64::Engine as _;
use common::{Harness, Options, item};
use hb402_ans104::Tag;
use hb402_testkit::{ANVIL_ACCOUNTS, BUYER_ACCOUNT, LocalChain, PAYEE_ACCOUNT, browse};
use serde_json::{Value, json};

const PRICE: u128 = 10_000;

/// A 2×2 orange PNG.
const PNG: &str = "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a730000001049444154789c63f8dfc000440c100a002dee05fd8b3f6e840000000049454e44ae426082";

async fn stack(chain: &LocalChain) -> Harness {
    stack_with(chain, "", "").await
}

/// The stack with more `[payments]` keys and more tables.
async fn stack_with(chain: &LocalChain, payments: &str, extra: &str) -> Harness {
    Harness::start_with(Options {
        extra_toml: format!(
            "[payments]\nmode = \"local\"\nrpc_url = \"{rpc}\"\n\
             operator_key = \"${{HB402_TEST_OPERATOR_KEY}}\"\nchain_id = 84532\n{payments}\n\
             [[payments.accept]]\nnetwork = \"base-sepolia\"\npay_to = \"{payee}\"\n\
             [[pricing.rules]]\nbuckets = [\"hb402-private\"]\nfree = true\n\
             [[pricing.rules]]\nprice = \"0.01\"\n\
             [[paywall.chains]]\nnetwork = \"eip155:84532\"\nname = \"Test chain\"\nrpc_urls = [\"{rpc}\"]\n{extra}",
            rpc = chain.rpc_url(),
            payee = PAYEE_ACCOUNT.address_checksummed()
        ),
        ..Options::default()
    })
    .await
}

async fn upload(h: &Harness, seed: u8, content_type: &str, data: &[u8], private: bool) -> String {
    let it = item(seed, vec![Tag::new("Content-Type", content_type)], data);
    let mut req = h
        .client
        .post(format!("{}/upload", h.url))
        .body(it.to_bytes());
    if private {
        req = req
            .header("x-private", "true")
            .bearer_auth(common::ADMIN_KEY);
    }
    assert_eq!(req.send().await.unwrap().status(), 201);
    it.id().to_string()
}

fn spec(url: &str, chain: &LocalChain, extra: Value) -> Value {
    let mut spec = json!({
        "url": url,
        "rpc": chain.rpc_url(),
        "account": BUYER_ACCOUNT.address_checksummed(),
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    spec
}

fn bytes(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("the page offered the bytes"))
        .unwrap()
}

/// The page loaded nothing from elsewhere and the browser reported no error but the 402 itself
/// (a Content-Security-Policy violation would show here).
fn self_contained(report: &Value) {
    assert_eq!(report["foreignRequests"], json!([]), "{report:#}");
    let errors: Vec<&Value> = report["consoleErrors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e.as_str().unwrap().contains("status of 402"))
        .collect();
    assert!(errors.is_empty(), "{report:#}");
    let csp = report["csp"].as_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'nonce-"),
        "{csp}"
    );
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let headers = &report["headers"];
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

fn methods(report: &Value) -> Vec<&str> {
    report["walletCalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["method"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_pays_with_the_keyboard_sees_the_item_and_a_reload_does_not_pay_again() {
    let chain = LocalChain::start().await;
    let h = stack(&chain).await;
    let data = b"a text bought in a browser\n";
    let id = upload(&h, 101, "text/plain", data, false).await;
    let (payee, buyer) = (PAYEE_ACCOUNT.address, BUYER_ACCOUNT.address);
    let (payee_before, buyer_before) = (
        chain.usdc_balance(payee).await,
        chain.usdc_balance(buyer).await,
    );

    let report = browse(&spec(
        &format!("{}/{id}", h.url),
        &chain,
        json!({"keyboard": true, "reload": true, "viewport": {"width": 375, "height": 740}}),
    ))
    .await;

    assert_eq!(report["status"], 402);
    assert_eq!(report["contentType"], "text/html; charset=utf-8");
    self_contained(&report);
    let before = &report["before"];
    let facts = before["facts"].as_str().unwrap();
    for shown in [
        id.as_str(),
        "text/plain",
        "27 bytes",
        "never",
        "0.01 USDC",
        "eip155:84532",
        &PAYEE_ACCOUNT.address_checksummed(),
    ] {
        assert!(facts.contains(shown), "{shown} not in {facts}");
    }
    assert_eq!(before["overflow"], false, "wider than a phone: {report:#}");
    assert!(report["tabs"].as_u64().unwrap() <= 3, "{report:#}");

    let after = &report["after"];
    assert_eq!(after["resultVisible"], true, "{report:#}");
    assert_eq!(after["kind"], "text");
    assert_eq!(after["text"].as_str().unwrap().as_bytes(), data);
    assert_eq!(bytes(&after["bytes"]), data);
    assert_eq!(after["downloadName"], format!("{id}.txt"));
    assert_eq!(after["focused"], "result-heading");
    let proof = after["proof"].as_str().unwrap();
    assert!(proof.contains("0.01 USDC on Test chain"), "{proof}");
    let tx = proof
        .split_whitespace()
        .find(|w| w.starts_with("0x") && w.len() == 66)
        .unwrap_or_else(|| panic!("no transaction in {proof}"));
    assert!(proof.contains("valid until"), "{proof}");
    assert_eq!(
        methods(&report),
        [
            "eth_requestAccounts",
            "eth_chainId",
            "eth_call",
            "eth_signTypedData_v4"
        ]
    );
    assert_eq!(chain.usdc_balance(payee).await, payee_before + PRICE);
    assert_eq!(chain.usdc_balance(buyer).await, buyer_before - PRICE);
    let ledger = h.ledger().await;
    assert!(ledger.to_string().contains(tx), "{ledger:#}");

    // The reload opens the item with the receipt: no wallet, no second payment.
    let reload = &report["reload"];
    assert_eq!(reload["resultVisible"], true, "{report:#}");
    assert_eq!(reload["heading"], "Paid earlier");
    assert_eq!(reload["walletCalls"], 0);
    assert_eq!(bytes(&reload["bytes"]), data);
    assert_eq!(chain.usdc_balance(payee).await, payee_before + PRICE);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wallet_on_another_chain_is_asked_to_switch_and_add_it_and_an_image_is_shown() {
    let chain = LocalChain::start().await;
    let h = stack(&chain).await;
    let png = hex_bytes(PNG);
    let id = upload(&h, 102, "image/png", &png, false).await;
    let payee = PAYEE_ACCOUNT.address;
    let payee_before = chain.usdc_balance(payee).await;

    // `window.ethereum` only, on Ethereum mainnet, not knowing the offer's chain.
    let report = browse(&spec(
        &format!("{}/resolve/{id}", h.url),
        &chain,
        json!({"wallet": "ethereum", "chainId": 1, "knownChains": [1]}),
    ))
    .await;
    self_contained(&report);
    let after = &report["after"];
    assert_eq!(after["resultVisible"], true, "{report:#}");
    assert_eq!(after["kind"], "image");
    assert_eq!(after["imageDecoded"], true, "{report:#}");
    assert_eq!(bytes(&after["bytes"]), png);
    let calls = &report["walletCalls"];
    let switches: Vec<&Value> = calls
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["method"] == "wallet_switchEthereumChain")
        .collect();
    assert_eq!(switches.len(), 2, "{calls:#}");
    assert_eq!(switches[0]["params"][0]["chainId"], "0x14a34");
    let add = calls
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["method"] == "wallet_addEthereumChain")
        .unwrap_or_else(|| panic!("the chain was never added: {calls:#}"));
    assert_eq!(add["params"][0]["chainId"], "0x14a34");
    assert_eq!(add["params"][0]["chainName"], "Test chain");
    assert_eq!(add["params"][0]["rpcUrls"], json!([chain.rpc_url()]));
    assert_eq!(chain.usdc_balance(payee).await, payee_before + PRICE);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_explained_in_words_and_move_no_money() {
    let chain = LocalChain::start().await;
    let h = stack(&chain).await;
    let id = upload(&h, 103, "text/plain", b"never sold", false).await;
    let url = format!("{}/{id}", h.url);
    let payee = PAYEE_ACCOUNT.address;
    let payee_before = chain.usdc_balance(payee).await;

    let rejected = browse(&spec(&url, &chain, json!({"rejectSignature": true}))).await;
    self_contained(&rejected);
    let error = rejected["after"]["error"].as_str().unwrap();
    assert!(
        error.contains("You rejected the signature request"),
        "{error}"
    );
    assert!(error.contains("Nothing was paid"), "{error}");
    assert_eq!(rejected["after"]["payVisible"], true);

    let no_wallet = browse(&spec(&url, &chain, json!({"wallet": "none"}))).await;
    let error = no_wallet["after"]["error"].as_str().unwrap();
    assert!(error.contains("No wallet found"), "{error}");

    // Account #6 holds ETH but no USDC: told before anything is signed.
    let poor = browse(&spec(
        &url,
        &chain,
        json!({"account": ANVIL_ACCOUNTS[6].address_checksummed()}),
    ))
    .await;
    let error = poor["after"]["error"].as_str().unwrap();
    assert!(error.contains("Not enough USDC"), "{error}");
    assert!(
        !methods(&poor).contains(&"eth_signTypedData_v4"),
        "{poor:#}"
    );

    let refused = browse(&spec(
        &url,
        &chain,
        json!({"chainId": 1, "knownChains": [1, 84532], "refuseSwitch": true}),
    ))
    .await;
    let error = refused["after"]["error"].as_str().unwrap();
    assert!(
        error.contains("You declined to switch your wallet to Test chain"),
        "{error}"
    );

    // An item that expires while its page is open is not sold (the margin covers the browser's
    // start on a slow machine).
    let soon = common::now() + 8;
    let it = item(
        104,
        vec![Tag::new("Content-Type", "text/plain")],
        b"gone soon",
    );
    let resp = h
        .client
        .post(format!("{}/upload", h.url))
        .header("x-expires-at", soon.to_string())
        .body(it.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let late = browse(&spec(
        &format!("{}/{}", h.url, it.id()),
        &chain,
        json!({"delayMs": 9000}),
    ))
    .await;
    let error = late["after"]["error"].as_str().unwrap();
    assert!(error.contains("This item has expired"), "{error}");
    assert!(
        !methods(&late).contains(&"eth_signTypedData_v4"),
        "{late:#}"
    );

    // The funds leave after the page checked them: hb402's own check refuses the payment, and
    // the page says why.
    let drained = browse(&spec(
        &url,
        &chain,
        json!({"account": ANVIL_ACCOUNTS[5].address_checksummed(), "drainBeforeSigning": true}),
    ))
    .await;
    assert!(methods(&drained).contains(&"eth_signTypedData_v4"));
    let error = drained["after"]["error"].as_str().unwrap();
    assert!(error.contains("Not enough USDC"), "{error}");
    assert_eq!(chain.usdc_balance(ANVIL_ACCOUNTS[5].address).await, 0);

    assert_eq!(chain.usdc_balance(payee).await, payee_before);
    let ledger = h.ledger().await;
    assert_eq!(ledger["payments"], json!([]), "{ledger:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paywalled_share_link_pays_in_the_browser_and_a_private_link_opens_directly() {
    let chain = LocalChain::start().await;
    let h = stack(&chain).await;
    let data = b"behind a paywalled link";
    let id = upload(&h, 105, "text/plain", data, true).await;
    let key = format!("dataitems/{id}.ans104");
    let payee = PAYEE_ACCOUNT.address_checksummed();
    let receipt = common::sign_paywalled(&h, &key, &payee, "0.02").await;
    let protected = receipt["protected_url"].as_str().unwrap().to_owned();
    let before = chain.usdc_balance(PAYEE_ACCOUNT.address).await;

    let report = browse(&spec(&protected, &chain, json!({}))).await;
    self_contained(&report);
    assert!(
        report["before"]["facts"]
            .as_str()
            .unwrap()
            .contains("0.02 USDC"),
        "{report:#}"
    );
    assert_eq!(report["after"]["resultVisible"], true, "{report:#}");
    assert_eq!(bytes(&report["after"]["bytes"]), data);
    assert_eq!(
        chain.usdc_balance(PAYEE_ACCOUNT.address).await,
        before + 20_000
    );

    // A private link with no payment terms is not a paywall: the browser gets the item.
    let link: Value = common::sign(&h, "/sign", &key, &[])
        .await
        .json()
        .await
        .unwrap();
    let token = link["signed_url"]
        .as_str()
        .unwrap()
        .rsplit_once("token=")
        .unwrap()
        .1;
    let report = browse(&spec(
        &format!("{}/resolve/{id}?token={token}", h.url),
        &chain,
        json!({}),
    ))
    .await;
    assert_eq!(report["status"], 200, "{report:#}");
    assert_eq!(report["body"].as_str().unwrap().as_bytes(), data);
    assert_eq!(report["walletCalls"], json!([]));
}

fn signatures(report: &Value) -> usize {
    methods(report)
        .iter()
        .filter(|m| **m == "eth_signTypedData_v4")
        .count()
}

/// A payment whose answer never arrives (the connection resets, a gateway in front answers
/// 502, the page is reloaded while it waits) is sent again as the same payment: signed once,
/// charged once, and the item is shown.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_payment_is_sent_again_never_signed_twice() {
    let chain = LocalChain::start().await;
    let h = stack(&chain).await;
    let payee = PAYEE_ACCOUNT.address;
    for (seed, interrupt, retry) in [
        (110u8, "abort", true),
        (111, "502", true),
        (112, "hang", false),
    ] {
        let data = format!("interrupted by {interrupt}");
        let id = upload(&h, seed, "text/plain", data.as_bytes(), false).await;
        let before = chain.usdc_balance(payee).await;
        // A path with a doubled slash: the page must still talk to its own origin.
        let report = browse(&spec(
            &format!("{}//{id}", h.url),
            &chain,
            json!({"interrupt": interrupt, "retry": retry}),
        ))
        .await;
        assert!(report["interrupted"].is_string(), "{interrupt}: {report:#}");
        if retry {
            let error = report["interruptedAt"]["error"].as_str().unwrap();
            assert!(
                error.contains("could not be confirmed"),
                "{interrupt}: {error}"
            );
        }
        assert_eq!(
            report["after"]["resultVisible"], true,
            "{interrupt}: {report:#}"
        );
        assert_eq!(bytes(&report["after"]["bytes"]), data.as_bytes());
        assert_eq!(signatures(&report), 1, "{interrupt}: {report:#}");
        assert_eq!(report["foreignRequests"], json!([]), "{interrupt}");
        assert_eq!(
            chain.usdc_balance(payee).await,
            before + PRICE,
            "{interrupt}"
        );
    }
}

/// A settlement that is not confirmed in time (the chain stalls) is answered 504 pending: the
/// page waits and sends the same payment again until it is, then shows the item.
#[tokio::test(flavor = "multi_thread")]
async fn a_pending_settlement_is_waited_for_with_the_same_payment() {
    let chain = LocalChain::start().await;
    let h = stack_with(&chain, "settle_timeout_seconds = 2", "").await;
    let id = upload(&h, 114, "text/plain", b"worth the wait", false).await;
    let before = chain.usdc_balance(PAYEE_ACCOUNT.address).await;
    let report = browse(&spec(
        &format!("{}/{id}", h.url),
        &chain,
        json!({"stallChainMs": 8000}),
    ))
    .await;
    assert_eq!(report["after"]["resultVisible"], true, "{report:#}");
    assert_eq!(bytes(&report["after"]["bytes"]), b"worth the wait");
    let answers = report["paymentAnswers"].as_array().unwrap();
    assert_eq!(answers.first(), Some(&json!(504)), "{report:#}");
    assert_eq!(answers.last(), Some(&json!(200)), "{report:#}");
    assert_eq!(signatures(&report), 1, "{report:#}");
    assert_eq!(
        chain.usdc_balance(PAYEE_ACCOUNT.address).await,
        before + PRICE
    );
    let ledger = h.ledger().await;
    assert_eq!(
        ledger["payments"].as_array().unwrap().len(),
        1,
        "{ledger:#}"
    );
}

/// A receipt that expired (or that hb402 refuses) leaves the page ready to pay: nothing is
/// signed until the person presses the button.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_receipt_never_starts_a_payment_by_itself() {
    let chain = LocalChain::start().await;
    let h = stack_with(&chain, "receipt_window_seconds = 2", "").await;
    let id = upload(&h, 113, "text/plain", b"short receipt", false).await;
    let before = chain.usdc_balance(PAYEE_ACCOUNT.address).await;
    let report = browse(&spec(
        &format!("{}/{id}", h.url),
        &chain,
        json!({"reload": true, "reloadAfterMs": 3500}),
    ))
    .await;
    assert_eq!(report["after"]["resultVisible"], true, "{report:#}");
    let reload = &report["reload"];
    assert_eq!(reload["resultVisible"], false, "{report:#}");
    assert_eq!(reload["payVisible"], true, "{report:#}");
    assert_eq!(reload["walletCalls"], 0, "{report:#}");
    assert_eq!(signatures(&report), 1);
    assert_eq!(
        chain.usdc_balance(PAYEE_ACCOUNT.address).await,
        before + PRICE
    );
}

/// A priced upload asked for by a browser gets a page that names it an upload and leaves paying
/// to an x402 client: the page has no body to send again.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_challenge_for_a_browser_leaves_paying_to_a_client() {
    let chain = LocalChain::start().await;
    let h = stack_with(
        &chain,
        "",
        "[pricing.uploads]\nper_mib = \"0.01\"\nminimum = \"0.01\"\n",
    )
    .await;
    let it = item(106, vec![], b"an upload");
    let resp = h
        .client
        .post(format!("{}/upload", h.url))
        .header("accept", "text/html")
        .body(it.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    assert!(resp.headers().contains_key("payment-required"));
    let page = resp.text().await.unwrap();
    assert!(page.contains("Pay 0.01 USDC to store this item"), "{page}");
    // The page's data names no item, which is what keeps its pay button hidden.
    assert!(page.contains("\"item\":null"), "{page}");
    assert_eq!(h.objects_stored(), 0);
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
