//! The TOML file model: serde structs that mirror the file exactly. Unknown keys are errors;
//! defaults live here; nothing is validated beyond types (see `internal.rs`).

use serde::Deserialize;

fn default_public() -> String {
    "127.0.0.1:8402".into()
}
fn default_admin() -> String {
    "127.0.0.1:9402".into()
}
fn default_upstream_url() -> String {
    "http://127.0.0.1:8734".into()
}
fn default_access_key_id() -> String {
    "hb402-dev".into()
}
fn default_public_bucket() -> String {
    "offchain-dataitems".into()
}
fn default_private_bucket() -> String {
    "hb402-private".into()
}
fn default_key_prefix() -> String {
    "dataitems/".into()
}
fn default_state_dir() -> String {
    "hb402-state".into()
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) version: u32,
    #[serde(default)]
    pub(crate) server: ServerFile,
    #[serde(default)]
    pub(crate) listen: ListenFile,
    #[serde(default)]
    pub(crate) upstream: UpstreamFile,
    #[serde(default)]
    pub(crate) limits: LimitsFile,
    #[serde(default)]
    pub(crate) store: StoreFile,
    #[serde(default)]
    pub(crate) cache: CacheFile,
    #[serde(default)]
    pub(crate) expiry: ExpiryFile,
    #[serde(default)]
    pub(crate) share_links: ShareLinksFile,
    #[serde(default)]
    pub(crate) admin: AdminFile,
    #[serde(default)]
    pub(crate) passthrough: PassthroughFile,
    #[serde(default)]
    pub(crate) uploads: UploadsPolicyFile,
    #[serde(default)]
    pub(crate) responses: ResponsesFile,
    #[serde(default)]
    pub(crate) payments: PaymentsFile,
    #[serde(default)]
    pub(crate) pricing: PricingFile,
    #[serde(default)]
    pub(crate) paywall: PaywallFile,
}

/// `[server]`: process and Pingora settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerFile {
    pub(crate) threads: usize,
    pub(crate) grace_period_seconds: u64,
    pub(crate) graceful_shutdown_timeout_seconds: u64,
    pub(crate) log_format: String,
}

impl Default for ServerFile {
    fn default() -> Self {
        ServerFile {
            threads: 2,
            grace_period_seconds: 10,
            graceful_shutdown_timeout_seconds: 5,
            log_format: "text".into(),
        }
    }
}

/// `[listen]`: the public and admin listeners.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ListenFile {
    pub(crate) public: String,
    pub(crate) admin: String,
    pub(crate) public_base_url: Option<String>,
}

impl Default for ListenFile {
    fn default() -> Self {
        ListenFile {
            public: default_public(),
            admin: default_admin(),
            public_base_url: None,
        }
    }
}

/// `[upstream]`: the HyperBEAM node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct UpstreamFile {
    pub(crate) url: String,
    pub(crate) access_key_id: String,
    pub(crate) public_bucket: String,
    pub(crate) private_bucket: String,
    pub(crate) key_prefix: String,
    pub(crate) connect_timeout_seconds: u64,
    pub(crate) read_timeout_seconds: u64,
    pub(crate) write_timeout_seconds: u64,
}

impl Default for UpstreamFile {
    fn default() -> Self {
        UpstreamFile {
            url: default_upstream_url(),
            access_key_id: default_access_key_id(),
            public_bucket: default_public_bucket(),
            private_bucket: default_private_bucket(),
            key_prefix: default_key_prefix(),
            connect_timeout_seconds: 5,
            read_timeout_seconds: 30,
            write_timeout_seconds: 30,
        }
    }
}

/// `[limits]`: bounds on every size.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsFile {
    pub(crate) max_upload_bytes: u64,
    pub(crate) max_header_bytes: u64,
    pub(crate) max_payment_header_bytes: u64,
    pub(crate) max_admin_body_bytes: u64,
    pub(crate) max_verify_bytes: u64,
    pub(crate) max_upload_seconds: u64,
    pub(crate) max_concurrent_uploads: u32,
    pub(crate) max_uploads_per_client: u32,
}

impl Default for LimitsFile {
    fn default() -> Self {
        LimitsFile {
            max_upload_bytes: 256 * 1024 * 1024,
            max_header_bytes: 640 * 1024,
            max_payment_header_bytes: 16 * 1024,
            max_admin_body_bytes: 64 * 1024,
            max_verify_bytes: 256 * 1024 * 1024,
            max_upload_seconds: 600,
            max_concurrent_uploads: 32,
            max_uploads_per_client: 4,
        }
    }
}

/// `[store]`: where state lives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StoreFile {
    pub(crate) kind: String,
    pub(crate) state_dir: String,
    pub(crate) redis_url: Option<String>,
    pub(crate) purge_interval_seconds: u64,
}

impl Default for StoreFile {
    fn default() -> Self {
        StoreFile {
            kind: "redb".into(),
            state_dir: default_state_dir(),
            redis_url: None,
            purge_interval_seconds: 60,
        }
    }
}

/// `[cache]`: the in-memory metadata cache and the edge cache of item bytes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CacheFile {
    pub(crate) metadata_bytes: u64,
    pub(crate) metadata_ttl_seconds: u64,
    pub(crate) item_bytes: u64,
    pub(crate) item_max_bytes: u64,
    pub(crate) item_ttl_seconds: u64,
    /// Replaced by `metadata_bytes`; kept only to say so.
    pub(crate) metadata_entries: Option<u64>,
}

impl Default for CacheFile {
    fn default() -> Self {
        CacheFile {
            metadata_bytes: 64 * 1024 * 1024,
            metadata_ttl_seconds: 3600,
            item_bytes: 256 * 1024 * 1024,
            item_max_bytes: 1024 * 1024,
            item_ttl_seconds: 60,
            metadata_entries: None,
        }
    }
}

/// `[expiry]`: item lifetimes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ExpiryFile {
    pub(crate) default_days: u32,
    pub(crate) max_days: u32,
    pub(crate) tombstone_days: u32,
}

impl Default for ExpiryFile {
    fn default() -> Self {
        ExpiryFile {
            default_days: 0,
            max_days: 365,
            tombstone_days: 7,
        }
    }
}

/// `[share_links]`: private links (HS256 JWTs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ShareLinksFile {
    pub(crate) secret: Option<String>,
    pub(crate) default_minutes: u64,
    pub(crate) max_minutes: u64,
}

impl Default for ShareLinksFile {
    fn default() -> Self {
        ShareLinksFile {
            secret: None,
            default_minutes: 60,
            max_minutes: 60 * 24 * 30,
        }
    }
}

/// `[admin]`: the admin API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AdminFile {
    pub(crate) bearer_key: Option<String>,
}

/// `[passthrough]`: the only routes, besides hb402's own, that reach the node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PassthroughFile {
    pub(crate) allow: Vec<String>,
    pub(crate) methods: Vec<String>,
    pub(crate) allow_query: bool,
    /// Replaced by `allow`; kept only to say so.
    pub(crate) deny: Option<Vec<String>>,
}

impl Default for PassthroughFile {
    fn default() -> Self {
        PassthroughFile {
            allow: vec!["/~meta@1.0/info".into()],
            methods: vec!["GET".into(), "HEAD".into()],
            allow_query: false,
            deny: None,
        }
    }
}

/// `[uploads]`: who may store what.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct UploadsPolicyFile {
    pub(crate) private: String,
    pub(crate) key: Option<String>,
}

impl Default for UploadsPolicyFile {
    fn default() -> Self {
        UploadsPolicyFile {
            private: "restricted".into(),
            key: None,
        }
    }
}

/// `[responses]`: headers on served content.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ResponsesFile {
    pub(crate) active_content_csp: String,
}

impl Default for ResponsesFile {
    fn default() -> Self {
        ResponsesFile {
            active_content_csp: "sandbox".into(),
        }
    }
}

/// `[paywall]`: the page browsers get with a 402.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PaywallFile {
    pub(crate) chains: Vec<WalletChainFile>,
}

/// `[[paywall.chains]]`: how a wallet that does not know an offer's chain is asked to add it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WalletChainFile {
    pub(crate) network: String,
    pub(crate) name: String,
    pub(crate) rpc_urls: Vec<String>,
    pub(crate) explorer: Option<String>,
    #[serde(default = "ether")]
    pub(crate) currency: String,
}

fn ether() -> String {
    "ETH".into()
}

/// `[payments]`: how payments are verified and settled.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PaymentsFile {
    pub(crate) mode: String,
    pub(crate) facilitator_url: Option<String>,
    pub(crate) rpc_url: Option<String>,
    pub(crate) operator_key: Option<String>,
    pub(crate) chain_id: Option<u64>,
    pub(crate) max_timeout_seconds: u64,
    pub(crate) skew_seconds: u64,
    pub(crate) verify_timeout_seconds: u64,
    pub(crate) settle_timeout_seconds: u64,
    pub(crate) max_batch: usize,
    pub(crate) multicall: String,
    pub(crate) batch_linger_ms: u64,
    pub(crate) receipt_poll_ms: u64,
    pub(crate) receipt_window_seconds: u64,
    pub(crate) receipt_secret: Option<String>,
    pub(crate) max_failures_per_payer: u32,
    pub(crate) max_failures_per_client: u32,
    pub(crate) failure_window_seconds: u64,
    pub(crate) ledger_retention_days: u32,
    pub(crate) accept: Vec<AcceptFile>,
    pub(crate) networks: Vec<NetworkFile>,
    pub(crate) batch: Option<BatchFile>,
}

/// `[payments.batch]`: `batch-settlement` offered beside `exact`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct BatchFile {
    pub(crate) enabled: bool,
    pub(crate) receiver_authorizer_key: Option<String>,
    pub(crate) withdraw_delay_seconds: u64,
    pub(crate) min_deposit_reads: u64,
    pub(crate) claim_interval_seconds: u64,
    pub(crate) settle_interval_seconds: u64,
    pub(crate) sync_seconds: u64,
    pub(crate) hold_seconds: u64,
    pub(crate) idle_refund_seconds: u64,
    pub(crate) contract_payers: bool,
}

impl Default for BatchFile {
    fn default() -> Self {
        BatchFile {
            enabled: true,
            receiver_authorizer_key: None,
            withdraw_delay_seconds: 86_400,
            min_deposit_reads: 100,
            claim_interval_seconds: 600,
            settle_interval_seconds: 3600,
            sync_seconds: 60,
            hold_seconds: 60,
            idle_refund_seconds: 0,
            contract_payers: false,
        }
    }
}

impl Default for PaymentsFile {
    fn default() -> Self {
        PaymentsFile {
            mode: "off".into(),
            facilitator_url: None,
            rpc_url: None,
            operator_key: None,
            chain_id: None,
            max_timeout_seconds: 300,
            skew_seconds: 30,
            verify_timeout_seconds: 10,
            settle_timeout_seconds: 30,
            max_batch: 64,
            multicall: "0xcA11bde05977b3631167028862bE2a173976CA11".into(),
            batch_linger_ms: 20,
            receipt_poll_ms: 100,
            receipt_window_seconds: 600,
            receipt_secret: None,
            max_failures_per_payer: 10,
            max_failures_per_client: 100,
            failure_window_seconds: 600,
            ledger_retention_days: 30,
            accept: Vec::new(),
            networks: Vec::new(),
            batch: None,
        }
    }
}

/// `[[payments.accept]]`: one offer made on every priced request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcceptFile {
    pub(crate) network: String,
    pub(crate) pay_to: String,
    pub(crate) asset: Option<String>,
}

/// `[[payments.networks]]`: a network (e.g. a development chain) and its USDC-like asset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkFile {
    pub(crate) name: Option<String>,
    pub(crate) chain_id: u64,
    pub(crate) asset: String,
    pub(crate) asset_name: String,
    pub(crate) asset_version: String,
    #[serde(default = "six")]
    pub(crate) decimals: u8,
}

fn six() -> u8 {
    6
}

/// `[pricing]`: what reads cost.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PricingFile {
    pub(crate) rules: Vec<RuleFile>,
    pub(crate) honour_item_tags: bool,
    pub(crate) max_item_price: Option<String>,
    pub(crate) uploads: Option<UploadsFile>,
}

/// `[pricing.uploads]`: what storing an item costs; absent, uploads are free.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadsFile {
    pub(crate) per_mib: Option<String>,
    pub(crate) per_mib_day: Option<String>,
    pub(crate) minimum: Option<String>,
    #[serde(default = "a_year")]
    pub(crate) days_without_expiry: u32,
    pub(crate) description: Option<String>,
}

fn a_year() -> u32 {
    365
}

/// `[[pricing.rules]]`: the first rule that matches a read sets its price.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleFile {
    #[serde(default)]
    pub(crate) routes: Vec<String>,
    #[serde(default)]
    pub(crate) buckets: Vec<String>,
    #[serde(default)]
    pub(crate) content_types: Vec<String>,
    #[serde(default)]
    pub(crate) owners: Vec<String>,
    pub(crate) price: Option<String>,
    pub(crate) per_mib: Option<String>,
    pub(crate) minimum: Option<String>,
    #[serde(default)]
    pub(crate) free: bool,
    pub(crate) description: Option<String>,
}
