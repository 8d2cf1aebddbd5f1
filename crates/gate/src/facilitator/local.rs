//! Local settlement: hb402 verifies and settles EIP-3009 payments itself, with an operator key
//! that pays the gas, over an EVM JSON-RPC.
//!
//! Transfers go through the settlement pipeline ([`super::pipeline`]): one sender owns the
//! operator's nonce and batches what is queued, one watcher reads receipts per block.
//! Settlement never sends the same authorization twice: the transaction of every broadcast is
//! remembered until its receipt arrives, and a settle call for an authorization already in
//! flight waits for that transaction (or reports `settlement_pending` with its hash, x402.md
//! §5.5) instead of sending another.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::contract::SolCallBuilder;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolCall;
use hb402_x402::exact::{LocallyVerified, SignatureCheck};
use hb402_x402::facilitator::SETTLEMENT_PENDING;
use hb402_x402::{
    Facilitator, FacilitatorError, Offer, OfferTerms, PaymentPayload, PaymentPayloadV1,
    PaymentPayloadV2, PaymentRequirements, PaymentRequirementsV1, Registry, ResourceInfo,
    SettleResponse, Supported, SupportedKind, V1, V2, VerifyRequest, VerifyResponse,
};

use super::pipeline::{Dispatch, Pipeline, PipelineConfig, Simulated, Transfer as Queued};
use crate::chain::{Authorization, paid_in};

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
    /// Transfers per transaction at most (1: one transaction per payment).
    pub max_batch: usize,
    /// The batch contract (Multicall3); batches are sent only where it is deployed.
    pub multicall: Option<Address>,
    /// How often receipts are looked for while transactions are in flight.
    pub receipt_poll: Duration,
    /// How long a busy sender goes on filling a batch before sending it.
    pub batch_linger: Duration,
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
    pipeline: Pipeline,
    /// Authorizations being sent or broadcast and not yet seen mined, by (payer, nonce): one
    /// authorization is never broadcast twice.
    pending: Mutex<HashMap<(Address, B256), InFlight>>,
}

/// Where an authorization is in the pipeline.
#[derive(Debug, Clone, Copy)]
enum InFlight {
    /// Queued for the sender.
    Queued { valid_before: u64 },
    /// Broadcast (or possibly) in this transaction.
    Sent { tx: B256, valid_before: u64 },
}

impl InFlight {
    /// Whether the entry can be dropped: its authorization expired long enough ago that no
    /// transaction can use it any more, so the chain alone answers for it.
    fn stale(&self, now: u64) -> bool {
        let (InFlight::Queued { valid_before } | InFlight::Sent { valid_before, .. }) = self;
        now > valid_before.saturating_add(STALE_AFTER_SECONDS)
    }
}

/// How long after its authorization expired an in-flight entry is kept.
const STALE_AFTER_SECONDS: u64 = 600;

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

/// What became of a call [`LocalSettlement::send_call`] sent.
#[derive(Debug)]
pub(crate) enum Sent {
    /// Mined and successful, in this transaction.
    Mined(B256),
    /// Not sent: a simulation says it reverts.
    Reverts,
    /// Not sent: the RPC refused the transaction or could not be asked.
    Unsent,
    /// Mined and reverted: nothing moved.
    Reverted,
    /// Broadcast (or possibly), not seen mined in time.
    Unknown,
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
    /// failed simulations, never as a settlement). Starts the settlement pipeline's thread.
    pub fn new(config: LocalSettlementConfig) -> Result<Self, FacilitatorError> {
        let signer: PrivateKeySigner = config
            .operator_key
            .trim()
            .parse()
            .map_err(|_| FacilitatorError::Unsupported("invalid operator key".into()))?;
        let operator = signer.address();
        let url: reqwest::Url = config.rpc_url.parse().map_err(|_| {
            FacilitatorError::Unsupported(format!("invalid RPC URL {}", config.rpc_url))
        })?;
        // Calls only: transactions are built, signed and sent by the pipeline, which keeps the
        // operator's nonce and fees itself (and a connection pool of its own, on its thread).
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_http(url.clone())
            .erased();
        let pipeline = Pipeline::start(
            ProviderBuilder::new()
                .disable_recommended_fillers()
                .connect_http(url)
                .erased(),
            signer,
            PipelineConfig {
                chain_id: config.chain_id,
                max_batch: config.max_batch,
                multicall: config.multicall,
                rpc_timeout: config.rpc_timeout,
                receipt_poll: config.receipt_poll,
                linger: config.batch_linger,
            },
        )
        .map_err(|e| FacilitatorError::Unsupported(format!("settlement thread: {e}")))?;
        Ok(LocalSettlement {
            provider,
            operator,
            config,
            pipeline,
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The operator's address (the gas payer).
    pub fn operator(&self) -> Address {
        self.operator
    }

    /// Sends a call of `to` in a transaction of its own (after a simulation: a call that
    /// reverts is not sent) and waits, bounded by `receipt_timeout`, for its receipt;
    /// `gas_cap`: the most gas it may be given (a call that needs more is not sent).
    pub(crate) async fn send_call(&self, to: Address, input: Bytes, gas_cap: Option<u64>) -> Sent {
        let call = Queued {
            token: to,
            input,
            alone: true,
            gas_cap,
        };
        let (tx, waiting) = match self.pipeline.send(call).await {
            Dispatch::Tx(tx, waiting) => (tx, waiting),
            Dispatch::Reverts => return Sent::Reverts,
            Dispatch::NotSent => return Sent::Unsent,
        };
        match tokio::time::timeout(self.config.receipt_timeout, waiting).await {
            Ok(Ok(receipt)) if receipt.status() => Sent::Mined(tx),
            Ok(Ok(_)) => {
                tracing::warn!(%tx, "transaction reverted");
                Sent::Reverted
            }
            _ => {
                tracing::warn!(%tx, "transaction not seen mined in time");
                Sent::Unknown
            }
        }
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

    /// The on-chain check: a simulation of the transfer (together with the other payments
    /// being checked meanwhile). Only when it reverts are the nonce and the balance read, to
    /// say why.
    async fn check_chain(&self, c: &Checked) -> Result<Option<VerifyResponse>, FacilitatorError> {
        match self.pipeline.simulate(self.queued(c)).await {
            Simulated::Passes => Ok(None),
            Simulated::Reverts(message) => Ok(Some(self.why_reverted(c, &message).await?)),
            Simulated::Unanswered => Err(FacilitatorError::Unreachable(
                "the chain could not simulate the transfer".into(),
            )),
        }
    }

    /// Why the transfer of `c` reverts: a used nonce, too little balance, or else the
    /// simulation's own message.
    async fn why_reverted(
        &self,
        c: &Checked,
        message: &str,
    ) -> Result<VerifyResponse, FacilitatorError> {
        let a = &c.verified.authorization;
        let payer = Some(a.from);
        let state = IEip3009Token::authorizationStateCall {
            authorizer: a.from,
            nonce: a.nonce,
        };
        let balance = IEip3009Token::balanceOfCall { account: a.from };
        let state = SolCallBuilder::new_sol(&self.provider, &c.token, &state);
        let balance = SolCallBuilder::new_sol(&self.provider, &c.token, &balance);
        let (used, balance) = tokio::join!(self.rpc(state.call()), self.rpc(balance.call()));
        if used? {
            return Ok(invalid(
                "invalid_exact_evm_nonce_already_used",
                "the authorization was already used or cancelled",
                payer,
            ));
        }
        let balance = balance?;
        if balance < a.value {
            return Ok(invalid(
                "insufficient_funds",
                format!("balance {balance} is below {}", a.value),
                payer,
            ));
        }
        Ok(invalid(
            "invalid_exact_evm_transaction_simulation_failed",
            message.to_owned(),
            payer,
        ))
    }

    /// The transfer of `c`, for the pipeline.
    fn queued(&self, c: &Checked) -> Queued {
        Queued {
            token: c.token,
            input: self.transfer_input(c),
            alone: matches!(c.verified.signature_check, SignatureCheck::Deferred),
            gas_cap: None,
        }
    }

    /// The `transferWithAuthorization` call of `c`: (v, r, s) for a recovered signature, the
    /// signature bytes for one the token checks itself (a smart wallet's).
    fn transfer_input(&self, c: &Checked) -> Bytes {
        let a = &c.verified.authorization;
        let sig = &c.verified.signature;
        let input = match c.verified.signature_check {
            SignatureCheck::Recovered => {
                let mut v = sig[64];
                if v < 27 {
                    v += 27;
                }
                IEip3009Token::transferWithAuthorization_0Call {
                    from: a.from,
                    to: a.to,
                    value: a.value,
                    validAfter: a.valid_after,
                    validBefore: a.valid_before,
                    nonce: a.nonce,
                    v,
                    r: B256::from_slice(&sig[..32]),
                    s: B256::from_slice(&sig[32..64]),
                }
                .abi_encode()
            }
            SignatureCheck::Deferred => IEip3009Token::transferWithAuthorization_1Call {
                from: a.from,
                to: a.to,
                value: a.value,
                validAfter: a.valid_after,
                validBefore: a.valid_before,
                nonce: a.nonce,
                signature: Bytes::from(sig.clone()),
            }
            .abi_encode(),
        };
        input.into()
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

    /// Waits (bounded by `receipt_timeout`) for `tx`'s receipt and reads `c`'s outcome in it.
    async fn mined(&self, c: &Checked, waiting: super::pipeline::Waiting) -> Mined {
        match tokio::time::timeout(self.config.receipt_timeout, waiting).await {
            Ok(Ok(receipt)) => {
                self.pending_map().remove(&key(c));
                if !receipt.status() {
                    Mined::Reverted
                } else if paid_in(receipt.logs(), &authorization(c)) {
                    Mined::Paid
                } else {
                    Mined::CallFailed
                }
            }
            _ => Mined::NotYet,
        }
    }

    /// The answer for `c` once `tx` was mined, or not in time.
    fn outcome(&self, c: &Checked, tx: B256, mined: Mined) -> SettleResponse {
        match mined {
            Mined::Paid => self.settled(c, true, None, tx),
            // Mined without using the authorization: nothing moved, and the authorization is
            // still unused. A failure (the payer's, when only its own call failed: its funds
            // or its wallet), without the transaction, so that nobody waits for it any more.
            Mined::CallFailed => self.settled(
                c,
                false,
                Some("invalid_exact_evm_transaction_failed"),
                B256::ZERO,
            ),
            Mined::Reverted => self.settled(c, false, Some("unexpected_settle_error"), B256::ZERO),
            // Broadcast but not seen mined in time: reported with its hash; a later settle call
            // for this authorization waits for the same transaction instead of sending again.
            Mined::NotYet => self.settled(c, false, Some(SETTLEMENT_PENDING), tx),
        }
    }

    fn pending_map(&self) -> std::sync::MutexGuard<'_, HashMap<(Address, B256), InFlight>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `c` for sending, unless it is in flight already (then: where).
    fn claim(&self, c: &Checked) -> Option<InFlight> {
        let now = now_secs();
        let valid_before = c.verified.authorization.valid_before.saturating_to::<u64>();
        let mut pending = self.pending_map();
        if let Some(found) = pending.get(&key(c)) {
            return Some(*found);
        }
        if pending.len() >= PRUNE_AT {
            pending.retain(|_, entry| !entry.stale(now));
        }
        pending.insert(key(c), InFlight::Queued { valid_before });
        None
    }

    /// Sends `c` through the pipeline (claimed by this call) and waits for its outcome. A
    /// transaction that reverted as a whole (another payment of its batch made it run out of
    /// gas, say) moved nothing: its payments are sent once more.
    async fn send(&self, c: &Checked) -> SettleResponse {
        // Whatever happens to this call, a claim that is not in flight is given back.
        let mut claim = Claim {
            owner: self,
            key: key(c),
            sent: false,
        };
        let valid_before = c.verified.authorization.valid_before.saturating_to::<u64>();
        for attempt in 0..2 {
            let (tx, waiting) = match self.pipeline.send(self.queued(c)).await {
                Dispatch::Tx(tx, waiting) => (tx, waiting),
                Dispatch::Reverts => return self.refused(c).await,
                // The transfer passed the checks: a transaction the RPC refuses is the
                // operator's (gas, RPC) problem, not the payer's. Nothing was broadcast.
                Dispatch::NotSent => {
                    tracing::warn!("settlement transaction was not sent");
                    return self.settled(c, false, Some("unexpected_settle_error"), B256::ZERO);
                }
            };
            self.pending_map()
                .insert(key(c), InFlight::Sent { tx, valid_before });
            claim.sent = true;
            let mined = self.mined(c, waiting).await;
            if matches!(mined, Mined::Reverted) && attempt == 0 {
                tracing::warn!(%tx, "a settlement transaction reverted as a whole; sending its payments again");
                self.pending_map()
                    .insert(key(c), InFlight::Queued { valid_before });
                claim.sent = false;
                continue;
            }
            return self.outcome(c, tx, mined);
        }
        unreachable!("the second attempt returns")
    }

    /// The answer for a transfer that reverts: why, for the payer's 402.
    async fn refused(&self, c: &Checked) -> SettleResponse {
        // Reading why must not hide that it failed.
        let reason = match self.why_reverted(c, "the transfer reverts").await {
            Ok(refusal) => refusal.invalid_reason,
            Err(_) => None,
        };
        let reason =
            reason.unwrap_or_else(|| "invalid_exact_evm_transaction_simulation_failed".into());
        self.settled(c, false, Some(&reason), B256::ZERO)
    }
}

/// What became of a payment's transaction.
enum Mined {
    /// Mined, and the payment's authorization paid.
    Paid,
    /// Mined, but the payment's own call failed in it.
    CallFailed,
    /// Mined, and the whole transaction reverted.
    Reverted,
    /// Not seen mined in time.
    NotYet,
}

/// In-flight entries kept before stale ones are dropped.
const PRUNE_AT: usize = 4096;

fn key(c: &Checked) -> (Address, B256) {
    (
        c.verified.authorization.from,
        c.verified.authorization.nonce,
    )
}

fn authorization(c: &Checked) -> Authorization {
    let a = &c.verified.authorization;
    Authorization {
        asset: c.token,
        from: a.from,
        to: a.to,
        value: a.value,
        nonce: a.nonce,
    }
}

/// A claim on an authorization's send; released on drop unless it was sent.
struct Claim<'a> {
    owner: &'a LocalSettlement,
    key: (Address, B256),
    sent: bool,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.sent {
            let mut pending = self.owner.pending_map();
            if matches!(pending.get(&self.key), Some(InFlight::Queued { .. })) {
                pending.remove(&self.key);
            }
        }
    }
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
        match self.claim(&checked) {
            None => Ok(self.send(&checked).await),
            Some(InFlight::Sent { tx, .. }) => {
                let waiting = self.pipeline.watch(tx);
                let mined = self.mined(&checked, waiting).await;
                Ok(self.outcome(&checked, tx, mined))
            }
            // Another call is sending it right now: never a second broadcast.
            Some(InFlight::Queued { .. }) => {
                Ok(self.settled(&checked, false, Some(SETTLEMENT_PENDING), B256::ZERO))
            }
        }
    }
}
