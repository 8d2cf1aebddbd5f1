//! Both settlement backends against a real chain: anvil with Circle's USDC at the Base Sepolia
//! address, paid by the unmodified reference clients. The HTTP client talks to the reference
//! TypeScript facilitator; local settlement sends `transferWithAuthorization` itself.

use std::time::Duration;

use hb402_gate::facilitator::{
    HttpFacilitator, HttpFacilitatorConfig, LocalSettlement, LocalSettlementConfig, MULTICALL3,
};
use hb402_testkit::{
    ANVIL_ACCOUNTS, FACILITATOR_ACCOUNT, Facilitator as ReferenceFacilitator, LocalChain,
    OPERATOR_ACCOUNT, PAYEE_ACCOUNT, PaymentOptions, payments, payments_at,
};
use hb402_x402::{Facilitator, FacilitatorError, Registry, VerifyRequest};
use serde_json::Value;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn request(payments: &Value, version: &str) -> VerifyRequest {
    VerifyRequest {
        x402_version: payments[version]["payload"]["x402Version"]
            .as_u64()
            .unwrap() as u32,
        payment_payload: payments[version]["payload"].clone(),
        payment_requirements: payments[version]["requirements"].clone(),
    }
}

async fn local(chain: &LocalChain) -> LocalSettlement {
    LocalSettlement::connect(LocalSettlementConfig {
        rpc_url: chain.rpc_url().to_owned(),
        operator_key: OPERATOR_ACCOUNT.key_hex(),
        chain_id: chain.chain_id(),
        registry: Registry::builtin(),
        rpc_timeout: Duration::from_secs(10),
        receipt_timeout: Duration::from_secs(20),
        skew_seconds: 30,
        max_batch: 64,
        multicall: Some(MULTICALL3),
        receipt_poll: Duration::from_millis(50),
        batch_linger: Duration::from_millis(20),
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn http_client_with_the_reference_facilitator() {
    let chain = LocalChain::start().await;
    let mut reference = ReferenceFacilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let client = HttpFacilitator::new(HttpFacilitatorConfig::new(reference.url())).unwrap();

    let supported = client.supported().await.unwrap();
    assert!(
        supported.supports(2, "exact", "eip155:84532"),
        "{supported:?}"
    );

    let payments = payments_at(now()).await;
    let payee = PAYEE_ACCOUNT.address;
    for version in ["v2", "v1"] {
        let before = chain.usdc_balance(payee).await;
        let req = request(&payments, version);
        let verdict = client.verify(&req).await.unwrap();
        assert!(verdict.is_valid, "{version}: {verdict:?}");
        let settled = client.settle(&req).await.unwrap();
        assert!(settled.success, "{version}: {settled:?}");
        assert!(settled.transaction.starts_with("0x"));
        assert_eq!(
            chain.usdc_balance(payee).await,
            before + 10_000,
            "{version}"
        );

        // The same authorization again: a clean refusal and no second transfer.
        let replay = client.settle(&req).await.unwrap();
        assert!(!replay.success);
        assert!(replay.error_reason.is_some());
        assert_eq!(
            chain.usdc_balance(payee).await,
            before + 10_000,
            "{version}"
        );
    }

    // A facilitator that is gone is a failure, never a verdict.
    reference.kill();
    let fresh = payments_at(now()).await;
    assert!(matches!(
        client.verify(&request(&fresh, "v2")).await,
        Err(FacilitatorError::Unreachable(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn local_settlement_settles_once_and_refuses_what_it_must() {
    let chain = LocalChain::start().await;
    let local = local(&chain).await;
    assert_eq!(local.operator(), OPERATOR_ACCOUNT.address);
    let supported = local.supported().await.unwrap();
    assert!(supported.supports(2, "exact", "eip155:84532"));
    assert!(supported.supports(1, "exact", "base-sepolia"));

    let payee = PAYEE_ACCOUNT.address;
    let payments = payments_at(now()).await;
    for version in ["v2", "v1", "v1core"] {
        let before = chain.usdc_balance(payee).await;
        let req = request(&payments, version);
        let verdict = local.verify(&req).await.unwrap();
        assert!(verdict.is_valid, "{version}: {verdict:?}");
        let settled = local.settle(&req).await.unwrap();
        assert!(settled.success, "{version}: {settled:?}");
        assert_eq!(
            chain.usdc_balance(payee).await,
            before + 10_000,
            "{version}"
        );

        // A used nonce: refused on verify and on settle, no second transfer.
        let again = local.verify(&req).await.unwrap();
        assert_eq!(
            again.invalid_reason.as_deref(),
            Some("invalid_exact_evm_nonce_already_used")
        );
        let resettle = local.settle(&req).await.unwrap();
        assert!(!resettle.success);
        assert_eq!(
            chain.usdc_balance(payee).await,
            before + 10_000,
            "{version}"
        );
    }

    // An expired authorization (signed 1000 s ago with a 300 s window).
    let old = payments_at(now() - 1000).await;
    let before = chain.usdc_balance(payee).await;
    let req = request(&old, "v2");
    let verdict = local.verify(&req).await.unwrap();
    assert_eq!(
        verdict.invalid_reason.as_deref(),
        Some("invalid_exact_evm_payload_authorization_valid_before")
    );
    let settled = local.settle(&req).await.unwrap();
    assert!(!settled.success);
    assert_eq!(chain.usdc_balance(payee).await, before);

    // A tampered value is refused before anything is sent.
    let mut tampered = request(&payments_at(now()).await, "v2");
    tampered.payment_payload["payload"]["authorization"]["value"] = "20000".into();
    let verdict = local.verify(&tampered).await.unwrap();
    assert!(!verdict.is_valid);
    assert!(!local.settle(&tampered).await.unwrap().success);
    assert_eq!(chain.usdc_balance(payee).await, before);
}

/// A transaction broadcast but not mined in time is reported pending with its hash, and a later
/// settle of the same authorization resolves that transaction instead of sending another.
#[tokio::test(flavor = "multi_thread")]
async fn pending_settlement_is_resolved_never_resent() {
    let chain = LocalChain::start().await;
    let config = LocalSettlementConfig {
        rpc_url: chain.rpc_url().to_owned(),
        operator_key: OPERATOR_ACCOUNT.key_hex(),
        chain_id: chain.chain_id(),
        registry: Registry::builtin(),
        rpc_timeout: Duration::from_secs(10),
        receipt_timeout: Duration::from_millis(500),
        skew_seconds: 30,
        max_batch: 64,
        multicall: Some(MULTICALL3),
        receipt_poll: Duration::from_millis(50),
        batch_linger: Duration::from_millis(20),
    };
    let local = LocalSettlement::connect(config).await.unwrap();
    let payee = PAYEE_ACCOUNT.address;
    let before = chain.usdc_balance(payee).await;
    let req = request(&payments_at(now()).await, "v2");

    chain
        .rpc("evm_setAutomine", serde_json::json!([false]))
        .await;
    let first = local.settle(&req).await.unwrap();
    assert!(!first.success);
    assert_eq!(first.error_reason.as_deref(), Some("settlement_pending"));
    assert!(first.transaction.starts_with("0x"), "{first:?}");
    let second = local.settle(&req).await.unwrap();
    assert_eq!(second.error_reason.as_deref(), Some("settlement_pending"));
    assert_eq!(
        second.transaction, first.transaction,
        "the same transaction, not a new one"
    );

    chain.rpc("evm_mine", serde_json::json!([])).await;
    let done = local.settle(&req).await.unwrap();
    assert!(done.success, "{done:?}");
    assert_eq!(done.transaction, first.transaction);
    assert_eq!(chain.usdc_balance(payee).await, before + 10_000);
    // Only one transfer happened: a new settle now finds the nonce used.
    chain
        .rpc("evm_setAutomine", serde_json::json!([true]))
        .await;
    assert!(!local.settle(&req).await.unwrap().success);
    assert_eq!(chain.usdc_balance(payee).await, before + 10_000);
}

/// Regression (from an attack on the running proxy): the operator account's nonce was counted
/// by the process, so any transaction from that account it did not send — a second hb402
/// sharing `operator_key`, the operator's own — made its next settlements fail (`nonce too
/// low`), each failure a payer's 402.
#[tokio::test(flavor = "multi_thread")]
async fn local_settlement_follows_the_operators_nonce_wherever_it_moves() {
    let chain = LocalChain::start().await;
    let (a, b) = (local(&chain).await, local(&chain).await);
    let payee = PAYEE_ACCOUNT.address;
    // Two instances sharing the key, taking turns.
    for round in 0..2 {
        settle_one(&chain, &a, &format!("a{round}")).await;
        settle_one(&chain, &b, &format!("b{round}")).await;
    }
    // The operator's own transaction.
    chain
        .rpc(
            "eth_sendTransaction",
            serde_json::json!([{
                "from": OPERATOR_ACCOUNT.address,
                "to": PAYEE_ACCOUNT.address,
                "value": "0x1",
            }]),
        )
        .await;
    settle_one(&chain, &a, "after the operator's own").await;
    // Both at once: whichever loses the race for the nonce sends again.
    let (ra, rb) = (
        request(&payments_at(now()).await, "v2"),
        request(&payments_at(now()).await, "v2"),
    );
    let before = chain.usdc_balance(payee).await;
    let (sa, sb) = tokio::join!(a.settle(&ra), b.settle(&rb));
    assert!(sa.unwrap().success);
    assert!(sb.unwrap().success);
    assert_eq!(chain.usdc_balance(payee).await, before + 20_000);
}

/// Settles a fresh payment through `backend`, checking the payee got it.
async fn settle_one(chain: &LocalChain, backend: &LocalSettlement, label: &str) {
    let req = request(&payments_at(now()).await, "v2");
    let payee = PAYEE_ACCOUNT.address;
    let before = chain.usdc_balance(payee).await;
    let settled = backend.settle(&req).await.unwrap();
    assert!(settled.success, "{label}: {settled:?}");
    assert_eq!(chain.usdc_balance(payee).await, before + 10_000, "{label}");
}

/// `count` × 3 fresh payments (v2, v1 and v1-through-`@x402/core`) from account #1, signed
/// by concurrent client runs.
async fn many_payments(count: usize) -> Vec<VerifyRequest> {
    let sets = futures_util::future::join_all((0..count).map(|_| payments_at(now()))).await;
    sets.iter()
        .flat_map(|set| ["v2", "v1", "v1core"].map(|v| request(set, v)))
        .collect()
}

fn payer_and_nonce(req: &VerifyRequest) -> (alloy::primitives::Address, alloy::primitives::B256) {
    let auth = &req.payment_payload["payload"]["authorization"];
    (
        auth["from"].as_str().unwrap().parse().unwrap(),
        auth["nonce"].as_str().unwrap().parse().unwrap(),
    )
}

/// Payments settled together share transactions (Multicall3 batches), yet each keeps its own
/// outcome: a replayed authorization and an unfunded payer in the same rush are refused on
/// their own while every other payment is paid exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_rush_of_payments_settles_in_few_transactions_each_with_its_own_outcome() {
    let chain = LocalChain::start().await;
    let local = local(&chain).await;
    let payee = PAYEE_ACCOUNT.address;
    let fresh = many_payments(8).await;
    let replayed = request(&payments_at(now()).await, "v2");
    assert!(local.settle(&replayed).await.unwrap().success);
    let unfunded = request(
        &payments(PaymentOptions {
            now: Some(now()),
            signer_key: Some(ANVIL_ACCOUNTS[6].private_key),
            ..PaymentOptions::default()
        })
        .await,
        "v2",
    );
    let before = chain.usdc_balance(payee).await;

    let mut all = fresh.clone();
    all.insert(fresh.len() / 2, replayed.clone());
    all.push(unfunded.clone());
    let results = futures_util::future::join_all(all.iter().map(|r| local.settle(r))).await;
    let mut transactions = std::collections::BTreeSet::new();
    for (req, result) in all.iter().zip(results) {
        let result = result.unwrap();
        let expected = !(std::ptr::eq(req, &all[fresh.len() / 2]) || req == all.last().unwrap());
        assert_eq!(result.success, expected, "{result:?}");
        if result.success {
            transactions.insert(result.transaction.clone());
            let (payer, nonce) = payer_and_nonce(req);
            assert!(chain.authorization_used(payer, nonce).await);
        } else {
            assert!(result.transaction.is_empty(), "nothing sent for {result:?}");
        }
    }
    assert_eq!(
        chain.usdc_balance(payee).await,
        before + 10_000 * fresh.len() as u128,
        "each fresh payment paid once, the others not at all"
    );
    assert!(
        transactions.len() < fresh.len(),
        "{} payments in {} transactions: no batching",
        fresh.len(),
        transactions.len()
    );
    let (payer, nonce) = payer_and_nonce(&unfunded);
    assert!(!chain.authorization_used(payer, nonce).await);
}

/// On a chain that mines a block a second (a real chain's cadence), payments sent together
/// wait for their block and all settle; the same authorization settled twice meanwhile never
/// makes a second transaction.
#[tokio::test(flavor = "multi_thread")]
async fn payments_settle_on_a_chain_with_block_times() {
    let chain = LocalChain::start().await;
    let local = local(&chain).await;
    let payee = PAYEE_ACCOUNT.address;
    let fresh = many_payments(4).await;
    let before = chain.usdc_balance(payee).await;
    chain
        .rpc("evm_setAutomine", serde_json::json!([false]))
        .await;
    chain
        .rpc("evm_setIntervalMining", serde_json::json!([1]))
        .await;
    let twice: Vec<&VerifyRequest> = fresh.iter().chain(fresh.iter().take(2)).collect();
    let results = futures_util::future::join_all(twice.iter().map(|r| local.settle(r))).await;
    let paid = results
        .iter()
        .filter(|r| r.as_ref().unwrap().success)
        .count();
    assert!(paid >= fresh.len(), "{results:?}");
    for r in &results {
        let r = r.as_ref().unwrap();
        assert!(
            r.success || r.error_reason.as_deref() == Some("settlement_pending"),
            "{r:?}"
        );
    }
    assert_eq!(
        chain.usdc_balance(payee).await,
        before + 10_000 * fresh.len() as u128
    );
}

/// The operator's pending transactions from the chain's pool, by nonce.
async fn pooled(chain: &LocalChain) -> std::collections::BTreeMap<u64, String> {
    let content = chain.rpc("txpool_content", serde_json::json!([])).await;
    let mut by_nonce = std::collections::BTreeMap::new();
    for section in ["pending", "queued"] {
        let Some(accounts) = content[section].as_object() else {
            continue;
        };
        for (account, txs) in accounts {
            if !account.eq_ignore_ascii_case(&OPERATOR_ACCOUNT.address.to_string()) {
                continue;
            }
            for (nonce, tx) in txs.as_object().unwrap() {
                by_nonce.insert(
                    nonce.parse().unwrap(),
                    tx["hash"].as_str().unwrap().to_owned(),
                );
            }
        }
    }
    by_nonce
}

async fn wait_pooled(chain: &LocalChain, n: usize) {
    for _ in 0..100 {
        if pooled(chain).await.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} transactions never reached the pool");
}

/// Regression (from an attack on the running proxy): settlement transactions the chain lost
/// (dropped from its pool, replaced, never arrived) left a gap below the operator's nonce, and
/// every later transaction waited behind it for good: each later payment answered 504 until it
/// expired. The sender now sees the operator's transactions stuck while blocks are mined and
/// fills the gap; the lost payments moved nothing.
#[tokio::test(flavor = "multi_thread")]
async fn lost_transactions_do_not_stall_later_settlements() {
    let chain = LocalChain::start().await;
    let local = std::sync::Arc::new(local(&chain).await);
    let payee = PAYEE_ACCOUNT.address;
    let before = chain.usdc_balance(payee).await;
    chain
        .rpc("evm_setAutomine", serde_json::json!([false]))
        .await;
    let settle = |req: VerifyRequest| {
        let local = local.clone();
        tokio::spawn(async move { local.settle(&req).await.unwrap() })
    };
    // Two settlements in two transactions, then both are lost (dropping the first drops the
    // one waiting behind it too).
    let first = settle(request(&payments_at(now()).await, "v2"));
    wait_pooled(&chain, 1).await;
    let second = settle(request(&payments_at(now()).await, "v2"));
    wait_pooled(&chain, 2).await;
    let lowest = pooled(&chain).await.into_values().next().unwrap();
    chain
        .rpc("anvil_dropTransaction", serde_json::json!([lowest]))
        .await;
    assert!(pooled(&chain).await.is_empty());
    chain
        .rpc("evm_setIntervalMining", serde_json::json!([1]))
        .await;

    // A fresh payment settles: the nonces of the lost transactions are filled.
    let fresh = local
        .settle(&request(&payments_at(now()).await, "v2"))
        .await
        .unwrap();
    assert!(fresh.success, "{fresh:?}");
    assert_eq!(chain.usdc_balance(payee).await, before + 10_000);
    // The lost ones moved nothing: reported pending (the chain then answers for them).
    for lost in [first.await.unwrap(), second.await.unwrap()] {
        assert!(!lost.success);
        assert_eq!(lost.error_reason.as_deref(), Some("settlement_pending"));
    }
    assert_eq!(chain.usdc_balance(payee).await, before + 10_000);
}

/// Regression (from an attack on the running proxy): a payer who moves its funds away after
/// its payment was checked made the operator's transaction fail, and the payment then stayed
/// "pending" (504) until it expired — never a failure, so never counted against the payer. A
/// transaction that reverted as a whole is now sent once more (honest payments of a failed
/// batch then settle) and a payment whose own transfer fails is refused at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_payer_draining_its_funds_mid_settlement_is_refused_at_once() {
    let chain = LocalChain::start().await;
    let local = std::sync::Arc::new(local(&chain).await);
    let payee = PAYEE_ACCOUNT.address;
    let buyer = hb402_testkit::BUYER_ACCOUNT.address;
    let before = chain.usdc_balance(payee).await;
    chain
        .rpc("evm_setAutomine", serde_json::json!([false]))
        .await;
    let req = request(&payments_at(now()).await, "v2");
    let settling = {
        let local = local.clone();
        tokio::spawn(async move { local.settle(&req).await.unwrap() })
    };
    wait_pooled(&chain, 1).await;
    // The payer empties its account in a transaction mined ahead of the settlement.
    let balance = chain.usdc_balance(buyer).await;
    let mut drain = vec![0xa9, 0x05, 0x9c, 0xbb];
    drain.extend_from_slice(&[0u8; 12]);
    drain.extend_from_slice(ANVIL_ACCOUNTS[4].address.as_slice());
    drain.extend_from_slice(&alloy::primitives::U256::from(balance).to_be_bytes::<32>());
    chain
        .rpc(
            "eth_sendTransaction",
            serde_json::json!([{
                "from": buyer,
                "to": chain.usdc(),
                "data": alloy::primitives::hex::encode_prefixed(&drain),
                "maxPriorityFeePerGas": "0x174876e800",
                "maxFeePerGas": "0x2540be4000",
            }]),
        )
        .await;
    let started = std::time::Instant::now();
    chain.rpc("evm_mine", serde_json::json!([])).await;
    let settled = settling.await.unwrap();
    assert!(!settled.success, "{settled:?}");
    assert_eq!(
        settled.error_reason.as_deref(),
        Some("insufficient_funds"),
        "{settled:?}"
    );
    assert!(
        settled.transaction.is_empty(),
        "nothing to wait for: {settled:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once, not at the receipt deadline"
    );
    assert_eq!(chain.usdc_balance(payee).await, before);
}
