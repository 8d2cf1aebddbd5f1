//! Local settlement: hb402 verifies and settles EIP-3009 payments itself, with an operator key
//! that pays the gas, over an EVM JSON-RPC.
//!
//! Settlement never sends the same authorization twice: sends are serialised, the transaction
//! hash of every broadcast is remembered until its receipt arrives, and a settle call for an
//! authorization already in flight reports `settlement_pending` with that hash (x402.md §5.5).

use std::collections::HashMap;
use std::future::IntoFuture;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::contract::SolCallBuilder;
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use hb402_x402::exact::{LocallyVerified, SignatureCheck};
use hb402_x402::facilitator::SETTLEMENT_PENDING;
use hb402_x402::{
    Facilitator, FacilitatorError, Offer, OfferTerms, PaymentPayload, PaymentPayloadV1,
    PaymentPayloadV2, PaymentRequirements, PaymentRequirementsV1, Registry, ResourceInfo,
    SettleResponse, Supported, SupportedKind, V1, V2, VerifyRequest, VerifyResponse,
};
use tokio::sync::Mutex;

sol! {
    interface IEip3009Token {
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature) external;
    }
}

/// How to reach the chain and with which key to settle.
#[derive(Clone)]
pub struct LocalSettlementConfig {
    /// JSON-RPC URL of the chain.
    pub rpc_url: String,
    /// The operator's private key (hex), which pays the gas.
    pub operator_key: String,
    /// The chain the RPC serves.
    pub chain_id: u64,
    /// Networks and assets (for the EIP-712 domain of each asset).
    pub registry: Registry,
    /// Bound on each RPC call.
    pub rpc_timeout: Duration,
    /// Bound on waiting for a receipt; past it the settlement is reported pending.
    pub receipt_timeout: Duration,
    /// Clock skew allowed on `validBefore`'s upper bound.
    pub skew_seconds: u64,
}

impl std::fmt::Debug for LocalSettlementConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSettlementConfig")
            .field("rpc_url", &self.rpc_url)
            .field("operator_key", &"<redacted>")
            .field("chain_id", &self.chain_id)
            .finish_non_exhaustive()
    }
}

/// A settlement backend that talks to the chain directly.
pub struct LocalSettlement {
    provider: DynProvider,
    operator: Address,
    config: LocalSettlementConfig,
    /// Broadcast transactions awaiting their receipt, by (payer, nonce). Held while sending so
    /// that one authorization is never broadcast twice.
    pending: Mutex<HashMap<(Address, B256), B256>>,
}

impl std::fmt::Debug for LocalSettlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSettlement")
            .field("operator", &self.operator)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn invalid(reason: &str, message: impl Into<String>, payer: Option<Address>) -> VerifyResponse {
    VerifyResponse {
        is_valid: false,
        invalid_reason: Some(reason.to_owned()),
        invalid_message: Some(message.into()),
        payer: payer.map(|p| p.to_checksum(None)),
    }
}

/// A checked payment, ready to be simulated or sent.
struct Checked {
    verified: LocallyVerified,
    token: Address,
    network: String,
}

impl LocalSettlement {
    /// Connects to the RPC and checks that it serves `config.chain_id`.
    pub async fn connect(config: LocalSettlementConfig) -> Result<Self, FacilitatorError> {
        let me = Self::new(config)?;
        let chain = me.rpc(me.provider.get_chain_id()).await?;
        if chain != me.config.chain_id {
            return Err(FacilitatorError::Unsupported(format!(
                "the RPC serves chain {chain}, configured {}",
                me.config.chain_id
            )));
        }
        Ok(me)
    }

    /// A backend for `config` without contacting the RPC yet (a wrong chain then shows as
    /// failed simulations, never as a settlement).
    pub fn new(config: LocalSettlementConfig) -> Result<Self, FacilitatorError> {
        let signer: PrivateKeySigner = config
            .operator_key
            .trim()
            .parse()
            .map_err(|_| FacilitatorError::Unsupported("invalid operator key".into()))?;
        let operator = signer.address();
        let url = config.rpc_url.parse().map_err(|_| {
            FacilitatorError::Unsupported(format!("invalid RPC URL {}", config.rpc_url))
        })?;
        // The operator account's nonce is read from the chain (pending) for every send, never
        // counted locally: another hb402 sharing the key, or the operator's own transaction,
        // moves it behind this process's back. Sends are serialised, so reading it is enough
        // within one process; across processes a send that lost the race is retried.
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(signer))
            .connect_http(url)
            .erased();
        Ok(LocalSettlement {
            provider,
            operator,
            config,
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The operator's address (the gas payer).
    pub fn operator(&self) -> Address {
        self.operator
    }

    async fn rpc<T, E: std::fmt::Display>(
        &self,
        call: impl IntoFuture<Output = Result<T, E>>,
    ) -> Result<T, FacilitatorError> {
        match tokio::time::timeout(self.config.rpc_timeout, call.into_future()).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(FacilitatorError::Unreachable(format!("RPC error: {e}"))),
            Err(_) => Err(FacilitatorError::Timeout(
                self.config.rpc_timeout.as_millis() as u64,
            )),
        }
    }

    /// The server's requirements as v2 (a v1 answer's network name resolved), and the
    /// resource a v1 answer names.
    fn requirements(
        &self,
        request: &VerifyRequest,
    ) -> Result<(PaymentRequirements, ResourceInfo), VerifyResponse> {
        let read = match request.x402_version {
            V1 => {
                let r: PaymentRequirementsV1 =
                    serde_json::from_value(request.payment_requirements.clone()).map_err(|e| {
                        invalid("invalid_payment_requirements", e.to_string(), None)
                    })?;
                let network = self
                    .config
                    .registry
                    .network(&r.network)
                    .ok_or_else(|| invalid("invalid_network", r.network.clone(), None))?;
                let v2 = PaymentRequirements {
                    scheme: r.scheme.clone(),
                    network: network.caip2(),
                    amount: r.max_amount_required.clone(),
                    asset: r.asset.clone(),
                    pay_to: r.pay_to.clone(),
                    max_timeout_seconds: r.max_timeout_seconds,
                    extra: r.extra.clone().unwrap_or_default(),
                };
                let resource = ResourceInfo {
                    url: r.resource,
                    description: Some(r.description),
                    mime_type: Some(r.mime_type),
                };
                (v2, resource)
            }
            _ => {
                let r: PaymentRequirements =
                    serde_json::from_value(request.payment_requirements.clone()).map_err(|e| {
                        invalid("invalid_payment_requirements", e.to_string(), None)
                    })?;
                let resource = ResourceInfo {
                    url: String::new(),
                    description: None,
                    mime_type: None,
                };
                (r, resource)
            }
        };
        Ok(read)
    }

    /// The terms of the offer the requirements describe, on this facilitator's chain and with
    /// the EIP-712 domain the offer announced.
    fn terms(&self, requirements: &PaymentRequirements) -> Result<OfferTerms, VerifyResponse> {
        let network = self
            .config
            .registry
            .network(&requirements.network)
            .filter(|n| n.chain_id == self.config.chain_id)
            .ok_or_else(|| {
                invalid(
                    "invalid_network",
                    format!(
                        "this facilitator settles on eip155:{} only",
                        self.config.chain_id
                    ),
                    None,
                )
            })?;
        let token: Address = requirements.asset.parse().map_err(|_| {
            invalid(
                "invalid_payment_requirements",
                "asset is not an address",
                None,
            )
        })?;
        let mut asset = self
            .config
            .registry
            .asset(network.chain_id, &token)
            .cloned()
            .ok_or_else(|| invalid("invalid_payment_requirements", "unknown asset", None))?;
        // The EIP-712 domain the client signed for is the one the offer announced.
        let text = |key: &str| requirements.extra.get(key).and_then(|v| v.as_str());
        if let (Some(name), Some(version)) = (text("name"), text("version")) {
            asset.eip712_name = name.to_owned();
            asset.eip712_version = version.to_owned();
        }
        Ok(OfferTerms {
            asset,
            pay_to: requirements.pay_to.parse().map_err(|_| {
                invalid(
                    "invalid_payment_requirements",
                    "payTo is not an address",
                    None,
                )
            })?,
            amount: U256::from_str_radix(&requirements.amount, 10).map_err(|_| {
                invalid(
                    "invalid_payment_requirements",
                    "amount is not a decimal",
                    None,
                )
            })?,
            max_timeout_seconds: requirements.max_timeout_seconds,
        })
    }

    /// Rebuilds the offer from the server's requirements and runs the local checks.
    fn check(&self, request: &VerifyRequest) -> Result<Checked, VerifyResponse> {
        let payload = match request.x402_version {
            V1 => serde_json::from_value::<PaymentPayloadV1>(request.payment_payload.clone())
                .map(PaymentPayload::V1),
            V2 => serde_json::from_value::<PaymentPayloadV2>(request.payment_payload.clone())
                .map(PaymentPayload::V2),
            v => {
                return Err(invalid(
                    "invalid_x402_version",
                    format!("version {v}"),
                    None,
                ));
            }
        }
        .map_err(|e| invalid("invalid_payload", e.to_string(), None))?;
        let (requirements, resource) = self.requirements(request)?;
        let terms = self.terms(&requirements)?;
        let token = terms.asset.address;
        let offer = Offer::new(&self.config.registry, terms, &resource)
            .map_err(|e| invalid("invalid_network", e.to_string(), None))?;
        let verified =
            hb402_x402::verify_locally(&offer, &payload, now_secs(), self.config.skew_seconds)
                .map_err(|r| invalid(r.reason.as_str(), r.message, None))?;
        Ok(Checked {
            verified,
            token,
            network: if request.x402_version == V1 {
                offer.v1.map(|v| v.network).unwrap_or_default()
            } else {
                offer.v2.network
            },
        })
    }

    /// The on-chain checks: unused nonce, balance, and a simulation of the transfer.
    async fn check_chain(&self, c: &Checked) -> Result<Option<VerifyResponse>, FacilitatorError> {
        let a = &c.verified.authorization;
        let payer = Some(a.from);
        if self
            .rpc(
                SolCallBuilder::new_sol(
                    &self.provider,
                    &c.token,
                    &IEip3009Token::authorizationStateCall {
                        authorizer: a.from,
                        nonce: a.nonce,
                    },
                )
                .call(),
            )
            .await?
        {
            return Ok(Some(invalid(
                "invalid_exact_evm_nonce_already_used",
                "the authorization was already used or cancelled",
                payer,
            )));
        }
        let balance = self
            .rpc(
                SolCallBuilder::new_sol(
                    &self.provider,
                    &c.token,
                    &IEip3009Token::balanceOfCall { account: a.from },
                )
                .call(),
            )
            .await?;
        if balance < a.value {
            return Ok(Some(invalid(
                "insufficient_funds",
                format!("balance {balance} is below {}", a.value),
                payer,
            )));
        }
        let simulated = match self.transfer_call(c) {
            Transfer::Eoa(call) => self.rpc(call.from(self.operator).call()).await.map(|_| ()),
            Transfer::Wallet(call) => self.rpc(call.from(self.operator).call()).await.map(|_| ()),
        };
        if let Err(e) = simulated {
            return Ok(Some(invalid(
                "invalid_exact_evm_transaction_simulation_failed",
                e.to_string(),
                payer,
            )));
        }
        Ok(None)
    }

    fn transfer_call(&self, c: &Checked) -> Transfer<'_> {
        let a = &c.verified.authorization;
        let sig = &c.verified.signature;
        match c.verified.signature_check {
            SignatureCheck::Recovered => {
                let mut v = sig[64];
                if v < 27 {
                    v += 27;
                }
                let call = IEip3009Token::transferWithAuthorization_0Call {
                    from: a.from,
                    to: a.to,
                    value: a.value,
                    validAfter: a.valid_after,
                    validBefore: a.valid_before,
                    nonce: a.nonce,
                    v,
                    r: B256::from_slice(&sig[..32]),
                    s: B256::from_slice(&sig[32..64]),
                };
                Transfer::Eoa(SolCallBuilder::new_sol(&self.provider, &c.token, &call))
            }
            SignatureCheck::Deferred => {
                let call = IEip3009Token::transferWithAuthorization_1Call {
                    from: a.from,
                    to: a.to,
                    value: a.value,
                    validAfter: a.valid_after,
                    validBefore: a.valid_before,
                    nonce: a.nonce,
                    signature: Bytes::from(sig.clone()),
                };
                Transfer::Wallet(SolCallBuilder::new_sol(&self.provider, &c.token, &call))
            }
        }
    }

    fn settled(
        &self,
        c: &Checked,
        success: bool,
        reason: Option<&str>,
        tx: B256,
    ) -> SettleResponse {
        SettleResponse {
            success,
            error_reason: reason.map(str::to_owned),
            error_message: None,
            payer: Some(c.verified.authorization.from.to_checksum(None)),
            transaction: if tx == B256::ZERO {
                String::new()
            } else {
                tx.to_string()
            },
            network: c.network.clone(),
        }
    }

    /// Waits (bounded) for the receipt of `tx`.
    async fn outcome(&self, c: &Checked, tx: B256) -> Result<SettleResponse, FacilitatorError> {
        let key = (
            c.verified.authorization.from,
            c.verified.authorization.nonce,
        );
        let deadline = tokio::time::Instant::now() + self.config.receipt_timeout;
        loop {
            let receipt = self.rpc(self.provider.get_transaction_receipt(tx)).await?;
            if let Some(receipt) = receipt {
                self.pending.lock().await.remove(&key);
                return Ok(if receipt.status() {
                    self.settled(c, true, None, tx)
                } else {
                    self.settled(c, false, Some("invalid_exact_evm_transaction_failed"), tx)
                });
            }
            if tokio::time::Instant::now() >= deadline {
                // Broadcast but unconfirmed: report it with its hash; a later settle call for
                // this authorization looks the receipt up instead of sending again.
                return Ok(self.settled(c, false, Some(SETTLEMENT_PENDING), tx));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How many times a send is retried when another sender took the operator's nonce.
const NONCE_RETRIES: usize = 3;

/// Whether a refused send lost a race for the operator account's nonce (nothing was
/// broadcast; it may be signed again with the next nonce).
fn nonce_taken(error: &FacilitatorError) -> bool {
    let FacilitatorError::Unreachable(message) = error else {
        return false;
    };
    let message = message.to_ascii_lowercase();
    message.contains("nonce too low") || message.contains("replacement transaction underpriced")
}

impl LocalSettlement {
    /// Sends the transfer; its transaction hash once the RPC accepted it.
    async fn send(&self, c: &Checked) -> Result<B256, FacilitatorError> {
        let mut attempt = 0;
        loop {
            let sent = match self.transfer_call(c) {
                Transfer::Eoa(call) => self.rpc(call.send()).await,
                Transfer::Wallet(call) => self.rpc(call.send()).await,
            };
            match sent {
                Ok(pending) => return Ok(*pending.tx_hash()),
                Err(e) if attempt < NONCE_RETRIES && nonce_taken(&e) => {
                    attempt += 1;
                    tracing::info!(
                        attempt,
                        "operator nonce taken by another sender; sending again"
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }
}

enum Transfer<'a> {
    Eoa(SolCallBuilder<&'a DynProvider, IEip3009Token::transferWithAuthorization_0Call>),
    Wallet(SolCallBuilder<&'a DynProvider, IEip3009Token::transferWithAuthorization_1Call>),
}

#[async_trait::async_trait]
impl Facilitator for LocalSettlement {
    async fn supported(&self) -> Result<Supported, FacilitatorError> {
        let network = self
            .config
            .registry
            .network_by_chain(self.config.chain_id)
            .ok_or_else(|| FacilitatorError::Unsupported("chain not registered".into()))?;
        let mut kinds = vec![SupportedKind {
            x402_version: V2,
            scheme: "exact".into(),
            network: network.caip2(),
            extra: None,
        }];
        if let Some(name) = &network.v1_name {
            kinds.push(SupportedKind {
                x402_version: V1,
                scheme: "exact".into(),
                network: name.clone(),
                extra: None,
            });
        }
        let mut signers = serde_json::Map::new();
        signers.insert(
            network.caip2(),
            serde_json::json!([self.operator.to_checksum(None)]),
        );
        Ok(Supported {
            kinds,
            extensions: Vec::new(),
            signers,
        })
    }

    async fn verify(&self, request: &VerifyRequest) -> Result<VerifyResponse, FacilitatorError> {
        let checked = match self.check(request) {
            Ok(c) => c,
            Err(refusal) => return Ok(refusal),
        };
        if let Some(refusal) = self.check_chain(&checked).await? {
            return Ok(refusal);
        }
        Ok(VerifyResponse {
            is_valid: true,
            invalid_reason: None,
            invalid_message: None,
            payer: Some(checked.verified.authorization.from.to_checksum(None)),
        })
    }

    async fn settle(&self, request: &VerifyRequest) -> Result<SettleResponse, FacilitatorError> {
        let checked = match self.check(request) {
            Ok(c) => c,
            Err(refusal) => {
                return Ok(SettleResponse {
                    success: false,
                    error_reason: refusal.invalid_reason,
                    error_message: refusal.invalid_message,
                    payer: refusal.payer,
                    transaction: String::new(),
                    network: String::new(),
                });
            }
        };
        let key = (
            checked.verified.authorization.from,
            checked.verified.authorization.nonce,
        );
        let tx = {
            // Serialise sends: one authorization is broadcast at most once, and the operator's
            // account nonce is not raced.
            let mut pending = self.pending.lock().await;
            if let Some(tx) = pending.get(&key).copied() {
                drop(pending);
                return self.outcome(&checked, tx).await;
            }
            if let Some(refusal) = self.check_chain(&checked).await? {
                return Ok(self.settled(
                    &checked,
                    false,
                    refusal.invalid_reason.as_deref(),
                    B256::ZERO,
                ));
            }
            let tx = match self.send(&checked).await {
                Ok(tx) => tx,
                // The payment passed the chain checks and the simulation: a send the RPC
                // refuses is the operator's (gas, RPC) problem, not the payer's.
                Err(e) => {
                    tracing::warn!(error = %e, "settlement transaction was not accepted");
                    return Ok(self.settled(
                        &checked,
                        false,
                        Some("unexpected_settle_error"),
                        B256::ZERO,
                    ));
                }
            };
            pending.insert(key, tx);
            tx
        };
        self.outcome(&checked, tx).await
    }
}
