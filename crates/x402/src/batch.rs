//! The EVM `batch-settlement` scheme's wire types and EIP-712 digests (x402
//! `specs/schemes/batch-settlement/scheme_batch_settlement_evm.md`): a payer deposits once into an
//! escrow channel of the `x402BatchSettlement` contract and signs a cumulative voucher per
//! request; the receiver claims many vouchers in one transaction and sweeps them with `settle`.
//!
//! Pure: identities and digests are computed here, the channel state they are checked against
//! is the caller's.

use alloy_primitives::{Address, B256, U256, address, keccak256};
use alloy_sol_types::{Eip712Domain, SolStruct, SolValue, sol};
use serde::{Deserialize, Serialize};

/// The scheme's name in offers and payloads.
pub const SCHEME_BATCH: &str = "batch-settlement";

/// `x402BatchSettlement`'s canonical address (the same on every chain).
pub const BATCH_SETTLEMENT: Address = address!("0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003");

/// The deposit collector for tokens with ERC-3009 `receiveWithAuthorization` (USDC).
pub const ERC3009_DEPOSIT_COLLECTOR: Address =
    address!("0x4020806089470a89826cB9fB1f4059150b550004");

/// The contract's bounds on `withdrawDelay`, in seconds (15 minutes to 30 days).
pub const WITHDRAW_DELAY_SECONDS: std::ops::RangeInclusive<u64> = 900..=2_592_000;

sol! {
    /// A channel's immutable configuration; its EIP-712 digest is the channel id.
    #[derive(Debug, PartialEq, Eq)]
    struct ChannelConfig {
        address payer;
        address payerAuthorizer;
        address receiver;
        address receiverAuthorizer;
        address token;
        uint40 withdrawDelay;
        bytes32 salt;
    }

    /// A cumulative ceiling the payer (or its authorizer) signs.
    #[derive(Debug)]
    struct Voucher {
        bytes32 channelId;
        uint128 maxClaimableAmount;
    }

    /// A cooperative refund the receiver authorizer signs.
    #[derive(Debug)]
    struct Refund {
        bytes32 channelId;
        uint256 nonce;
        uint128 amount;
    }

    /// One row of a claim batch.
    #[derive(Debug)]
    struct ClaimEntry {
        bytes32 channelId;
        uint128 maxClaimableAmount;
        uint128 totalClaimed;
    }

    /// The batch of claims the receiver authorizer signs for `claimWithSignature`.
    #[derive(Debug)]
    struct ClaimBatch {
        ClaimEntry[] claims;
    }

    /// The ERC-3009 authorization of a deposit, signed under the token's domain; only the
    /// deposit collector (`to`) may use it.
    #[derive(Debug)]
    struct ReceiveWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }

    /// A voucher as the contract takes it: the channel and the signed ceiling.
    #[derive(Debug)]
    struct ChannelVoucher {
        ChannelConfig channel;
        uint128 maxClaimableAmount;
    }

    /// One claim: a voucher, its signature, and the channel's new claimed total.
    #[derive(Debug)]
    struct VoucherClaim {
        ChannelVoucher voucher;
        bytes signature;
        uint128 totalClaimed;
    }

    /// The calls of `x402BatchSettlement` a receiver makes and the views it reads.
    /// A contract account's signature check (EIP-1271).
    interface IERC1271 {
        function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4);
    }

    interface IBatchSettlement {
        function deposit(ChannelConfig config, uint128 amount, address collector, bytes collectorData) external;
        function claimWithSignature(VoucherClaim[] claims, bytes authorizerSignature) external;
        function settle(address receiver, address token) external;
        function refundWithSignature(ChannelConfig config, uint128 amount, uint256 nonce, bytes signature) external;
        function multicall(bytes[] data) external returns (bytes[] results);
        function initiateWithdraw(ChannelConfig config, uint128 amount) external;
        function finalizeWithdraw(ChannelConfig config) external;
        function channels(bytes32 channelId) external view returns (uint128 balance, uint128 totalClaimed);
        function pendingWithdrawals(bytes32 channelId) external view returns (uint128 amount, uint40 initiatedAt);
        function refundNonce(bytes32 channelId) external view returns (uint256);
        function receivers(address receiver, address token) external view returns (uint128 totalClaimed, uint128 totalSettled);
    }
}

/// The `collectorData` of an ERC-3009 deposit:
/// `abi.encode(uint256 validAfter, uint256 validBefore, uint256 salt, bytes signature)`.
pub fn erc3009_collector_data(
    valid_after: U256,
    valid_before: U256,
    salt: B256,
    signature: Vec<u8>,
) -> Vec<u8> {
    (
        valid_after,
        valid_before,
        U256::from_be_bytes(salt.0),
        alloy_primitives::Bytes::from(signature),
    )
        .abi_encode_params()
}

/// The contract's EIP-712 domain on `chain_id`.
pub fn domain(chain_id: u64) -> Eip712Domain {
    Eip712Domain::new(
        Some("x402 Batch Settlement".into()),
        Some("1".into()),
        Some(U256::from(chain_id)),
        Some(BATCH_SETTLEMENT),
        None,
    )
}

fn digest(chain_id: u64, struct_hash: B256) -> B256 {
    crate::exact::eip712_digest(&domain(chain_id), struct_hash)
}

/// The channel id: the EIP-712 digest of the configuration under the contract's domain, so the
/// same configuration names different channels on different chains.
pub fn channel_id(config: &ChannelConfig, chain_id: u64) -> B256 {
    digest(chain_id, config.eip712_hash_struct())
}

/// The digest a voucher's signer signs.
pub fn voucher_digest(channel: B256, max_claimable: u128, chain_id: u64) -> B256 {
    let voucher = Voucher {
        channelId: channel,
        maxClaimableAmount: max_claimable,
    };
    digest(chain_id, voucher.eip712_hash_struct())
}

/// The digest the receiver authorizer signs for `refundWithSignature`.
pub fn refund_digest(channel: B256, nonce: U256, amount: u128, chain_id: u64) -> B256 {
    let refund = Refund {
        channelId: channel,
        nonce,
        amount,
    };
    digest(chain_id, refund.eip712_hash_struct())
}

/// The digest the receiver authorizer signs for `claimWithSignature`.
pub fn claim_batch_digest(claims: Vec<ClaimEntry>, chain_id: u64) -> B256 {
    digest(chain_id, ClaimBatch { claims }.eip712_hash_struct())
}

/// The digest a payer signs to deposit `value` into channel `channel` on the offer's token: an
/// ERC-3009 `ReceiveWithAuthorization` to the deposit collector, valid in `window` (after,
/// before), its nonce bound to the channel and `salt`.
pub fn deposit_digest(
    terms: &BatchTerms,
    payer: Address,
    channel: B256,
    value: u128,
    window: (u128, u128),
    salt: B256,
) -> B256 {
    let message = ReceiveWithAuthorization {
        from: payer,
        to: ERC3009_DEPOSIT_COLLECTOR,
        value: U256::from(value),
        validAfter: U256::from(window.0),
        validBefore: U256::from(window.1),
        nonce: deposit_nonce(channel, U256::from_be_bytes(salt.0)),
    };
    let domain = Eip712Domain::new(
        Some(terms.asset_domain.0.clone().into()),
        Some(terms.asset_domain.1.clone().into()),
        Some(U256::from(terms.chain_id)),
        Some(terms.asset),
        None,
    );
    crate::exact::eip712_digest(&domain, message.eip712_hash_struct())
}

/// The ERC-3009 nonce of a deposit: `keccak256(abi.encode(channelId, salt))`.
pub fn deposit_nonce(channel: B256, salt: U256) -> B256 {
    keccak256((channel, salt).abi_encode())
}

/// A channel configuration as payloads carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelConfigJson {
    /// The paying wallet.
    pub payer: Address,
    /// The EOA that signs vouchers, or zero (the payer signs, EIP-1271 allowed).
    pub payer_authorizer: Address,
    /// The offer's `payTo`.
    pub receiver: Address,
    /// The offer's `extra.receiverAuthorizer`.
    pub receiver_authorizer: Address,
    /// The offer's asset.
    pub token: Address,
    /// The offer's `extra.withdrawDelay`, in seconds.
    pub withdraw_delay: u64,
    /// The payer's choice, to tell channels apart.
    pub salt: B256,
}

impl ChannelConfigJson {
    /// The typed configuration, if `withdrawDelay` fits its 40 bits.
    pub fn typed(&self) -> Option<ChannelConfig> {
        Some(ChannelConfig {
            payer: self.payer,
            payerAuthorizer: self.payer_authorizer,
            receiver: self.receiver,
            receiverAuthorizer: self.receiver_authorizer,
            token: self.token,
            withdrawDelay: alloy_primitives::aliases::U40::try_from(self.withdraw_delay).ok()?,
            salt: self.salt,
        })
    }
}

impl From<&ChannelConfig> for ChannelConfigJson {
    fn from(c: &ChannelConfig) -> Self {
        ChannelConfigJson {
            payer: c.payer,
            payer_authorizer: c.payerAuthorizer,
            receiver: c.receiver,
            receiver_authorizer: c.receiverAuthorizer,
            token: c.token,
            withdraw_delay: c.withdrawDelay.to::<u64>(),
            salt: c.salt,
        }
    }
}

/// A signed voucher as payloads carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoucherJson {
    /// The channel.
    pub channel_id: B256,
    /// The cumulative ceiling, a decimal string.
    pub max_claimable_amount: String,
    /// The signature, hex.
    pub signature: String,
}

/// A `deposit`'s token authorization as payloads carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DepositJson {
    /// What is deposited, a decimal string.
    pub amount: String,
    /// Exactly one way of moving it.
    pub authorization: DepositAuthorizationJson,
}

/// How a deposit's tokens move: ERC-3009 (`receiveWithAuthorization`) or Permit2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DepositAuthorizationJson {
    /// ERC-3009, to the ERC-3009 deposit collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erc3009_authorization: Option<Erc3009DepositJson>,
    /// Permit2 (not taken by hb402: USDC has ERC-3009).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit2_authorization: Option<serde_json::Value>,
}

/// An ERC-3009 deposit authorization: its nonce is `keccak256(abi.encode(channelId, salt))`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Erc3009DepositJson {
    /// Decimal string.
    pub valid_after: String,
    /// Decimal string.
    pub valid_before: String,
    /// The nonce's salt.
    pub salt: B256,
    /// The payer's signature, hex.
    pub signature: String,
}

/// The `payload` of a `batch-settlement` payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "lowercase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum BatchPayload {
    /// Opens or tops up the channel, with the request's voucher.
    Deposit {
        /// The channel.
        channel_config: ChannelConfigJson,
        /// The request's voucher.
        voucher: VoucherJson,
        /// The deposit.
        deposit: DepositJson,
    },
    /// Pays from the channel's balance.
    Voucher {
        /// The channel.
        channel_config: ChannelConfigJson,
        /// The request's voucher.
        voucher: VoucherJson,
    },
    /// Asks for the unclaimed rest back, with a voucher that charges nothing more.
    Refund {
        /// The channel.
        channel_config: ChannelConfigJson,
        /// The zero-charge voucher.
        voucher: VoucherJson,
        /// A partial refund; absent, all of the rest.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount: Option<String>,
    },
}

impl BatchPayload {
    /// The channel configuration and the voucher, whatever the kind.
    pub fn parts(&self) -> (&ChannelConfigJson, &VoucherJson) {
        match self {
            BatchPayload::Deposit {
                channel_config,
                voucher,
                ..
            }
            | BatchPayload::Voucher {
                channel_config,
                voucher,
            }
            | BatchPayload::Refund {
                channel_config,
                voucher,
                ..
            } => (channel_config, voucher),
        }
    }
}

/// What a `batch-settlement` offer asks: the terms a payload's channel must repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTerms {
    /// The chain.
    pub chain_id: u64,
    /// `payTo`: the channel's receiver.
    pub pay_to: Address,
    /// The token.
    pub asset: Address,
    /// The token's EIP-712 domain name and version (deposits are signed under it).
    pub asset_domain: (String, String),
    /// The price of this request, atomic units.
    pub amount: u128,
    /// `extra.receiverAuthorizer`.
    pub receiver_authorizer: Address,
    /// `extra.withdrawDelay`, seconds.
    pub withdraw_delay: u64,
    /// Whether a contract account (EIP-1271) may pay: signatures that do not recover to their
    /// signer are then left for the chain ([`CheckedBatch::on_chain`]) instead of refused.
    pub contract_payers: bool,
}

/// What the server knows of a channel when a payment comes: what it has charged, and the
/// chain's balance and claimed total (mirrored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelView {
    /// The sum of what was charged on this channel.
    pub charged: u128,
    /// Deposited less withdrawn and refunded.
    pub balance: u128,
    /// Claimed on chain.
    pub total_claimed: u128,
}

/// Why a `batch-settlement` payment is refused, with the specification's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BatchReason {
    /// The payload does not parse, or an amount is not a number.
    Payload,
    /// The channel's receiver is not the offer's `payTo`.
    ReceiverMismatch,
    /// The channel's receiver authorizer is not the offer's.
    ReceiverAuthorizerMismatch,
    /// The channel's token is not the offer's asset.
    TokenMismatch,
    /// The channel's withdraw delay is not the offer's.
    WithdrawDelayMismatch,
    /// The configuration does not hash to the voucher's channel id.
    ChannelIdMismatch,
    /// The voucher's signature is not its authorizer's.
    VoucherSignature,
    /// The voucher is signed by the payer's contract (EIP-1271): the chain must check it.
    ContractSignature,
    /// The voucher's ceiling is not what was charged plus this request's price.
    CumulativeMismatch,
    /// The voucher's ceiling exceeds the channel's balance.
    CumulativeExceedsBalance,
    /// The voucher's ceiling is not above what was already claimed.
    CumulativeBelowClaimed,
    /// The channel has no balance and this is not a deposit.
    ChannelNotFound,
    /// The deposit's authorization is not valid yet.
    DepositValidAfter,
    /// The deposit's authorization expires too soon.
    DepositValidBefore,
    /// The deposit's authorization is not the payer's signature for this channel's collector.
    DepositSignature,
    /// The deposit moves tokens some other way than ERC-3009.
    DepositMethod,
}

impl BatchReason {
    /// The specification's code.
    pub fn code(self) -> &'static str {
        match self {
            BatchReason::Payload => "invalid_batch_settlement_evm_payload",
            BatchReason::ReceiverMismatch => "invalid_batch_settlement_evm_receiver_mismatch",
            BatchReason::ReceiverAuthorizerMismatch => {
                "invalid_batch_settlement_evm_receiver_authorizer_mismatch"
            }
            BatchReason::TokenMismatch => "invalid_batch_settlement_evm_token_mismatch",
            BatchReason::WithdrawDelayMismatch => {
                "invalid_batch_settlement_evm_withdraw_delay_mismatch"
            }
            BatchReason::ChannelIdMismatch => "invalid_batch_settlement_evm_channel_id_mismatch",
            BatchReason::VoucherSignature | BatchReason::ContractSignature => {
                "invalid_batch_settlement_evm_voucher_signature"
            }
            BatchReason::CumulativeMismatch => {
                "invalid_batch_settlement_evm_cumulative_amount_mismatch"
            }
            BatchReason::CumulativeExceedsBalance => {
                "invalid_batch_settlement_evm_cumulative_exceeds_balance"
            }
            BatchReason::CumulativeBelowClaimed => {
                "invalid_batch_settlement_evm_cumulative_below_claimed"
            }
            BatchReason::ChannelNotFound => "invalid_batch_settlement_evm_channel_not_found",
            BatchReason::DepositValidAfter => {
                "invalid_batch_settlement_evm_payload_authorization_valid_after"
            }
            BatchReason::DepositValidBefore => {
                "invalid_batch_settlement_evm_payload_authorization_valid_before"
            }
            BatchReason::DepositSignature => {
                "invalid_batch_settlement_evm_receive_authorization_signature"
            }
            BatchReason::DepositMethod => {
                "invalid_batch_settlement_evm_erc3009_authorization_required"
            }
        }
    }
}

fn amount(text: &str) -> Result<u128, BatchReason> {
    if text.is_empty() || text.len() > 39 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BatchReason::Payload);
    }
    text.parse().map_err(|_| BatchReason::Payload)
}

/// Whether a signature has the one form the contracts' `ecrecover` takes: 65 bytes with v 27 or
/// 28 (it is passed on as it is; recovery also accepts 0/1 and EIP-155 values for the same
/// signer, which the chain would refuse at claim time, after the content went out). High S is
/// refused by recovery.
fn contract_form(signature: &[u8]) -> bool {
    signature.len() == 65 && matches!(signature[64], 27 | 28)
}

fn signature_bytes(text: &str) -> Result<Vec<u8>, BatchReason> {
    let hex = text.strip_prefix("0x").ok_or(BatchReason::Payload)?;
    if hex.len() > 4096 {
        return Err(BatchReason::Payload);
    }
    alloy_primitives::hex::decode(hex).map_err(|_| BatchReason::Payload)
}

/// A payload that passed every check that needs no chain: its channel, its voucher's
/// signature and ceiling against `view`, and a deposit's authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedBatch {
    /// The channel id.
    pub channel: B256,
    /// The typed configuration (for claims and refunds).
    pub config: ChannelConfig,
    /// The voucher's ceiling.
    pub max_claimable: u128,
    /// The voucher's signature.
    pub signature: Vec<u8>,
    /// What a deposit adds (0 for the other kinds).
    pub deposit: u128,
    /// A refund's requested amount (`None`: all of the rest, or not a refund).
    pub refund: Option<u128>,
    /// Signatures only the chain can check (the payer is a contract, EIP-1271): the payload is
    /// valid only once each is confirmed there.
    pub on_chain: Vec<ChainSignature>,
}

/// A signature for the chain to check: `signer`'s `isValidSignature(digest, signature)`, as the
/// contracts' `SignatureChecker` does when the signature does not recover to the signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSignature {
    /// The contract account that must accept it.
    pub signer: Address,
    /// What was signed.
    pub digest: B256,
    /// The signature, as sent.
    pub signature: Vec<u8>,
    /// The refusal when it is not accepted.
    pub reason: BatchReason,
}

/// `signer`'s signature of `digest` as the contracts' `SignatureChecker` takes it: recovered
/// here when it is an EOA's (in the one form `ecrecover` takes); else, when `terms` take
/// contract accounts, left for the chain to confirm (`Some`); else refused with `reason`.
fn signed_by(
    (signer, digest, signature): (Address, B256, &[u8]),
    terms: &BatchTerms,
    reason: BatchReason,
) -> Result<Option<ChainSignature>, BatchReason> {
    if contract_form(signature) && crate::exact::recover_signer(&digest, signature) == Some(signer)
    {
        return Ok(None);
    }
    if !terms.contract_payers {
        return Err(reason);
    }
    Ok(Some(ChainSignature {
        signer,
        digest,
        signature: signature.to_vec(),
        reason,
    }))
}

/// Checks the channel a payload names against the offer, and its voucher's signature.
fn check_channel(payload: &BatchPayload, terms: &BatchTerms) -> Result<CheckedBatch, BatchReason> {
    let (config, voucher) = payload.parts();
    if config.receiver != terms.pay_to {
        return Err(BatchReason::ReceiverMismatch);
    }
    if config.receiver_authorizer != terms.receiver_authorizer {
        return Err(BatchReason::ReceiverAuthorizerMismatch);
    }
    if config.token != terms.asset {
        return Err(BatchReason::TokenMismatch);
    }
    if config.withdraw_delay != terms.withdraw_delay {
        return Err(BatchReason::WithdrawDelayMismatch);
    }
    let typed = config.typed().ok_or(BatchReason::Payload)?;
    let channel = channel_id(&typed, terms.chain_id);
    if channel != voucher.channel_id {
        return Err(BatchReason::ChannelIdMismatch);
    }
    let max_claimable = amount(&voucher.max_claimable_amount)?;
    let signature = signature_bytes(&voucher.signature)?;
    let digest = voucher_digest(channel, max_claimable, terms.chain_id);
    let mut on_chain = Vec::new();
    if config.payer_authorizer.is_zero() {
        // The payer signs, and may be a contract: the chain confirms what does not recover.
        let signed = (config.payer, digest, signature.as_slice());
        on_chain.extend(signed_by(signed, terms, BatchReason::ContractSignature)?);
    } else if !contract_form(&signature)
        || crate::exact::recover_signer(&digest, &signature) != Some(config.payer_authorizer)
    {
        return Err(BatchReason::VoucherSignature);
    }
    Ok(CheckedBatch {
        channel,
        config: typed,
        max_claimable,
        signature,
        deposit: 0,
        refund: None,
        on_chain,
    })
}

/// Checks a deposit's ERC-3009 authorization: from the payer to the deposit collector, for the
/// deposit's amount, with the channel's nonce, signed by the payer, valid now. A contract
/// payer's signature (when the terms take them) is left for the chain (`checked.on_chain`):
/// USDC takes EIP-1271 signatures too.
fn check_deposit(
    deposit: &DepositJson,
    checked: &mut CheckedBatch,
    terms: &BatchTerms,
    now: u64,
) -> Result<u128, BatchReason> {
    let methods = &deposit.authorization;
    if methods.erc3009_authorization.is_some() && methods.permit2_authorization.is_some() {
        // Exactly one way of moving the tokens.
        return Err(BatchReason::Payload);
    }
    let auth = methods
        .erc3009_authorization
        .as_ref()
        .ok_or(BatchReason::DepositMethod)?;
    let value = amount(&deposit.amount)?;
    let valid_after = amount(&auth.valid_after)?;
    let valid_before = amount(&auth.valid_before)?;
    if value == 0 {
        return Err(BatchReason::Payload);
    }
    if valid_after > u128::from(now) {
        return Err(BatchReason::DepositValidAfter);
    }
    if valid_before < u128::from(now) + u128::from(crate::exact::VALID_BEFORE_BUFFER_SECONDS) {
        return Err(BatchReason::DepositValidBefore);
    }
    let digest = deposit_digest(
        terms,
        checked.config.payer,
        checked.channel,
        value,
        (valid_after, valid_before),
        auth.salt,
    );
    let signature = signature_bytes(&auth.signature)?;
    let signed = (checked.config.payer, digest, signature.as_slice());
    let on_chain = signed_by(signed, terms, BatchReason::DepositSignature)?;
    checked.on_chain.extend(on_chain);
    Ok(value)
}

/// Checks a payment payload with no call to the chain: the channel against the offer, the
/// voucher's signature (an EOA payer authorizer; a contract's needs the chain), a deposit's
/// authorization, and the voucher's ceiling against what the server charged and the channel's
/// mirrored balance. A paid voucher must ask exactly `charged + price`; a refund's exactly
/// `charged`.
pub fn check_payload(
    payload: &BatchPayload,
    terms: &BatchTerms,
    view: &ChannelView,
    now: u64,
) -> Result<CheckedBatch, BatchReason> {
    let checked = check_signed(payload, terms)?;
    check_state(payload, checked, terms, view, now)
}

/// The checks that need no channel state: the configuration against the offer and the voucher's
/// signature. Enough to know the payload comes from the channel's payer.
pub fn check_signed(
    payload: &BatchPayload,
    terms: &BatchTerms,
) -> Result<CheckedBatch, BatchReason> {
    check_channel(payload, terms)
}

/// The rest of [`check_payload`], for a payload [`check_signed`] passed: the deposit's
/// authorization and the voucher's ceiling against the channel's state.
pub fn check_state(
    payload: &BatchPayload,
    mut checked: CheckedBatch,
    terms: &BatchTerms,
    view: &ChannelView,
    now: u64,
) -> Result<CheckedBatch, BatchReason> {
    let max = checked.max_claimable;
    if let BatchPayload::Deposit { deposit, .. } = payload {
        checked.deposit = check_deposit(deposit, &mut checked, terms, now)?;
    }
    let funds = view.balance.saturating_add(checked.deposit);
    if funds == 0 {
        return Err(BatchReason::ChannelNotFound);
    }
    match payload {
        BatchPayload::Refund { amount: asked, .. } => {
            checked.refund = match asked.as_deref().map(amount).transpose()? {
                Some(0) => return Err(BatchReason::Payload),
                other => other,
            };
            if max != view.charged {
                return Err(BatchReason::CumulativeMismatch);
            }
            if max < view.total_claimed {
                return Err(BatchReason::CumulativeBelowClaimed);
            }
        }
        _ => {
            if Some(max) != view.charged.checked_add(terms.amount) {
                return Err(BatchReason::CumulativeMismatch);
            }
            if max > funds {
                return Err(BatchReason::CumulativeExceedsBalance);
            }
            if max <= view.total_claimed {
                return Err(BatchReason::CumulativeBelowClaimed);
            }
        }
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{b256, hex};

    /// The channel of the reference client's deposit on the local chain (anvil #1 pays anvil #2,
    /// chain 84532), with the digests the deployed contract's own view functions return.
    fn reference_config() -> ChannelConfig {
        ChannelConfig {
            payer: address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            payerAuthorizer: address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            receiver: address!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
            receiverAuthorizer: address!("0xF700794002FA597b646764b9422954303bab2003"),
            token: address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
            withdrawDelay: alloy_primitives::aliases::U40::from(900u64),
            salt: B256::ZERO,
        }
    }

    const CHANNEL: B256 =
        b256!("0x36019b206adfd1569f695771aa56534a4fcffd032efad72948e0e8b8016aac21");

    #[test]
    fn a_configuration_in_payload_form_is_the_same_channel() {
        let config = reference_config();
        let json = ChannelConfigJson::from(&config);
        assert_eq!(json.typed(), Some(config));
        let text = serde_json::to_value(&json).unwrap();
        assert_eq!(text["withdrawDelay"], 900);
        assert_eq!(
            serde_json::from_value::<ChannelConfigJson>(text).unwrap(),
            json
        );
    }

    #[test]
    fn digests_match_the_reference_client_and_the_contract() {
        assert_eq!(
            domain(84_532).separator(),
            b256!("0xfdef80764086b1e0fc6ba99f0cb9aa1d59109fda7c23d60334c89d2de44dffce")
        );
        assert_eq!(channel_id(&reference_config(), 84_532), CHANNEL);
        assert_ne!(
            channel_id(&reference_config(), 8453),
            CHANNEL,
            "chain-bound"
        );
        assert_eq!(
            voucher_digest(CHANNEL, 1000, 84_532),
            b256!("0xbd55a8325f82aced1ea33e9b10bd788439bb963c1eb3c47c7c4d32eb1f188e71")
        );
        assert_eq!(
            refund_digest(CHANNEL, U256::ZERO, 1000, 84_532),
            b256!("0x6856f69fe1ac2b6639f05f491ebe9ca79b521a255d2e5fcf915f97d283285a2b")
        );
        let claims = vec![ClaimEntry {
            channelId: CHANNEL,
            maxClaimableAmount: 4000,
            totalClaimed: 4000,
        }];
        assert_eq!(
            claim_batch_digest(claims, 84_532),
            b256!("0x3f0dc9b94957cddf1ad2acaa4e6cd15d76cece9c07893256e557908b31bc3a65")
        );
        let salt = U256::from_be_bytes(
            b256!("0x6deedbde0dd64b70eca608aca7fa60654ede80c487c361b7e1aefa203ea55976").0,
        );
        assert_eq!(
            deposit_nonce(CHANNEL, salt),
            b256!("0x5f21785ce64d39ddc325eccda7d9c284a143fdb54a36c0b03679d177adda096a")
        );
    }

    #[test]
    fn reference_signatures_recover_to_their_signers() {
        let voucher = hex!(
            "769027891aed9baf8282720f1c4a429282c771efa99f5b2ce40d29941f915fe07b3b397013f515a1daa92dae2638069265f728b0d78b0732159bfa14d80fbb9b1b"
        );
        assert_eq!(
            crate::exact::recover_signer(&voucher_digest(CHANNEL, 4000, 84_532), &voucher),
            Some(address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"))
        );
        let claim = hex!(
            "87fab603adbd7bffba4ec5a1e4c4ef2f43e25ba0696aa9ac36bea05923f555a86a0fb67ab3af45cfa84aa51819935c27287c755fe73d6a953fe2de2f37afbc5e1c"
        );
        let digest = claim_batch_digest(
            vec![ClaimEntry {
                channelId: CHANNEL,
                maxClaimableAmount: 4000,
                totalClaimed: 4000,
            }],
            84_532,
        );
        assert_eq!(
            crate::exact::recover_signer(&digest, &claim),
            Some(address!("0xF700794002FA597b646764b9422954303bab2003"))
        );
    }

    #[test]
    fn payload_configs_parse_as_the_reference_client_writes_them() {
        let json = serde_json::json!({
            "payer": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "payerAuthorizer": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "receiver": "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
            "receiverAuthorizer": "0xF700794002FA597b646764b9422954303bab2003",
            "token": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "withdrawDelay": 900,
            "salt": "0x0000000000000000000000000000000000000000000000000000000000000000"
        });
        let config: ChannelConfigJson = serde_json::from_value(json).unwrap();
        assert_eq!(config.typed().unwrap(), reference_config());
        let too_long = ChannelConfigJson {
            withdraw_delay: 1 << 40,
            ..config
        };
        assert!(too_long.typed().is_none());
    }

    fn terms() -> BatchTerms {
        BatchTerms {
            chain_id: 84_532,
            pay_to: address!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
            asset: address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
            asset_domain: ("USDC".into(), "2".into()),
            amount: 1000,
            receiver_authorizer: address!("0xF700794002FA597b646764b9422954303bab2003"),
            withdraw_delay: 900,
            contract_payers: false,
        }
    }

    /// The reference client's first payment on the local chain: a deposit of 5000 with a
    /// voucher for 1000.
    fn reference_deposit() -> BatchPayload {
        serde_json::from_value(serde_json::json!({
            "type": "deposit",
            "channelConfig": {
                "payer": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                "payerAuthorizer": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                "receiver": "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
                "receiverAuthorizer": "0xF700794002FA597b646764b9422954303bab2003",
                "token": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                "withdrawDelay": 900,
                "salt": "0x0000000000000000000000000000000000000000000000000000000000000000"
            },
            "voucher": {
                "channelId": "0x36019b206adfd1569f695771aa56534a4fcffd032efad72948e0e8b8016aac21",
                "maxClaimableAmount": "1000",
                "signature": "0xe80945a979736560ae24e638b56d3ae6c8b5d614d7627d11771e47c12e75679e7ce35bbe142ec322a2ea895d77f825d55f3eba7cc70c234d11b6a21f7cfb3d871b"
            },
            "deposit": {
                "amount": "5000",
                "authorization": {
                    "erc3009Authorization": {
                        "validAfter": "0",
                        "validBefore": "1796039517",
                        "salt": "0x6deedbde0dd64b70eca608aca7fa60654ede80c487c361b7e1aefa203ea55976",
                        "signature": "0x16371d3f958eaadf664f64363b7ec2752169c8ad9c4b464729339f04fd5c768c779b8dcc66f602a480c8e1a60e686bbecfb41a5625f47fe1f13e0ff0623d360c1b"
                    }
                }
            }
        }))
        .unwrap()
    }

    const NOW: u64 = 1_796_036_000;

    #[test]
    fn the_reference_deposit_passes_and_each_change_is_refused_with_its_code() {
        let payload = reference_deposit();
        let fresh = ChannelView::default();
        let checked = check_payload(&payload, &terms(), &fresh, NOW).unwrap();
        assert_eq!(
            (checked.channel, checked.deposit, checked.max_claimable),
            (CHANNEL, 5000, 1000)
        );

        let refused = |terms: BatchTerms, view: ChannelView, now: u64| {
            check_payload(&payload, &terms, &view, now).unwrap_err()
        };
        let other = address!("0x0000000000000000000000000000000000000001");
        assert_eq!(
            refused(
                BatchTerms {
                    pay_to: other,
                    ..terms()
                },
                fresh,
                NOW
            ),
            BatchReason::ReceiverMismatch
        );
        assert_eq!(
            refused(
                BatchTerms {
                    receiver_authorizer: other,
                    ..terms()
                },
                fresh,
                NOW
            ),
            BatchReason::ReceiverAuthorizerMismatch
        );
        assert_eq!(
            refused(
                BatchTerms {
                    asset: other,
                    ..terms()
                },
                fresh,
                NOW
            ),
            BatchReason::TokenMismatch
        );
        assert_eq!(
            refused(
                BatchTerms {
                    withdraw_delay: 901,
                    ..terms()
                },
                fresh,
                NOW
            ),
            BatchReason::WithdrawDelayMismatch
        );
        assert_eq!(
            refused(
                BatchTerms {
                    chain_id: 8453,
                    ..terms()
                },
                fresh,
                NOW
            ),
            BatchReason::ChannelIdMismatch
        );
        // The server already charged 1000 on this channel: the voucher must ask 2000.
        let charged = ChannelView {
            charged: 1000,
            balance: 5000,
            total_claimed: 0,
        };
        assert_eq!(
            refused(terms(), charged, NOW),
            BatchReason::CumulativeMismatch
        );
        // Another price: the same voucher is not this request's.
        assert_eq!(
            refused(
                BatchTerms {
                    amount: 999,
                    ..terms()
                },
                fresh,
                NOW
            ),
            BatchReason::CumulativeMismatch
        );
        let claimed = ChannelView {
            charged: 0,
            balance: 0,
            total_claimed: 1000,
        };
        assert_eq!(
            refused(terms(), claimed, NOW),
            BatchReason::CumulativeBelowClaimed
        );
        assert_eq!(
            refused(terms(), fresh, 1_796_039_515),
            BatchReason::DepositValidBefore
        );
        // A deposit under another token domain is not the payer's signature.
        assert_eq!(
            refused(
                BatchTerms {
                    asset_domain: ("USD Coin".into(), "2".into()),
                    ..terms()
                },
                fresh,
                NOW
            ),
            BatchReason::DepositSignature
        );
    }

    fn voucher_of(payload: &BatchPayload) -> VoucherJson {
        payload.parts().1.clone()
    }

    #[test]
    fn tampered_payloads_are_refused() {
        let BatchPayload::Deposit {
            channel_config,
            voucher,
            deposit,
        } = reference_deposit()
        else {
            unreachable!()
        };
        let fresh = ChannelView::default();
        // A voucher with a ceiling its signature does not cover.
        let raised = BatchPayload::Deposit {
            channel_config: channel_config.clone(),
            voucher: VoucherJson {
                max_claimable_amount: "1001".into(),
                ..voucher.clone()
            },
            deposit: deposit.clone(),
        };
        let cheaper = BatchTerms {
            amount: 1001,
            ..terms()
        };
        assert_eq!(
            check_payload(&raised, &cheaper, &fresh, NOW).unwrap_err(),
            BatchReason::VoucherSignature
        );
        // The same signatures in encodings recovery takes but the contracts' ecrecover does not
        // (v as 0/1, or EIP-155 style): they recover to the same signer, and are refused.
        let reencoded = |text: &str, v: u8| {
            let mut bytes = signature_bytes(text).unwrap();
            bytes[64] = v + (bytes[64] - 27);
            format!("0x{}", alloy_primitives::hex::encode(bytes))
        };
        for v in [0, 35, 37] {
            let voucher = VoucherJson {
                signature: reencoded(&voucher.signature, v),
                ..voucher.clone()
            };
            let digest = voucher_digest(voucher.channel_id, 1000, terms().chain_id);
            let bytes = signature_bytes(&voucher.signature).unwrap();
            assert_eq!(
                crate::exact::recover_signer(&digest, &bytes),
                Some(channel_config.payer_authorizer),
                "v = {v}: the same signer"
            );
            let payload = BatchPayload::Deposit {
                channel_config: channel_config.clone(),
                voucher,
                deposit: deposit.clone(),
            };
            assert_eq!(
                check_payload(&payload, &terms(), &fresh, NOW).unwrap_err(),
                BatchReason::VoucherSignature,
                "voucher v = {v}"
            );
            let mut low = deposit.clone();
            let auth = low.authorization.erc3009_authorization.as_mut().unwrap();
            auth.signature = reencoded(&auth.signature, v);
            let payload = BatchPayload::Deposit {
                channel_config: channel_config.clone(),
                voucher: voucher_of(&reference_deposit()),
                deposit: low,
            };
            assert_eq!(
                check_payload(&payload, &terms(), &fresh, NOW).unwrap_err(),
                BatchReason::DepositSignature,
                "deposit v = {v}"
            );
        }
        // A bigger deposit than the payer authorized.
        let mut bigger = deposit.clone();
        bigger.amount = "50000".into();
        let bigger = BatchPayload::Deposit {
            channel_config: channel_config.clone(),
            voucher: voucher.clone(),
            deposit: bigger,
        };
        assert_eq!(
            check_payload(&bigger, &terms(), &fresh, NOW).unwrap_err(),
            BatchReason::DepositSignature
        );
        // Two ways of moving the deposit at once.
        let mut both = deposit.clone();
        both.authorization.permit2_authorization = Some(serde_json::json!({}));
        let both = BatchPayload::Deposit {
            channel_config: channel_config.clone(),
            voucher: voucher.clone(),
            deposit: both,
        };
        assert_eq!(
            check_payload(&both, &terms(), &fresh, NOW).unwrap_err(),
            BatchReason::Payload
        );
        // The same voucher without a deposit, on a channel with no balance.
        let bare = BatchPayload::Voucher {
            channel_config: channel_config.clone(),
            voucher: voucher.clone(),
        };
        assert_eq!(
            check_payload(&bare, &terms(), &fresh, NOW).unwrap_err(),
            BatchReason::ChannelNotFound
        );
        let funded = ChannelView {
            charged: 0,
            balance: 5000,
            total_claimed: 0,
        };
        assert!(check_payload(&bare, &terms(), &funded, NOW).is_ok());
        let short = ChannelView {
            charged: 0,
            balance: 999,
            total_claimed: 0,
        };
        assert_eq!(
            check_payload(&bare, &terms(), &short, NOW).unwrap_err(),
            BatchReason::CumulativeExceedsBalance
        );
        // A contract's signature (no payer authorizer) needs the chain.
        let contract_config = ChannelConfigJson {
            payer_authorizer: Address::ZERO,
            ..channel_config
        };
        let contract = BatchPayload::Voucher {
            voucher: VoucherJson {
                channel_id: channel_id(&contract_config.typed().unwrap(), 84_532),
                ..voucher
            },
            channel_config: contract_config,
        };
        assert_eq!(
            check_payload(&contract, &terms(), &funded, NOW).unwrap_err(),
            BatchReason::ContractSignature
        );
        // Where contract accounts may pay, the chain is asked to confirm it instead.
        let taking = BatchTerms {
            contract_payers: true,
            ..terms()
        };
        let left = check_payload(&contract, &taking, &funded, NOW).unwrap();
        let [asked] = left.on_chain.as_slice() else {
            panic!("{:?}", left.on_chain)
        };
        assert_eq!(asked.signer, contract.parts().0.payer);
        assert_eq!(asked.reason, BatchReason::ContractSignature);
        assert_eq!(asked.digest, voucher_digest(left.channel, 1000, 84_532));
        // An EOA's own signature is still checked here, and never left for the chain.
        let own = check_payload(&bare, &taking, &funded, NOW).unwrap();
        assert!(own.on_chain.is_empty());
        for bad in [
            serde_json::json!({"type": "voucher"}),
            serde_json::json!({"type": "claim", "claims": []}),
            serde_json::json!({"type": "voucher", "channelConfig": {}, "voucher": {}, "extra": 1}),
        ] {
            assert!(serde_json::from_value::<BatchPayload>(bad).is_err());
        }
        assert_eq!(amount("1e3"), Err(BatchReason::Payload));
        assert_eq!(amount(&"9".repeat(40)), Err(BatchReason::Payload));
    }

    #[test]
    fn a_refund_asks_exactly_what_was_charged() {
        let BatchPayload::Deposit { channel_config, .. } = reference_deposit() else {
            unreachable!()
        };
        // The reference client's refund after four paid reads of 1000.
        let refund: BatchPayload = serde_json::from_value(serde_json::json!({
            "type": "refund",
            "channelConfig": channel_config,
            "voucher": {
                "channelId": CHANNEL,
                "maxClaimableAmount": "4000",
                "signature": "0x769027891aed9baf8282720f1c4a429282c771efa99f5b2ce40d29941f915fe07b3b397013f515a1daa92dae2638069265f728b0d78b0732159bfa14d80fbb9b1b"
            }
        }))
        .unwrap();
        let view = ChannelView {
            charged: 4000,
            balance: 5000,
            total_claimed: 4000,
        };
        assert_eq!(
            check_payload(&refund, &terms(), &view, NOW)
                .unwrap()
                .max_claimable,
            4000
        );
        let BatchPayload::Refund {
            channel_config,
            voucher,
            ..
        } = refund.clone()
        else {
            unreachable!()
        };
        let partial = |amount: &str| BatchPayload::Refund {
            channel_config: channel_config.clone(),
            voucher: voucher.clone(),
            amount: Some(amount.into()),
        };
        assert_eq!(
            check_payload(&partial("500"), &terms(), &view, NOW)
                .unwrap()
                .refund,
            Some(500)
        );
        for bad in ["0", "-1", "1.5", ""] {
            assert_eq!(
                check_payload(&partial(bad), &terms(), &view, NOW).unwrap_err(),
                BatchReason::Payload,
                "{bad}"
            );
        }
        let more = ChannelView {
            charged: 3000,
            ..view
        };
        assert_eq!(
            check_payload(&refund, &terms(), &more, NOW).unwrap_err(),
            BatchReason::CumulativeMismatch
        );
    }

    #[test]
    fn calls_have_the_contracts_selectors() {
        use alloy_sol_types::SolCall;
        assert_eq!(IBatchSettlement::depositCall::SELECTOR, hex!("140f1e75"));
        assert_eq!(
            IBatchSettlement::claimWithSignatureCall::SELECTOR,
            hex!("e43ce1f2")
        );
        assert_eq!(IBatchSettlement::settleCall::SELECTOR, hex!("9db32a8f"));
        assert_eq!(
            IBatchSettlement::refundWithSignatureCall::SELECTOR,
            hex!("b77433e9")
        );
        assert_eq!(IBatchSettlement::multicallCall::SELECTOR, hex!("ac9650d8"));
        assert_eq!(
            IBatchSettlement::initiateWithdrawCall::SELECTOR,
            hex!("cf5cf3dc")
        );
        assert_eq!(
            IBatchSettlement::finalizeWithdrawCall::SELECTOR,
            hex!("e88377b1")
        );
        assert_eq!(IBatchSettlement::channelsCall::SELECTOR, hex!("7a7ebd7b"));
        assert_eq!(
            IBatchSettlement::pendingWithdrawalsCall::SELECTOR,
            hex!("b7f06ebe")
        );
        assert_eq!(
            IBatchSettlement::refundNonceCall::SELECTOR,
            hex!("f0dc792e")
        );
        assert_eq!(IBatchSettlement::receiversCall::SELECTOR, hex!("21ff6389"));
    }

    #[test]
    fn a_batch_offer_is_what_the_reference_client_reads() {
        use crate::{BatchOffer, Offer, OfferTerms, Registry, ResourceInfo};
        let registry = Registry::builtin();
        let terms = OfferTerms {
            asset: registry.usdc(84_532).unwrap().clone(),
            pay_to: address!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
            amount: U256::from(1000),
            max_timeout_seconds: 3600,
        };
        let resource = ResourceInfo {
            url: "http://hb402.test/paid".into(),
            description: None,
            mime_type: None,
        };
        let batch = BatchOffer {
            receiver_authorizer: address!("0xF700794002FA597b646764b9422954303bab2003"),
            withdraw_delay: 900,
            min_deposit: U256::from(10_000),
            contract_payers: false,
        };
        let exact = Offer::new(&registry, terms, &resource).unwrap();
        let offer = Offer::batch(&exact, batch);
        assert!(offer.v1.is_none(), "v2 only");
        let json = serde_json::to_value(&offer.v2).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "scheme": "batch-settlement",
                "network": "eip155:84532",
                "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                "amount": "1000",
                "payTo": "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
                "maxTimeoutSeconds": 3600,
                "extra": {
                    "receiverAuthorizer": "0xF700794002FA597b646764b9422954303bab2003",
                    "withdrawDelay": 900,
                    "name": "USDC",
                    "version": "2",
                    "minDeposit": "10000"
                }
            })
        );
        let terms = offer.batch_terms().unwrap();
        assert_eq!(terms.amount, 1000);
        assert_eq!(terms.withdraw_delay, 900);
    }
}
