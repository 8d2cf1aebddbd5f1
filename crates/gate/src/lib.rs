//! hb402-gate: the library behind the `hb402` proxy.
//!
//! - [`config`]: the TOML configuration, validated into a typed [`config::Config`];
//! - [`route`], [`policy`], [`range`]: pure decisions (which route, who may read what until
//!   when, which bytes);
//! - [`proxy`]: the Pingora `ProxyHttp` phases acting on those decisions; [`upload`] verifies
//!   uploads while they stream to the node; [`upstream`] and [`items`] read the node;
//! - [`facilitator`]: the settlement backends: an HTTP facilitator client and local settlement
//!   with an operator key over an EVM JSON-RPC;
//! - [`server::build`]: the whole server, for the binary, tests and benches.

pub mod admin;
pub mod config;
pub mod error;
pub mod facilitator;
pub mod gate;
pub mod items;
pub mod meta;
pub mod metrics;
pub mod paywall;
pub mod policy;
pub mod pricing;
pub mod proxy;
pub mod range;
pub mod receipt;
pub mod route;
pub mod server;
pub mod share;
pub mod store;
pub mod upload;
pub mod upstream;

pub use server::{Built, build, run_until};
