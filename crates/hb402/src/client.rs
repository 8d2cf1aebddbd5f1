//! `hb402 fetch` and `hb402 upload`: a curl-like x402 client. The request is sent; on a 402 the
//! cheapest offer within `--max-amount` is paid with an EIP-3009 authorization signed by the key
//! named with `--private-key-env`, and the request is sent once more with the payment.
//!
//! A settlement the server reports pending (504 `settlement_pending`) is never paid again: the
//! same payment is sent again after `Retry-After`, for up to `--pending-wait` seconds; past
//! that, the payment header is printed so that it can be sent again later (`-H`), and the payer
//! is charged at most once whatever happens.
//!
//! The response body goes to standard output (or `-o FILE`); what was paid, the settlement's
//! transaction and any receipt go to standard error. Exit status: 0 for a 2xx answer, 1 for
//! anything else (the server's answer or the local error is printed on standard error).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use alloy_primitives::{Address, B256};
use base64::Engine as _;
use clap::Args;
use futures_util::StreamExt as _;
use hb402_x402::client::{Challenge, Choice, Limits, choose};
use hb402_x402::{Registry, SettleResponse};
use k256::ecdsa::SigningKey;
use serde_json::json;
use tokio::io::AsyncReadExt as _;

/// Options shared by `fetch` and `upload`.
#[derive(Debug, Args)]
pub(crate) struct PayArgs {
    /// The environment variable holding the payer's private key (0x + 64 hex digits). Needed
    /// only when the server asks for a payment.
    #[arg(long, default_value = "HB402_PAYER_KEY")]
    private_key_env: String,
    /// Only pay on this network (v1 name such as `base-sepolia`, or CAIP-2 such as
    /// `eip155:84532`).
    #[arg(long)]
    network: Option<String>,
    /// Never pay more than this, in the asset's units (USDC).
    #[arg(long, default_value = "0.10")]
    max_amount: String,
    /// An extra request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Bound on each request, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// How long to keep sending the same payment again while the server reports its
    /// settlement pending, in seconds.
    #[arg(long, default_value_t = 120)]
    pending_wait: u64,
}

/// `hb402 fetch`.
#[derive(Debug, Args)]
pub(crate) struct FetchArgs {
    /// The URL to GET.
    url: String,
    /// Write the body here instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    #[command(flatten)]
    pay: PayArgs,
}

/// `hb402 upload`.
#[derive(Debug, Args)]
pub(crate) struct UploadArgs {
    /// The signed DataItem file.
    file: PathBuf,
    /// Where to POST it (e.g. `http://127.0.0.1:8402/upload`).
    url: String,
    /// Keep the item this many days (`x-expiry-days`).
    #[arg(long)]
    expiry_days: Option<u32>,
    /// Keep the item until this unix time (`x-expires-at`).
    #[arg(long)]
    expires_at: Option<u64>,
    /// Store it in the private bucket (`x-private: true`). The gateway decides who may: by
    /// default only holders of its upload key (see `--upload-key-env`).
    #[arg(long)]
    private: bool,
    /// The environment variable holding the gateway's upload key, sent as
    /// `Authorization: Bearer` with `--private` when set.
    #[arg(long, default_value = "HB402_UPLOAD_KEY")]
    upload_key_env: String,
    #[command(flatten)]
    pay: PayArgs,
}

/// A local failure, printed as `{"error", "message"}`.
struct Failure {
    code: &'static str,
    message: String,
}

fn fail(code: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// What is sent: a GET, or a POST of a file (re-read for the paid retry).
enum Body {
    None,
    File(PathBuf),
}

pub(crate) fn fetch(args: FetchArgs) -> ExitCode {
    let FetchArgs { url, output, pay } = args;
    finish(run(
        &url,
        reqwest::Method::GET,
        Body::None,
        Vec::new(),
        &pay,
        output,
    ))
}

pub(crate) fn upload(args: UploadArgs) -> ExitCode {
    let mut extra = Vec::new();
    if let Some(days) = args.expiry_days {
        extra.push(("x-expiry-days".to_owned(), days.to_string()));
    }
    if let Some(at) = args.expires_at {
        extra.push(("x-expires-at".to_owned(), at.to_string()));
    }
    if args.private {
        extra.push(("x-private".to_owned(), "true".to_owned()));
        if let Some(key) = std::env::var(&args.upload_key_env)
            .ok()
            .filter(|k| !k.is_empty())
        {
            extra.push(("authorization".to_owned(), format!("Bearer {key}")));
        }
    }
    finish(run(
        &args.url,
        reqwest::Method::POST,
        Body::File(args.file),
        extra,
        &args.pay,
        None,
    ))
}

fn finish(result: Result<bool, Failure>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(f) => {
            eprintln!("{}", json!({"error": f.code, "message": f.message}));
            ExitCode::from(1)
        }
    }
}

fn run(
    url: &str,
    method: reqwest::Method,
    body: Body,
    mut headers: Vec<(String, String)>,
    pay: &PayArgs,
    output: Option<PathBuf>,
) -> Result<bool, Failure> {
    for h in &pay.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| fail("bad_header", format!("{h:?} is not `Name: value`")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail("runtime", e.to_string()))?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(pay.timeout.max(1)))
            .build()
            .map_err(|e| fail("client", e.to_string()))?;
        let send = |payment: Option<(&'static str, String)>| {
            let client = &client;
            let method = method.clone();
            let headers = &headers;
            let body = &body;
            async move {
                let mut request = client.request(method, url);
                for (name, value) in headers {
                    request = request.header(name.as_str(), value.as_str());
                }
                if let Body::File(path) = body {
                    let file = tokio::fs::File::open(path)
                        .await
                        .map_err(|e| fail("io_error", format!("{}: {e}", path.display())))?;
                    let len = file
                        .metadata()
                        .await
                        .map_err(|e| fail("io_error", format!("{}: {e}", path.display())))?
                        .len();
                    request = request
                        .header("content-length", len.to_string())
                        .body(reqwest::Body::wrap_stream(file_stream(file)));
                }
                if let Some((name, value)) = payment {
                    request = request.header(name, value);
                }
                request
                    .send()
                    .await
                    .map_err(|e| fail("request_failed", format!("{url}: {e}")))
            }
        };
        let mut response = send(None).await?;
        let mut payment = None;
        if response.status() == 402 {
            let (choice, header) = prepare_payment(response, pay).await?;
            eprintln!(
                "hb402: paying {} ({} atomic units) on {} to {}",
                format_amount(&choice),
                choice.amount,
                choice.network,
                choice.pay_to
            );
            response = send(Some(header.clone())).await?;
            payment = Some(header);
        }
        // Pending (this payment, or one passed with -H): the same payment again, never a new one.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(pay.pending_wait);
        while let Some(wait) = pending(&response) {
            if tokio::time::Instant::now() + wait > deadline {
                let again = match &payment {
                    Some((name, value)) => format!("-H '{name}: {value}'"),
                    None => "the same payment header".to_owned(),
                };
                eprintln!(
                    "hb402: the settlement is still pending; it is charged at most once. \
                     To collect it, send the same payment again: {again}"
                );
                break;
            }
            eprintln!(
                "hb402: settlement pending; sending the same payment again in {} s",
                wait.as_secs()
            );
            tokio::time::sleep(wait).await;
            response = send(payment.clone()).await?;
        }
        if payment.is_some() {
            report_settlement(&response);
            if response.status() == 402 {
                let header = header_str(&response, "payment-required");
                let body = read_bounded(response).await;
                let why = Challenge::parse(header.as_deref(), &body)
                    .ok()
                    .and_then(|c| c.error().map(str::to_owned))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                return Err(fail(
                    "payment_refused",
                    format!("the server refused the payment: {why}"),
                ));
            }
        }
        if let Some(receipt) = header_str(&response, "x-receipt") {
            eprintln!("hb402: receipt {receipt}");
        }
        let ok = response.status().is_success();
        if !ok {
            let status = response.status();
            let body = read_bounded(response).await;
            eprintln!(
                "hb402: {url} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
            return Ok(false);
        }
        write_body(response, output).await?;
        Ok(true)
    })
}

fn file_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

fn header_str(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Reads at most 64 KiB of a body (a challenge or an error).
async fn read_bounded(response: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = hb402_x402::client::MAX_CHALLENGE_BYTES.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    out
}

async fn prepare_payment(
    response: reqwest::Response,
    pay: &PayArgs,
) -> Result<(Choice, (&'static str, String)), Failure> {
    let header = header_str(&response, "payment-required");
    let body = read_bounded(response).await;
    let challenge = Challenge::parse(header.as_deref(), &body)
        .map_err(|e| fail("no_challenge", e.to_string()))?;
    let limits = Limits {
        network: pay.network.clone(),
        max_amount: pay.max_amount.clone(),
    };
    let choice = choose(&challenge, &Registry::builtin(), &limits)
        .map_err(|e| fail("no_payable_offer", e.to_string()))?;
    let key = signing_key(&pay.private_key_env)?;
    let payer = Address::from_public_key(key.verifying_key());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| fail("clock", e.to_string()))?
        .as_secs();
    let auth = choice.authorization(payer, now, B256::from(rand::random::<[u8; 32]>()));
    let hash = choice.signing_hash(&auth);
    let (signature, recovery) = key
        .sign_prehash_recoverable(hash.as_slice())
        .map_err(|e| fail("signing_failed", e.to_string()))?;
    // Low-S (the token refuses high-S), v = 27/28.
    let (signature, recovery) = match signature.normalize_s() {
        Some(normalized) => (normalized, recovery.is_y_odd() ^ true),
        None => (signature, recovery.is_y_odd()),
    };
    let mut bytes = signature.to_bytes().to_vec();
    bytes.push(27 + u8::from(recovery));
    let payment = choice.header(&auth, &bytes);
    Ok((choice, payment))
}

/// The payer's key from the environment variable `name`.
fn signing_key(name: &str) -> Result<SigningKey, Failure> {
    let text = std::env::var(name).map_err(|_| {
        fail(
            "no_key",
            format!("payment required: set {name} to the payer's private key (0x + 64 hex digits)"),
        )
    })?;
    let digits = text.trim().trim_start_matches("0x");
    let bytes = hex::decode(digits)
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| fail("bad_key", format!("{name} is not 32 bytes of hex")))?;
    SigningKey::from_slice(&bytes)
        .map_err(|_| fail("bad_key", format!("{name} is not a valid key")))
}

fn format_amount(choice: &Choice) -> String {
    format!(
        "{} {}",
        hb402_x402::client::format_units(&choice.amount, choice.asset.decimals),
        choice.asset.symbol
    )
}

/// The settlement response a server sent, if any.
fn settlement(response: &reqwest::Response) -> Option<Option<SettleResponse>> {
    let value = header_str(response, "payment-response")
        .or_else(|| header_str(response, "x-payment-response"))?;
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|b| serde_json::from_slice::<SettleResponse>(&b).ok()),
    )
}

/// For a 504 saying the settlement is pending: how long to wait (`Retry-After`, 1–30 s).
fn pending(response: &reqwest::Response) -> Option<Duration> {
    if response.status() != 504 {
        return None;
    }
    let reason = settlement(response)??.error_reason?;
    if reason != hb402_x402::facilitator::SETTLEMENT_PENDING {
        return None;
    }
    let seconds = header_str(response, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(5);
    Some(Duration::from_secs(seconds.clamp(1, 30)))
}

fn report_settlement(response: &reqwest::Response) {
    let Some(decoded) = settlement(response) else {
        return;
    };
    match decoded {
        Some(s) if s.success => eprintln!(
            "hb402: settled on {}: transaction {}",
            s.network, s.transaction
        ),
        Some(s) => eprintln!(
            "hb402: settlement failed: {} {}",
            s.error_reason.unwrap_or_default(),
            s.error_message.unwrap_or_default()
        ),
        None => eprintln!("hb402: unreadable settlement header"),
    }
}

async fn write_body(response: reqwest::Response, output: Option<PathBuf>) -> Result<(), Failure> {
    let mut sink: Box<dyn std::io::Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| fail("io_error", format!("{}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| fail("read_failed", e.to_string()))?;
        sink.write_all(&chunk)
            .map_err(|e| fail("io_error", e.to_string()))?;
    }
    sink.flush().map_err(|e| fail("io_error", e.to_string()))
}
