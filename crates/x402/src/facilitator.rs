//! The settlement interface: what hb402 needs from a facilitator, whether remote (HTTP) or local
//! (an operator key over an EVM RPC).

use crate::types::{SettleResponse, Supported, VerifyRequest, VerifyResponse};

/// A facilitator failure that is not an answer: unreachable, timed out, or answering something
/// that is not a clear verdict. Every such failure is a refusal (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FacilitatorError {
    /// The facilitator could not be reached.
    #[error("facilitator unreachable: {0}")]
    Unreachable(String),
    /// The call did not finish in time.
    #[error("facilitator did not answer within {0} ms")]
    Timeout(u64),
    /// The answer is not a verdict (unexpected status, malformed or incomplete JSON).
    #[error("facilitator answered HTTP {status} without a usable verdict: {message}")]
    BadResponse {
        /// HTTP status (0 if none).
        status: u16,
        /// What was wrong.
        message: String,
    },
    /// The facilitator cannot handle this payment (network, asset or signature kind).
    #[error("facilitator cannot handle this payment: {0}")]
    Unsupported(String),
}

/// Verifies and settles payments.
#[async_trait::async_trait]
pub trait Facilitator: Send + Sync + std::fmt::Debug {
    /// What the facilitator supports.
    async fn supported(&self) -> Result<Supported, FacilitatorError>;

    /// Verifies a payment without moving funds. `Ok` with `is_valid: false` is a refusal with a
    /// reason; `Err` is a failure, also a refusal.
    async fn verify(&self, request: &VerifyRequest) -> Result<VerifyResponse, FacilitatorError>;

    /// Settles a payment on chain. `Ok` with `success: false` is a failed (or, with reason
    /// `settlement_pending`, not yet confirmed) settlement.
    async fn settle(&self, request: &VerifyRequest) -> Result<SettleResponse, FacilitatorError>;
}

/// The reason a facilitator gives for a transaction broadcast but not yet confirmed.
pub const SETTLEMENT_PENDING: &str = "settlement_pending";
