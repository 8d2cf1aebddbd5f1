//! Wire types of x402 v1 and v2 (camelCase JSON; amounts are decimal strings in atomic units).
//!
//! Fields a client may extend are kept as JSON values so that what hb402 forwards to a
//! facilitator is what the client sent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `x402Version` of v1.
pub const V1: u32 = 1;
/// The `x402Version` of v2.
pub const V2: u32 = 2;

/// v2 `ResourceInfo`: what is being paid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    /// Absolute URL of the resource.
    pub url: String,
    /// Human description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// MIME type of the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// v2 `PaymentRequirements`: one offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// `exact`.
    pub scheme: String,
    /// CAIP-2 network, e.g. `eip155:84532`.
    pub network: String,
    /// Price in atomic units.
    pub amount: String,
    /// Token contract address.
    pub asset: String,
    /// Recipient address.
    pub pay_to: String,
    /// The client sets `validBefore = now + maxTimeoutSeconds`.
    pub max_timeout_seconds: u64,
    /// For EVM `exact`: the token's EIP-712 domain `{name, version}`. Always sent (TypeScript
    /// clients type it as required).
    #[serde(default)]
    pub extra: Map<String, Value>,
}

/// v2 `PaymentRequired`: the 402 challenge carried in the `PAYMENT-REQUIRED` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// 2.
    pub x402_version: u32,
    /// Why payment is required (the refusal reason on a retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The resource.
    pub resource: ResourceInfo,
    /// The offers.
    pub accepts: Vec<PaymentRequirements>,
    /// Extensions the client must echo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
}

/// v1 `PaymentRequirements`. Legacy clients validate every field (zod): `resource` must be an
/// absolute URL and `description`/`mimeType` must be present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirementsV1 {
    /// `exact`.
    pub scheme: String,
    /// v1 network name, e.g. `base-sepolia`.
    pub network: String,
    /// Price in atomic units.
    pub max_amount_required: String,
    /// Absolute URL of the resource.
    pub resource: String,
    /// Human description (may be empty, must be present).
    pub description: String,
    /// MIME type (may be empty, must be present).
    pub mime_type: String,
    /// Optional request/response description. Omitted rather than `null`: the legacy schema
    /// accepts a missing field but not `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Recipient address.
    pub pay_to: String,
    /// Validity window the client should use.
    pub max_timeout_seconds: u64,
    /// Token contract address.
    pub asset: String,
    /// EIP-712 domain `{name, version}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
}

/// The v1 402 body `{x402Version: 1, error, accepts}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV1 {
    /// 1.
    pub x402_version: u32,
    /// Why payment is required.
    pub error: String,
    /// The offers.
    pub accepts: Vec<PaymentRequirementsV1>,
}

/// EIP-3009 `TransferWithAuthorization` fields as clients send them (decimal and hex strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Eip3009Authorization {
    /// Payer.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// Amount in atomic units, decimal.
    pub value: String,
    /// Unix seconds, decimal.
    pub valid_after: String,
    /// Unix seconds, decimal.
    pub valid_before: String,
    /// 32 bytes, `0x` + 64 hex digits.
    pub nonce: String,
}

/// The EVM `exact` payload: `{signature, authorization}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExactEvmPayload {
    /// `0x`-prefixed hex; 65 bytes for an externally owned account, longer for smart wallets.
    pub signature: String,
    /// The authorization.
    pub authorization: Eip3009Authorization,
}

/// v2 `PaymentPayload` (the `PAYMENT-SIGNATURE` header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV2 {
    /// 2.
    pub x402_version: u32,
    /// Copied from the challenge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// A verbatim copy of the chosen offer.
    pub accepted: PaymentRequirements,
    /// Scheme-specific payload.
    pub payload: Value,
    /// Echoed extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// v1 `PaymentPayload` (the `X-PAYMENT` header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV1 {
    /// 1.
    pub x402_version: u32,
    /// `exact`.
    pub scheme: String,
    /// v1 network name.
    pub network: String,
    /// Scheme-specific payload.
    pub payload: Value,
}

/// A payment payload of either version.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one payload per paid request; boxing would only add an allocation"
)]
pub enum PaymentPayload {
    /// From `X-PAYMENT`.
    V1(PaymentPayloadV1),
    /// From `PAYMENT-SIGNATURE`.
    V2(PaymentPayloadV2),
}

impl PaymentPayload {
    /// The protocol version.
    pub fn version(&self) -> u32 {
        match self {
            PaymentPayload::V1(_) => V1,
            PaymentPayload::V2(_) => V2,
        }
    }

    /// The scheme-specific payload.
    pub fn payload(&self) -> &Value {
        match self {
            PaymentPayload::V1(p) => &p.payload,
            PaymentPayload::V2(p) => &p.payload,
        }
    }
}

/// Body of the facilitator's `POST /verify` and `POST /settle`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRequest {
    /// The payload's version.
    pub x402_version: u32,
    /// The client's payload, verbatim.
    pub payment_payload: Value,
    /// The server's own offer (v1 or v2 shape), not the client's copy.
    pub payment_requirements: Value,
}

/// The facilitator's answer to `/verify`. A body without `isValid` does not parse: it is not an
/// answer (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether the payment is valid.
    pub is_valid: bool,
    /// Machine reason when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// Human text when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    /// The payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// The settlement result (facilitator `/settle` body, and the `PAYMENT-RESPONSE` header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    /// Whether the transfer happened.
    pub success: bool,
    /// Machine reason when it did not (x402-rs may spell it `error_reason`).
    #[serde(
        default,
        alias = "error_reason",
        skip_serializing_if = "Option::is_none"
    )]
    pub error_reason: Option<String>,
    /// Human text when it did not.
    #[serde(
        default,
        alias = "error_message",
        skip_serializing_if = "Option::is_none"
    )]
    pub error_message: Option<String>,
    /// The payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Transaction hash; empty on failure (except `settlement_pending`).
    #[serde(default)]
    pub transaction: String,
    /// The network (v2: CAIP-2; v1: the name).
    #[serde(default)]
    pub network: String,
}

/// One `(version, scheme, network)` a facilitator supports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    /// Protocol version.
    pub x402_version: u32,
    /// Scheme.
    pub scheme: String,
    /// Network (v1 name or CAIP-2).
    pub network: String,
    /// Scheme data such as a Solana fee payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// The facilitator's `GET /supported` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Supported {
    /// Supported kinds.
    pub kinds: Vec<SupportedKind>,
    /// Extension names.
    #[serde(default)]
    pub extensions: Vec<String>,
    /// Signer addresses per network.
    #[serde(default)]
    pub signers: Map<String, Value>,
}

impl Supported {
    /// Whether `(version, scheme, network)` is listed.
    pub fn supports(&self, version: u32, scheme: &str, network: &str) -> bool {
        self.kinds
            .iter()
            .any(|k| k.x402_version == version && k.scheme == scheme && k.network == network)
    }
}
