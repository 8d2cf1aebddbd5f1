//! hb402-gate: the library behind the `hb402` proxy.
//!
//! - [`config`]: the TOML configuration, validated into a typed [`config::Config`];
//! - [`path`], [`route`]: every request path in one canonical form, classified into one of
//!   hb402's routes, an allowed pass-through, or a refusal (the edge is closed);
//! - `read`: DataItem reads planned without proxy types (link → metadata → policy → range →
//!   price → payment); `upload`: uploads verified while they stream, paid once stored;
//! - `payment`: one payment's typed lifecycle (held → settled, pending or given back);
//!   `paywall`: how it answers; `reply`: the one place refusals become replies;
//! - [`proxy`]: the thin Pingora adapter doing the I/O those modules decide;
//! - [`facilitator`], [`chain`]: settlement backends (an HTTP facilitator, or local settlement
//!   over an EVM JSON-RPC) and the chain view that resolves unknown settlements;
//! - [`store`], [`items`], [`janitor`]: state, item metadata, and its scheduled purge;
//! - [`server::build`]: the whole server, for the binary, tests and benches.

pub mod admin;
pub mod chain;
pub mod channels;
pub mod config;
pub mod error;
pub mod facilitator;
pub mod gate;
pub mod items;
pub mod janitor;
pub mod lease;
mod limiter;
pub mod meta;
pub mod metrics;
pub mod path;
mod payment;
mod paywall;
pub mod policy;
pub mod pricing;
pub mod proxy;
pub mod range;
mod read;
pub mod receipt;
mod reply;
pub mod route;
pub mod server;
pub mod share;
pub mod store;
pub(crate) mod upload;
pub mod upstream;

pub use server::{Built, build, run_until};
