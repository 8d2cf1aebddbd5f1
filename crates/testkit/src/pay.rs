//! Real x402 clients paying for a GET: `@x402/fetch`, legacy `x402-fetch` and the PyPI `x402`
//! client, each used unmodified through its own HTTP wrapper (`js/pay.mjs`, `py/pay.py`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use alloy_primitives::B256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::process::run;

/// How long one paid request may take, client start-up and settlement included.
pub const PAY_TIMEOUT: Duration = Duration::from_secs(120);

/// Which real client pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayClient {
    /// npm `@x402/fetch` 2.x: `wrapFetchWithPayment(fetch, x402Client)` with `@x402/evm`'s exact
    /// scheme for `eip155:84532` (v2) and `base-sepolia` (v1), default spend controls. Reads the
    /// `PAYMENT-REQUIRED` header, else a v1 JSON body; sends `PAYMENT-SIGNATURE` (v2) or
    /// `X-PAYMENT` (v1).
    Fetch,
    /// npm `x402-fetch` 1.x: `wrapFetchWithPayment(fetch, walletClient, maxValue)` with a viem
    /// wallet on Base Sepolia. v1 only: reads the JSON body, sends `X-PAYMENT`.
    Legacy,
    /// PyPI `x402` 2.x: `x402HttpxClient` over `x402Client` with the EVM exact scheme
    /// (`register_exact_evm_client`), default spend controls. Reads the header, else a v1 body.
    Python,
}

impl PayClient {
    /// All three clients.
    pub const ALL: [PayClient; 3] = [PayClient::Fetch, PayClient::Legacy, PayClient::Python];

    /// A short name for messages (`fetch`, `legacy`, `python`).
    pub fn name(self) -> &'static str {
        match self {
            PayClient::Fetch => "fetch",
            PayClient::Legacy => "legacy",
            PayClient::Python => "python",
        }
    }
}

/// Options of [`pay_with`] / [`try_pay_with`].
#[derive(Debug, Clone)]
pub struct PayOptions {
    /// The most the client may pay, in atomic units. `Legacy`: its `maxValue` (the package
    /// default is 100000, 0.1 USDC); `Fetch` / `Python`: a policy dropping dearer offers on top of
    /// the default spend controls (at most $1). `None` = the clients' defaults.
    pub max_value: Option<u128>,
    /// POST this file's bytes instead of a GET (an upload).
    pub data_file: Option<std::path::PathBuf>,
    /// Bound on the whole run; the client is killed after it.
    pub timeout: Duration,
}

impl Default for PayOptions {
    fn default() -> Self {
        PayOptions {
            max_value: None,
            data_file: None,
            timeout: PAY_TIMEOUT,
        }
    }
}

/// What the client's wrapper returned: the final response after any payment retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayResult {
    /// HTTP status.
    pub status: u16,
    /// Response headers, names in lower case (a repeated header keeps the client's joining).
    pub headers: HashMap<String, String>,
    /// The response body.
    pub body: Vec<u8>,
    /// The decoded `PAYMENT-RESPONSE` or `X-PAYMENT-RESPONSE` header (a `SettleResponse`), if
    /// present and valid base64 JSON.
    pub payment_response: Option<Value>,
}

/// `client` GETs `url`, paying any 402 with `key`; see [`try_pay_with`].
///
/// # Panics
///
/// If the client throws (e.g. it refuses every offer, or the retry is refused as already
/// attempted), does not finish within [`PAY_TIMEOUT`], or is not installed.
pub async fn pay(client: PayClient, url: &str, key: B256) -> PayResult {
    pay_with(client, url, key, PayOptions::default()).await
}

/// [`pay`] with options.
///
/// # Panics
///
/// As [`pay`].
pub async fn pay_with(client: PayClient, url: &str, key: B256, options: PayOptions) -> PayResult {
    match try_pay_with(client, url, key, options).await {
        Ok(result) => result,
        Err(message) => panic!("{} client: {message}", client.name()),
    }
}

/// Runs the client once: it GETs `url` (or POSTs [`PayOptions::data_file`] to it), and on a 402
/// signs one payment with `key` and retries once, as its wrapper does. `Ok` whatever the final status; `Err(message)` when the client
/// itself throws (its error message, e.g. "Payment amount exceeds maximum allowed").
///
/// # Panics
///
/// If the client cannot be started, does not finish within the timeout, or prints something
/// other than its JSON line: those are faults of the test set-up, not answers of the server.
pub async fn try_pay_with(
    client: PayClient,
    url: &str,
    key: B256,
    options: PayOptions,
) -> Result<PayResult, String> {
    let mut args = Vec::new();
    let mut command = match client {
        PayClient::Fetch | PayClient::Legacy => {
            crate::js::ensure_js();
            let mut command = Command::new(crate::js::node());
            command.current_dir(crate::js::js_dir()).arg("pay.mjs");
            args.extend(["--client".to_owned(), client.name().to_owned()]);
            command
        }
        PayClient::Python => {
            ensure_python();
            let mut command = Command::new(python());
            command.current_dir(py_dir()).arg("pay.py");
            command
        }
    };
    args.extend(["--key".to_owned(), format!("{key:#x}")]);
    if let Some(max) = options.max_value {
        args.extend(["--max-value".to_owned(), max.to_string()]);
    }
    if let Some(file) = &options.data_file {
        args.extend(["--data-file".to_owned(), file.display().to_string()]);
    }
    args.push(url.to_owned());
    command.args(&args);
    // Python's stdout must be UTF-8 and unbuffered whatever the environment says.
    command
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONUNBUFFERED", "1");

    let shown = format!("{} pay client ({url})", client.name());
    let finished = run(command, shown.clone(), None, options.timeout)
        .await
        .unwrap_or_else(|message| panic!("{message}"));
    let line = finished.stdout.lines().rev().find(|l| !l.trim().is_empty());
    let parsed: Option<Value> = line.and_then(|l| serde_json::from_str(l).ok());
    let diagnostics = || {
        format!(
            "`{shown}` exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            finished.status, finished.stdout, finished.stderr
        )
    };
    let Some(output) = parsed else {
        panic!("printed no JSON line: {}", diagnostics());
    };
    if !finished.success {
        return match output.get("error").and_then(Value::as_str) {
            Some(error) => Err(error.to_owned()),
            None => panic!("failed without an error message: {}", diagnostics()),
        };
    }
    Ok(parse_result(&output).unwrap_or_else(|what| panic!("{what}: {}", diagnostics())))
}

fn parse_result(output: &Value) -> Result<PayResult, String> {
    let status = output["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .ok_or("no status")?;
    let headers = output["headers"]
        .as_object()
        .ok_or("no headers")?
        .iter()
        .map(|(name, value)| {
            value
                .as_str()
                .map(|v| (name.to_ascii_lowercase(), v.to_owned()))
                .ok_or_else(|| format!("header {name} is not a string"))
        })
        .collect::<Result<_, _>>()?;
    let body = STANDARD
        .decode(output["body_base64"].as_str().ok_or("no body_base64")?)
        .map_err(|e| format!("body_base64: {e}"))?;
    let payment_response = match &output["payment_response"] {
        Value::Null => None,
        value => Some(value.clone()),
    };
    Ok(PayResult {
        status,
        headers,
        body,
        payment_response,
    })
}

/// The kit's Python directory (`crates/testkit/py`).
pub fn py_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/py"))
}

/// The interpreter for `pay.py`: `$HB402_PYTHON` if set, else the kit's virtualenv.
fn python() -> PathBuf {
    std::env::var_os("HB402_PYTHON")
        .map_or_else(|| py_dir().join(".venv/bin/python"), PathBuf::from)
}

/// Checks that the Python client is installed; panics with instructions otherwise. Cheap after
/// the first call.
pub fn ensure_python() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(message) = CHECKED.get_or_init(check_python) {
        panic!("{message}");
    }
}

fn check_python() -> Result<(), String> {
    let dir = py_dir();
    let install = format!(
        "create it with `python3 -m venv .venv && .venv/bin/pip install -r requirements.txt` in \
         {} (./scripts/test.sh does this before the tests), or set HB402_PYTHON",
        dir.display()
    );
    let python = python();
    let output = Command::new(&python)
        .args([
            "-c",
            "import x402, httpx, eth_account; print(x402.__version__)",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|error| {
            format!(
                "the test kit's Python client is not installed ({}: {error}): {install}",
                python.display()
            )
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "the test kit's Python client is incomplete ({} cannot import x402: {}): {install}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
