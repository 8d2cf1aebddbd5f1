//! The x402 `batch-settlement` client, unmodified, reading many URLs: `js/batch-pay.mjs`.

use std::collections::BTreeMap;
use std::time::Duration;

use alloy_primitives::B256;
use serde::Deserialize;
use serde_json::Value;

use crate::process::run_node;

/// How long one run of the client may take (a thousand paid reads fit well within it).
pub const BATCH_PAY_TIMEOUT: Duration = Duration::from_secs(900);

/// One read as the client got it.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchRead {
    /// The final status.
    pub status: u16,
    /// The body's length.
    pub length: u64,
    /// The body's SHA-256, hex.
    pub sha256: String,
}

/// What the client did.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRun {
    /// Each read, in order.
    pub reads: Vec<BatchRead>,
    /// Payloads sent, by type (`deposit`, `voucher`, `refund`, `exact`).
    pub payloads: BTreeMap<String, u64>,
    /// Payments sent, by the scheme of the offer they accepted.
    pub schemes: BTreeMap<String, u64>,
    /// 402s that corrected the client's cumulative amount.
    pub corrected: u64,
    /// The sum of `chargedAmount` of the payment responses.
    pub charged: String,
    /// Deposits confirmed: `{amount, transaction}`.
    pub deposits: Vec<Value>,
    /// The channel paid on.
    pub channel_id: Option<String>,
    /// The refund's settle response, when one was asked and made.
    pub refund: Option<Value>,
    /// Why the refund failed, when it did.
    pub refund_error: Option<String>,
}

impl BatchRun {
    /// The sum of the charges, in atomic units.
    pub fn charged(&self) -> u128 {
        self.charged.parse().expect("charged is a decimal")
    }
}

/// The batch-settlement client (paying with `key` on the chain at `rpc`) reads `urls` in
/// order, then asks for a refund on `refund` if given; `exact_too` registers the exact scheme
/// as well.
///
/// # Panics
///
/// If the client throws, does not finish within [`BATCH_PAY_TIMEOUT`], or prints something else
/// than its JSON line.
pub async fn batch_pay(
    rpc: &str,
    key: B256,
    urls: &[String],
    refund: Option<&str>,
    exact_too: bool,
) -> BatchRun {
    let list = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(list.path(), urls.join("\n")).expect("write the URL list");
    let mut args = vec![
        "--key".to_owned(),
        format!("{key:#x}"),
        "--rpc".to_owned(),
        rpc.to_owned(),
        "--urls-file".to_owned(),
        list.path().display().to_string(),
    ];
    if let Some(url) = refund {
        args.extend(["--refund".to_owned(), url.to_owned()]);
    }
    if exact_too {
        args.push("--exact-too".to_owned());
    }
    let out = run_node("batch-pay.mjs", args, None, BATCH_PAY_TIMEOUT).await;
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("batch-pay.mjs printed {out:?}: {e}"))
}
