//! The local chain: anvil with USDC at the Base Sepolia address.

use std::process::Command;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256, address, b256};
use serde_json::{Value, json};

use crate::accounts::{ANVIL_ACCOUNTS, AnvilAccount};
use crate::process::{Service, run_node};

/// Base Sepolia's chain id, which the local anvil uses.
pub const CHAIN_ID: u64 = 84532;
/// The chain's CAIP-2 name (x402 v2).
pub const NETWORK_V2: &str = "eip155:84532";
/// The chain's x402 v1 name.
pub const NETWORK_V1: &str = "base-sepolia";
/// Base Sepolia's USDC address, where the local FiatTokenV2_2 lives.
pub const USDC: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");
/// The token's EIP-712 domain name.
pub const USDC_NAME: &str = "USDC";
/// The token's EIP-712 domain version.
pub const USDC_VERSION: &str = "2";
/// `DOMAIN_SEPARATOR()` of the token: name `USDC`, version `2`, chain 84532, at [`USDC`].
pub const DOMAIN_SEPARATOR: B256 =
    b256!("0x71f17a3b2ff373b803d70a5a07c046c1a2bc8e89c09ef722fcb047abe94c9818");
/// USDC minted to each funded account (1000 USDC, 6 decimals).
pub const MINTED_PER_ACCOUNT: u128 = 1_000_000_000;

const ANVIL_LISTEN_TIMEOUT: Duration = Duration::from_secs(20);
const ANVIL_READY_TIMEOUT: Duration = Duration::from_secs(10);
const SETUP_TIMEOUT: Duration = Duration::from_secs(90);
const RPC_TIMEOUT: Duration = Duration::from_secs(15);

/// A running anvil with the token installed; anvil is killed when this is dropped.
#[derive(Debug)]
pub struct LocalChain {
    anvil: Service,
    rpc_url: String,
    http: reqwest::Client,
    funded: Vec<Address>,
    signature_checker: Address,
}

impl LocalChain {
    /// Starts anvil on 127.0.0.1 (port chosen by the kernel) with chain id 84532, waits until it
    /// answers `eth_chainId`, then runs `chain.mjs setup`: FiatTokenV2_2 at [`USDC`], initialised
    /// as USDC version 2, [`MINTED_PER_ACCOUNT`] minted to accounts #1–#5. Takes about 1–2 s.
    pub async fn start() -> LocalChain {
        crate::js::ensure_js();
        let mut command = Command::new(crate::js::anvil());
        command.args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--chain-id",
            &CHAIN_ID.to_string(),
        ]);
        let (mut anvil, ready) = Service::spawn(
            "anvil",
            command,
            Box::new(|line: &str| {
                line.trim()
                    .strip_prefix("Listening on ")
                    .map(|addr| addr.trim().to_owned())
            }),
        );
        let listen = match tokio::time::timeout(ANVIL_LISTEN_TIMEOUT, ready).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => anvil.fail("exited before listening"),
            Err(_) => anvil.fail(&format!("not listening after {ANVIL_LISTEN_TIMEOUT:?}")),
        };
        if !listen.starts_with("127.0.0.1:") {
            anvil.fail(&format!("listening on {listen}, expected 127.0.0.1"));
        }
        let http = reqwest::Client::builder()
            .timeout(RPC_TIMEOUT)
            .no_proxy()
            .build()
            .expect("build the HTTP client");
        let mut chain = LocalChain {
            anvil,
            rpc_url: format!("http://{listen}"),
            http,
            funded: Vec::new(),
            signature_checker: Address::ZERO,
        };
        chain.wait_ready().await;

        let out = run_node(
            "chain.mjs",
            vec!["setup".into(), "--rpc".into(), chain.rpc_url.clone()],
            None,
            SETUP_TIMEOUT,
        )
        .await;
        let info: Value = serde_json::from_str(out.trim()).unwrap_or_else(|error| {
            chain
                .anvil
                .fail(&format!("chain.mjs setup printed {out:?}: {error}"))
        });
        let parse_address = |v: &Value| -> Address {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad address in setup output: {info}"))
        };
        chain.funded = info["funded"]
            .as_array()
            .map(|a| a.iter().map(parse_address).collect())
            .unwrap_or_default();
        chain.signature_checker = parse_address(&info["signatureChecker"]);
        if parse_address(&info["usdc"]) != USDC || info["chainId"] != json!(CHAIN_ID) {
            chain.anvil.fail(&format!("unexpected setup output {info}"));
        }
        chain
    }

    /// Installs the x402 batch-settlement contracts (`x402BatchSettlement` and its deposit
    /// collectors, compiled from the x402 sources in `crates/testkit/contracts`) at their
    /// canonical addresses, as on public chains; idempotent. Returns the settlement contract's
    /// address.
    pub async fn install_batch_settlement(&self) -> Address {
        let out = run_node(
            "chain.mjs",
            vec![
                "batch-settlement".into(),
                "--rpc".into(),
                self.rpc_url.clone(),
            ],
            None,
            SETUP_TIMEOUT,
        )
        .await;
        let info: Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|error| panic!("chain.mjs batch-settlement printed {out:?}: {error}"));
        info["batchSettlement"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no settlement contract in {info}"))
    }

    /// Deploys a contract account that accepts (EIP-1271) what `owner` signs, and gives it
    /// `usdc` atomic units of USDC from anvil account #1; its address.
    ///
    /// # Panics
    ///
    /// If the deployment or the transfer fails.
    pub async fn smart_wallet(&self, owner: Address, usdc: u128) -> Address {
        let out = run_node(
            "chain.mjs",
            vec![
                "wallet".into(),
                "--rpc".into(),
                self.rpc_url.clone(),
                owner.to_string(),
            ],
            None,
            SETUP_TIMEOUT,
        )
        .await;
        let info: Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|error| panic!("chain.mjs wallet printed {out:?}: {error}"));
        let wallet: Address = info["wallet"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no wallet in {info}"));
        // transfer(address,uint256)
        let mut data = vec![0xa9, 0x05, 0x9c, 0xbb];
        data.extend_from_slice(&[0u8; 12]);
        data.extend_from_slice(wallet.as_slice());
        data.extend_from_slice(&alloy_primitives::U256::from(usdc).to_be_bytes::<32>());
        let from = crate::accounts::ANVIL_ACCOUNTS[1].address;
        let receipt = self.transact(from, USDC, &data).await;
        assert_eq!(receipt["status"], "0x1", "USDC to the wallet: {receipt}");
        wallet
    }

    /// Sends `data` to `to` from `from` (anvil's accounts are unlocked) and returns its receipt
    /// (`null` if none was served within 30 s: anvil mines at once, yet under load the receipt
    /// may take a moment).
    pub async fn transact(&self, from: Address, to: Address, data: &[u8]) -> Value {
        let data = format!("0x{}", alloy_primitives::hex::encode(data));
        let tx = self
            .rpc(
                "eth_sendTransaction",
                json!([{"from": from, "to": to, "data": data}]),
            )
            .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let receipt = self.rpc("eth_getTransactionReceipt", json!([tx])).await;
            if !receipt.is_null() || Instant::now() > deadline {
                return receipt;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + ANVIL_READY_TIMEOUT;
        loop {
            match self.try_rpc("eth_chainId", json!([])).await {
                Ok(id) if id == json!(format!("{CHAIN_ID:#x}")) => return,
                Ok(id) => self
                    .anvil
                    .fail(&format!("eth_chainId answered {id}, expected {CHAIN_ID}")),
                Err(error) if Instant::now() >= deadline => self.anvil.fail(&format!(
                    "no answer to eth_chainId within {ANVIL_READY_TIMEOUT:?}: {error}"
                )),
                Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    /// The JSON-RPC endpoint, `http://127.0.0.1:PORT`.
    pub fn rpc_url(&self) -> &str {
        &self.rpc_url
    }

    /// The chain id, [`CHAIN_ID`] (84532).
    pub fn chain_id(&self) -> u64 {
        CHAIN_ID
    }

    /// The token address, [`USDC`].
    pub fn usdc(&self) -> Address {
        USDC
    }

    /// anvil's well-known accounts #0–#9.
    pub fn accounts(&self) -> &'static [AnvilAccount; 10] {
        &ANVIL_ACCOUNTS
    }

    /// The accounts that received [`MINTED_PER_ACCOUNT`] at setup (#1–#5).
    pub fn funded(&self) -> &[Address] {
        &self.funded
    }

    /// Where the `SignatureChecker` library was deployed.
    pub fn signature_checker(&self) -> Address {
        self.signature_checker
    }

    /// anvil's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.anvil.id()
    }

    /// anvil's recent output (its RPC log), for diagnostics.
    pub fn logs(&self) -> String {
        self.anvil.logs()
    }

    /// Stops anvil now (otherwise on drop).
    pub fn kill(&mut self) {
        self.anvil.kill();
    }

    /// Sends one JSON-RPC request and returns its `result`; panics on an error answer.
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        match self.try_rpc(method, params.clone()).await {
            Ok(result) => result,
            Err(error) => panic!("JSON-RPC {method} {params} on {}: {error}", self.rpc_url),
        }
    }

    /// Sends one JSON-RPC request; `Err` carries a transport failure or the error object.
    pub async fn try_rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response = self
            .http
            .post(&self.rpc_url)
            .json(&request)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("HTTP {status}: {e}"))?;
        if let Some(error) = body.get("error") {
            return Err(error.to_string());
        }
        body.get("result")
            .cloned()
            .ok_or_else(|| format!("HTTP {status}: no result in {body}"))
    }

    /// `eth_call` on the token at the latest block; returns the raw return data.
    pub async fn call_usdc(&self, calldata: &[u8]) -> Vec<u8> {
        let data = format!("0x{}", hex_encode(calldata));
        let result = self
            .rpc("eth_call", json!([{"to": USDC, "data": data}, "latest"]))
            .await;
        let text = result
            .as_str()
            .unwrap_or_else(|| panic!("eth_call returned {result}"));
        hex_decode(text).unwrap_or_else(|| panic!("eth_call returned {text}"))
    }

    /// The token balance of `owner`, in atomic units.
    pub async fn usdc_balance(&self, owner: Address) -> u128 {
        let mut data = vec![0x70, 0xa0, 0x82, 0x31]; // balanceOf(address)
        data.extend_from_slice(owner.into_word().as_slice());
        let word = self.call_usdc(&data).await;
        let value =
            U256::try_from_be_slice(&word).unwrap_or_else(|| panic!("balanceOf returned {word:?}"));
        u128::try_from(value).expect("balance fits in u128")
    }

    /// The token's `DOMAIN_SEPARATOR()`.
    pub async fn domain_separator(&self) -> B256 {
        let word = self.call_usdc(&[0x36, 0x44, 0xe5, 0x15]).await;
        B256::try_from(word.as_slice())
            .unwrap_or_else(|_| panic!("DOMAIN_SEPARATOR returned {word:?}"))
    }

    /// The token's `authorizationState(authorizer, nonce)`: true once an EIP-3009 authorization
    /// was used or cancelled.
    pub async fn authorization_used(&self, authorizer: Address, nonce: B256) -> bool {
        let mut data = vec![0xe9, 0x4a, 0x01, 0x02]; // authorizationState(address,bytes32)
        data.extend_from_slice(authorizer.into_word().as_slice());
        data.extend_from_slice(nonce.as_slice());
        let word = self.call_usdc(&data).await;
        U256::try_from_be_slice(&word).is_some_and(|v| !v.is_zero())
    }

    /// The latest block's timestamp (unix seconds).
    pub async fn block_timestamp(&self) -> u64 {
        let block = self
            .rpc("eth_getBlockByNumber", json!(["latest", false]))
            .await;
        block["timestamp"]
            .as_str()
            .and_then(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok())
            .unwrap_or_else(|| panic!("no timestamp in {block}"))
    }

    /// Moves the chain clock forward by `seconds` and mines a block (anvil `evm_increaseTime` +
    /// `evm_mine`). Only the chain's clock moves: facilitators still read the system clock.
    pub async fn increase_time(&self, seconds: u64) {
        self.rpc("evm_increaseTime", json!([seconds])).await;
        self.rpc("evm_mine", json!([])).await;
    }
}

pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.strip_prefix("0x")?;
    if digits.len() % 2 != 0 {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).ok())
        .collect()
}
