//! Settlement backends implementing [`hb402_x402::Facilitator`].
//!
//! - [`HttpFacilitator`]: a remote facilitator (`/verify`, `/settle`, `/supported`), read
//!   strictly: anything that is not a clear verdict is a refusal (x402.md §3.1).
//! - [`LocalSettlement`]: verifies and settles EIP-3009 payments itself with an operator key over
//!   an EVM JSON-RPC, for operators who want no third party.

mod http;
mod local;
mod pipeline;

pub use http::{HttpFacilitator, HttpFacilitatorConfig};
pub(crate) use local::Sent;
pub use local::{LocalSettlement, LocalSettlementConfig};
pub use pipeline::MULTICALL3;
