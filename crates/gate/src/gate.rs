//! The state shared by every request of a running hb402.

use std::sync::Arc;

use crate::config::Config;
use crate::items::Items;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::upstream::Upstream;

/// Everything a request may need.
#[derive(Debug)]
pub struct Gate {
    /// The configuration.
    pub config: Arc<Config>,
    /// The node's S3 API.
    pub upstream: Arc<Upstream>,
    /// Item metadata.
    pub items: Items,
    /// State.
    pub store: Arc<dyn Store>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The settlement backend, when payments are enabled.
    pub facilitator: Option<Arc<dyn hb402_x402::Facilitator>>,
    /// Key of payment receipts.
    pub receipt_key: Vec<u8>,
    /// What the chain says of a settlement hb402 was not told the outcome of, when an RPC is
    /// configured.
    pub chain: Option<crate::chain::ChainProbe>,
    /// `batch-settlement` channels, when offered.
    pub channels: Option<Arc<crate::channels::Channels>>,
    /// Payers that keep failing.
    pub(crate) limiter: crate::limiter::FailureLimiter,
    /// Uploads in progress (`limits.max_concurrent_uploads`).
    pub(crate) uploads: tokio::sync::Semaphore,
    /// Uploads in progress per client (`limits.max_uploads_per_client`).
    pub(crate) upload_slots: std::sync::Arc<crate::limiter::ClientSlots>,
}
