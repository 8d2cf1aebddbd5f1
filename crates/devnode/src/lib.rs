//! `hb402-devnode`: a development stand-in for a HyperBEAM node running Load's `~s3@1.0`
//! device — for tests, benches and the quick start only, **not** a replacement for HyperBEAM.
//!
//! It serves, from files under a data directory:
//!
//! - the `~s3@1.0` S3 API under `/~s3@1.0/`, quirks included: access-key-id parity only,
//!   ranged `GET` answered `200`, every `GetObject` error answered `500`, the response-header
//!   whitelist, `x-amz-meta-expiry-days` expiry (a "day" lasting
//!   [`DevnodeConfig::day_seconds`]), presigned URLs and the unauthenticated `/cache/` route;
//! - the bundler upload route `POST /~bundler@1.0/item?codec-device=ans104@1.0`, which
//!   verifies the DataItem and stores it at `offchain-dataitems/dataitems/<id>.ans104`;
//! - the hybrid gateway `GET /<id>` and `GET /~meta@1.0/info/address`.
//!
//! ```no_run
//! # async fn example() -> Result<(), hb402_devnode::DevnodeError> {
//! use hb402_devnode::{Devnode, DevnodeConfig, RouteKind, authorization_header};
//!
//! let mut config = DevnodeConfig::new("devnode-data");
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! let node = Devnode::start(config).await?;
//! let auth = authorization_header(node.access_key_id());
//! // … PUT {node.url()}/~s3@1.0/bucket with `Authorization: {auth}` …
//! assert_eq!(node.counters().requests(RouteKind::GetObject), 0);
//! node.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod auth;
mod bundler;
mod cache;
mod clock;
mod config;
mod counters;
mod error;
mod gateway;
mod listing;
mod node_key;
mod presign;
mod query;
mod range;
mod reply;
mod route;
mod s3;
mod server;
mod store;
mod xml;

pub use auth::authorization_header;
pub use bundler::{DATAITEMS_BUCKET, dataitem_key};
pub use config::{
    DEFAULT_ACCESS_KEY_ID, DEFAULT_DAY_SECONDS, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT, DevnodeConfig,
};
pub use counters::{Counters, RouteKind};
pub use error::DevnodeError;
pub use server::{Devnode, DevnodeHandle};
