//! A remote x402 facilitator over HTTP.
//!
//! Facilitators answer verification problems with 400/412 and on-chain failures with 500, with
//! JSON bodies (x402.md §3.1), so bodies are read on those statuses too. The client fails closed:
//! a missing or malformed verdict, an unexpected status, a timeout, or a "valid"/"success" on an
//! error status are all refusals.

use std::time::{Duration, Instant};

use hb402_x402::{
    Facilitator, FacilitatorError, SettleResponse, Supported, VerifyRequest, VerifyResponse,
};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

/// Bound on a facilitator answer body.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// How often `/supported` is retried after HTTP 429.
const SUPPORTED_RETRIES: u32 = 3;
/// Longest wait honoured from a `Retry-After` header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Where the facilitator is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct HttpFacilitatorConfig {
    /// Base URL, e.g. `https://x402.example/facilitator` (paths are appended).
    pub url: String,
    /// Bound on `/verify`.
    pub verify_timeout: Duration,
    /// Bound on `/settle` (one transaction inclusion: seconds).
    pub settle_timeout: Duration,
    /// Bound on `/supported`.
    pub supported_timeout: Duration,
    /// How long a `/supported` answer is reused.
    pub supported_ttl: Duration,
    /// Static headers sent on every call (e.g. an API key).
    pub headers: Vec<(String, String)>,
}

impl HttpFacilitatorConfig {
    /// Defaults for `url`: verify 10 s, settle 30 s, supported 10 s cached for 5 minutes.
    pub fn new(url: impl Into<String>) -> Self {
        HttpFacilitatorConfig {
            url: url.into(),
            verify_timeout: Duration::from_secs(10),
            settle_timeout: Duration::from_secs(30),
            supported_timeout: Duration::from_secs(10),
            supported_ttl: Duration::from_secs(300),
            headers: Vec::new(),
        }
    }
}

/// A remote facilitator.
#[derive(Debug)]
pub struct HttpFacilitator {
    client: reqwest::Client,
    config: HttpFacilitatorConfig,
    base: String,
    supported: Mutex<Option<(Instant, Supported)>>,
}

/// The kind of verdict a call expects, for strict reading of the answer.
trait Verdict: DeserializeOwned {
    fn positive(&self) -> bool;
}

impl Verdict for VerifyResponse {
    fn positive(&self) -> bool {
        self.is_valid
    }
}

impl Verdict for SettleResponse {
    fn positive(&self) -> bool {
        self.success
    }
}

impl HttpFacilitator {
    /// A client; fails if a configured header is not a valid HTTP header.
    pub fn new(config: HttpFacilitatorConfig) -> Result<Self, FacilitatorError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                FacilitatorError::Unsupported(format!("invalid header name {name:?}"))
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                FacilitatorError::Unsupported(format!("invalid value for header {name}"))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| FacilitatorError::Unreachable(e.to_string()))?;
        let base = config.url.trim_end_matches('/').to_owned();
        Ok(HttpFacilitator {
            client,
            config,
            base,
            supported: Mutex::new(None),
        })
    }

    fn send_error(e: reqwest::Error, timeout: Duration) -> FacilitatorError {
        if e.is_timeout() {
            FacilitatorError::Timeout(timeout.as_millis() as u64)
        } else {
            FacilitatorError::Unreachable(e.to_string())
        }
    }

    /// Reads at most [`MAX_BODY_BYTES`] of a response body.
    async fn body(
        mut resp: reqwest::Response,
        timeout: Duration,
    ) -> Result<Vec<u8>, FacilitatorError> {
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Self::send_error(e, timeout))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(FacilitatorError::BadResponse {
                    status,
                    message: format!("answer larger than {MAX_BODY_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// POSTs a verify or settle request and reads the verdict strictly.
    async fn call<V: Verdict>(
        &self,
        path: &str,
        request: &VerifyRequest,
        timeout: Duration,
    ) -> Result<V, FacilitatorError> {
        let resp = self
            .client
            .post(format!("{}/{path}", self.base))
            .json(request)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Self::send_error(e, timeout))?;
        let status = resp.status();
        let body = Self::body(resp, timeout).await?;
        // Verdicts come with 200, or with 400/402/412/500 for refusals (x402.md §3.1).
        let answer_status = matches!(status.as_u16(), 200 | 400 | 402 | 412 | 500);
        if !answer_status {
            return Err(FacilitatorError::BadResponse {
                status: status.as_u16(),
                message: snippet(&body),
            });
        }
        let verdict: V =
            serde_json::from_slice(&body).map_err(|e| FacilitatorError::BadResponse {
                status: status.as_u16(),
                message: format!("{e}: {}", snippet(&body)),
            })?;
        // A positive verdict only counts with 200: anything else is contradictory (fail closed).
        if verdict.positive() && status != StatusCode::OK {
            return Err(FacilitatorError::BadResponse {
                status: status.as_u16(),
                message: "positive verdict on an error status".into(),
            });
        }
        Ok(verdict)
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.into_owned()
}

#[async_trait::async_trait]
impl Facilitator for HttpFacilitator {
    async fn supported(&self) -> Result<Supported, FacilitatorError> {
        let mut cache = self.supported.lock().await;
        if let Some((at, supported)) = cache.as_ref()
            && at.elapsed() < self.config.supported_ttl
        {
            return Ok(supported.clone());
        }
        let timeout = self.config.supported_timeout;
        let mut backoff = Duration::from_millis(200);
        for attempt in 0..=SUPPORTED_RETRIES {
            let resp = self
                .client
                .get(format!("{}/supported", self.base))
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| Self::send_error(e, timeout))?;
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS && attempt < SUPPORTED_RETRIES {
                let wait = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(backoff, Duration::from_secs)
                    .min(MAX_RETRY_AFTER);
                tokio::time::sleep(wait).await;
                backoff *= 2;
                continue;
            }
            let body = Self::body(resp, timeout).await?;
            if status != StatusCode::OK {
                return Err(FacilitatorError::BadResponse {
                    status: status.as_u16(),
                    message: snippet(&body),
                });
            }
            let supported: Supported =
                serde_json::from_slice(&body).map_err(|e| FacilitatorError::BadResponse {
                    status: 200,
                    message: e.to_string(),
                })?;
            *cache = Some((Instant::now(), supported.clone()));
            return Ok(supported);
        }
        Err(FacilitatorError::BadResponse {
            status: 429,
            message: "still rate limited after retries".into(),
        })
    }

    async fn verify(&self, request: &VerifyRequest) -> Result<VerifyResponse, FacilitatorError> {
        self.call("verify", request, self.config.verify_timeout)
            .await
    }

    async fn settle(&self, request: &VerifyRequest) -> Result<SettleResponse, FacilitatorError> {
        self.call("settle", request, self.config.settle_timeout)
            .await
    }
}
