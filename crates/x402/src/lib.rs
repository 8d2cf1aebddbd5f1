//! The x402 protocol for hb402, pure (no async runtime, no HTTP client; time is an argument).
//!
//! - [`types`]: v1 and v2 wire types;
//! - [`codec`]: the base64-JSON header codec with a size bound;
//! - [`network`]: networks (v1 names, CAIP-2, chain ids) and USDC with its EIP-712 domains;
//! - [`offer`]: byte-stable offers from a price, and matching a payment to its offer;
//! - [`exact`]: local verification of the EVM `exact` scheme (EIP-3009);
//! - [`batch`]: the EVM `batch-settlement` scheme's payloads, channel ids and EIP-712 digests;
//! - [`facilitator`]: the [`Facilitator`] trait that settlement backends implement.

pub mod batch;
pub mod client;
pub mod codec;
pub mod exact;
pub mod facilitator;
pub mod network;
pub mod offer;
pub mod types;

pub use codec::{DecodedPayment, decode_payment, encode_header};
pub use exact::{LocallyVerified, Reason, Refusal, verify_locally};
pub use facilitator::{Facilitator, FacilitatorError};
pub use network::{Asset, Network, Registry};
pub use offer::{BatchOffer, Offer, OfferTerms, match_offer, match_offers, parse_price};
pub use types::*;
