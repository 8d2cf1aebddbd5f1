//! Configuration: one TOML file (`version = 1`), read in two layers. [`file`] mirrors the file
//! with serde (unknown keys are errors); [`Config::load`] validates it into the typed [`Config`]
//! that the rest of hb402 uses. Secrets are written `"${ENV_VAR}"` and read from the environment.
//!
//! Precedence: command line > environment (`HB402_LISTEN`, `HB402_ADMIN_LISTEN`,
//! `HB402_UPSTREAM`, `HB402_STATE_DIR`) > file.

mod file;
mod internal;

pub use internal::{
    AdminConfig, BatchConfig, CacheConfig, Config, ConfigError, ExpiryConfig, Limits, ListenConfig,
    LogFormat, Overrides, PassthroughConfig, PaymentMode, PaymentsConfig, PaywallConfig,
    PrivateUploads, ResponsesConfig, Secret, Sending, ServerConfig, ShareLinkConfig, StoreConfig,
    StoreKind, UploadPolicy, UpstreamConfig, WalletChain,
};
