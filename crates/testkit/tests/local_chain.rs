//! The kit itself: the chain comes up with USDC at the Base Sepolia address, the reference
//! facilitator serves it, and payments made by the unmodified clients verify and settle once.

use alloy_primitives::{Address, B256};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hb402_testkit::{
    BUYER_ACCOUNT, CHAIN_ID, DOMAIN_SEPARATOR, FACILITATOR_ACCOUNT, Facilitator, LocalChain,
    MINTED_PER_ACCOUNT, NETWORK_V1, NETWORK_V2, PAYEE_ACCOUNT, USDC, payments_at, payments_fixture,
};
use serde_json::{Value, json};

const AMOUNT: u128 = 10_000;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// POSTs `{x402Version, paymentPayload, paymentRequirements}` to the facilitator.
async fn facilitator_call(facilitator: &Facilitator, route: &str, payment: &Value) -> (u16, Value) {
    let body = json!({
        "x402Version": payment["payload"]["x402Version"],
        "paymentPayload": payment["payload"],
        "paymentRequirements": payment["requirements"],
    });
    let response = client()
        .post(format!("{}/{route}", facilitator.url()))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /{route}: {e}\n{}", facilitator.logs()));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn address(value: &Value) -> Address {
    value.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn chain_has_usdc_at_the_base_sepolia_address() {
    let mut chain = LocalChain::start().await;
    assert!(chain.rpc_url().starts_with("http://127.0.0.1:"));
    assert_eq!(chain.chain_id(), CHAIN_ID);
    assert_eq!(chain.rpc("eth_chainId", json!([])).await, json!("0x14a34"));
    assert_eq!(chain.usdc(), USDC);

    let code = chain.rpc("eth_getCode", json!([USDC, "latest"])).await;
    assert!(
        code.as_str().unwrap().len() > 1000,
        "no token code at {USDC}"
    );
    assert_eq!(chain.domain_separator().await, DOMAIN_SEPARATOR);

    let buyers: Vec<Address> = chain.accounts()[1..=5].iter().map(|a| a.address).collect();
    assert_eq!(chain.funded(), buyers.as_slice());
    for buyer in &buyers {
        assert_eq!(chain.usdc_balance(*buyer).await, MINTED_PER_ACCOUNT);
    }
    assert_eq!(
        chain.usdc_balance(BUYER_ACCOUNT.address).await,
        1_000_000_000
    );
    assert_eq!(chain.usdc_balance(FACILITATOR_ACCOUNT.address).await, 0);
    assert!(
        !chain
            .authorization_used(BUYER_ACCOUNT.address, B256::repeat_byte(7))
            .await
    );

    // The chain clock follows the system clock and can be moved forward.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t0 = chain.block_timestamp().await;
    assert!(
        t0.abs_diff(now) < 60,
        "block time {t0} vs system time {now}"
    );
    chain.increase_time(3600).await;
    assert!(chain.block_timestamp().await >= t0 + 3600);

    // Killing anvil closes its port.
    let url = chain.rpc_url().to_owned();
    chain.kill();
    assert!(chain.pid().is_none());
    assert!(client().post(&url).json(&json!({})).send().await.is_err());
}

#[tokio::test]
async fn facilitator_lists_the_local_chain() {
    let chain = LocalChain::start().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    assert!(facilitator.url().starts_with("http://127.0.0.1:"));
    assert_eq!(facilitator.signer(), FACILITATOR_ACCOUNT.address);

    let supported: Value = client()
        .get(format!("{}/supported", facilitator.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds = supported["kinds"].as_array().unwrap();
    assert!(
        kinds.contains(&json!({"x402Version": 2, "scheme": "exact", "network": NETWORK_V2})),
        "{supported}"
    );
    assert!(
        kinds.contains(&json!({"x402Version": 1, "scheme": "exact", "network": NETWORK_V1})),
        "{supported}"
    );
    let signers = supported["signers"]["eip155:*"].as_array().unwrap();
    assert_eq!(address(&signers[0]), FACILITATOR_ACCOUNT.address);

    let health = client()
        .get(format!("{}/health", facilitator.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );

    let missing = client()
        .post(format!("{}/verify", facilitator.url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 400);
    let not_json = client()
        .post(format!("{}/settle", facilitator.url()))
        .body("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status().as_u16(), 400);
    assert!(
        facilitator.logs().contains("GET /supported -> 200"),
        "{}",
        facilitator.logs()
    );
}

#[tokio::test]
async fn v2_payment_verifies_and_settles_exactly_once() {
    let chain = LocalChain::start().await;
    let (facilitator, payments) = tokio::join!(
        Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key),
        async { payments_at(chain.block_timestamp().await).await },
    );
    let v2 = &payments["v2"];
    let authorization = &v2["payload"]["payload"]["authorization"];
    assert_eq!(address(&authorization["from"]), BUYER_ACCOUNT.address);
    assert_eq!(address(&authorization["to"]), PAYEE_ACCOUNT.address);
    let nonce: B256 = authorization["nonce"].as_str().unwrap().parse().unwrap();

    let payee_before = chain.usdc_balance(PAYEE_ACCOUNT.address).await;
    let buyer_before = chain.usdc_balance(BUYER_ACCOUNT.address).await;

    let (status, verify) = facilitator_call(&facilitator, "verify", v2).await;
    assert_eq!(
        (status, &verify["isValid"]),
        (200, &json!(true)),
        "{verify}"
    );
    assert_eq!(address(&verify["payer"]), BUYER_ACCOUNT.address);

    let (status, settle) = facilitator_call(&facilitator, "settle", v2).await;
    assert_eq!(
        (status, &settle["success"]),
        (200, &json!(true)),
        "{settle}"
    );
    assert_eq!(settle["network"], json!(NETWORK_V2));
    assert_eq!(
        settle["transaction"].as_str().unwrap().len(),
        66,
        "{settle}"
    );
    assert_eq!(
        chain.usdc_balance(PAYEE_ACCOUNT.address).await,
        payee_before + AMOUNT
    );
    assert_eq!(
        chain.usdc_balance(BUYER_ACCOUNT.address).await,
        buyer_before - AMOUNT
    );
    assert!(chain.authorization_used(BUYER_ACCOUNT.address, nonce).await);

    // The same authorization again: a clean refusal, no second transfer.
    let (status, replay) = facilitator_call(&facilitator, "settle", v2).await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["success"], json!(false), "{replay}");
    assert_eq!(
        replay["errorReason"],
        json!("invalid_exact_evm_nonce_already_used"),
        "{replay}"
    );
    assert_eq!(replay["transaction"], json!(""));
    assert_eq!(
        chain.usdc_balance(PAYEE_ACCOUNT.address).await,
        payee_before + AMOUNT
    );

    let (status, reverify) = facilitator_call(&facilitator, "verify", v2).await;
    assert_eq!(status, 200);
    assert_eq!(reverify["isValid"], json!(false), "{reverify}");
    // With Multicall3 on the chain (as on Base Sepolia), the reference facilitator reads the
    // authorization's state in its checks and names the cause.
    assert_eq!(
        reverify["invalidReason"],
        json!("invalid_exact_evm_nonce_already_used")
    );
}

#[tokio::test]
async fn v1_payments_from_both_client_generations_settle() {
    let chain = LocalChain::start().await;
    let (facilitator, payments) = tokio::join!(
        Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key),
        async { payments_at(chain.block_timestamp().await).await },
    );
    let payee_before = chain.usdc_balance(PAYEE_ACCOUNT.address).await;

    for (n, client) in ["v1", "v1core"].into_iter().enumerate() {
        let payment = &payments[client];
        assert_eq!(payment["payload"]["x402Version"], json!(1));
        assert_eq!(payment["payload"]["network"], json!(NETWORK_V1));
        let (status, verify) = facilitator_call(&facilitator, "verify", payment).await;
        assert_eq!(
            (status, &verify["isValid"]),
            (200, &json!(true)),
            "{client}: {verify}"
        );
        let (status, settle) = facilitator_call(&facilitator, "settle", payment).await;
        assert_eq!(
            (status, &settle["success"]),
            (200, &json!(true)),
            "{client}: {settle}"
        );
        assert_eq!(settle["network"], json!(NETWORK_V1));
        let expected = payee_before + AMOUNT * (n as u128 + 1);
        assert_eq!(
            chain.usdc_balance(PAYEE_ACCOUNT.address).await,
            expected,
            "{client}"
        );
    }
}

#[tokio::test]
async fn tampered_payment_is_invalid_and_not_settled() {
    let chain = LocalChain::start().await;
    let (facilitator, payments) = tokio::join!(
        Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key),
        async { payments_at(chain.block_timestamp().await).await },
    );
    let payee_before = chain.usdc_balance(PAYEE_ACCOUNT.address).await;

    // One flipped signature digit.
    let mut forged = payments["v2"].clone();
    let signature = forged["payload"]["payload"]["signature"]
        .as_str()
        .unwrap()
        .to_owned();
    let flipped = if &signature[10..11] == "0" { "1" } else { "0" };
    forged["payload"]["payload"]["signature"] =
        json!(format!("{}{flipped}{}", &signature[..10], &signature[11..]));
    let (status, verify) = facilitator_call(&facilitator, "verify", &forged).await;
    assert_eq!(status, 200);
    assert_eq!(verify["isValid"], json!(false), "{verify}");
    assert_eq!(
        verify["invalidReason"],
        json!("invalid_exact_evm_signature")
    );
    let (status, settle) = facilitator_call(&facilitator, "settle", &forged).await;
    assert_eq!(status, 200);
    assert_eq!(settle["success"], json!(false), "{settle}");
    assert_eq!(settle["errorReason"], json!("invalid_exact_evm_signature"));
    assert_eq!(
        chain.usdc_balance(PAYEE_ACCOUNT.address).await,
        payee_before
    );
}

#[tokio::test]
async fn killed_facilitator_refuses_connections() {
    let chain = LocalChain::start().await;
    let mut facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let supported = format!("{}/supported", facilitator.url());
    assert!(
        client()
            .get(&supported)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert!(facilitator.is_running());
    facilitator.kill();
    assert!(!facilitator.is_running());
    let error = client().get(&supported).send().await.unwrap_err();
    assert!(error.is_connect(), "{error}");
}

#[test]
fn committed_fixture_matches_its_description() {
    let fixture = payments_fixture();
    let now = fixture["now"].as_u64().unwrap();
    assert_eq!(address(&fixture["signer"]), BUYER_ACCOUNT.address);

    let v2 = &fixture["v2"];
    assert_eq!(v2["payload"]["accepted"], v2["requirements"]);
    assert_eq!(v2["paymentRequired"]["accepts"][0], v2["requirements"]);
    assert_eq!(v2["requirements"]["network"], json!(NETWORK_V2));
    assert_eq!(v2["requirements"]["amount"], json!("10000"));
    assert_eq!(address(&v2["requirements"]["asset"]), USDC);
    assert_eq!(
        v2["requirements"]["extra"],
        json!({"name": "USDC", "version": "2"})
    );
    assert_eq!(
        v2["payload"]["resource"]["url"],
        json!("http://127.0.0.1:8402/resolve/some-id")
    );
    let authorization = &v2["payload"]["payload"]["authorization"];
    assert_eq!(authorization["validAfter"], json!("0"));
    assert_eq!(authorization["validBefore"], json!((now + 300).to_string()));
    assert_eq!(authorization["value"], json!("10000"));
    assert_eq!(
        v2["payload"]["payload"]["signature"]
            .as_str()
            .unwrap()
            .len(),
        2 + 130
    );

    let v1 = &fixture["v1"];
    assert_eq!(v1["requirements"]["network"], json!(NETWORK_V1));
    assert_eq!(v1["requirements"]["maxAmountRequired"], json!("10000"));
    assert_eq!(v1["payload"]["scheme"], json!("exact"));
    let authorization = &v1["payload"]["payload"]["authorization"];
    assert_eq!(authorization["validAfter"], json!((now - 600).to_string()));
    assert_eq!(authorization["validBefore"], json!((now + 300).to_string()));

    for version in ["v2", "v1", "v1core"] {
        let header = fixture[version]["header"].as_str().unwrap();
        let decoded: Value = serde_json::from_slice(&STANDARD.decode(header).unwrap()).unwrap();
        assert_eq!(decoded, fixture[version]["payload"], "{version}");
    }
}

/// The x402 batch-settlement contracts, compiled from their sources, land at their canonical
/// addresses (so their code is the canonical code), and installing them again changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn batch_settlement_contracts_install_at_their_canonical_addresses() {
    let chain = LocalChain::start().await;
    let settlement = chain.install_batch_settlement().await;
    let canonical: Address = "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003"
        .parse()
        .unwrap();
    let collector: Address = "0x4020806089470a89826cB9fB1f4059150b550004"
        .parse()
        .unwrap();
    assert_eq!(settlement, canonical);
    for contract in [settlement, collector] {
        let code = chain
            .rpc("eth_getCode", json!([format!("{contract:#x}"), "latest"]))
            .await;
        assert!(code.as_str().unwrap().len() > 1000, "{contract}: {code}");
    }
    assert_eq!(chain.install_batch_settlement().await, settlement);
}

/// The unmodified reference client, server and facilitator of `batch-settlement` complete a
/// channel's life on the local chain: deposit, vouchers, a corrective 402, claim, settle and a
/// cooperative refund, with every balance checked (`js/batch-probe.mjs`).
#[test]
fn the_reference_batch_settlement_stack_works_on_the_local_chain() {
    hb402_testkit::ensure_js();
    let out = std::process::Command::new("node")
        .arg("batch-probe.mjs")
        .current_dir(hb402_testkit::js_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["claimed"], summary["receiverDelta"], "{summary}");
    assert_eq!(
        summary["payments"],
        json!(["deposit", "voucher", "voucher", "voucher(402)+voucher"])
    );
}
