//! The validated configuration and the validation from the file model.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::FileConfig;

/// Why a configuration is refused. Every variant names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape (the message names the key and line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is invalid.
    #[error("{key}: {reason}")]
    Invalid {
        /// The dotted key, e.g. `upstream.url`.
        key: String,
        /// Why.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// A secret read from the environment. Never printed; compared in constant time.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Constant-time comparison with a candidate (the length may leak, the content does not).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let secret = self.0.as_bytes();
        if secret.len() != candidate.len() {
            return false;
        }
        secret
            .iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// A secret from a value (for tests and tools).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// SIGTERM: time given to in-flight requests.
    pub grace_period: Duration,
    /// Then: time given to runtimes to stop.
    pub graceful_shutdown_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
}

/// `[listen]`.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// The public listener (DataItem routes and pass-through).
    pub public: SocketAddr,
    /// The admin listener (metrics, health, link minting): never the same as `public`.
    pub admin: SocketAddr,
    /// The public base URL (no trailing slash) used in share links and x402 resource URLs.
    pub public_base_url: String,
}

/// `[upstream]`.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `host:port` of the node.
    pub authority: String,
    /// The node's base URL, as configured.
    pub url: String,
    /// The `~s3@1.0` access key id.
    pub access_key_id: String,
    /// Bucket of public DataItems.
    pub public_bucket: String,
    /// Bucket of private DataItems.
    pub private_bucket: String,
    /// Key prefix of DataItems (`dataitems/`).
    pub key_prefix: String,
    /// Connect bound.
    pub connect_timeout: Duration,
    /// Read bound (per read).
    pub read_timeout: Duration,
    /// Write bound (per write).
    pub write_timeout: Duration,
}

/// `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest upload accepted.
    pub max_upload_bytes: u64,
    /// Largest DataItem header read.
    pub max_header_bytes: usize,
    /// Largest payment header decoded.
    pub max_payment_header_bytes: usize,
    /// Largest admin request body.
    pub max_admin_body_bytes: usize,
    /// Largest item whose metadata hb402 learns from the node: it is read and verified whole.
    pub max_verify_bytes: u64,
    /// Longest an upload's body may take.
    pub max_upload_time: Duration,
    /// Uploads in progress at once; more are refused (503).
    pub max_concurrent_uploads: u32,
    /// Uploads in progress at once from one client address (IPv6 by /64); more are refused
    /// (429). 0: no limit.
    pub max_uploads_per_client: u32,
}

/// Which store implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// An embedded redb file in the state directory.
    Redb,
    /// A shared Redis server.
    Redis {
        /// `redis://…` URL.
        url: String,
    },
}

/// `[store]`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Implementation.
    pub kind: StoreKind,
    /// Directory for local state.
    pub state_dir: PathBuf,
    /// How often lapsed locks, stale ledger entries and expired items are purged.
    pub purge_interval: Duration,
}

/// The largest `cache.item_max_bytes`.
const MAX_CACHED_ITEM: u64 = 64 * 1024 * 1024;

/// `[cache]`.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Bytes of metadata kept in memory (each entry weighed by its size).
    pub metadata_bytes: u64,
    /// How long an entry is kept.
    pub metadata_ttl: Duration,
    /// Bytes of whole items kept in memory (0: item bytes are not cached).
    pub item_bytes: u64,
    /// The largest item kept in memory.
    pub item_max_bytes: u64,
    /// How long an item is kept before it is read (and verified) from the node again.
    pub item_ttl: Duration,
}

/// `[expiry]`.
#[derive(Debug, Clone)]
pub struct ExpiryConfig {
    /// Days applied to uploads that set none (0: never expire).
    pub default_days: u32,
    /// Longest lifetime an upload may ask for (`x-expiry-days`, `x-expires-at`).
    pub max_days: u32,
    /// How long an expired copy is still answered `410 Gone` before hb402 deletes it from the
    /// node and forgets it.
    pub tombstone_days: u32,
}

/// `[share_links]`.
#[derive(Debug, Clone)]
pub struct ShareLinkConfig {
    /// HS256 key.
    pub secret: Secret,
    /// Lifetime when the minting call sets none.
    pub default_minutes: u64,
    /// Longest lifetime.
    pub max_minutes: u64,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Bearer key of the admin API; without it, the admin API refuses every call.
    pub bearer_key: Option<Secret>,
}

/// `[passthrough]`.
#[derive(Debug, Clone, Default)]
pub struct PassthroughConfig {
    /// Canonical path prefixes (whole segments) forwarded to the node.
    pub allow: Vec<crate::path::CanonicalPath>,
    /// Methods forwarded on them.
    pub methods: Vec<String>,
    /// Whether a query string is forwarded (otherwise such a request is refused).
    pub allow_query: bool,
}

/// Who may store items in the private bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateUploads {
    /// Only with `Authorization: Bearer` carrying the admin key or `uploads.key`.
    Restricted,
    /// Anyone.
    Open,
    /// Nobody: `x-private` uploads are refused.
    Off,
}

/// `[uploads]`.
#[derive(Debug, Clone)]
pub struct UploadPolicy {
    /// Who may store private items.
    pub private: PrivateUploads,
    /// A key, besides the admin key, that may store private items.
    pub key: Option<Secret>,
}

/// `[responses]`.
#[derive(Debug, Clone)]
pub struct ResponsesConfig {
    /// `Content-Security-Policy` sent with active content (HTML, SVG, XML); `None`: not sent.
    pub active_content_csp: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[listen]`.
    pub listen: ListenConfig,
    /// `[upstream]`.
    pub upstream: UpstreamConfig,
    /// `[limits]`.
    pub limits: Limits,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[cache]`.
    pub cache: CacheConfig,
    /// `[expiry]`.
    pub expiry: ExpiryConfig,
    /// `[share_links]`, if private links are enabled.
    pub share_links: Option<ShareLinkConfig>,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[passthrough]`.
    pub passthrough: PassthroughConfig,
    /// `[uploads]`.
    pub uploads: UploadPolicy,
    /// `[responses]`.
    pub responses: ResponsesConfig,
    /// `[payments]` and `[pricing]`.
    pub payments: PaymentsConfig,
    /// `[paywall]`.
    pub paywall: PaywallConfig,
}

/// `[paywall]`: the page browsers get with a 402.
#[derive(Debug, Clone, Default)]
pub struct PaywallConfig {
    /// Chains a wallet is asked to add when it does not know an offer's chain; they take the
    /// place of the built-in ones for the same chain id.
    pub chains: Vec<WalletChain>,
}

/// A chain as a wallet adds it (EIP-3085 `wallet_addEthereumChain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletChain {
    /// Chain id.
    pub chain_id: u64,
    /// Name shown by the wallet and the page.
    pub name: String,
    /// Public JSON-RPC URLs for the wallet (never hb402's own RPC unless the operator says so).
    pub rpc_urls: Vec<String>,
    /// Block explorer base URL: the page links the settlement transaction there.
    pub explorer: Option<String>,
    /// Symbol of the native currency (18 decimals).
    pub currency: String,
}

/// How payments are verified and settled.
#[derive(Debug, Clone)]
pub enum PaymentMode {
    /// No paywall: every read is free (pricing rules must then all be free).
    Off,
    /// A remote facilitator.
    Facilitator {
        /// Its base URL.
        url: String,
    },
    /// hb402 settles itself over an EVM RPC with an operator key that pays the gas.
    Local {
        /// JSON-RPC URL.
        rpc_url: String,
        /// The operator's private key.
        operator_key: Secret,
        /// The chain the RPC serves.
        chain_id: u64,
        /// How transfers are sent.
        sending: Sending,
    },
}

/// How local settlement sends transfers (`payments.max_batch`, `payments.multicall`,
/// `payments.batch_linger_ms`, `payments.receipt_poll_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sending {
    /// Transfers per transaction at most (1: one transaction per payment).
    pub max_batch: usize,
    /// The batch contract; `None`: no batching.
    pub multicall: Option<alloy::primitives::Address>,
    /// How often receipts are looked for while transactions are in flight.
    pub receipt_poll: Duration,
    /// How long a busy sender goes on filling a batch before sending it.
    pub batch_linger: Duration,
}

/// `[payments]` and `[pricing]`.
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    /// Settlement backend.
    pub mode: PaymentMode,
    /// Networks and assets, built in and configured.
    pub registry: hb402_x402::Registry,
    /// What every priced read offers.
    pub accept: Vec<crate::pricing::AcceptTarget>,
    /// Pricing rules, first match wins; no match means free (or the item's own tags).
    pub rules: Vec<crate::pricing::PriceRule>,
    /// When no rule matches, price an item by its signed `X402-Price`, `X402-Pay-To` and
    /// `X402-Network` tags, up to this many atomic units of USDC.
    pub item_tags_max: Option<alloy::primitives::U256>,
    /// What storing an item costs; `None`: uploads are free.
    pub upload_price: Option<crate::pricing::UploadPrice>,
    /// The authorization window clients are asked for.
    pub max_timeout_seconds: u64,
    /// Clock skew allowed on `validBefore`'s upper bound.
    pub skew_seconds: u64,
    /// Bound on the facilitator's `/verify`.
    pub verify_timeout: Duration,
    /// Bound on the facilitator's `/settle`.
    pub settle_timeout: Duration,
    /// How long a settled payment's receipt lets the payer re-read the resource (0: never).
    pub receipt_window: Duration,
    /// Key of receipts; without one, a random key per process (receipts then hold on one
    /// instance until it restarts).
    pub receipt_secret: Option<Secret>,
    /// An EVM JSON-RPC hb402 reads to learn what became of a settlement whose outcome it was not
    /// told (local mode: `rpc_url`; facilitator mode: `rpc_url` when set).
    pub chain_rpc_url: Option<String>,
    /// Failed payments (refused by the facilitator, or failed settlements) a payer may make
    /// within `failure_window` before its payments are refused without asking the facilitator.
    pub max_failures_per_payer: u32,
    /// The same, per client address (IPv6 by /64), whatever payers it pays with; 0: no limit.
    pub max_failures_per_client: u32,
    /// The window of `max_failures_per_payer`.
    pub failure_window: Duration,
    /// How long ledger entries that ended without a settlement (failed, released) are kept.
    pub ledger_retention: Duration,
    /// `batch-settlement` channels offered beside `exact`, when configured.
    pub batch: Option<BatchConfig>,
}

/// `[payments.batch]`: escrow channels paid with cumulative vouchers, claimed in batches.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// The chain channels live on.
    pub chain_id: u64,
    /// The key that signs claims and refunds.
    pub receiver_authorizer_key: Secret,
    /// Its address: the offers' `receiverAuthorizer`.
    pub receiver_authorizer: alloy::primitives::Address,
    /// How long a payer's timed withdrawal waits: the time hb402 has to claim what it charged.
    pub withdraw_delay: Duration,
    /// The first deposit asked for, in reads at the offered price.
    pub min_deposit_reads: u64,
    /// How often charged vouchers are claimed on chain.
    pub claim_interval: Duration,
    /// How often claimed funds are swept to the payees (`settle`).
    pub settle_interval: Duration,
    /// How old a channel's mirrored chain state may be when a voucher is checked against it.
    pub sync: Duration,
    /// How long one request may hold a channel (requests on one channel take turns).
    pub hold: Duration,
    /// After how long without a paid read a channel's uncharged deposit is refunded to its
    /// payer (`None`: never; the payer asks for it).
    pub idle_refund: Option<Duration>,
    /// Whether payers that are contract accounts (EIP-1271) are taken.
    pub contract_payers: bool,
}

impl PaymentsConfig {
    /// Whether any read may cost something.
    pub fn enabled(&self) -> bool {
        !matches!(self.mode, PaymentMode::Off)
    }
}

/// Values from the command line, which win over the environment and the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--admin-listen`.
    pub admin_listen: Option<String>,
    /// `--upstream`.
    pub upstream: Option<String>,
    /// `--state-dir`.
    pub state_dir: Option<String>,
}

fn socket(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            key,
            format!("{value:?} is not an address such as 127.0.0.1:8402"),
        )
    })
}

fn secret(
    key: &str,
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, ConfigError> {
    let name = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .ok_or_else(|| {
            invalid(
                key,
                "secrets are read from the environment: write \"${ENV_VAR}\", not the secret",
            )
        })?;
    let value = env(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid(key, format!("environment variable {name} is not set")))?;
    if value.len() < 16 {
        return Err(invalid(
            key,
            format!("environment variable {name} holds fewer than 16 bytes; use a longer secret"),
        ));
    }
    Ok(Secret(value))
}

fn bucket(key: &str, value: &str) -> Result<String, ConfigError> {
    let ok = (3..=63).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            key,
            format!("{value:?} is not an S3 bucket name (3-63 of a-z, 0-9, '-', '.')"),
        ))
    }
}

fn seconds(key: &str, value: u64) -> Result<Duration, ConfigError> {
    if value == 0 || value > 3600 {
        return Err(invalid(key, "must be between 1 and 3600 seconds"));
    }
    Ok(Duration::from_secs(value))
}

/// A public http(s) URL without credentials, for a browser to use.
fn public_url(key: &str, value: &str) -> Result<String, ConfigError> {
    let url = reqwest::Url::parse(value).map_err(|e| invalid(key, e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
        || value.len() > 512
    {
        return Err(invalid(
            key,
            "must be an http(s) URL without credentials, at most 512 bytes",
        ));
    }
    Ok(value.to_owned())
}

/// Validates `[paywall]`.
fn paywall(f: &FileConfig, registry: &hb402_x402::Registry) -> Result<PaywallConfig, ConfigError> {
    let mut chains: Vec<WalletChain> = Vec::new();
    for c in &f.paywall.chains {
        let network = registry.network(&c.network).ok_or_else(|| {
            invalid(
                "paywall.chains.network",
                format!("unknown network {:?}", c.network),
            )
        })?;
        let printable = |v: &str, max: usize| {
            !v.is_empty() && v.len() <= max && v.chars().all(|ch| !ch.is_control())
        };
        if !printable(&c.name, 64) || !printable(&c.currency, 8) {
            return Err(invalid(
                "paywall.chains",
                "name (≤ 64 bytes) and currency (≤ 8 bytes) must be non-empty printable text",
            ));
        }
        if c.rpc_urls.is_empty() || c.rpc_urls.len() > 4 {
            return Err(invalid("paywall.chains.rpc_urls", "give 1 to 4 URLs"));
        }
        let rpc_urls = c
            .rpc_urls
            .iter()
            .map(|u| public_url("paywall.chains.rpc_urls", u))
            .collect::<Result<_, _>>()?;
        let explorer = c
            .explorer
            .as_deref()
            .map(|u| public_url("paywall.chains.explorer", u.trim_end_matches('/')))
            .transpose()?;
        if chains.iter().any(|w| w.chain_id == network.chain_id) {
            return Err(invalid(
                "paywall.chains",
                format!("chain {} is listed twice", network.chain_id),
            ));
        }
        chains.push(WalletChain {
            chain_id: network.chain_id,
            name: c.name.clone(),
            rpc_urls,
            explorer,
            currency: c.currency.clone(),
        });
    }
    Ok(PaywallConfig { chains })
}

fn payments(
    f: &FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PaymentsConfig, ConfigError> {
    let p = &f.payments;
    let mode = payment_mode(f, env)?;
    if matches!(mode, PaymentMode::Facilitator { .. })
        && let Some(url) = &p.rpc_url
    {
        reqwest::Url::parse(url).map_err(|e| invalid("payments.rpc_url", e.to_string()))?;
    }
    let chain_rpc_url = match &mode {
        PaymentMode::Local { rpc_url, .. } => Some(rpc_url.clone()),
        PaymentMode::Facilitator { .. } => p.rpc_url.clone(),
        PaymentMode::Off => None,
    };
    if p.max_failures_per_payer == 0 {
        return Err(invalid(
            "payments.max_failures_per_payer",
            "must be at least 1",
        ));
    }
    let registry = network_registry(f)?;
    let accept = accept_targets(f, &registry, &mode)?;
    if p.max_timeout_seconds == 0 || p.max_timeout_seconds > 3600 {
        return Err(invalid(
            "payments.max_timeout_seconds",
            "must be between 1 and 3600",
        ));
    }
    let rules = price_rules(f, &accept, &mode)?;
    let item_tags_max = if f.pricing.honour_item_tags {
        if matches!(mode, PaymentMode::Off) {
            return Err(invalid(
                "pricing.honour_item_tags",
                "needs payments.mode = \"facilitator\" or \"local\"",
            ));
        }
        let max = f.pricing.max_item_price.as_deref().ok_or_else(|| {
            invalid(
                "pricing.max_item_price",
                "honour_item_tags needs a maximum price",
            )
        })?;
        Some(
            hb402_x402::parse_price(max, 6)
                .map_err(|e| invalid("pricing.max_item_price", e.to_string()))?,
        )
    } else {
        None
    };
    let upload_price = upload_price(f, &accept, &mode)?;
    let batch = batch(p, &mode, env)?;
    Ok(PaymentsConfig {
        mode,
        registry,
        accept,
        rules,
        item_tags_max,
        upload_price,
        max_timeout_seconds: p.max_timeout_seconds,
        skew_seconds: p.skew_seconds.min(600),
        verify_timeout: seconds("payments.verify_timeout_seconds", p.verify_timeout_seconds)?,
        settle_timeout: seconds("payments.settle_timeout_seconds", p.settle_timeout_seconds)?,
        receipt_window: Duration::from_secs(p.receipt_window_seconds.min(86_400)),
        receipt_secret: p
            .receipt_secret
            .as_deref()
            .map(|v| secret("payments.receipt_secret", v, env))
            .transpose()?,
        chain_rpc_url,
        max_failures_per_payer: p.max_failures_per_payer,
        max_failures_per_client: p.max_failures_per_client,
        failure_window: seconds("payments.failure_window_seconds", p.failure_window_seconds)?,
        ledger_retention: Duration::from_secs(u64::from(p.ledger_retention_days.max(1)) * 86_400),
        batch,
    })
}

/// The chain `[payments.batch]` channels live on: local settlement's; with a facilitator,
/// `payments.chain_id`, read over `payments.rpc_url` (the facilitator sends the transactions).
fn batch_chain(p: &super::file::PaymentsFile, mode: &PaymentMode) -> Result<u64, ConfigError> {
    match mode {
        PaymentMode::Local { chain_id, .. } => Ok(*chain_id),
        PaymentMode::Facilitator { .. } => {
            if p.rpc_url.is_none() {
                return Err(invalid(
                    "payments.rpc_url",
                    "batch-settlement channels with a facilitator need an EVM JSON-RPC URL to read the channels' state (the facilitator sends their transactions)",
                ));
            }
            p.chain_id.ok_or_else(|| {
                invalid(
                    "payments.chain_id",
                    "batch-settlement channels with a facilitator need the chain id",
                )
            })
        }
        PaymentMode::Off => Err(invalid(
            "payments.batch",
            "batch-settlement channels need payments.mode = \"local\" or \"facilitator\"",
        )),
    }
}

/// Validates `[payments.batch]`: its chain ([`batch_chain`]), keys and bounds, and a claim
/// schedule that always claims before a withdrawal the payer starts can take the charged
/// funds away.
fn batch(
    p: &super::file::PaymentsFile,
    mode: &PaymentMode,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<BatchConfig>, ConfigError> {
    let Some(b) = p.batch.as_ref().filter(|b| b.enabled) else {
        return Ok(None);
    };
    let chain_id = batch_chain(p, mode)?;
    let key = b.receiver_authorizer_key.as_deref().ok_or_else(|| {
        invalid(
            "payments.batch.receiver_authorizer_key",
            "channels need the key that signs claims and refunds",
        )
    })?;
    let receiver_authorizer_key = secret("payments.batch.receiver_authorizer_key", key, env)?;
    let receiver_authorizer = String::from_utf8_lossy(receiver_authorizer_key.expose())
        .trim()
        .parse::<alloy::signers::local::PrivateKeySigner>()
        .map_err(|_| {
            invalid(
                "payments.batch.receiver_authorizer_key",
                "must be a 32-byte private key in hex",
            )
        })?
        .address();
    let delay = b.withdraw_delay_seconds;
    if !hb402_x402::batch::WITHDRAW_DELAY_SECONDS.contains(&delay) {
        return Err(invalid(
            "payments.batch.withdraw_delay_seconds",
            "must be between 900 (15 minutes) and 2592000 (30 days), the contract's bounds",
        ));
    }
    let within_third = |key: &str, value: u64| {
        if value == 0 || value > delay / 3 {
            Err(invalid(
                key,
                format!(
                    "must be between 1 and a third of withdraw_delay_seconds ({})",
                    delay / 3
                ),
            ))
        } else {
            Ok(Duration::from_secs(value))
        }
    };
    if !(1..=1_000_000).contains(&b.min_deposit_reads) {
        return Err(invalid(
            "payments.batch.min_deposit_reads",
            "must be between 1 and 1000000",
        ));
    }
    if !(5..=600).contains(&b.hold_seconds) {
        return Err(invalid(
            "payments.batch.hold_seconds",
            "must be between 5 and 600",
        ));
    }
    let idle = b.idle_refund_seconds;
    if idle != 0 && !(10..=31_536_000).contains(&idle) {
        return Err(invalid(
            "payments.batch.idle_refund_seconds",
            "must be 0 (never) or between 10 and 31536000 (a year)",
        ));
    }
    if !(1..=604_800).contains(&b.settle_interval_seconds) {
        return Err(invalid(
            "payments.batch.settle_interval_seconds",
            "must be between 1 and 604800",
        ));
    }
    Ok(Some(BatchConfig {
        chain_id,
        receiver_authorizer_key,
        receiver_authorizer,
        withdraw_delay: Duration::from_secs(delay),
        min_deposit_reads: b.min_deposit_reads,
        claim_interval: within_third(
            "payments.batch.claim_interval_seconds",
            b.claim_interval_seconds,
        )?,
        settle_interval: Duration::from_secs(b.settle_interval_seconds),
        sync: within_third("payments.batch.sync_seconds", b.sync_seconds)?,
        hold: Duration::from_secs(b.hold_seconds),
        idle_refund: (idle > 0).then(|| Duration::from_secs(idle)),
        contract_payers: b.contract_payers,
    }))
}

/// Validates `payments.mode` and what it needs.
fn payment_mode(
    f: &FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PaymentMode, ConfigError> {
    let p = &f.payments;
    let mode = match p.mode.as_str() {
        "off" => PaymentMode::Off,
        "facilitator" => {
            let url = p.facilitator_url.clone().ok_or_else(|| {
                invalid(
                    "payments.facilitator_url",
                    "mode = \"facilitator\" needs a facilitator URL",
                )
            })?;
            let parsed = reqwest::Url::parse(&url)
                .map_err(|e| invalid("payments.facilitator_url", e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(
                    "payments.facilitator_url",
                    "must be an http(s) URL",
                ));
            }
            PaymentMode::Facilitator { url }
        }
        "local" => {
            let rpc_url = p.rpc_url.clone().ok_or_else(|| {
                invalid(
                    "payments.rpc_url",
                    "mode = \"local\" needs an EVM JSON-RPC URL",
                )
            })?;
            reqwest::Url::parse(&rpc_url)
                .map_err(|e| invalid("payments.rpc_url", e.to_string()))?;
            let key = p.operator_key.as_deref().ok_or_else(|| {
                invalid(
                    "payments.operator_key",
                    "mode = \"local\" needs the operator key",
                )
            })?;
            let operator_key = secret("payments.operator_key", key, env)?;
            let chain_id = p.chain_id.ok_or_else(|| {
                invalid("payments.chain_id", "mode = \"local\" needs the chain id")
            })?;
            PaymentMode::Local {
                rpc_url,
                operator_key,
                chain_id,
                sending: sending(p)?,
            }
        }
        other => {
            return Err(invalid(
                "payments.mode",
                format!("{other:?} is not \"off\", \"facilitator\" or \"local\""),
            ));
        }
    };
    Ok(mode)
}

/// Largest `payments.max_batch`: a batch's gas stays well inside a block.
const MAX_BATCH: usize = 256;

fn sending(p: &super::file::PaymentsFile) -> Result<Sending, ConfigError> {
    if p.max_batch == 0 || p.max_batch > MAX_BATCH {
        return Err(invalid(
            "payments.max_batch",
            format!("must be between 1 and {MAX_BATCH}"),
        ));
    }
    let multicall = match p.multicall.trim() {
        "" => None,
        text => Some(text.parse().map_err(|_| {
            invalid(
                "payments.multicall",
                format!("{text:?} is not an address (\"\" turns batching off)"),
            )
        })?),
    };
    if !(10..=10_000).contains(&p.receipt_poll_ms) {
        return Err(invalid(
            "payments.receipt_poll_ms",
            "must be between 10 and 10000",
        ));
    }
    if p.batch_linger_ms > 1000 {
        return Err(invalid(
            "payments.batch_linger_ms",
            "must be between 0 and 1000",
        ));
    }
    Ok(Sending {
        max_batch: p.max_batch,
        multicall,
        receipt_poll: Duration::from_millis(p.receipt_poll_ms),
        batch_linger: Duration::from_millis(p.batch_linger_ms),
    })
}

/// Validates the built-in networks and `[[payments.networks]]`.
fn network_registry(f: &FileConfig) -> Result<hb402_x402::Registry, ConfigError> {
    use hb402_x402::{Asset, Network, Registry};
    let p = &f.payments;
    let mut registry = Registry::builtin();
    for (i, n) in p.networks.iter().enumerate() {
        let key = format!("payments.networks[{i}]");
        registry
            .add_network(Network {
                v1_name: n.name.clone(),
                chain_id: n.chain_id,
            })
            .map_err(|e| invalid(&key, e.to_string()))?;
        let address = n
            .asset
            .parse()
            .map_err(|_| invalid(&format!("{key}.asset"), "not an address"))?;
        registry
            .add_asset(Asset {
                chain_id: n.chain_id,
                address,
                decimals: n.decimals,
                symbol: "USDC".into(),
                eip712_name: n.asset_name.clone(),
                eip712_version: n.asset_version.clone(),
            })
            .map_err(|e| invalid(&key, e.to_string()))?;
    }
    Ok(registry)
}

/// Validates `[[payments.accept]]`: what hb402 may be paid in, and to whom.
fn accept_targets(
    f: &FileConfig,
    registry: &hb402_x402::Registry,
    mode: &PaymentMode,
) -> Result<Vec<crate::pricing::AcceptTarget>, ConfigError> {
    use crate::pricing::AcceptTarget;
    let p = &f.payments;
    let mut accept = Vec::new();
    for (i, a) in p.accept.iter().enumerate() {
        let key = format!("payments.accept[{i}]");
        let network = registry.network(&a.network).ok_or_else(|| {
            invalid(
                &format!("{key}.network"),
                format!("unknown network {:?}", a.network),
            )
        })?;
        let asset = match &a.asset {
            Some(address) => {
                let address = address
                    .parse()
                    .map_err(|_| invalid(&format!("{key}.asset"), "not an address"))?;
                registry
                    .asset(network.chain_id, &address)
                    .cloned()
                    .ok_or_else(|| {
                        invalid(
                            &format!("{key}.asset"),
                            "not an asset of this network (add it under [[payments.networks]])",
                        )
                    })?
            }
            None => registry.usdc(network.chain_id).cloned().ok_or_else(|| {
                invalid(
                    &format!("{key}.asset"),
                    "this network has no known USDC: name the asset",
                )
            })?,
        };
        let pay_to = a
            .pay_to
            .parse()
            .map_err(|_| invalid(&format!("{key}.pay_to"), "not an EVM address"))?;
        if let PaymentMode::Local { chain_id, .. } = &mode
            && *chain_id != network.chain_id
        {
            return Err(invalid(
                &format!("{key}.network"),
                "local settlement serves one chain: payments.chain_id",
            ));
        }
        accept.push(AcceptTarget { asset, pay_to });
    }
    Ok(accept)
}

/// Each price given must be expressible in every accepted asset's decimals.
fn prices_fit<'a>(
    key: &str,
    prices: impl IntoIterator<Item = &'a Option<String>>,
    accept: &[crate::pricing::AcceptTarget],
) -> Result<(), ConfigError> {
    for decimal in prices.into_iter().flatten() {
        for target in accept {
            hb402_x402::parse_price(decimal, target.asset.decimals)
                .map_err(|e| invalid(key, e.to_string()))?;
        }
    }
    Ok(())
}

/// A price needs payments on and something to be paid in (`subject`: "a priced rule needs").
fn payable(
    key: &str,
    subject: &str,
    mode: &PaymentMode,
    accept: &[crate::pricing::AcceptTarget],
) -> Result<(), ConfigError> {
    if matches!(mode, PaymentMode::Off) {
        return Err(invalid(
            key,
            format!("{subject} payments.mode = \"facilitator\" or \"local\""),
        ));
    }
    if accept.is_empty() {
        return Err(invalid(
            key,
            format!("{subject} at least one [[payments.accept]]"),
        ));
    }
    Ok(())
}

/// Validates `[[pricing.rules]]`.
fn price_rules(
    f: &FileConfig,
    accept: &[crate::pricing::AcceptTarget],
    mode: &PaymentMode,
) -> Result<Vec<crate::pricing::PriceRule>, ConfigError> {
    use crate::pricing::{PriceRoute, PriceRule, PriceSpec};
    let mut rules = Vec::new();
    for (i, r) in f.pricing.rules.iter().enumerate() {
        let key = format!("pricing.rules[{i}]");
        let routes = r
            .routes
            .iter()
            .map(|name| {
                PriceRoute::parse(name).ok_or_else(|| {
                    invalid(
                        &format!("{key}.routes"),
                        format!("{name:?} is not data, binary or raw"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let price = match (r.free, &r.price, &r.per_mib) {
            (true, None, None) => PriceSpec::Free,
            (false, Some(price), None) => PriceSpec::Flat(price.clone()),
            (false, None, Some(per_mib)) => PriceSpec::PerMib {
                per_mib: per_mib.clone(),
                minimum: r.minimum.clone(),
            },
            _ => {
                return Err(invalid(
                    &key,
                    "set exactly one of price, per_mib or free = true",
                ));
            }
        };
        prices_fit(&key, [&r.price, &r.per_mib, &r.minimum], accept)?;
        if price != PriceSpec::Free {
            payable(&key, "a priced rule needs", mode, accept)?;
        }
        rules.push(PriceRule {
            routes,
            buckets: r.buckets.clone(),
            content_types: r.content_types.clone(),
            owners: r.owners.clone(),
            price,
            description: r.description.clone(),
        });
    }
    Ok(rules)
}

/// Validates `[pricing.uploads]`.
fn upload_price(
    f: &FileConfig,
    accept: &[crate::pricing::AcceptTarget],
    mode: &PaymentMode,
) -> Result<Option<crate::pricing::UploadPrice>, ConfigError> {
    let upload_price = f
        .pricing
        .uploads
        .as_ref()
        .map(|u| {
            let key = "pricing.uploads";
            if u.per_mib.is_none() && u.per_mib_day.is_none() && u.minimum.is_none() {
                return Err(invalid(
                    key,
                    "set at least one of per_mib, per_mib_day or minimum (or remove the table)",
                ));
            }
            prices_fit(key, [&u.per_mib, &u.per_mib_day, &u.minimum], accept)?;
            if !(1..=36_500).contains(&u.days_without_expiry) {
                return Err(invalid(
                    "pricing.uploads.days_without_expiry",
                    "must be between 1 and 36500",
                ));
            }
            payable(key, "priced uploads need", mode, accept)?;
            Ok(crate::pricing::UploadPrice {
                per_mib: u.per_mib.clone(),
                per_mib_day: u.per_mib_day.clone(),
                minimum: u.minimum.clone(),
                days_without_expiry: u.days_without_expiry,
                description: u.description.clone(),
            })
        })
        .transpose()?;
    Ok(upload_price)
}

fn passthrough(f: &FileConfig) -> Result<PassthroughConfig, ConfigError> {
    let p = &f.passthrough;
    if p.deny.is_some() {
        return Err(invalid(
            "passthrough.deny",
            "replaced by passthrough.allow: the edge is closed, list the prefixes to forward",
        ));
    }
    let mut allow = Vec::new();
    for (i, prefix) in p.allow.iter().enumerate() {
        let key = format!("passthrough.allow[{i}]");
        let canonical = crate::path::normalize(prefix).map_err(|e| invalid(&key, e.to_string()))?;
        let parts = canonical.parts();
        let Some(first) = parts.first() else {
            return Err(invalid(
                &key,
                "\"/\" would forward every path; name a prefix",
            ));
        };
        if crate::route::is_owned(first) {
            return Err(invalid(
                &key,
                "this prefix is one of hb402's own routes (or a DataItem id) and is never forwarded",
            ));
        }
        if canonical.to_uri_path() != *prefix {
            return Err(invalid(
                &key,
                format!(
                    "write the prefix in canonical form: {:?}",
                    canonical.to_uri_path()
                ),
            ));
        }
        allow.push(canonical);
    }
    let mut methods = Vec::new();
    for (i, m) in p.methods.iter().enumerate() {
        match m.as_str() {
            "GET" | "HEAD" | "OPTIONS" => methods.push(m.clone()),
            other => {
                return Err(invalid(
                    &format!("passthrough.methods[{i}]"),
                    format!("{other:?}: only GET and HEAD are forwarded"),
                ));
            }
        }
    }
    Ok(PassthroughConfig {
        allow,
        methods,
        allow_query: p.allow_query,
    })
}

impl Config {
    /// Reads, overrides and validates a configuration file. `env` reads an environment variable
    /// (`|k| std::env::var(k).ok()` in the binary).
    pub fn load(
        path: &Path,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path, overrides, env)
    }

    /// Validates configuration text (`origin` names it in errors).
    pub fn from_toml(
        text: &str,
        origin: &Path,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        if file.version != 1 {
            return Err(invalid(
                "version",
                format!("version {} is not supported; use 1", file.version),
            ));
        }
        // Command line > environment > file.
        let pick = |cli: &Option<String>, var: &str| cli.clone().or_else(|| env(var));
        if let Some(v) = pick(&overrides.listen, "HB402_LISTEN") {
            file.listen.public = v;
        }
        if let Some(v) = pick(&overrides.admin_listen, "HB402_ADMIN_LISTEN") {
            file.listen.admin = v;
        }
        if let Some(v) = pick(&overrides.upstream, "HB402_UPSTREAM") {
            file.upstream.url = v;
        }
        if let Some(v) = pick(&overrides.state_dir, "HB402_STATE_DIR") {
            file.store.state_dir = v;
        }
        Self::validate(file, env)
    }

    fn validate(
        f: FileConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let server = server_config(&f)?;
        let listen = listen_config(&f)?;
        let upstream = upstream_config(&f)?;
        let limits = limits_config(&f)?;
        let store = store_config(&f)?;
        let cache = cache_config(&f, &limits)?;
        let expiry = expiry_config(&f)?;
        let share_links = match &f.share_links.secret {
            Some(value) => {
                if f.share_links.default_minutes == 0
                    || f.share_links.default_minutes > f.share_links.max_minutes
                {
                    return Err(invalid(
                        "share_links.default_minutes",
                        "must be at least 1 and at most share_links.max_minutes",
                    ));
                }
                Some(ShareLinkConfig {
                    secret: secret("share_links.secret", value, env)?,
                    default_minutes: f.share_links.default_minutes,
                    max_minutes: f.share_links.max_minutes,
                })
            }
            None => None,
        };
        let admin_config = AdminConfig {
            bearer_key: f
                .admin
                .bearer_key
                .as_deref()
                .map(|v| secret("admin.bearer_key", v, env))
                .transpose()?,
        };
        let passthrough = passthrough(&f)?;
        let uploads = UploadPolicy {
            private: match f.uploads.private.as_str() {
                "restricted" => PrivateUploads::Restricted,
                "open" => PrivateUploads::Open,
                "off" => PrivateUploads::Off,
                other => {
                    return Err(invalid(
                        "uploads.private",
                        format!("{other:?} is not \"restricted\", \"open\" or \"off\""),
                    ));
                }
            },
            key: f
                .uploads
                .key
                .as_deref()
                .map(|v| secret("uploads.key", v, env))
                .transpose()?,
        };
        let csp = f.responses.active_content_csp.trim();
        if csp.len() > 1024 || !csp.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(invalid(
                "responses.active_content_csp",
                "must be printable ASCII, at most 1 KiB",
            ));
        }
        let responses = ResponsesConfig {
            active_content_csp: (!csp.is_empty()).then(|| csp.to_owned()),
        };
        let payments = payments(&f, env)?;
        let paywall = paywall(&f, &payments.registry)?;
        Ok(Config {
            server,
            listen,
            upstream,
            limits,
            store,
            cache,
            expiry,
            share_links,
            admin: admin_config,
            passthrough,
            uploads,
            responses,
            payments,
            paywall,
        })
    }
}

/// Validates the `[server]` table.
fn server_config(f: &FileConfig) -> Result<ServerConfig, ConfigError> {
    let s = &f.server;
    if !(1..=256).contains(&s.threads) {
        return Err(invalid("server.threads", "must be between 1 and 256"));
    }
    let log_format = match s.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(
                "server.log_format",
                format!("{other:?} is not \"text\" or \"json\""),
            ));
        }
    };
    let server = ServerConfig {
        threads: s.threads,
        grace_period: Duration::from_secs(s.grace_period_seconds.min(3600)),
        graceful_shutdown_timeout: Duration::from_secs(
            s.graceful_shutdown_timeout_seconds.min(3600),
        ),
        log_format,
    };
    Ok(server)
}

/// Validates the `[listen]` table.
fn listen_config(f: &FileConfig) -> Result<ListenConfig, ConfigError> {
    let public = socket("listen.public", &f.listen.public)?;
    let admin = socket("listen.admin", &f.listen.admin)?;
    if public == admin {
        return Err(invalid(
            "listen.admin",
            "the admin listener must differ from the public one",
        ));
    }
    let public_base_url = match &f.listen.public_base_url {
        Some(url) => {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| invalid("listen.public_base_url", format!("{url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(invalid(
                    "listen.public_base_url",
                    "must be an absolute http(s) URL",
                ));
            }
            url.trim_end_matches('/').to_owned()
        }
        None => format!("http://{public}"),
    };
    let listen = ListenConfig {
        public,
        admin,
        public_base_url,
    };
    Ok(listen)
}

/// Validates the `[upstream]` table.
fn upstream_config(f: &FileConfig) -> Result<UpstreamConfig, ConfigError> {
    let u = &f.upstream;
    let url = reqwest::Url::parse(&u.url)
        .map_err(|e| invalid("upstream.url", format!("{:?}: {e}", u.url)))?;
    if url.scheme() != "http" {
        return Err(invalid(
            "upstream.url",
            "only http:// is supported: hb402 runs beside the node, on a private network",
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| invalid("upstream.url", "has no host"))?;
    if url.path() != "/" && !url.path().is_empty() {
        return Err(invalid("upstream.url", "must not have a path"));
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    if u.access_key_id.is_empty() || u.access_key_id.contains('/') {
        return Err(invalid(
            "upstream.access_key_id",
            "must be non-empty and contain no '/'",
        ));
    }
    let key_prefix = u.key_prefix.clone();
    if key_prefix.starts_with('/')
        || key_prefix.contains("..")
        || (!key_prefix.is_empty() && !key_prefix.ends_with('/'))
    {
        return Err(invalid(
            "upstream.key_prefix",
            "must be relative and end with '/' (e.g. \"dataitems/\")",
        ));
    }
    let upstream = UpstreamConfig {
        authority,
        url: u.url.trim_end_matches('/').to_owned(),
        access_key_id: u.access_key_id.clone(),
        public_bucket: bucket("upstream.public_bucket", &u.public_bucket)?,
        private_bucket: bucket("upstream.private_bucket", &u.private_bucket)?,
        key_prefix,
        connect_timeout: seconds(
            "upstream.connect_timeout_seconds",
            u.connect_timeout_seconds,
        )?,
        read_timeout: seconds("upstream.read_timeout_seconds", u.read_timeout_seconds)?,
        write_timeout: seconds("upstream.write_timeout_seconds", u.write_timeout_seconds)?,
    };
    if upstream.public_bucket == upstream.private_bucket {
        return Err(invalid(
            "upstream.private_bucket",
            "must differ from upstream.public_bucket",
        ));
    }
    Ok(upstream)
}

/// Validates the `[limits]` table.
fn limits_config(f: &FileConfig) -> Result<Limits, ConfigError> {
    let l = &f.limits;
    if l.max_upload_bytes == 0 || l.max_upload_bytes > 64 * 1024 * 1024 * 1024 {
        return Err(invalid(
            "limits.max_upload_bytes",
            "must be between 1 byte and 64 GiB",
        ));
    }
    if !(hb402_ans104::MIN_MAX_HEADER_BYTES as u64..=16 * 1024 * 1024).contains(&l.max_header_bytes)
    {
        return Err(invalid(
            "limits.max_header_bytes",
            format!(
                "must be between {} and 16 MiB",
                hb402_ans104::MIN_MAX_HEADER_BYTES
            ),
        ));
    }
    if !(1024..=1024 * 1024).contains(&l.max_payment_header_bytes) {
        return Err(invalid(
            "limits.max_payment_header_bytes",
            "must be between 1 KiB and 1 MiB",
        ));
    }
    if l.max_verify_bytes == 0 || l.max_verify_bytes > 64 * 1024 * 1024 * 1024 {
        return Err(invalid(
            "limits.max_verify_bytes",
            "must be between 1 byte and 64 GiB",
        ));
    }
    if !(1..=100_000).contains(&l.max_concurrent_uploads) {
        return Err(invalid(
            "limits.max_concurrent_uploads",
            "must be between 1 and 100000",
        ));
    }
    if !(1024..=16 * 1024 * 1024).contains(&l.max_admin_body_bytes) {
        return Err(invalid(
            "limits.max_admin_body_bytes",
            "must be between 1 KiB and 16 MiB",
        ));
    }
    let limits = Limits {
        max_upload_bytes: l.max_upload_bytes,
        max_header_bytes: l.max_header_bytes as usize,
        max_payment_header_bytes: l.max_payment_header_bytes as usize,
        max_admin_body_bytes: l.max_admin_body_bytes as usize,
        max_verify_bytes: l.max_verify_bytes,
        max_upload_time: Duration::from_secs(l.max_upload_seconds.clamp(1, 86_400)),
        max_concurrent_uploads: l.max_concurrent_uploads,
        max_uploads_per_client: l.max_uploads_per_client,
    };
    Ok(limits)
}

/// Validates the `[store]` table.
fn store_config(f: &FileConfig) -> Result<StoreConfig, ConfigError> {
    if f.store.state_dir.is_empty() {
        return Err(invalid("store.state_dir", "must not be empty"));
    }
    let kind = match (f.store.kind.as_str(), &f.store.redis_url) {
        ("redb", None) => StoreKind::Redb,
        ("redb", Some(_)) => {
            return Err(invalid(
                "store.redis_url",
                "only used with kind = \"redis\"",
            ));
        }
        ("redis", Some(url)) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            StoreKind::Redis { url: url.clone() }
        }
        ("redis", _) => {
            return Err(invalid(
                "store.redis_url",
                "kind = \"redis\" needs a redis:// URL",
            ));
        }
        (other, _) => {
            return Err(invalid(
                "store.kind",
                format!("{other:?} is not \"redb\" or \"redis\""),
            ));
        }
    };
    let store = StoreConfig {
        kind,
        state_dir: PathBuf::from(&f.store.state_dir),
        purge_interval: seconds(
            "store.purge_interval_seconds",
            f.store.purge_interval_seconds,
        )?,
    };
    Ok(store)
}

/// Validates the `[cache]` table (items are never kept larger than may be verified).
fn cache_config(f: &FileConfig, limits: &Limits) -> Result<CacheConfig, ConfigError> {
    if f.cache.metadata_entries.is_some() {
        return Err(invalid(
            "cache.metadata_entries",
            "replaced by cache.metadata_bytes (the cache is bounded in bytes)",
        ));
    }
    if f.cache.metadata_bytes < 64 * 1024 {
        return Err(invalid("cache.metadata_bytes", "must be at least 64 KiB"));
    }
    if f.cache.item_bytes > 0 && !(1..=MAX_CACHED_ITEM).contains(&f.cache.item_max_bytes) {
        return Err(invalid(
            "cache.item_max_bytes",
            "must be between 1 and 64 MiB when cache.item_bytes is set",
        ));
    }
    if f.cache.item_bytes > 0 && f.cache.item_max_bytes > f.cache.item_bytes {
        return Err(invalid(
            "cache.item_max_bytes",
            "must not be more than cache.item_bytes",
        ));
    }
    let cache = CacheConfig {
        metadata_bytes: f.cache.metadata_bytes,
        metadata_ttl: Duration::from_secs(f.cache.metadata_ttl_seconds.max(1)),
        item_bytes: f.cache.item_bytes,
        // Cached items are verified whole: never more than may be verified.
        item_max_bytes: f.cache.item_max_bytes.min(limits.max_verify_bytes),
        item_ttl: Duration::from_secs(f.cache.item_ttl_seconds.max(1)),
    };
    Ok(cache)
}

/// Validates the `[expiry]` table.
fn expiry_config(f: &FileConfig) -> Result<ExpiryConfig, ConfigError> {
    if !(1..=365).contains(&f.expiry.max_days) {
        return Err(invalid(
            "expiry.max_days",
            "must be between 1 and 365 (the node's lifecycle bound)",
        ));
    }
    if f.expiry.default_days > f.expiry.max_days {
        return Err(invalid(
            "expiry.default_days",
            "must not exceed expiry.max_days",
        ));
    }
    if !(2..=3650).contains(&f.expiry.tombstone_days) {
        return Err(invalid(
            "expiry.tombstone_days",
            "must be between 2 and 3650 (the node's lifecycle works in whole days)",
        ));
    }
    let expiry = ExpiryConfig {
        default_days: f.expiry.default_days,
        max_days: f.expiry.max_days,
        tombstone_days: f.expiry.tombstone_days,
    };
    Ok(expiry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "SHARE" => Some("0123456789abcdef0123".into()),
            "ADMIN" => Some("admin-key-0123456789".into()),
            "SHORT" => Some("short".into()),
            "KEY" => {
                Some("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d".into())
            }
            _ => None,
        }
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"), &Overrides::default(), &env)
    }

    fn err(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_file_gets_the_documented_defaults() {
        let c = load("version = 1").unwrap();
        assert_eq!(c.listen.public.to_string(), "127.0.0.1:8402");
        assert_eq!(c.listen.admin.to_string(), "127.0.0.1:9402");
        assert_eq!(c.listen.public_base_url, "http://127.0.0.1:8402");
        assert_eq!(c.upstream.authority, "127.0.0.1:8734");
        assert_eq!(c.upstream.public_bucket, "offchain-dataitems");
        assert_eq!(c.upstream.key_prefix, "dataitems/");
        assert_eq!(c.store.kind, StoreKind::Redb);
        assert!(c.share_links.is_none());
        assert!(c.admin.bearer_key.is_none());
    }

    #[test]
    fn local_settlement_sending_has_defaults_and_bounds() {
        let local = |extra: &str| {
            format!(
                "version = 1\n[payments]\nmode = \"local\"\nrpc_url = \"http://127.0.0.1:8545\"\n\
                 operator_key = \"${{ADMIN}}\"\nchain_id = 84532\n{extra}"
            )
        };
        let PaymentMode::Local { sending, .. } = load(&local("")).unwrap().payments.mode else {
            panic!("local mode");
        };
        assert_eq!(sending.max_batch, 64);
        assert_eq!(
            sending.multicall,
            Some(crate::facilitator::MULTICALL3),
            "Multicall3's canonical address"
        );
        assert_eq!(sending.batch_linger, Duration::from_millis(20));
        assert_eq!(sending.receipt_poll, Duration::from_millis(100));
        let PaymentMode::Local { sending, .. } = load(&local("multicall = \"\"\nmax_batch = 1"))
            .unwrap()
            .payments
            .mode
        else {
            panic!("local mode");
        };
        assert_eq!((sending.multicall, sending.max_batch), (None, 1));
        for (extra, key) in [
            ("max_batch = 0", "payments.max_batch"),
            ("max_batch = 257", "payments.max_batch"),
            ("multicall = \"multicall\"", "payments.multicall"),
            ("receipt_poll_ms = 5", "payments.receipt_poll_ms"),
            ("batch_linger_ms = 1001", "payments.batch_linger_ms"),
        ] {
            assert!(err(&local(extra)).starts_with(key), "{extra}");
        }
    }

    #[test]
    fn paywall_chains_are_public_urls_of_known_networks() {
        let chain = |body: &str| format!("version = 1\n[[paywall.chains]]\n{body}");
        let ok = load(&chain(
            "network = \"base-sepolia\"\nname = \"Local\"\n\
             rpc_urls = [\"http://127.0.0.1:8545\"]\nexplorer = \"https://scan.example/\"",
        ))
        .unwrap();
        assert_eq!(
            ok.paywall.chains,
            [WalletChain {
                chain_id: 84_532,
                name: "Local".into(),
                rpc_urls: vec!["http://127.0.0.1:8545".into()],
                explorer: Some("https://scan.example".into()),
                currency: "ETH".into(),
            }]
        );
        for (body, key) in [
            (
                "network = \"nowhere\"\nname = \"x\"\nrpc_urls = [\"https://a.example\"]",
                "paywall.chains.network",
            ),
            (
                "network = \"base\"\nname = \"x\"\nrpc_urls = [\"https://user:key@a.example\"]",
                "paywall.chains.rpc_urls",
            ),
            (
                "network = \"base\"\nname = \"x\"\nrpc_urls = [\"ws://a.example\"]",
                "paywall.chains.rpc_urls",
            ),
            (
                "network = \"base\"\nname = \"x\"\nrpc_urls = []",
                "paywall.chains.rpc_urls",
            ),
            (
                "network = \"base\"\nname = \"\"\nrpc_urls = [\"https://a.example\"]",
                "paywall.chains",
            ),
            (
                "network = \"base\"\nname = \"x\"\nrpc_urls = [\"https://a.example\"]\n\
                 [[paywall.chains]]\nnetwork = \"eip155:8453\"\nname = \"y\"\n\
                 rpc_urls = [\"https://b.example\"]",
                "paywall.chains",
            ),
        ] {
            assert!(
                err(&chain(body)).starts_with(key),
                "{body}: {}",
                err(&chain(body))
            );
        }
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err("version = 2").starts_with("version:"));
        let unknown = err("version = 1\n[upstream]\nurll = \"x\"");
        assert!(unknown.contains("unknown field `urll`"), "{unknown}");
        let typed = err("version = 1\n[limits]\nmax_upload_bytes = \"big\"");
        assert!(typed.contains("max_upload_bytes"), "{typed}");
        assert!(err("version = 1\n[listen]\npublic = \"nowhere\"").starts_with("listen.public:"));
        assert!(
            err("version = 1\n[listen]\nadmin = \"127.0.0.1:8402\"").starts_with("listen.admin:")
        );
        assert!(
            err("version = 1\n[upstream]\nurl = \"https://node\"").starts_with("upstream.url:")
        );
        assert!(
            err("version = 1\n[upstream]\npublic_bucket = \"UP\"")
                .starts_with("upstream.public_bucket:")
        );
        assert!(err("version = 1\n[store]\nkind = \"redis\"").starts_with("store.redis_url:"));
        assert!(err("version = 1\n[expiry]\nmax_days = 400").starts_with("expiry.max_days:"));
        for cache in [
            "item_bytes = 1000\nitem_max_bytes = 2000",
            "item_max_bytes = 0",
            "item_bytes = 134217728\nitem_max_bytes = 67108865",
        ] {
            let e = err(&format!("version = 1\n[cache]\n{cache}"));
            assert!(e.starts_with("cache.item_max_bytes:"), "{cache}: {e}");
        }
        let c = load("version = 1\n[cache]\nitem_bytes = 0\nitem_max_bytes = 0").unwrap();
        assert_eq!(c.cache.item_bytes, 0);
        let c = load("version = 1\n[limits]\nmax_verify_bytes = 1000").unwrap();
        assert_eq!(
            c.cache.item_max_bytes, 1000,
            "never more than may be verified"
        );
        assert!(err("version = 1\n[passthrough]\ndeny = [\"x\"]").starts_with("passthrough.deny:"));
        for bad in ["/", "/~s3@1.0", "/resolve", "/~meta@1.0//info", "/Upload"] {
            let e = err(&format!("version = 1\n[passthrough]\nallow = [\"{bad}\"]"));
            assert!(e.starts_with("passthrough.allow[0]:"), "{bad}: {e}");
        }
        assert!(
            err("version = 1\n[passthrough]\nmethods = [\"POST\"]")
                .starts_with("passthrough.methods[0]:")
        );
        assert!(err("version = 1\n[uploads]\nprivate = \"x\"").starts_with("uploads.private:"));
        assert!(
            err("version = 1\n[cache]\nmetadata_entries = 5")
                .starts_with("cache.metadata_entries:")
        );
    }

    #[test]
    fn secrets_come_only_from_the_environment() {
        let literal = err("version = 1\n[admin]\nbearer_key = \"hunter2hunter2hunter2\"");
        assert!(
            literal.starts_with("admin.bearer_key:") && literal.contains("${ENV_VAR}"),
            "{literal}"
        );
        let unset = err("version = 1\n[share_links]\nsecret = \"${NOPE}\"");
        assert!(unset.contains("NOPE is not set"), "{unset}");
        assert!(err("version = 1\n[admin]\nbearer_key = \"${SHORT}\"").contains("fewer than 16"));
        let c = load(
            "version = 1\n[admin]\nbearer_key = \"${ADMIN}\"\n[share_links]\nsecret = \"${SHARE}\"",
        )
        .unwrap();
        let key = c.admin.bearer_key.unwrap();
        assert!(key.matches(b"admin-key-0123456789"));
        assert!(!key.matches(b"admin-key-0123456780"));
        assert!(!key.matches(b"admin"));
        assert_eq!(format!("{key:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn channels_need_a_chain_to_read_a_key_and_a_claim_schedule_within_the_delay() {
        let local = "version = 1\n[payments]\nmode = \"local\"\nrpc_url = \"http://127.0.0.1:8545\"\n\
                     operator_key = \"${KEY}\"\nchain_id = 84532\n";
        let batch = "[payments.batch]\nreceiver_authorizer_key = \"${KEY}\"\n";
        let c = load(&format!("{local}{batch}")).unwrap();
        let b = c.payments.batch.unwrap();
        assert_eq!(
            b.receiver_authorizer.to_checksum(None),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        );
        assert_eq!(b.withdraw_delay.as_secs(), 86_400);
        assert_eq!(b.claim_interval.as_secs(), 600);
        assert_eq!(
            b.idle_refund, None,
            "idle channels are refunded only when configured"
        );
        let idle = load(&format!("{local}{batch}idle_refund_seconds = 604800\n")).unwrap();
        let idle = idle.payments.batch.unwrap().idle_refund;
        assert_eq!(idle, Some(Duration::from_secs(604_800)));
        assert!(load(local).unwrap().payments.batch.is_none());
        let off = load(&format!("{local}{batch}enabled = false\n")).unwrap();
        assert!(off.payments.batch.is_none());
        let facilitator = "version = 1\n[payments]\nmode = \"facilitator\"\n\
                           facilitator_url = \"http://127.0.0.1:1\"\n";
        assert!(err(&format!("{facilitator}{batch}")).contains("payments.rpc_url"));
        let read = format!("{facilitator}rpc_url = \"http://127.0.0.1:2\"\n");
        assert!(err(&format!("{read}{batch}")).contains("payments.chain_id"));
        let with = load(&format!("{read}chain_id = 84532\n{batch}")).unwrap();
        assert_eq!(with.payments.batch.unwrap().chain_id, 84532);
        assert_eq!(b.chain_id, 84532, "local settlement's chain");
        assert!(err(&format!("{local}[payments.batch]\n")).contains("receiver_authorizer_key"));
        let secret = "[payments.batch]\nreceiver_authorizer_key = \"${ADMIN}\"\n";
        assert!(err(&format!("{local}{secret}")).contains("private key"));
        for (key, bad) in [
            ("withdraw_delay_seconds", "899"),
            ("withdraw_delay_seconds", "2592001"),
            ("claim_interval_seconds", "28801"),
            ("claim_interval_seconds", "0"),
            ("sync_seconds", "28801"),
            ("hold_seconds", "4"),
            ("idle_refund_seconds", "9"),
            ("idle_refund_seconds", "31536001"),
            ("min_deposit_reads", "0"),
        ] {
            let e = err(&format!("{local}{batch}{key} = {bad}\n"));
            assert!(e.contains(key), "{key} = {bad}: {e}");
        }
    }

    #[test]
    fn upload_prices_need_payments_and_a_price() {
        let paid = "version = 1\n[payments]\nmode = \"facilitator\"\n\
                    facilitator_url = \"http://127.0.0.1:1\"\n\
                    [[payments.accept]]\nnetwork = \"base-sepolia\"\n\
                    pay_to = \"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC\"\n";
        let c = load(&format!("{paid}[pricing.uploads]\nper_mib = \"0.01\"")).unwrap();
        let price = c.payments.upload_price.unwrap();
        assert_eq!(price.per_mib.as_deref(), Some("0.01"));
        assert_eq!(price.days_without_expiry, 365);
        assert!(load(paid).unwrap().payments.upload_price.is_none());
        assert!(
            err("version = 1\n[pricing.uploads]\nper_mib = \"0.01\"")
                .starts_with("pricing.uploads:")
        );
        assert!(err(&format!("{paid}[pricing.uploads]\n")).starts_with("pricing.uploads:"));
        assert!(
            err(&format!("{paid}[pricing.uploads]\nper_mib = \"0.0000001\""))
                .starts_with("pricing.uploads:")
        );
        assert!(
            err(&format!(
                "{paid}[pricing.uploads]\nminimum = \"1\"\ndays_without_expiry = 0"
            ))
            .starts_with("pricing.uploads.days_without_expiry:")
        );
    }

    #[test]
    fn command_line_beats_environment_beats_file() {
        let text = "version = 1\n[listen]\npublic = \"127.0.0.1:1000\"\n[upstream]\nurl = \"http://127.0.0.1:2000\"";
        let env = |k: &str| match k {
            "HB402_LISTEN" => Some("127.0.0.1:1001".to_owned()),
            "HB402_UPSTREAM" => Some("http://127.0.0.1:2001".to_owned()),
            "HB402_STATE_DIR" => Some("/var/lib/hb402".to_owned()),
            _ => None,
        };
        let c = Config::from_toml(text, Path::new("t"), &Overrides::default(), &env).unwrap();
        assert_eq!(c.listen.public.to_string(), "127.0.0.1:1001");
        assert_eq!(c.upstream.authority, "127.0.0.1:2001");
        assert_eq!(c.store.state_dir, PathBuf::from("/var/lib/hb402"));
        let cli = Overrides {
            listen: Some("127.0.0.1:1002".into()),
            upstream: Some("http://127.0.0.1:2002".into()),
            ..Overrides::default()
        };
        let c = Config::from_toml(text, Path::new("t"), &cli, &env).unwrap();
        assert_eq!(c.listen.public.to_string(), "127.0.0.1:1002");
        assert_eq!(c.upstream.authority, "127.0.0.1:2002");
    }
}

#[cfg(test)]
mod example {
    use super::*;

    /// The shipped example is valid as is and documents exactly the defaults.
    #[test]
    fn deploy_example_loads_with_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config.example.toml");
        let example = Config::load(&path, &Overrides::default(), &|_| None).unwrap();
        let defaults =
            Config::from_toml("version = 1", &path, &Overrides::default(), &|_| None).unwrap();
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }
}
