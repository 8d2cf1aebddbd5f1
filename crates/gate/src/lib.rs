//! hb402-gate: the library behind the `hb402` proxy.
//!
//! - [`config`]: the TOML configuration, validated into a typed [`config::Config`];
//! - [`facilitator`]: the settlement backends: an HTTP facilitator client and local settlement
//!   with an operator key over an EVM JSON-RPC.

pub mod config;
pub mod facilitator;
