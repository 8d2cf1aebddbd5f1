//! x402 `batch-settlement` through the real proxy: the unmodified `@x402/evm` batch client pays
//! hb402 (local settlement on anvil with USDC and the x402 batch contracts at their canonical
//! addresses) with one deposit and a voucher per read; hb402 claims and settles in the
//! background. Vouchers made by hand attack the channel where the client would not.

mod common;

use alloy::primitives::{Address, B256, hex};
use alloy::signers::SignerSync as _;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall as _;
use base64::Engine as _;
use common::{Harness, Options, item, metric};
use futures_util::StreamExt as _;
use hb402_ans104::Tag;
use hb402_testkit::{
    ANVIL_ACCOUNTS, AnvilAccount, FACILITATOR_ACCOUNT, Facilitator, LocalChain, PAYEE_ACCOUNT,
    batch_pay,
};
use hb402_x402::batch::{BATCH_SETTLEMENT, ChannelConfig, IBatchSettlement, channel_id};
use serde_json::{Value, json};
use sha2::Digest as _;

/// The price of one read: 0.001 USDC.
const PRICE: u128 = 1000;

fn toml(chain: &LocalChain, batch: &str) -> String {
    format!(
        "[payments]\nmode = \"local\"\nrpc_url = \"{}\"\n\
         operator_key = \"${{HB402_TEST_OPERATOR_KEY}}\"\nchain_id = 84532\n\
         [payments.batch]\nreceiver_authorizer_key = \"${{HB402_TEST_RECEIVER_AUTHORIZER_KEY}}\"\n\
         withdraw_delay_seconds = 900\n{batch}\n\
         [[payments.accept]]\nnetwork = \"base-sepolia\"\npay_to = \"{}\"\n\
         [[pricing.rules]]\ncontent_types = [\"text/*\"]\nprice = \"0.001\"\n",
        chain.rpc_url(),
        PAYEE_ACCOUNT.address_checksummed()
    )
}

async fn stack(batch: &str) -> (LocalChain, Harness) {
    let chain = LocalChain::start().await;
    chain.install_batch_settlement().await;
    let h = Harness::start_with(Options {
        extra_toml: toml(&chain, batch),
        ..Options::default()
    })
    .await;
    (chain, h)
}

/// Stores `n` text items (seeds from `first`) and returns their URLs and data.
async fn items(h: &Harness, first: usize, n: usize) -> Vec<(String, Vec<u8>)> {
    futures_util::stream::iter(first..first + n)
        .map(|i| async move {
            let data = format!("item {i}: paid by voucher").into_bytes();
            let seed = u8::try_from(i % 251).unwrap();
            let tags = vec![
                Tag::new("Content-Type", "text/plain"),
                Tag::new("Seq", i.to_string()),
            ];
            (upload(h, &item(seed, tags, &data)).await, data)
        })
        .buffered(4)
        .collect()
        .await
}

fn sha256(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

fn decode(header: &str) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(header)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn view<C: alloy::sol_types::SolCall>(chain: &LocalChain, call: C) -> C::Return {
    let out = chain
        .rpc(
            "eth_call",
            json!([{"to": BATCH_SETTLEMENT, "data": format!("0x{}", hex::encode(call.abi_encode()))}, "latest"]),
        )
        .await;
    let bytes = hex::decode(out.as_str().unwrap().trim_start_matches("0x")).unwrap();
    C::abi_decode_returns(&bytes).unwrap()
}

/// (balance, totalClaimed) of a channel on chain.
async fn channel(chain: &LocalChain, id: B256) -> (u128, u128) {
    let c = view(chain, IBatchSettlement::channelsCall { channelId: id }).await;
    (c.balance, c.totalClaimed)
}

/// Sends a transaction to the batch contract from `from` (anvil's accounts are unlocked) and
/// checks it succeeded.
async fn send_as(chain: &LocalChain, from: Address, data: Vec<u8>) {
    send_to(chain, from, BATCH_SETTLEMENT, data).await;
}

/// Sends a transaction to `to` from `from` and checks it succeeded.
async fn send_to(chain: &LocalChain, from: Address, to: Address, data: Vec<u8>) {
    let receipt = chain.transact(from, to, &data).await;
    assert_eq!(receipt["status"], "0x1", "{receipt}");
}

/// Waits (bounded) until `done` holds.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The channel the stock client opens for `buyer` with hb402's offer.
fn client_channel(buyer: &AnvilAccount) -> ChannelConfig {
    let authorizer: PrivateKeySigner = common::RECEIVER_AUTHORIZER_KEY.parse().unwrap();
    ChannelConfig {
        payer: buyer.address,
        payerAuthorizer: buyer.address,
        receiver: PAYEE_ACCOUNT.address,
        receiverAuthorizer: authorizer.address(),
        token: hb402_testkit::USDC,
        withdrawDelay: alloy::primitives::aliases::U40::from(900u64),
        salt: B256::ZERO,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_reads_pay_one_deposit_a_few_claims_and_exactly_their_charges() {
    let batch =
        "min_deposit_reads = 1200\nclaim_interval_seconds = 5\nsettle_interval_seconds = 5\n";
    let (chain, h) = stack(batch).await;
    let stored = items(&h, 0, 1000).await;
    let urls: Vec<String> = stored.iter().map(|(u, _)| u.clone()).collect();
    let buyer = ANVIL_ACCOUNTS[3];
    let payee_before = chain.usdc_balance(PAYEE_ACCOUNT.address).await;
    let buyer_before = chain.usdc_balance(buyer.address).await;

    let run = batch_pay(
        chain.rpc_url(),
        buyer.private_key,
        &urls,
        Some(&urls[0]),
        false,
    )
    .await;

    for (read, (url, data)) in run.reads.iter().zip(&stored) {
        assert_eq!(read.status, 200, "{url}");
        assert_eq!(read.sha256, sha256(data), "{url} served other bytes");
    }
    assert_eq!(run.reads.len(), 1000);
    assert_eq!(run.payloads.get("deposit"), Some(&1), "{:?}", run.payloads);
    assert_eq!(
        run.payloads.get("voucher"),
        Some(&999),
        "{:?}",
        run.payloads
    );
    assert_eq!(run.deposits.len(), 1, "one deposit transaction");
    assert_eq!(run.deposits[0]["amount"], "1200000");
    assert_eq!(run.corrected, 0);
    let charged = run.charged();
    assert_eq!(charged, 1000 * PRICE);
    let refund = run
        .refund
        .as_ref()
        .unwrap_or_else(|| panic!("{:?}", run.refund_error));
    assert_eq!(refund["success"], true, "{refund}");
    assert_eq!(refund["amount"], "200000", "the rest comes back");

    let id = channel_id(&client_channel(&buyer), 84_532);
    assert_eq!(channel(&chain, id).await, (charged, charged));
    eventually("the payee is paid", || async {
        chain.usdc_balance(PAYEE_ACCOUNT.address).await == payee_before + charged
    })
    .await;
    assert_eq!(
        chain.usdc_balance(buyer.address).await,
        buyer_before - charged,
        "the buyer paid exactly its charges"
    );
    assert_eq!(
        chain.usdc_balance(BATCH_SETTLEMENT).await,
        0,
        "nothing left in escrow"
    );
    let claims = metric(&h, "hb402_channel_events_total{event=\"claim\"}").await;
    assert!(claims <= 5.0, "claims took {claims} transactions");
    assert_eq!(
        metric(&h, "hb402_channel_amount_atomic_total{kind=\"charged\"}").await,
        charged as f64
    );
    assert_eq!(
        metric(&h, "hb402_channel_events_total{event=\"deposit\"}").await,
        1.0
    );
    // The ledger has every transaction that moved the buyer's money.
    eventually("the last settle is in the ledger", || async {
        channel_ledger(&h).await.get("channel_settle").map(|k| k.1) == Some(charged)
    })
    .await;
    let ledger = channel_ledger(&h).await;
    let deposit = &ledger["channel_deposit"];
    assert_eq!((deposit.0, deposit.1), (1, 1200 * PRICE), "{ledger:?}");
    assert_eq!(deposit.2[0], run.deposits[0]["transaction"], "{ledger:?}");
    assert_eq!(ledger["channel_claim"].1, charged, "{ledger:?}");
    let refunds = &ledger["channel_refund"];
    assert_eq!((refunds.0, refunds.1), (1, 200 * PRICE), "{ledger:?}");
    assert_eq!(refunds.2[0], refund["transaction"], "{ledger:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn through_a_facilitator_the_stock_client_deposits_reads_and_is_refunded_the_rest() {
    let chain = LocalChain::start().await;
    chain.install_batch_settlement().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let batch = "min_deposit_reads = 60\nclaim_interval_seconds = 2\nsettle_interval_seconds = 2\n";
    let h = through(&chain, &facilitator, batch).await;
    let stored = items(&h, 2000, 50).await;
    let urls: Vec<String> = stored.iter().map(|(u, _)| u.clone()).collect();
    let buyer = ANVIL_ACCOUNTS[3];
    let (payee_before, buyer_before) = (
        chain.usdc_balance(PAYEE_ACCOUNT.address).await,
        chain.usdc_balance(buyer.address).await,
    );
    let sent_before = transactions_of(&chain, FACILITATOR_ACCOUNT.address).await;

    // Half the reads, then a claim sweep and a settle by the facilitator, then the rest.
    let run = batch_pay(chain.rpc_url(), buyer.private_key, &urls[..25], None, false).await;
    let id = channel_id(&client_channel(&buyer), 84_532);
    eventually("the first charges are claimed and settled", || async {
        channel(&chain, id).await == (60 * PRICE, 25 * PRICE)
            && chain.usdc_balance(PAYEE_ACCOUNT.address).await == payee_before + 25 * PRICE
    })
    .await;
    let rest = batch_pay(
        chain.rpc_url(),
        buyer.private_key,
        &urls[25..],
        Some(&urls[0]),
        false,
    )
    .await;
    for (read, (url, data)) in run.reads.iter().chain(&rest.reads).zip(&stored) {
        assert_eq!(read.status, 200, "{url}");
        assert_eq!(read.sha256, sha256(data), "{url} served other bytes");
    }
    assert_eq!(run.deposits.len(), 1, "one deposit");
    let deposited: u128 = run
        .deposits
        .iter()
        .chain(&rest.deposits)
        .map(|d| d["amount"].as_str().unwrap().parse::<u128>().unwrap())
        .sum();
    assert_eq!(run.charged() + rest.charged(), 50 * PRICE);
    let refund = rest
        .refund
        .as_ref()
        .unwrap_or_else(|| panic!("{:?}", rest.refund_error));
    assert_eq!(refund["success"], true, "{refund}");
    let back = (deposited - 50 * PRICE).to_string();
    assert_eq!(refund["amount"], back, "the rest comes back");
    assert_eq!(channel(&chain, id).await, (50 * PRICE, 50 * PRICE));
    eventually("the payee is paid every charge", || async {
        chain.usdc_balance(PAYEE_ACCOUNT.address).await == payee_before + 50 * PRICE
    })
    .await;
    assert_eq!(
        chain.usdc_balance(buyer.address).await,
        buyer_before - 50 * PRICE
    );
    assert_eq!(
        chain.usdc_balance(BATCH_SETTLEMENT).await,
        0,
        "nothing left in escrow"
    );
    // Deposit, claim, settle, the refund (with the last claim) and the last settle: all sent
    // by the facilitator's key.
    let sent = transactions_of(&chain, FACILITATOR_ACCOUNT.address).await - sent_before;
    assert!(
        (5..=8).contains(&sent),
        "the facilitator sent {sent} transactions"
    );
    assert_eq!(
        metric(&h, "hb402_channel_events_total{event=\"deposit\"}").await,
        1.0
    );
    assert_eq!(
        metric(&h, "hb402_channel_amount_atomic_total{kind=\"settled\"}").await,
        (50 * PRICE) as f64
    );
    let ledger = channel_ledger(&h).await;
    assert_eq!(ledger["channel_deposit"].1, deposited, "{ledger:?}");
    assert_eq!(ledger["channel_claim"].1, 50 * PRICE, "{ledger:?}");
    assert_eq!(
        ledger["channel_refund"].1,
        deposited - 50 * PRICE,
        "{ledger:?}"
    );
    assert_eq!(ledger["channel_settle"].1, 50 * PRICE, "{ledger:?}");
}

/// hb402 offering channels whose transactions `facilitator` sends (no operator key: hb402 reads
/// the chain and signs as receiver authorizer only).
async fn through(chain: &LocalChain, facilitator: &Facilitator, batch: &str) -> Harness {
    let toml = format!(
        "[payments]\nmode = \"facilitator\"\nfacilitator_url = \"{}\"\nrpc_url = \"{}\"\n\
         chain_id = 84532\n\
         [payments.batch]\nreceiver_authorizer_key = \"${{HB402_TEST_RECEIVER_AUTHORIZER_KEY}}\"\n\
         withdraw_delay_seconds = 900\n{batch}\n\
         [[payments.accept]]\nnetwork = \"base-sepolia\"\npay_to = \"{}\"\n\
         [[pricing.rules]]\ncontent_types = [\"text/*\"]\nprice = \"0.001\"\n",
        facilitator.url(),
        chain.rpc_url(),
        PAYEE_ACCOUNT.address_checksummed()
    );
    Harness::start_with(Options {
        extra_toml: toml,
        ..Options::default()
    })
    .await
}

/// A deposit the facilitator refuses (the payer has no USDC) is the payer's failure: refused
/// with hb402's own words, no channel kept, and the payer throttled before the facilitator is
/// asked again and again.
#[tokio::test(flavor = "multi_thread")]
async fn through_a_facilitator_a_refused_deposit_counts_against_its_payer() {
    let chain = LocalChain::start().await;
    chain.install_batch_settlement().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let h = through(&chain, &facilitator, "claim_interval_seconds = 300\n").await;
    let url = items(&h, 2100, 1).await.remove(0).0;
    // Anvil #6 has no USDC.
    let broke = ANVIL_ACCOUNTS[6];
    let config = client_channel(&broke);
    let statuses = failing_deposits(&h, &url, &config, 100 * PRICE, &broke).await;
    assert_eq!(statuses[0], 402);
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}: throttled");
    let asked = facilitator.logs().matches("POST /settle").count();
    assert!(asked < 12, "the facilitator was asked {asked} times");
    let id = channel_id(&config, 84_532);
    assert_eq!(channel(&chain, id).await, (0, 0));
    assert_eq!(
        metric(&h, "hb402_channel_events_total{event=\"deposit\"}").await,
        0.0
    );
    // The payer's refusals, not failures of the chain (which alert the operator).
    assert_eq!(
        metric(&h, "hb402_channel_events_total{event=\"chain_failure\"}").await,
        0.0
    );
    assert!(metric(&h, "hb402_channel_events_total{event=\"refused\"}").await >= 10.0);
}

/// Sends 12 deposits of `amount` into `config`'s channel for `url`, signed by `signer` (fresh
/// authorizations each), none of which lands: each refusal is hb402's own
/// `…deposit_transaction_failed` (nothing of a facilitator's or the chain's words). Their
/// statuses.
async fn failing_deposits(
    h: &Harness,
    url: &str,
    config: &ChannelConfig,
    amount: u128,
    signer: &AnvilAccount,
) -> Vec<u16> {
    let mut statuses = Vec::new();
    for n in 0..12u8 {
        let fields = deposit(config, amount, signer, n);
        let header = payment(h, url, config, PRICE, signer, fields).await;
        let (status, required, _) = pay_voucher(h, url, &header).await;
        if status == 402 {
            assert_eq!(
                required["error"], "invalid_batch_settlement_evm_deposit_transaction_failed",
                "{required}"
            );
            let text = required.to_string();
            assert!(!text.contains("simulation"), "another's words: {text}");
        }
        statuses.push(status);
    }
    statuses
}

/// Regression (from an attack): a facilitator that could not send a deposit (no gas) or could
/// not simulate it (its RPC down) answers like one refusing the payer's authorization; hb402
/// counted that against honest payers, and throttled them for the failure window. Now a
/// deposit the facilitator did not send counts against nobody, and one it calls reverting is
/// the payer's doing only if it reverts over hb402's own RPC too.
#[tokio::test(flavor = "multi_thread")]
async fn a_facilitator_that_cannot_send_never_counts_against_honest_payers() {
    let chain = LocalChain::start().await;
    chain.install_batch_settlement().await;
    let blind = Facilitator::start_with(
        &chain,
        FACILITATOR_ACCOUNT.private_key,
        hb402_testkit::FacilitatorOptions {
            rpc_url: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        },
    )
    .await;
    let broke = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let batch = "claim_interval_seconds = 300\n";
    let (h_blind, h_broke) = (
        through(&chain, &blind, batch).await,
        through(&chain, &broke, batch).await,
    );
    let gas = chain
        .rpc(
            "eth_getBalance",
            json!([FACILITATOR_ACCOUNT.address, "latest"]),
        )
        .await;
    chain
        .rpc(
            "anvil_setBalance",
            json!([FACILITATOR_ACCOUNT.address, "0x0"]),
        )
        .await;
    let buyer = ANVIL_ACCOUNTS[2];
    let config = client_channel(&buyer);
    for h in [&h_blind, &h_broke] {
        let url = items(h, 2200, 1).await.remove(0).0;
        let statuses = failing_deposits(h, &url, &config, 100 * PRICE, &buyer).await;
        assert!(
            statuses.iter().all(|s| *s == 402),
            "{statuses:?}: never 429"
        );
        assert_eq!(
            metric(h, "hb402_channel_events_total{event=\"refused\"}").await,
            0.0,
            "no refusal was the payer's"
        );
    }
    assert!(blind.logs().contains("POST /settle"), "{}", blind.logs());
    // Once the facilitator has gas again, the same payer pays at once.
    chain
        .rpc(
            "anvil_setBalance",
            json!([FACILITATOR_ACCOUNT.address, gas]),
        )
        .await;
    let url = items(&h_broke, 2300, 1).await.remove(0).0;
    let run = batch_pay(chain.rpc_url(), buyer.private_key, &[url], None, false).await;
    assert_eq!(run.reads[0].status, 200, "{run:?}");
    assert_eq!(run.deposits.len(), 1, "{run:?}");
}

/// The ledger's channel entries (`/admin/payments`), by kind: how many, their sum, and the
/// transactions; every one settled, on the local chain.
async fn channel_ledger(
    h: &Harness,
) -> std::collections::BTreeMap<String, (usize, u128, Vec<String>)> {
    let ledger = h.admin("/admin/payments?limit=1000").await;
    let mut kinds = std::collections::BTreeMap::<String, (usize, u128, Vec<String>)>::new();
    for entry in ledger["payments"].as_array().unwrap() {
        let kind = entry["kind"].as_str().unwrap();
        if !kind.starts_with("channel_") {
            continue;
        }
        assert_eq!(entry["state"], "settled", "{entry}");
        assert_eq!(entry["network"], "eip155:84532", "{entry}");
        let k = kinds.entry(kind.to_owned()).or_default();
        k.0 += 1;
        k.1 += entry["amount"].as_str().unwrap().parse::<u128>().unwrap();
        k.2.push(entry["transaction"].as_str().unwrap().to_owned());
    }
    kinds
}

/// How many transactions `account` sent.
async fn transactions_of(chain: &LocalChain, account: Address) -> u64 {
    let count = chain
        .rpc("eth_getTransactionCount", json!([account, "latest"]))
        .await;
    u64::from_str_radix(count.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// A voucher made by hand for `url`: the batch offer of its 402 accepted, `config`'s channel,
/// ceiling `max`, signed by `signer`.
async fn voucher(
    h: &Harness,
    url: &str,
    config: &ChannelConfig,
    max: u128,
    signer: &AnvilAccount,
) -> String {
    payment(h, url, config, max, signer, json!({"type": "voucher"})).await
}

/// [`voucher`] with `fields` added to the payload (its `type`, a deposit, a refund amount).
async fn payment(
    h: &Harness,
    url: &str,
    config: &ChannelConfig,
    max: u128,
    signer: &AnvilAccount,
    fields: Value,
) -> String {
    let resp = h.client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let required = decode(resp.headers()["payment-required"].to_str().unwrap());
    let accepted = required["accepts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["scheme"] == "batch-settlement")
        .unwrap()
        .clone();
    let id = channel_id(config, 84_532);
    let key = PrivateKeySigner::from_bytes(&signer.private_key).unwrap();
    let digest = hb402_x402::batch::voucher_digest(id, max, 84_532);
    let signature = key.sign_hash_sync(&digest).unwrap();
    let payment = json!({
        "x402Version": 2,
        "resource": required["resource"],
        "accepted": accepted,
        "payload": {
            "channelConfig": {
                "payer": config.payer,
                "payerAuthorizer": config.payerAuthorizer,
                "receiver": config.receiver,
                "receiverAuthorizer": config.receiverAuthorizer,
                "token": config.token,
                "withdrawDelay": 900,
                "salt": config.salt,
            },
            "voucher": {
                "channelId": id,
                "maxClaimableAmount": max.to_string(),
                "signature": format!("0x{}", hex::encode(signature.as_bytes())),
            },
        },
    });
    let mut payment = payment;
    for (key, value) in fields.as_object().unwrap() {
        payment["payload"][key] = value.clone();
    }
    base64::engine::general_purpose::STANDARD.encode(payment.to_string())
}

async fn pay_voucher(h: &Harness, url: &str, header: &str) -> (u16, Value, Vec<u8>) {
    let resp = h
        .client
        .get(url)
        .header("payment-signature", header)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let info = match status {
        402 => decode(resp.headers()["payment-required"].to_str().unwrap()),
        _ => resp
            .headers()
            .get("payment-response")
            .map_or(Value::Null, |v| decode(v.to_str().unwrap())),
    };
    (status, info, resp.bytes().await.unwrap().to_vec())
}

/// Stores a 16 MiB text item of `byte`s; its URL and data.
async fn big_item(h: &Harness, seed: u8, byte: u8) -> (String, Vec<u8>) {
    let data = vec![byte; 16 << 20];
    let it = item(seed, vec![Tag::new("Content-Type", "text/plain")], &data);
    (upload(h, &it).await, data)
}

/// Uploads `it` (checking it is stored); its URL.
async fn upload(h: &Harness, it: &hb402_ans104::DataItem) -> String {
    let resp = h
        .client
        .post(format!("{}/upload", h.url))
        .body(it.to_bytes())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert!(
        status.is_success(),
        "{status} {}",
        resp.text().await.unwrap()
    );
    format!("{}/{}", h.url, it.id())
}

/// A paid GET over a raw connection that reads its head, then the rest when told.
struct SlowRead {
    stream: tokio::net::TcpStream,
    /// Body bytes already read with the head.
    received: usize,
}

impl SlowRead {
    async fn start(url: &str, header: &str) -> SlowRead {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: {host}\r\npayment-signature: {header}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut first = vec![0u8; 4096];
        let n = stream.read(&mut first).await.unwrap();
        assert!(
            first[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&first[..n])
        );
        let head_end = first[..n]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4;
        SlowRead {
            stream,
            received: n - head_end,
        }
    }

    /// Reads the rest of a body of `length` bytes.
    async fn finish(mut self, length: usize) {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 1 << 16];
        while self.received < length {
            let read = self.stream.read(&mut buf).await.unwrap();
            assert!(read > 0, "the read ended early at {}", self.received);
            self.received += read;
        }
    }
}

/// The payload fields of a deposit of `amount` into `config`'s channel: an ERC-3009
/// authorization from its payer (valid for ten minutes, salt `salt` repeated), signed by
/// `signer` (the payer, or a contract payer's owner).
fn deposit(config: &ChannelConfig, amount: u128, signer: &AnvilAccount, salt: u8) -> Value {
    let terms = hb402_x402::batch::BatchTerms {
        chain_id: 84_532,
        pay_to: PAYEE_ACCOUNT.address,
        asset: hb402_testkit::USDC,
        asset_domain: ("USDC".into(), "2".into()),
        amount: PRICE,
        receiver_authorizer: config.receiverAuthorizer,
        withdraw_delay: 900,
        contract_payers: false,
    };
    let (salt, window) = (
        B256::repeat_byte(salt),
        (0, u128::from(common::now() + 600)),
    );
    let id = channel_id(config, 84_532);
    let digest = hb402_x402::batch::deposit_digest(&terms, config.payer, id, amount, window, salt);
    let key = PrivateKeySigner::from_bytes(&signer.private_key).unwrap();
    let signature = key.sign_hash_sync(&digest).unwrap();
    json!({
        "type": "deposit",
        "deposit": {"amount": amount.to_string(), "authorization": {"erc3009Authorization": {
            "validAfter": "0",
            "validBefore": window.1.to_string(),
            "salt": salt,
            "signature": format!("0x{}", hex::encode(signature.as_bytes())),
        }}},
    })
}

/// Pays `url` with `header` and checks it is refused with 402
/// `invalid_batch_settlement_evm_<code>`, no content; the 402's payment requirements.
async fn refused(h: &Harness, url: &str, header: &str, code: &str) -> Value {
    let (status, required, body) = pay_voucher(h, url, header).await;
    assert_eq!(status, 402, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        required["error"],
        format!("invalid_batch_settlement_evm_{code}"),
        "{required}"
    );
    required
}

/// Voucher payments finished so far, charged or not.
async fn finished_vouchers(h: &Harness) -> f64 {
    metric(h, "hb402_channel_events_total{event=\"voucher\"}").await
        + metric(h, "hb402_channel_events_total{event=\"uncharged\"}").await
}

/// GETs `url` paying with `header` and closes the connection once the head arrived (with
/// unread bytes: a reset, the rest of the body cannot be sent).
async fn cut_after_head(url: &str, header: &str) {
    drop(SlowRead::start(url, header).await);
}

/// What hb402 says it charged on a channel: the corrective 402 of a stale voucher shows it.
async fn server_charged(
    h: &Harness,
    url: &str,
    config: &ChannelConfig,
    buyer: &AnvilAccount,
) -> u128 {
    let stale = voucher(h, url, config, 1, buyer).await;
    let (status, info, _) = pay_voucher(h, url, &stale).await;
    assert_eq!(status, 402);
    let state = &info["accepts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["scheme"] == "batch-settlement")
        .unwrap()["extra"]["channelState"];
    state["chargedCumulativeAmount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn hand_made_vouchers_are_refused_and_charged_once_for_what_went_out() {
    let batch = "min_deposit_reads = 6\nclaim_interval_seconds = 300\n";
    let (chain, h) = stack(batch).await;
    let stored = items(&h, 2000, 4).await;
    let urls: Vec<String> = stored.iter().map(|(u, _)| u.clone()).collect();
    let buyer = ANVIL_ACCOUNTS[4];
    let config = client_channel(&buyer);
    let run = batch_pay(chain.rpc_url(), buyer.private_key, &urls[..3], None, false).await;
    assert!(run.reads.iter().all(|r| r.status == 200), "{:?}", run.reads);
    assert_eq!(run.deposits[0]["amount"], "6000");
    let url = &urls[3];

    // A voucher already charged, sent again: refused with the channel's state, no content.
    let replay = voucher(&h, url, &config, 3 * PRICE, &buyer).await;
    let (status, required, body) = pay_voucher(&h, url, &replay).await;
    assert_eq!(status, 402, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        required["error"],
        "invalid_batch_settlement_evm_cumulative_amount_mismatch"
    );
    let extra = &required["accepts"][1]["extra"];
    assert_eq!(
        extra["channelState"]["chargedCumulativeAmount"], "3000",
        "{required}"
    );
    assert_eq!(extra["voucherState"]["signedMaxClaimable"], "3000");
    assert!(!String::from_utf8_lossy(&body).contains("paid by voucher"));

    // Signed by someone else.
    let forged = voucher(&h, url, &config, 4 * PRICE, &ANVIL_ACCOUNTS[5]).await;
    refused(&h, url, &forged, "voucher_signature").await;

    // Two copies of the next voucher at once: one is served and charged.
    let next = voucher(&h, url, &config, 4 * PRICE, &buyer).await;
    let (a, b) = tokio::join!(pay_voucher(&h, url, &next), pay_voucher(&h, url, &next));
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 402], "{a:?} {b:?}");
    let served = if a.0 == 200 { &a } else { &b };
    assert_eq!(served.2, stored[3].1);
    assert_eq!(served.1["extra"]["chargedAmount"], "1000");
    assert_eq!(
        served.1["extra"]["channelState"]["chargedCumulativeAmount"],
        "4000"
    );
    assert_eq!(server_charged(&h, url, &config, &buyer).await, 4 * PRICE);

    // A large item whose response is cut short after its head: nothing is charged, and the
    // same voucher then buys it whole.
    let (big_url, big) = big_item(&h, 77, b'x').await;
    let cut = voucher(&h, &big_url, &config, 5 * PRICE, &buyer).await;
    let ended = finished_vouchers(&h).await;
    cut_after_head(&big_url, &cut).await;
    eventually("the cut response is finished", || async {
        finished_vouchers(&h).await > ended
    })
    .await;
    let after_cut = server_charged(&h, url, &config, &buyer).await;
    assert!(
        (4 * PRICE..5 * PRICE).contains(&after_cut),
        "a cut response is charged only its share of what went out: {after_cut}"
    );

    // Reads go on from what was charged until the channel's balance (6000 deposited) is spent.
    let mut charged = after_cut;
    let refusal = loop {
        let next = voucher(&h, &big_url, &config, charged + PRICE, &buyer).await;
        let (status, answer, body) = pay_voucher(&h, &big_url, &next).await;
        if status != 200 {
            break answer;
        }
        assert_eq!(body.len(), big.len());
        charged += PRICE;
        assert_eq!(server_charged(&h, url, &config, &buyer).await, charged);
    };
    assert!(
        charged <= 6 * PRICE && charged + PRICE > 6 * PRICE,
        "{charged}"
    );
    assert_eq!(
        refusal["error"],
        "invalid_batch_settlement_evm_cumulative_exceeds_balance"
    );
    let id = channel_id(&config, 84_532);
    assert_eq!(
        channel(&chain, id).await,
        (6 * PRICE, 0),
        "nothing claimed yet, nothing lost"
    );
    let charged_text = charged.to_string();

    // The operator sees what is charged and not claimed yet; nobody else does.
    let admin = format!("{}/admin/channels", h.admin_url);
    assert_eq!(h.client.get(&admin).send().await.unwrap().status(), 401);
    let listed = h.admin("/admin/channels").await;
    assert_eq!(listed["unclaimed"], charged_text.as_str(), "{listed}");
    assert_eq!(listed["channels"][0]["channel_id"], format!("{id:#x}"));
    assert_eq!(listed["channels"][0]["charged"], charged_text.as_str());
    assert_eq!(listed["channels"][0]["claimed"], "0");

    // A payer whose channel payments keep failing (a channel with nothing in it) is refused
    // for a while without the chain being read for it.
    let stranger = ANVIL_ACCOUNTS[6];
    let empty = client_channel(&stranger);
    let nothing = voucher(&h, url, &empty, PRICE, &stranger).await;
    for _ in 0..10 {
        refused(&h, url, &nothing, "channel_not_found").await;
    }
    assert_eq!(pay_voucher(&h, url, &nothing).await.0, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_withdrawal_is_claimed_first_and_ends_the_channels_vouchers() {
    let batch = "min_deposit_reads = 10\nclaim_interval_seconds = 2\nsync_seconds = 1\n";
    let (chain, h) = stack(batch).await;
    let stored = items(&h, 3000, 4).await;
    let urls: Vec<String> = stored.iter().map(|(u, _)| u.clone()).collect();
    let buyer = ANVIL_ACCOUNTS[5];
    let config = client_channel(&buyer);
    let id = channel_id(&config, 84_532);
    let buyer_before = chain.usdc_balance(buyer.address).await;
    let run = batch_pay(chain.rpc_url(), buyer.private_key, &urls[..3], None, false).await;
    assert!(run.reads.iter().all(|r| r.status == 200), "{:?}", run.reads);
    eventually("the charges are claimed", || async {
        channel(&chain, id).await == (10 * PRICE, 3 * PRICE)
    })
    .await;

    // The claimed voucher is public (in the claim's calldata), and it is also a refund request:
    // sending it shows the channel's state but not its latest voucher.
    let url = &urls[3];
    let public = voucher(&h, url, &config, 3 * PRICE, &buyer).await;
    let (status, required, _) = pay_voucher(&h, url, &public).await;
    assert_eq!(status, 402);
    let extra = &required["accepts"][1]["extra"];
    assert_eq!(
        extra["channelState"]["chargedCumulativeAmount"], "3000",
        "{required}"
    );
    assert!(extra.get("voucherState").is_none(), "{required}");

    // The payer starts a timed withdrawal of what is not claimed: vouchers stop.
    let start = IBatchSettlement::initiateWithdrawCall {
        config: config.clone(),
        amount: 7 * PRICE,
    };
    send_as(&chain, buyer.address, start.abi_encode()).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let next = voucher(&h, url, &config, 4 * PRICE, &buyer).await;
    refused(&h, url, &next, "withdrawal_pending").await;

    // After the delay the payer takes the rest back; the channel takes no voucher any more.
    chain.increase_time(901).await;
    let finish = IBatchSettlement::finalizeWithdrawCall {
        config: config.clone(),
    };
    send_as(&chain, buyer.address, finish.abi_encode()).await;
    assert_eq!(
        chain.usdc_balance(buyer.address).await,
        buyer_before - 3 * PRICE,
        "the payer paid its three reads and got the rest back"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, required, body) = pay_voucher(&h, url, &next).await;
    assert_eq!(status, 402);
    assert_eq!(
        required["error"],
        "invalid_batch_settlement_evm_cumulative_exceeds_balance"
    );
    assert!(!String::from_utf8_lossy(&body).contains("paid by voucher"));
}

/// A read that streams for longer than `hold_seconds` keeps its channel: the same voucher sent
/// meanwhile is refused, and the read is charged once it ended.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_read_keeps_its_channel_and_nothing_moves_less_than_a_minimum_deposit() {
    let batch = "min_deposit_reads = 10\nhold_seconds = 5\nclaim_interval_seconds = 300\n";
    let (chain, h) = stack(batch).await;
    let stored = items(&h, 4000, 1).await;
    let buyer = ANVIL_ACCOUNTS[2];
    let config = client_channel(&buyer);
    let run = batch_pay(
        chain.rpc_url(),
        buyer.private_key,
        &[stored[0].0.clone()],
        None,
        false,
    )
    .await;
    assert_eq!(run.reads[0].status, 200);
    let (big_url, big) = big_item(&h, 78, b'y').await;
    let slow = voucher(&h, &big_url, &config, 2 * PRICE, &buyer).await;

    // A reader that takes its time: past hold_seconds, the same voucher does not take the
    // channel over, and the slow read ends whole.
    let slow_read = SlowRead::start(&big_url, &slow).await;
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let (status, required, body) = pay_voucher(&h, &big_url, &slow).await;
    assert_eq!(status, 402, "{}", body.len());
    assert_eq!(
        required["error"],
        "invalid_batch_settlement_evm_channel_busy"
    );
    slow_read.finish(big.len()).await;
    eventually("the slow read is charged", || async {
        metric(&h, "hb402_channel_events_total{event=\"voucher\"}").await >= 2.0
    })
    .await;
    assert_eq!(
        server_charged(&h, &big_url, &config, &buyer).await,
        2 * PRICE
    );

    // Only whole refunds: anyone holding the public latest voucher could repeat a partial one,
    // each a transaction the operator pays for.
    let tiny = payment(
        &h,
        &big_url,
        &config,
        2 * PRICE,
        &buyer,
        json!({"type": "refund", "amount": "4000"}),
    )
    .await;
    refused(&h, &big_url, &tiny, "refund_amount_invalid").await;
    let id = channel_id(&config, 84_532);
    assert_eq!(
        channel(&chain, id).await,
        (10 * PRICE, 0),
        "nothing refunded"
    );

    // A deposit below the offer's minimum is refused before anything is sent.
    let newcomer = ANVIL_ACCOUNTS[7];
    let fresh = client_channel(&newcomer);
    let fresh_id = channel_id(&fresh, 84_532);
    let small = deposit(&fresh, PRICE, &newcomer, 7);
    let header = payment(&h, &big_url, &fresh, PRICE, &newcomer, small).await;
    refused(&h, &big_url, &header, "deposit_below_min_deposit").await;
    assert_eq!(channel(&chain, fresh_id).await, (0, 0));
}

/// A fleet sharing Redis: requests on one channel take turns across instances (the hold is in
/// the store), and each voucher is charged once whichever instance serves it.
#[tokio::test(flavor = "multi_thread")]
async fn instances_sharing_redis_take_turns_on_a_channel() {
    let redis = hb402_testkit::RedisServer::start().await;
    let chain = LocalChain::start().await;
    chain.install_batch_settlement().await;
    let extra = format!(
        "[listen]\npublic_base_url = \"https://fleet.example\"\n\
         [store]\nkind = \"redis\"\nredis_url = \"{}\"\n{}",
        redis.url(),
        toml(
            &chain,
            "min_deposit_reads = 20\nclaim_interval_seconds = 300\nhold_seconds = 5\n"
        )
    );
    let (a, b) = Harness::fleet(extra).await;
    let stored = items(&a, 5000, 1).await;
    let on_a = stored[0].0.clone();
    let on_b = on_a.replace(&a.url, &b.url);
    let buyer = ANVIL_ACCOUNTS[1];
    let config = client_channel(&buyer);
    let run = batch_pay(
        chain.rpc_url(),
        buyer.private_key,
        std::slice::from_ref(&on_a),
        None,
        false,
    )
    .await;
    assert_eq!(run.reads[0].status, 200);

    let second = voucher(&b, &on_b, &config, 2 * PRICE, &buyer).await;
    let (status, answer, body) = pay_voucher(&b, &on_b, &second).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(body, stored[0].1);
    let third = voucher(&a, &on_a, &config, 3 * PRICE, &buyer).await;
    assert_eq!(pay_voucher(&a, &on_a, &third).await.0, 200);

    // The same voucher on both instances at once: one read.
    let fourth = voucher(&a, &on_a, &config, 4 * PRICE, &buyer).await;
    let (x, y) = tokio::join!(
        pay_voucher(&a, &on_a, &fourth),
        pay_voucher(&b, &on_b, &fourth)
    );
    let mut statuses = [x.0, y.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 402], "{x:?} {y:?}");
    eventually("both reads are finished", || async {
        finished_vouchers(&a).await + finished_vouchers(&b).await >= 4.0
    })
    .await;
    assert_eq!(server_charged(&a, &on_a, &config, &buyer).await, 4 * PRICE);
    assert_eq!(server_charged(&b, &on_b, &config, &buyer).await, 4 * PRICE);

    // A read on one instance streaming past hold_seconds keeps its channel from the other.
    let (big_a, big) = big_item(&a, 79, b'z').await;
    let big_b = big_a.replace(&a.url, &b.url);
    let fifth = voucher(&a, &big_a, &config, 5 * PRICE, &buyer).await;
    let slow_read = SlowRead::start(&big_a, &fifth).await;
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let (status, required, _) = pay_voucher(&b, &big_b, &fifth).await;
    assert_eq!(status, 402);
    assert_eq!(
        required["error"],
        "invalid_batch_settlement_evm_channel_busy"
    );
    slow_read.finish(big.len()).await;
    eventually("the slow read is charged", || async {
        finished_vouchers(&a).await + finished_vouchers(&b).await >= 5.0
    })
    .await;
    assert_eq!(server_charged(&b, &on_b, &config, &buyer).await, 5 * PRICE);
}

/// A channel whose payer withdrew what hb402 had charged and not claimed (hb402 was kept from
/// claiming longer than the withdraw delay) cannot be claimed any more; it does not keep the
/// other channels' claims from going through.
#[tokio::test(flavor = "multi_thread")]
async fn a_channel_emptied_by_its_payer_never_holds_up_the_claims_of_others() {
    let batch = "min_deposit_reads = 10\nclaim_interval_seconds = 20\n";
    let (chain, h) = stack(batch).await;
    let stored = items(&h, 6000, 2).await;
    let urls: Vec<String> = stored.iter().map(|(u, _)| u.clone()).collect();
    let (leaver, stayer) = (ANVIL_ACCOUNTS[5], ANVIL_ACCOUNTS[4]);
    for buyer in [&leaver, &stayer] {
        let run = batch_pay(chain.rpc_url(), buyer.private_key, &urls, None, false).await;
        assert!(run.reads.iter().all(|r| r.status == 200), "{:?}", run.reads);
    }
    // Before hb402's next sweep, the leaver takes everything back.
    let gone = client_channel(&leaver);
    let start = IBatchSettlement::initiateWithdrawCall {
        config: gone.clone(),
        amount: 10 * PRICE,
    };
    send_as(&chain, leaver.address, start.abi_encode()).await;
    chain.increase_time(901).await;
    let finish = IBatchSettlement::finalizeWithdrawCall {
        config: gone.clone(),
    };
    send_as(&chain, leaver.address, finish.abi_encode()).await;
    let (gone_id, kept_id) = (
        channel_id(&gone, 84_532),
        channel_id(&client_channel(&stayer), 84_532),
    );
    assert_eq!(channel(&chain, gone_id).await, (0, 0));

    eventually("the other channel's charges are claimed", || async {
        channel(&chain, kept_id).await == (10 * PRICE, 2 * PRICE)
    })
    .await;
    let listed = h.admin("/admin/channels").await;
    assert_eq!(listed["unclaimed"], "0", "{listed}");
}

/// With `idle_refund_seconds`, hb402 refunds a channel nobody paid with for that long: what was
/// charged is claimed in the same transaction, the rest goes back to the payer. A channel
/// still in use keeps its deposit until it too goes idle.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_channel_is_refunded_to_its_payer_and_one_in_use_is_not() {
    let batch = "min_deposit_reads = 10\nclaim_interval_seconds = 1\nidle_refund_seconds = 10\n";
    let (chain, h) = stack(batch).await;
    let urls: Vec<String> = items(&h, 0, 6).await.into_iter().map(|(u, _)| u).collect();
    let (idle, active) = (ANVIL_ACCOUNTS[3], ANVIL_ACCOUNTS[4]);
    let idle_funds = chain.usdc_balance(idle.address).await;
    let (idle_id, active_id) = (
        channel_id(&client_channel(&idle), 84_532),
        channel_id(&client_channel(&active), 84_532),
    );
    let read = |payer: AnvilAccount, urls: &[String]| {
        let (rpc, urls) = (chain.rpc_url().to_owned(), urls.to_vec());
        async move {
            let run = batch_pay(&rpc, payer.private_key, &urls, None, false).await;
            assert!(run.reads.iter().all(|r| r.status == 200), "{run:?}");
            run.charged()
        }
    };
    let started = std::time::Instant::now();
    assert_eq!(read(idle, &urls[..3]).await, 3 * PRICE);
    assert_eq!(read(active, &urls[3..4]).await, PRICE);
    assert_eq!(channel(&chain, idle_id).await.0, 10 * PRICE, "the deposit");

    // The active payer reads again before it has been idle for long.
    tokio::time::sleep(std::time::Duration::from_secs(7).saturating_sub(started.elapsed())).await;
    assert_eq!(read(active, &urls[4..6]).await, 2 * PRICE);
    eventually("the idle channel is refunded", || async {
        channel(&chain, idle_id).await == (3 * PRICE, 3 * PRICE)
    })
    .await;
    assert_eq!(
        chain.usdc_balance(idle.address).await,
        idle_funds - 3 * PRICE,
        "the payer paid its three reads, the rest came back"
    );
    let (balance, _) = channel(&chain, active_id).await;
    assert_eq!(balance, 10 * PRICE, "a channel in use keeps its deposit");

    // Once it too has gone idle, it is refunded as well, its charges claimed.
    eventually("the other channel is refunded", || async {
        channel(&chain, active_id).await == (3 * PRICE, 3 * PRICE)
    })
    .await;
    assert_eq!(
        metric(&h, "hb402_channel_amount_atomic_total{kind=\"refunded\"}").await,
        (14 * PRICE) as f64
    );
    assert_eq!(
        chain.usdc_balance(BATCH_SETTLEMENT).await,
        6 * PRICE,
        "what was charged and claimed, not settled yet"
    );
}

/// A channel whose latest voucher the chain refuses to pay (whatever made hb402 and the contract
/// disagree; here the record's signature is replaced in the store) takes no more vouchers once a
/// claim of it alone reverted: content is not given away on vouchers nobody can collect.
#[tokio::test(flavor = "multi_thread")]
async fn a_channel_whose_claim_the_chain_refuses_takes_no_more_vouchers() {
    use hb402_gate::store::{RedisStore, Store as _};
    let redis = hb402_testkit::RedisServer::start().await;
    let chain = LocalChain::start().await;
    chain.install_batch_settlement().await;
    let fleet = |claim_every: u64| {
        format!(
            "[store]\nkind = \"redis\"\nredis_url = \"{}\"\n{}",
            redis.url(),
            toml(
                &chain,
                &format!("min_deposit_reads = 20\nclaim_interval_seconds = {claim_every}\n")
            )
        )
    };
    // This instance claims only at its start; the second one, started later, every second.
    let a = Harness::start_with(Options {
        extra_toml: fleet(300),
        ..Options::default()
    })
    .await;
    let urls: Vec<String> = items(&a, 7000, 3)
        .await
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    let buyer = ANVIL_ACCOUNTS[2];
    let config = client_channel(&buyer);
    let run = batch_pay(chain.rpc_url(), buyer.private_key, &urls[..2], None, false).await;
    assert!(run.reads.iter().all(|r| r.status == 200), "{run:?}");

    // The record's voucher signature becomes one the contract does not take.
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let id = format!("{:#x}", channel_id(&config, 84_532));
    let record = store.channel_get(&id).await.unwrap().expect("the record");
    assert_eq!(record.charged, 2 * PRICE);
    let key = PrivateKeySigner::from_bytes(&buyer.private_key).unwrap();
    let other = hb402_x402::batch::voucher_digest(channel_id(&config, 84_532), 999, 84_532);
    let mut bad = record.clone();
    bad.version += 1;
    bad.signature = format!(
        "0x{}",
        hex::encode(key.sign_hash_sync(&other).unwrap().as_bytes())
    );
    assert!(
        store
            .channel_swap(&id, Some(&record), Some(&bad))
            .await
            .unwrap()
    );

    let b = a.beside(fleet(1)).await;
    eventually("the claim is refused and recorded", || async {
        store
            .channel_get(&id)
            .await
            .unwrap()
            .is_some_and(|r| r.claim_refused_at > 0)
    })
    .await;
    assert_eq!(
        channel(&chain, channel_id(&config, 84_532)).await.1,
        0,
        "nothing claimed"
    );
    let next = voucher(&a, &urls[2], &config, 3 * PRICE, &buyer).await;
    // The channel's state, not a failure of the payer's (whose budget it would use up, for
    // every channel of theirs): refused the same way however often, never throttled.
    for _ in 0..12 {
        refused(&a, &urls[2], &next, "claim_simulation_failed").await;
    }
    drop(b);
}

/// A channel that names no payer authorizer is paid with signatures only its payer's contract
/// code (EIP-1271) can confirm, on chain, at claim time too: such a payer could accept a
/// voucher when it is read and refuse (or burn the operator's gas) when it is claimed or
/// deposited. hb402 refuses such payments before anything is read or sent, even from a real
/// contract account whose owner signs.
#[tokio::test(flavor = "multi_thread")]
async fn a_contract_account_payment_is_refused_before_anything_moves() {
    let batch = "min_deposit_reads = 10\nclaim_interval_seconds = 1\n";
    let (chain, h) = stack(batch).await;
    let url = items(&h, 8000, 1).await.remove(0).0;
    let owner = ANVIL_ACCOUNTS[7];
    let (wallet, config) = contract_channel(&chain, &owner).await;
    let id = channel_id(&config, 84_532);

    let first = deposit(&config, 10 * PRICE, &owner, 9);
    let header = payment(&h, &url, &config, PRICE, &owner, first).await;
    refused(&h, &url, &header, "voucher_signature").await;
    assert_eq!(channel(&chain, id).await, (0, 0), "nothing deposited");
    assert_eq!(chain.usdc_balance(wallet).await, 100 * PRICE);
}

/// A contract account of `owner`'s (the test wallet, holding 0.1 USDC) and the channel it pays
/// as payer, naming no payer authorizer.
async fn contract_channel(chain: &LocalChain, owner: &AnvilAccount) -> (Address, ChannelConfig) {
    let wallet = chain.smart_wallet(owner.address, 100 * PRICE).await;
    let mut config = client_channel(owner);
    (config.payer, config.payerAuthorizer) = (wallet, Address::ZERO);
    (wallet, config)
}

/// Whether `/admin/channels` shows channel `config`'s claim as refused by the chain.
async fn claim_refused(h: &Harness, config: &ChannelConfig) -> bool {
    let id = format!("{:#x}", channel_id(config, 84_532));
    h.admin("/admin/channels").await["channels"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["channel_id"] == id && c["claim_refused_at"].as_u64().unwrap_or(0) > 0)
}

/// Makes the test wallet misbehave (`OwnedWallet.setMode`: 0 honest, 1 refuses, 2 burns the
/// gas it is given, 3 reverts once mined).
async fn wallet_mode(chain: &LocalChain, wallet: Address, owner: &AnvilAccount, mode: u8) {
    let mut data = alloy::primitives::keccak256("setMode(uint8)")[..4].to_vec();
    data.extend_from_slice(&alloy::primitives::U256::from(mode).to_be_bytes::<32>());
    send_to(chain, owner.address, wallet, data).await;
}

/// The latest block's number.
async fn block_number(chain: &LocalChain) -> u64 {
    let n = chain.rpc("eth_blockNumber", json!([])).await;
    u64::from_str_radix(n.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// The transactions `account` sent in blocks after `since`, each with the gas it used.
async fn gas_used_by(chain: &LocalChain, account: Address, since: u64) -> Vec<u64> {
    let hex = |v: &Value| u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16);
    let mut used = Vec::new();
    for n in since + 1..=block_number(chain).await {
        let block = chain
            .rpc("eth_getBlockByNumber", json!([format!("{n:#x}"), true]))
            .await;
        for tx in block["transactions"].as_array().unwrap() {
            if tx["from"].as_str().unwrap().parse::<Address>().unwrap() == account {
                let receipt = chain
                    .rpc("eth_getTransactionReceipt", json!([tx["hash"]]))
                    .await;
                used.push(hex(&receipt["gasUsed"]).unwrap());
            }
        }
    }
    used
}

/// Where the operator takes them (`contract_payers = true`), a contract account pays: its
/// signatures (the deposit's, each voucher's) are confirmed by its own code on chain, its
/// vouchers claimed in transactions of their own, and what it was charged reaches the payee.
#[tokio::test(flavor = "multi_thread")]
async fn a_contract_account_pays_where_the_operator_takes_them() {
    let batch = "min_deposit_reads = 10\nclaim_interval_seconds = 1\nsettle_interval_seconds = 1\n\
                 contract_payers = true\n";
    let (chain, h) = stack(batch).await;
    let urls: Vec<String> = items(&h, 8100, 4).await.into_iter().map(|i| i.0).collect();
    let owner = ANVIL_ACCOUNTS[7];
    let (wallet, config) = contract_channel(&chain, &owner).await;
    let id = channel_id(&config, 84_532);
    let payee_before = chain.usdc_balance(PAYEE_ACCOUNT.address).await;

    // Vouchers its owner did not sign: the wallet's code refuses them, and anyone naming it as
    // payer does not get it throttled (the failures are the sender's).
    let stranger = voucher(&h, &urls[0], &config, 5 * PRICE, &ANVIL_ACCOUNTS[5]).await;
    for _ in 0..12 {
        refused(&h, &urls[0], &stranger, "voucher_signature").await;
    }
    let first = deposit(&config, 10 * PRICE, &owner, 1);
    let header = payment(&h, &urls[0], &config, PRICE, &owner, first).await;
    assert_eq!(pay_voucher(&h, &urls[0], &header).await.0, 200);
    for (n, url) in urls.iter().enumerate().skip(1) {
        let max = (n as u128 + 1) * PRICE;
        let header = voucher(&h, url, &config, max, &owner).await;
        assert_eq!(pay_voucher(&h, url, &header).await.0, 200, "read {n}");
    }
    eventually("the charges are claimed and settled", || async {
        channel(&chain, id).await == (10 * PRICE, 4 * PRICE)
            && chain.usdc_balance(PAYEE_ACCOUNT.address).await == payee_before + 4 * PRICE
    })
    .await;
    assert_eq!(chain.usdc_balance(wallet).await, 90 * PRICE);
}

/// A contract payer's code can tell a read-time check, a simulation and a mined transaction
/// apart, and spend any gas it is given. The operator's cost stays bounded: a deposit or claim
/// that would need more gas than one channel's cap is never sent; a claim that reverts once
/// mined costs at most the cap and is not sent again for an hour, and the channel takes no
/// more vouchers.
#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_contract_payer_costs_the_operator_a_bounded_gas() {
    let batch = "min_deposit_reads = 10\nclaim_interval_seconds = 1\ncontract_payers = true\n\
                 idle_refund_seconds = 10\n";
    let (chain, h) = stack(batch).await;
    let urls: Vec<String> = items(&h, 8200, 3).await.into_iter().map(|i| i.0).collect();
    let owner = ANVIL_ACCOUNTS[7];
    let (wallet, config) = contract_channel(&chain, &owner).await;
    let id = channel_id(&config, 84_532);
    let operator = hb402_testkit::OPERATOR_ACCOUNT.address;

    // Spending all the gas it is given: its deposit would need more than the cap, and is
    // never sent (each refusal the payer's).
    wallet_mode(&chain, wallet, &owner, 2).await;
    let since = block_number(&chain).await;
    for salt in 0..3 {
        let first = deposit(&config, 10 * PRICE, &owner, salt);
        let header = payment(&h, &urls[0], &config, PRICE, &owner, first).await;
        let (status, required, _) = pay_voucher(&h, &urls[0], &header).await;
        assert_eq!(status, 402, "{required}");
    }
    let sent = gas_used_by(&chain, operator, since).await;
    assert!(sent.is_empty(), "sent: {sent:?}");
    assert_eq!(channel(&chain, id).await, (0, 0), "nothing deposited");

    // Honest for the deposit and a read, then refusing once mined: the claim reverts.
    wallet_mode(&chain, wallet, &owner, 0).await;
    let first = deposit(&config, 10 * PRICE, &owner, 4);
    let header = payment(&h, &urls[1], &config, PRICE, &owner, first).await;
    assert_eq!(pay_voucher(&h, &urls[1], &header).await.0, 200);
    let since = block_number(&chain).await;
    wallet_mode(&chain, wallet, &owner, 3).await;
    eventually("the claim is refused", || claim_refused(&h, &config)).await;
    // Neither the payer's refund (it would claim first) nor, once the channel is idle, its idle
    // refund is sent: the claim in them is refused.
    let refund = payment(
        &h,
        &urls[1],
        &config,
        PRICE,
        &owner,
        json!({"type": "refund"}),
    )
    .await;
    refused(&h, &urls[1], &refund, "claim_simulation_failed").await;
    // Many sweeps later, the channel idle: nothing sent again.
    tokio::time::sleep(std::time::Duration::from_secs(14)).await;
    let sent = gas_used_by(&chain, operator, since).await;
    assert_eq!(sent.len(), 1, "one claim sent, not one per sweep: {sent:?}");
    assert!(sent[0] <= 500_000, "the claim used {} gas", sent[0]);
    assert_eq!(
        channel(&chain, id).await,
        (10 * PRICE, 0),
        "nothing claimed"
    );
    let next = voucher(&h, &urls[2], &config, 2 * PRICE, &owner).await;
    refused(&h, &urls[2], &next, "claim_simulation_failed").await;

    // Its code refused a claim: the wallet pays for no other channel (even honest now).
    wallet_mode(&chain, wallet, &owner, 0).await;
    let mut another = config.clone();
    another.salt = B256::repeat_byte(2);
    let first = deposit(&another, 10 * PRICE, &owner, 6);
    let header = payment(&h, &urls[2], &another, PRICE, &owner, first).await;
    refused(&h, &urls[2], &header, "claim_simulation_failed").await;

    // Another wallet's channel, honest for its deposit and a read, then burning all the gas it
    // is given: its claim would need more than the cap, and is never sent.
    let owner = ANVIL_ACCOUNTS[6];
    let (wallet, other) = contract_channel(&chain, &owner).await;
    let first = deposit(&other, 10 * PRICE, &owner, 5);
    let header = payment(&h, &urls[2], &other, PRICE, &owner, first).await;
    assert_eq!(pay_voucher(&h, &urls[2], &header).await.0, 200);
    let since = block_number(&chain).await;
    wallet_mode(&chain, wallet, &owner, 2).await;
    eventually("the second claim is refused", || claim_refused(&h, &other)).await;
    let sent = gas_used_by(&chain, operator, since).await;
    assert!(sent.is_empty(), "sent: {sent:?}");
}

/// Regression (from an attack): through a facilitator, hb402 ran a call the facilitator said
/// reverts over its own RPC before believing it; a contract payer's code can tell the two
/// apart (one call has a sender, the other not), and refused only the facilitator's claims:
/// its channel was never marked, and read its whole deposit free. A contract payer's refusal
/// now stands: the channel and the payer take no more vouchers.
#[tokio::test(flavor = "multi_thread")]
async fn through_a_facilitator_a_contract_payer_refusing_its_claims_is_stopped() {
    let chain = LocalChain::start().await;
    chain.install_batch_settlement().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let batch = "min_deposit_reads = 10\nclaim_interval_seconds = 1\ncontract_payers = true\n";
    let h = through(&chain, &facilitator, batch).await;
    let urls: Vec<String> = items(&h, 2400, 3).await.into_iter().map(|i| i.0).collect();
    let owner = ANVIL_ACCOUNTS[7];
    let (wallet, config) = contract_channel(&chain, &owner).await;
    let first = deposit(&config, 10 * PRICE, &owner, 1);
    let header = payment(&h, &urls[0], &config, PRICE, &owner, first).await;
    assert_eq!(pay_voucher(&h, &urls[0], &header).await.0, 200);
    wallet_mode(&chain, wallet, &owner, 4).await;
    eventually("the claim is refused", || claim_refused(&h, &config)).await;
    let next = voucher(&h, &urls[1], &config, 2 * PRICE, &owner).await;
    refused(&h, &urls[1], &next, "claim_simulation_failed").await;
    wallet_mode(&chain, wallet, &owner, 0).await;
    let mut another = config.clone();
    another.salt = B256::repeat_byte(2);
    let first = deposit(&another, 10 * PRICE, &owner, 2);
    let header = payment(&h, &urls[2], &another, PRICE, &owner, first).await;
    refused(&h, &urls[2], &header, "claim_simulation_failed").await;
}

/// Regression (from an attack): a voucher is public once claimed (it is in the claim's
/// calldata), and a stranger resending it in refusable payloads got its payer throttled. A
/// refusal of a voucher no newer than one the payer signed before counts against the client
/// only.
#[tokio::test(flavor = "multi_thread")]
async fn a_voucher_anyone_may_hold_never_gets_its_payer_throttled() {
    let (chain, h) = stack("min_deposit_reads = 10\nclaim_interval_seconds = 1\n").await;
    let urls: Vec<String> = items(&h, 8300, 2).await.into_iter().map(|i| i.0).collect();
    let buyer = ANVIL_ACCOUNTS[4];
    let config = client_channel(&buyer);
    let first = deposit(&config, 10 * PRICE, &buyer, 1);
    let header = payment(&h, &urls[0], &config, PRICE, &buyer, first).await;
    assert_eq!(pay_voucher(&h, &urls[0], &header).await.0, 200);
    let id = channel_id(&config, 84_532);
    eventually("the voucher is claimed", || async {
        channel(&chain, id).await.1 == PRICE
    })
    .await;
    for _ in 0..12 {
        let zero = json!({"type": "refund", "amount": "0"});
        let replay = payment(&h, &urls[0], &config, PRICE, &buyer, zero).await;
        let (status, required, _) = pay_voucher(&h, &urls[0], &replay).await;
        assert_eq!(status, 402, "{required}");
    }
    let next = voucher(&h, &urls[1], &config, 2 * PRICE, &buyer).await;
    assert_eq!(
        pay_voucher(&h, &urls[1], &next).await.0,
        200,
        "the payer reads on"
    );
}

/// One instance on Redis, first deposits of 20 reads, `batch`: more of `[payments.batch]`.
async fn on_redis(redis: &hb402_testkit::RedisServer, chain: &LocalChain, batch: &str) -> Harness {
    Harness::start_with(Options {
        extra_toml: format!(
            "[store]\nkind = \"redis\"\nredis_url = \"{}\"\n{}",
            redis.url(),
            toml(chain, &format!("min_deposit_reads = 20\n{batch}"))
        ),
        ..Options::default()
    })
    .await
}

/// Regression (from an attack on a fleet): a deposit that fails left its channel's record in
/// the store for good, and failed deposits did not count against anyone's failure budget, so
/// fresh keys without funds grew the store without bound. A channel the chain has nothing in
/// is now stored only once its deposit landed, and a deposit the chain refuses counts against
/// the payer.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_deposit_leaves_no_record_and_counts_against_its_payer() {
    use hb402_gate::store::{RedisStore, Store as _};
    let redis = hb402_testkit::RedisServer::start().await;
    let chain = LocalChain::start().await;
    chain.install_batch_settlement().await;
    let h = on_redis(&redis, &chain, "claim_interval_seconds = 300\n").await;
    let url = items(&h, 9000, 1).await.remove(0).0;
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    // Anvil #6 has no USDC: its deposits revert.
    let broke = ANVIL_ACCOUNTS[6];
    let config = client_channel(&broke);
    let id = channel_id(&config, 84_532);
    let statuses = failing_deposits(&h, &url, &config, 20 * PRICE, &broke).await;
    assert_eq!(
        store.channel_get(&format!("{id:#x}")).await.unwrap(),
        None,
        "no record of a channel with nothing in it"
    );
    assert_eq!(statuses[0], 402);
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}: throttled");
}

/// Regression (from an attack on a fleet): an instance that stopped between a refund on chain
/// and writing it left the record with the balance from before, held by it; once its hold
/// lapsed, another instance trusted that record (synced less than `sync_seconds` ago) and
/// served vouchers against the balance refunded. A record taken over from a lapsed holder is
/// now read from the chain again first.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_taken_over_from_a_stopped_instance_is_read_from_the_chain_again() {
    use alloy::sol_types::SolCall as _;
    use hb402_gate::store::{ChannelHolder, RedisStore, Store as _};
    let redis = hb402_testkit::RedisServer::start().await;
    let chain = LocalChain::start().await;
    chain.install_batch_settlement().await;
    let h = on_redis(&redis, &chain, "claim_interval_seconds = 300\n").await;
    let urls: Vec<String> = items(&h, 9100, 3)
        .await
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    let buyer = ANVIL_ACCOUNTS[3];
    let config = client_channel(&buyer);
    let id = channel_id(&config, 84_532);
    let run = batch_pay(chain.rpc_url(), buyer.private_key, &urls[..2], None, false).await;
    assert!(run.reads.iter().all(|r| r.status == 200), "{run:?}");
    assert_eq!(channel(&chain, id).await, (20 * PRICE, 0));

    // What the stopped instance did: the rest refunded on chain, its hold left in the record.
    let authorizer: PrivateKeySigner = common::RECEIVER_AUTHORIZER_KEY.parse().unwrap();
    let (amount, nonce) = (18 * PRICE, alloy::primitives::U256::ZERO);
    let digest = hb402_x402::batch::refund_digest(id, nonce, amount, 84_532);
    let signature = authorizer.sign_hash_sync(&digest).unwrap();
    let refund = IBatchSettlement::refundWithSignatureCall {
        config: config.clone(),
        amount,
        nonce,
        signature: signature.as_bytes().to_vec().into(),
    };
    send_as(&chain, ANVIL_ACCOUNTS[0].address, refund.abi_encode()).await;
    assert_eq!(channel(&chain, id).await, (2 * PRICE, 0));
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let key = format!("{id:#x}");
    let record = store.channel_get(&key).await.unwrap().expect("the record");
    assert_eq!(record.balance, 20 * PRICE);
    let mut left = record.clone();
    left.version += 1;
    left.holder = Some(ChannelHolder {
        owner: "an instance that stopped".into(),
        until: common::now() - 1,
    });
    assert!(
        store
            .channel_swap(&key, Some(&record), Some(&left))
            .await
            .unwrap()
    );

    let next = voucher(&h, &urls[2], &config, 3 * PRICE, &buyer).await;
    refused(&h, &urls[2], &next, "cumulative_exceeds_balance").await;
}

/// Regression (from an attack on a fleet): an instance killed mid-read leaves its hold in the
/// channel's record until it lapses; the idle sweep then refunded the channel at once (its last
/// paid read was long ago) before its payer's retry could get it. A hold left in the record is
/// activity: the channel is idle only `idle_refund_seconds` after it lapses.
#[tokio::test(flavor = "multi_thread")]
async fn a_hold_left_by_a_stopped_instance_counts_as_activity_for_idle_refunds() {
    use hb402_gate::store::{ChannelHolder, RedisStore, Store as _};
    let redis = hb402_testkit::RedisServer::start().await;
    let chain = LocalChain::start().await;
    chain.install_batch_settlement().await;
    let batch = "claim_interval_seconds = 1\nidle_refund_seconds = 10\n";
    let h = on_redis(&redis, &chain, batch).await;
    let url = items(&h, 9200, 1).await.remove(0).0;
    let buyer = ANVIL_ACCOUNTS[4];
    let id = channel_id(&client_channel(&buyer), 84_532);
    let one = std::slice::from_ref(&url);
    let run = batch_pay(chain.rpc_url(), buyer.private_key, one, None, false).await;
    assert_eq!(run.reads[0].status, 200);

    // The record as an instance killed mid-read leaves it: its hold just lapsed, the channel's
    // last paid read long ago.
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let key = format!("{id:#x}");
    let record = store.channel_get(&key).await.unwrap().expect("the record");
    let mut left = record.clone();
    let now = common::now();
    left.version += 1;
    (left.last_request_at, left.synced_at) = (now - 100, now - 100);
    left.holder = Some(ChannelHolder {
        owner: "an instance that stopped".into(),
        until: now,
    });
    assert!(
        store
            .channel_swap(&key, Some(&record), Some(&left))
            .await
            .unwrap()
    );
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(
        channel(&chain, id).await.0,
        20 * PRICE,
        "not refunded under the hold"
    );
    eventually("refunded once idle after the hold", || async {
        channel(&chain, id).await == (PRICE, PRICE)
    })
    .await;
}

/// Regression (from an outside attack): channel payment failures counted against the payer a
/// configuration names, so anyone could name someone else as the payer of a channel they
/// authorize, fail on purpose, and have that payer refused (429). Failures now count against
/// the key that signed.
#[tokio::test(flavor = "multi_thread")]
async fn failing_on_a_channel_that_names_someone_else_throttles_only_the_signer() {
    let (chain, h) = stack("min_deposit_reads = 10\nclaim_interval_seconds = 300\n").await;
    let url = items(&h, 9300, 1).await.remove(0).0;
    let (victim, attacker) = (ANVIL_ACCOUNTS[3], ANVIL_ACCOUNTS[6]);
    let mut config = client_channel(&attacker);
    config.payer = victim.address;
    let mut last = 0;
    for _ in 0..12 {
        let nothing = voucher(&h, &url, &config, PRICE, &attacker).await;
        last = pay_voucher(&h, &url, &nothing).await.0;
    }
    assert_eq!(last, 429, "the signer is throttled");
    let one = std::slice::from_ref(&url);
    let run = batch_pay(chain.rpc_url(), victim.private_key, one, None, false).await;
    assert_eq!(run.reads[0].status, 200, "the payer named is not: {run:?}");
}
