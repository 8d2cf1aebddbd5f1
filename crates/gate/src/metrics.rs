//! Prometheus metrics, served in the text format on the admin listener.
//!
//! [`Metrics`] owns its own [`Registry`] (not the process-wide default one), so several hb402
//! servers can run in one process. Every label value comes from an enum of this module (or, for
//! networks and assets, from the configured registry), so series stay bounded: never ids,
//! addresses or raw paths. `docs/metrics.md` lists every metric; a test keeps it complete.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $value:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in documentation order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// Its position in [`Self::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

label_enum! {
    /// `route`: which kind of route a request took.
    RouteLabel {
        /// `/<id>`, `/resolve/<id>`: the data field.
        Data => "data",
        /// `/binary/<id>`: the whole item.
        Binary => "binary",
        /// `/~s3@1.0/<bucket>/<key>.ans104`.
        Raw => "raw",
        /// `/protected/resolve/…`: a paywalled share link.
        Protected => "protected",
        /// The upload routes.
        Upload => "upload",
        /// Forwarded to the node: an allowed pass-through prefix.
        Passthrough => "passthrough",
        /// CORS preflight answered at the edge.
        Preflight => "preflight",
        /// Anything else hb402 refused itself (unknown paths, the node's S3 API, bad paths).
        Other => "other",
    }
}

label_enum! {
    /// `outcome`: how a request ended.
    Outcome {
        /// 2xx (but 206) or 3xx (but 304).
        Ok => "ok",
        /// 206.
        Partial => "partial",
        /// 304.
        NotModified => "not_modified",
        /// 400 and other client errors without their own value.
        BadRequest => "bad_request",
        /// 401.
        Unauthorized => "unauthorized",
        /// 402.
        PaymentRequired => "payment_required",
        /// 403.
        Forbidden => "forbidden",
        /// 404.
        NotFound => "not_found",
        /// 410.
        Gone => "gone",
        /// 413.
        TooLarge => "too_large",
        /// 429.
        TooManyRequests => "too_many_requests",
        /// 416.
        RangeNotSatisfiable => "range_not_satisfiable",
        /// 502, 503, 504: the node failed.
        UpstreamError => "upstream_error",
        /// Other 5xx, or no response.
        Internal => "internal",
    }
}

impl Outcome {
    /// The outcome of a response status.
    pub fn from_status(status: u16) -> Outcome {
        match status {
            206 => Outcome::Partial,
            304 => Outcome::NotModified,
            200..=399 => Outcome::Ok,
            401 => Outcome::Unauthorized,
            402 => Outcome::PaymentRequired,
            403 => Outcome::Forbidden,
            404 => Outcome::NotFound,
            410 => Outcome::Gone,
            413 => Outcome::TooLarge,
            429 => Outcome::TooManyRequests,
            416 => Outcome::RangeNotSatisfiable,
            400..=499 => Outcome::BadRequest,
            502..=504 => Outcome::UpstreamError,
            _ => Outcome::Internal,
        }
    }
}

label_enum! {
    /// `result` of `hb402_payments_total`: what became of a payment attempt that reached the
    /// paywall with a payment header.
    PaymentResult {
        /// Settled; the content was served.
        Settled => "settled",
        /// Refused by hb402's local checks (amount, recipient, time window, signature).
        Rejected => "rejected",
        /// The authorization was already used or in use (replay lock).
        Replayed => "replayed",
        /// The facilitator refused `/verify`.
        VerifyFailed => "verify_failed",
        /// Settlement failed; nothing was served.
        SettleFailed => "settle_failed",
        /// The facilitator could not be reached or answered unclearly (fail closed).
        FacilitatorError => "facilitator_error",
        /// Verified, then abandoned without settlement because the request could not be served.
        Released => "released",
        /// Settlement attempted, its outcome not known yet: the authorization stays locked and
        /// its retry converges.
        Pending => "pending",
        /// Refused without asking the facilitator: the payer failed too often recently.
        Throttled => "throttled",
    }
}

label_enum! {
    /// `reason` of `hb402_payment_required_total`: why a 402 was answered.
    PaymentRequiredReason {
        /// No payment header: the challenge.
        Missing => "missing",
        /// The payment header could not be decoded, or is too large.
        Malformed => "malformed",
        /// The payment matches no offer (scheme, network, requirements).
        NoMatchingOffer => "no_matching_offer",
        /// A local check failed (recipient, amount, time window, signature).
        Invalid => "invalid",
        /// The authorization was already used or is in use.
        Replay => "replay",
        /// The facilitator refused `/verify`.
        VerifyFailed => "verify_failed",
        /// Settlement failed.
        SettleFailed => "settle_failed",
        /// The facilitator could not be reached or answered unclearly.
        FacilitatorUnavailable => "facilitator_unavailable",
    }
}

impl From<hb402_x402::Reason> for PaymentRequiredReason {
    fn from(reason: hb402_x402::Reason) -> Self {
        use hb402_x402::Reason as R;
        match reason {
            R::InvalidX402Version | R::InvalidPayload => PaymentRequiredReason::Malformed,
            R::InvalidScheme | R::InvalidNetwork | R::InvalidPaymentRequirements => {
                PaymentRequiredReason::NoMatchingOffer
            }
            R::DuplicateSettlement => PaymentRequiredReason::Replay,
            R::RecipientMismatch
            | R::ValueMismatch
            | R::ValueMismatchV1
            | R::ValidAfter
            | R::ValidBefore
            | R::Signature => PaymentRequiredReason::Invalid,
            // Reasons added later are local refusals until mapped more precisely.
            _ => PaymentRequiredReason::Invalid,
        }
    }
}

label_enum! {
    /// `event` of `hb402_channel_events_total`: what happened on `batch-settlement` channels.
    ChannelEvent {
        /// A deposit confirmed on chain.
        Deposit => "deposit",
        /// A voucher's charge committed (its response was sent whole).
        Voucher => "voucher",
        /// A voucher accepted whose response did not go out whole: nothing was charged.
        Uncharged => "uncharged",
        /// A voucher refused (signature, ceiling, balance, withdrawal).
        Refused => "refused",
        /// A 402 that told the payer the channel's state (a stale cumulative amount).
        Corrected => "corrected",
        /// A request refused because another one held the channel too long.
        Busy => "busy",
        /// A cooperative refund paid.
        Refund => "refund",
        /// A claim transaction confirmed.
        Claim => "claim",
        /// A `settle` transaction confirmed.
        Settle => "settle",
        /// A deposit, claim, settle or refund transaction that failed or was not confirmed.
        ChainFailure => "chain_failure",
    }
}

label_enum! {
    /// `kind` of `hb402_channel_amount_atomic_total`.
    ChannelAmount {
        /// Deposited into channels paying this gateway.
        Deposited => "deposited",
        /// Charged by vouchers.
        Charged => "charged",
        /// Claimed on chain.
        Claimed => "claimed",
        /// Swept to the payees by `settle`.
        Settled => "settled",
        /// Refunded to payers.
        Refunded => "refunded",
    }
}

label_enum! {
    /// `op` of `hb402_facilitator_duration_seconds`.
    FacilitatorOp {
        /// `GET /supported`.
        Supported => "supported",
        /// `POST /verify` (or the local equivalent).
        Verify => "verify",
        /// `POST /settle` (or the local transaction).
        Settle => "settle",
    }
}

label_enum! {
    /// `cache` of `hb402_cache_requests_total`.
    CacheLabel {
        /// The in-memory item metadata cache.
        Metadata => "metadata",
        /// The edge cache of whole items' bytes (a miss reads the item from the node).
        Items => "items",
        /// The persistent store, asked when the memory cache misses.
        Store => "store",
        /// The facilitator's cached `/supported` answer.
        Supported => "supported",
    }
}

label_enum! {
    /// `result` of `hb402_cache_requests_total`.
    CacheResult {
        /// Found.
        Hit => "hit",
        /// Not found; the next level was asked.
        Miss => "miss",
    }
}

label_enum! {
    /// Where item metadata was found (records the two cache levels at once).
    MetaSource {
        /// The memory cache.
        Memory => "memory",
        /// The store (memory missed).
        Store => "store",
        /// Neither: read from the node.
        Upstream => "upstream",
    }
}

label_enum! {
    /// `result` of `hb402_uploads_total`.
    UploadResult {
        /// Verified and stored upstream.
        Stored => "stored",
        /// Already stored: answered without a second write.
        Duplicate => "duplicate",
        /// Not a valid DataItem (malformed, bad signature, truncated, id mismatch).
        Invalid => "invalid",
        /// Larger than `limits.max_upload_bytes`.
        TooLarge => "too_large",
        /// Payment required and not (yet) made.
        Unpaid => "unpaid",
        /// The node failed to store it.
        UpstreamError => "upstream_error",
        /// Refused for another reason (bad headers, bucket, expiry).
        Rejected => "rejected",
    }
}

/// A `network` label value: only built from a registered network, so bounded by configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetworkLabel(String);

impl NetworkLabel {
    /// The v1 name (`base-sepolia`), else the CAIP-2 id (`eip155:42161`).
    pub fn new(network: &hb402_x402::Network) -> Self {
        NetworkLabel(network.v1_name.clone().unwrap_or_else(|| network.caip2()))
    }

    /// The label value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An `asset` label value: only built from a registered asset, so bounded by configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssetLabel(String);

impl AssetLabel {
    /// The asset's symbol (`USDC`).
    pub fn new(asset: &hb402_x402::Asset) -> Self {
        AssetLabel(asset.symbol.clone())
    }

    /// The label value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Request latencies: from sub-millisecond cache answers to long streamed downloads.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The children of a metric vector, each resolved on its first use: the per-request path then
/// skips hashing its label values (the series exported are the same).
#[derive(Debug)]
struct Resolved<T>(Box<[std::sync::OnceLock<T>]>);

impl<T> Resolved<T> {
    fn new(len: usize) -> Arc<Self> {
        Arc::new(Resolved(
            (0..len).map(|_| std::sync::OnceLock::new()).collect(),
        ))
    }

    fn get(&self, index: usize, make: impl FnOnce() -> T) -> &T {
        self.0[index].get_or_init(make)
    }
}

/// hb402's metrics and the registry that serves them.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    requests_by: Arc<Resolved<IntCounter>>,
    request_duration: HistogramVec,
    request_duration_by: Arc<Resolved<Histogram>>,
    cache_requests_by: Arc<Resolved<IntCounter>>,
    upstream_duration: Histogram,
    payments: IntCounterVec,
    paid_atomic: IntCounterVec,
    facilitator_duration: HistogramVec,
    cache_requests: IntCounterVec,
    uploads: IntCounterVec,
    upload_bytes: IntCounter,
    payment_required: IntCounterVec,
    channel_events: IntCounterVec,
    channel_amounts: IntCounterVec,
    build_info: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers a metric built from this module's fixed definitions. Names, help texts and label
/// names are constants (checked by the tests) and the registry is fresh, so neither the
/// constructor nor the registration can fail.
fn register<M>(registry: &Registry, metric: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("fixed metric definitions are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once in a fresh registry");
    metric
}

impl Metrics {
    /// A fresh set of metrics in its own registry; `hb402_build_info` is set.
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
        };
        let counters = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let latencies = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, HistogramVec::new(latency(name, help), labels))
        };
        let metrics = Metrics {
            requests_by: Resolved::new(RouteLabel::ALL.len() * Outcome::ALL.len()),
            request_duration_by: Resolved::new(RouteLabel::ALL.len()),
            cache_requests_by: Resolved::new(CacheLabel::ALL.len() * CacheResult::ALL.len()),
            requests: counters(
                "hb402_requests_total",
                "Requests on the public listener, by route and outcome.",
                &["route", "outcome"],
            ),
            request_duration: latencies(
                "hb402_request_duration_seconds",
                "Time from the request to the end of the response, by route.",
                &["route"],
            ),
            upstream_duration: register(
                &registry,
                Histogram::with_opts(latency(
                    "hb402_upstream_duration_seconds",
                    "Time of requests hb402 makes to the node.",
                )),
            ),
            payments: counters(
                "hb402_payments_total",
                "Payment attempts, by network and result.",
                &["network", "result"],
            ),
            paid_atomic: counters(
                "hb402_paid_amount_atomic_total",
                "Settled amounts in the asset's atomic units, by network and asset.",
                &["network", "asset"],
            ),
            facilitator_duration: latencies(
                "hb402_facilitator_duration_seconds",
                "Time of facilitator (or local settlement) operations, by operation.",
                &["op"],
            ),
            cache_requests: counters(
                "hb402_cache_requests_total",
                "Cache lookups, by cache and result.",
                &["cache", "result"],
            ),
            uploads: counters(
                "hb402_uploads_total",
                "Upload requests, by result.",
                &["result"],
            ),
            upload_bytes: register(
                &registry,
                IntCounter::new(
                    "hb402_upload_bytes_total",
                    "Request-body bytes read on the upload routes.",
                ),
            ),
            payment_required: counters(
                "hb402_payment_required_total",
                "402 answers, by reason.",
                &["reason"],
            ),
            channel_events: counters(
                "hb402_channel_events_total",
                "batch-settlement channel events, by event.",
                &["event"],
            ),
            channel_amounts: counters(
                "hb402_channel_amount_atomic_total",
                "batch-settlement amounts in the asset's atomic units, by kind.",
                &["kind"],
            ),
            build_info: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("hb402_build_info", "Always 1; the version is the label."),
                    &["version"],
                ),
            ),
            registry,
        };
        metrics.start_at_zero();
        metrics
    }

    /// Sets `hb402_build_info` and starts the small, fixed label sets at zero.
    fn start_at_zero(&self) {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Small, fixed label sets start at zero, so rates and alerts see them before the first
        // event.
        for route in RouteLabel::ALL {
            self.request_duration.with_label_values(&[route.as_str()]);
        }
        for op in FacilitatorOp::ALL {
            self.facilitator_duration.with_label_values(&[op.as_str()]);
        }
        for cache in CacheLabel::ALL {
            for result in CacheResult::ALL {
                self.cache_requests
                    .with_label_values(&[cache.as_str(), result.as_str()]);
            }
        }
        for result in UploadResult::ALL {
            self.uploads.with_label_values(&[result.as_str()]);
        }
        for reason in PaymentRequiredReason::ALL {
            self.payment_required.with_label_values(&[reason.as_str()]);
        }
        for event in ChannelEvent::ALL {
            self.channel_events.with_label_values(&[event.as_str()]);
        }
        for kind in ChannelAmount::ALL {
            self.channel_amounts.with_label_values(&[kind.as_str()]);
        }
    }

    /// The registry (to add process metrics, or gather in tests).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A finished request on the public listener.
    pub fn record_request(&self, route: RouteLabel, outcome: Outcome, elapsed: Duration) {
        let index = route.index() * Outcome::ALL.len() + outcome.index();
        self.requests_by
            .get(index, || {
                self.requests
                    .with_label_values(&[route.as_str(), outcome.as_str()])
            })
            .inc();
        self.request_duration_by
            .get(route.index(), || {
                self.request_duration.with_label_values(&[route.as_str()])
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A request hb402 made to the node.
    pub fn observe_upstream(&self, elapsed: Duration) {
        self.upstream_duration.observe(elapsed.as_secs_f64());
    }

    /// A payment attempt's result.
    pub fn record_payment(&self, network: &NetworkLabel, result: PaymentResult) {
        self.payments
            .with_label_values(&[network.as_str(), result.as_str()])
            .inc();
    }

    /// A settled amount, in atomic units (saturate larger amounts at `u64::MAX`).
    pub fn record_paid(&self, network: &NetworkLabel, asset: &AssetLabel, atomic: u64) {
        self.paid_atomic
            .with_label_values(&[network.as_str(), asset.as_str()])
            .inc_by(atomic);
    }

    /// An event on a `batch-settlement` channel.
    pub fn record_channel(&self, event: ChannelEvent) {
        self.channel_events
            .with_label_values(&[event.as_str()])
            .inc();
    }

    /// An amount moved or charged on channels (saturated at `u64::MAX`).
    pub fn record_channel_amount(&self, kind: ChannelAmount, atomic: u128) {
        self.channel_amounts
            .with_label_values(&[kind.as_str()])
            .inc_by(u64::try_from(atomic).unwrap_or(u64::MAX));
    }

    /// A facilitator (or local settlement) operation's duration.
    pub fn observe_facilitator(&self, op: FacilitatorOp, elapsed: Duration) {
        self.facilitator_duration
            .with_label_values(&[op.as_str()])
            .observe(elapsed.as_secs_f64());
    }

    /// A cache lookup.
    pub fn record_cache(&self, cache: CacheLabel, result: CacheResult) {
        let index = cache.index() * CacheResult::ALL.len() + result.index();
        self.cache_requests_by
            .get(index, || {
                self.cache_requests
                    .with_label_values(&[cache.as_str(), result.as_str()])
            })
            .inc();
    }

    /// An item metadata lookup that was answered from `source`: a memory hit, or a memory miss
    /// and a store hit, or two misses.
    pub fn record_metadata_lookup(&self, source: MetaSource) {
        match source {
            MetaSource::Memory => self.record_cache(CacheLabel::Metadata, CacheResult::Hit),
            MetaSource::Store => {
                self.record_cache(CacheLabel::Metadata, CacheResult::Miss);
                self.record_cache(CacheLabel::Store, CacheResult::Hit);
            }
            MetaSource::Upstream => {
                self.record_cache(CacheLabel::Metadata, CacheResult::Miss);
                self.record_cache(CacheLabel::Store, CacheResult::Miss);
            }
        }
    }

    /// An upload request's result and the body bytes read.
    pub fn record_upload(&self, result: UploadResult, body_bytes: u64) {
        self.uploads.with_label_values(&[result.as_str()]).inc();
        self.upload_bytes.inc_by(body_bytes);
    }

    /// A 402 answer.
    pub fn record_payment_required(&self, reason: PaymentRequiredReason) {
        self.payment_required
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_children_count_each_label_combination_on_its_own() {
        let m = Metrics::new();
        let second = Duration::from_secs(1);
        m.record_request(RouteLabel::Data, Outcome::Ok, second);
        m.record_request(RouteLabel::Data, Outcome::Ok, second);
        m.record_request(RouteLabel::Binary, Outcome::Ok, second);
        m.record_request(RouteLabel::Data, Outcome::Partial, second);
        m.record_cache(CacheLabel::Items, CacheResult::Hit);
        m.record_cache(CacheLabel::Items, CacheResult::Hit);
        m.record_cache(CacheLabel::Items, CacheResult::Miss);
        let text = m.encode();
        for line in [
            r#"hb402_requests_total{outcome="ok",route="data"} 2"#,
            r#"hb402_requests_total{outcome="ok",route="binary"} 1"#,
            r#"hb402_requests_total{outcome="partial",route="data"} 1"#,
            r#"hb402_request_duration_seconds_count{route="data"} 3"#,
            r#"hb402_cache_requests_total{cache="items",result="hit"} 2"#,
            r#"hb402_cache_requests_total{cache="items",result="miss"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn new_metrics_encode_build_info() {
        let m = Metrics::new();
        let text = m.encode();
        assert!(
            text.contains(&format!(
                "hb402_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(text.contains("hb402_uploads_total{result=\"stored\"} 0"));
    }

    #[test]
    fn outcomes_from_status() {
        assert_eq!(Outcome::from_status(200), Outcome::Ok);
        assert_eq!(Outcome::from_status(206), Outcome::Partial);
        assert_eq!(Outcome::from_status(304), Outcome::NotModified);
        assert_eq!(Outcome::from_status(405), Outcome::BadRequest);
        assert_eq!(Outcome::from_status(416), Outcome::RangeNotSatisfiable);
        assert_eq!(Outcome::from_status(503), Outcome::UpstreamError);
        assert_eq!(Outcome::from_status(500), Outcome::Internal);
        assert_eq!(Outcome::from_status(0), Outcome::Internal);
    }
}
