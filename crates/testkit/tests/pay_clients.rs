//! The real clients pay a minimal dual-stack paywall on the local chain.
//!
//! The paywall below is a stand-in of a few dozen lines, not hb402: a 402 with the v2
//! `PAYMENT-REQUIRED` header *and* the v1 JSON body; a retry carrying `PAYMENT-SIGNATURE` or
//! `X-PAYMENT` goes to the reference facilitator's `/verify` then `/settle`, and a success
//! answers 200 with the body and `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`. It records every
//! request, so the tests also pin what each client sends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use hb402_testkit::{
    BUYER_ACCOUNT, FACILITATOR_ACCOUNT, Facilitator, LocalChain, NETWORK_V1, NETWORK_V2,
    PAYEE_ACCOUNT, PayClient, PayOptions, USDC, USDC_NAME, USDC_VERSION, pay, try_pay_with,
};

const PRICE: u128 = 10_000;
const MAX_TIMEOUT_SECONDS: u64 = 300;
const CONTENT: &[u8] = b"the paid bytes \x00\x01\xff";

/// One request as the paywall saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// Lower-case names of the x402 request headers present.
    x402_headers: Vec<String>,
    /// The decoded payment payload, if one was sent.
    payload: Option<Value>,
}

#[derive(Debug)]
struct Paywall {
    resource: String,
    facilitator: String,
    http: reqwest::Client,
    /// Refuse every payment without calling the facilitator (to see whether clients retry).
    refuse: bool,
    seen: Mutex<Vec<Seen>>,
}

impl Paywall {
    fn v2_offer(&self) -> Value {
        json!({
            "scheme": "exact",
            "network": NETWORK_V2,
            "amount": PRICE.to_string(),
            "asset": USDC.to_checksum(None),
            "payTo": PAYEE_ACCOUNT.address_checksummed(),
            "maxTimeoutSeconds": MAX_TIMEOUT_SECONDS,
            "extra": {"name": USDC_NAME, "version": USDC_VERSION},
        })
    }

    fn v1_offer(&self) -> Value {
        json!({
            "scheme": "exact",
            "network": NETWORK_V1,
            "maxAmountRequired": PRICE.to_string(),
            "resource": self.resource,
            "description": "a test resource",
            "mimeType": "application/octet-stream",
            "payTo": PAYEE_ACCOUNT.address_checksummed(),
            "maxTimeoutSeconds": MAX_TIMEOUT_SECONDS,
            "asset": USDC.to_checksum(None),
            "extra": {"name": USDC_NAME, "version": USDC_VERSION},
        })
    }

    /// 402 with both protocol versions: the v2 header and the v1 body.
    fn challenge(&self, error: &str) -> Response<Full<Bytes>> {
        let v2 = json!({
            "x402Version": 2,
            "error": error,
            "resource": {
                "url": self.resource,
                "description": "a test resource",
                "mimeType": "application/octet-stream",
            },
            "accepts": [self.v2_offer()],
        });
        let v1 = json!({"x402Version": 1, "error": error, "accepts": [self.v1_offer()]});
        Response::builder()
            .status(402)
            .header("content-type", "application/json")
            .header("PAYMENT-REQUIRED", STANDARD.encode(v2.to_string()))
            .body(Full::new(Bytes::from(v1.to_string())))
            .unwrap()
    }

    async fn facilitator(&self, route: &str, payload: &Value, requirements: &Value) -> Value {
        let body = json!({
            "x402Version": payload["x402Version"],
            "paymentPayload": payload,
            "paymentRequirements": requirements,
        });
        self.http
            .post(format!("{}/{route}", self.facilitator))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let headers = request.headers();
        let x402_headers = [
            "payment-signature",
            "x-payment",
            "access-control-expose-headers",
        ]
        .into_iter()
        .filter(|name| headers.contains_key(*name))
        .map(str::to_owned)
        .collect();
        let (header, settlement_header) =
            match (headers.get("payment-signature"), headers.get("x-payment")) {
                (Some(v2), _) => (Some(v2.clone()), "PAYMENT-RESPONSE"),
                (None, Some(v1)) => (Some(v1.clone()), "X-PAYMENT-RESPONSE"),
                (None, None) => (None, ""),
            };
        let payload: Option<Value> = header
            .and_then(|h| STANDARD.decode(h.as_bytes()).ok())
            .and_then(|json| serde_json::from_slice(&json).ok());
        self.seen.lock().unwrap().push(Seen {
            x402_headers,
            payload: payload.clone(),
        });
        let Some(payload) = payload else {
            return self.challenge("Payment required");
        };
        if self.refuse {
            return self.challenge("refused by the test");
        }
        // v2 echoes the offer in `accepted`; v1 names scheme and network only.
        let requirements = if payload["x402Version"] == 2 {
            if payload["accepted"] != self.v2_offer() {
                return self.challenge("no matching offer");
            }
            self.v2_offer()
        } else {
            if payload["scheme"] != "exact" || payload["network"] != NETWORK_V1 {
                return self.challenge("no matching offer");
            }
            self.v1_offer()
        };
        let verified = self.facilitator("verify", &payload, &requirements).await;
        if verified["isValid"] != true {
            return self.challenge(verified["invalidReason"].as_str().unwrap_or("invalid"));
        }
        let settled = self.facilitator("settle", &payload, &requirements).await;
        let encoded = STANDARD.encode(settled.to_string());
        if settled["success"] != true {
            let mut refused = self.challenge(settled["errorReason"].as_str().unwrap_or("failed"));
            refused
                .headers_mut()
                .insert(settlement_header, encoded.parse().unwrap());
            return refused;
        }
        Response::builder()
            .status(200)
            .header("content-type", "application/octet-stream")
            .header(settlement_header, encoded)
            .body(Full::new(Bytes::from_static(CONTENT)))
            .unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serves the paywall on 127.0.0.1 until the test's runtime ends; returns it and its URL.
async fn start_paywall(facilitator: &Facilitator) -> (Arc<Paywall>, String) {
    serve(facilitator.url(), false).await
}

async fn serve(facilitator: &str, refuse: bool) -> (Arc<Paywall>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let url = format!("http://{addr}/paid/item?x=1");
    let paywall = Arc::new(Paywall {
        resource: url.clone(),
        facilitator: facilitator.to_owned(),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        refuse,
        seen: Mutex::new(Vec::new()),
    });
    let server = Arc::clone(&paywall);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let paywall = Arc::clone(&server);
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let paywall = Arc::clone(&paywall);
                    async move { Ok::<_, Infallible>(paywall.handle(request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (paywall, url)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Pays once with `client` and checks the body, the settlement header and the payee's balance;
/// returns what the paywall saw.
async fn pays_once(client: PayClient) -> Vec<Seen> {
    let chain = LocalChain::start().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let (paywall, url) = start_paywall(&facilitator).await;
    let before = chain.usdc_balance(PAYEE_ACCOUNT.address).await;

    let started = now();
    let result = pay(client, &url, BUYER_ACCOUNT.private_key).await;
    let seen = paywall.seen();
    assert_eq!(
        result.status,
        200,
        "{} client: {result:?}\nseen: {seen:#?}\n{}",
        client.name(),
        facilitator.logs()
    );
    assert_eq!(result.body, CONTENT);
    assert_eq!(result.headers["content-type"], "application/octet-stream");
    let settlement = result.payment_response.expect("a settlement header");
    assert_eq!(settlement["success"], true, "{settlement}");
    assert!(
        settlement["transaction"]
            .as_str()
            .is_some_and(|t| t.starts_with("0x") && t.len() == 66),
        "{settlement}"
    );
    assert_eq!(
        chain.usdc_balance(PAYEE_ACCOUNT.address).await,
        before + PRICE,
        "the payee gains exactly the price"
    );

    // Every client pays with one authorization of exactly the price to the payee, valid until
    // about now + maxTimeoutSeconds, with a fresh 32-byte nonce.
    let payload = seen
        .last()
        .and_then(|s| s.payload.clone())
        .expect("a paid retry");
    let authorization = &payload["payload"]["authorization"];
    assert_eq!(authorization["value"], PRICE.to_string());
    assert_eq!(authorization["from"], BUYER_ACCOUNT.address_checksummed());
    assert_eq!(
        authorization["to"].as_str().unwrap().to_ascii_lowercase(),
        PAYEE_ACCOUNT.address_checksummed().to_ascii_lowercase()
    );
    assert_eq!(authorization["nonce"].as_str().unwrap().len(), 66);
    let valid_before: u64 = authorization["validBefore"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let finished = now();
    assert!(
        (started + MAX_TIMEOUT_SECONDS..=finished + MAX_TIMEOUT_SECONDS).contains(&valid_before),
        "validBefore {valid_before}, requests between {started} and {finished}"
    );
    seen
}

fn valid_after(seen: &[Seen]) -> u64 {
    seen[1].payload.as_ref().unwrap()["payload"]["authorization"]["validAfter"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_fetch_pays_with_payment_signature_v2() {
    let seen = pays_once(PayClient::Fetch).await;
    // Exactly two requests: the unpaid probe, then one paid retry (no further retries).
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen[0].x402_headers.is_empty(), "{seen:#?}");
    // With a PAYMENT-REQUIRED header present it speaks v2, and asks for the response headers.
    assert_eq!(
        seen[1].x402_headers,
        ["payment-signature", "access-control-expose-headers"]
    );
    let payload = seen[1].payload.as_ref().unwrap();
    assert_eq!(payload["x402Version"], 2);
    assert_eq!(payload["accepted"]["network"], NETWORK_V2);
    assert_eq!(payload["resource"]["mimeType"], "application/octet-stream");
    assert_eq!(valid_after(&seen), 0, "@x402/evm sends validAfter 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_x402_fetch_pays_with_x_payment_v1() {
    let started = now();
    let seen = pays_once(PayClient::Legacy).await;
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen[0].x402_headers.is_empty(), "{seen:#?}");
    // It reads only the v1 body and answers with X-PAYMENT.
    assert_eq!(
        seen[1].x402_headers,
        ["x-payment", "access-control-expose-headers"]
    );
    let payload = seen[1].payload.as_ref().unwrap();
    assert_eq!(payload["x402Version"], 1);
    assert_eq!(payload["scheme"], "exact");
    assert_eq!(payload["network"], NETWORK_V1);
    assert!(payload.get("accepted").is_none(), "{payload}");
    // Legacy backdates validAfter by ten minutes.
    let after = valid_after(&seen);
    assert!(
        (started - 600..=now() - 600).contains(&after),
        "validAfter {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_x402_pays_with_payment_signature_v2() {
    let seen = pays_once(PayClient::Python).await;
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen[0].x402_headers.is_empty(), "{seen:#?}");
    assert_eq!(
        seen[1].x402_headers,
        ["payment-signature", "access-control-expose-headers"]
    );
    let payload = seen[1].payload.as_ref().unwrap();
    assert_eq!(payload["x402Version"], 2);
    assert_eq!(payload["accepted"]["network"], NETWORK_V2);
    assert_eq!(
        valid_after(&seen),
        0,
        "the Python v2 client sends validAfter 0"
    );
}

/// The legacy client refuses an offer above its `maxValue` before signing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_client_refuses_a_price_above_max_value() {
    let chain = LocalChain::start().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let (paywall, url) = start_paywall(&facilitator).await;
    let refused = try_pay_with(
        PayClient::Legacy,
        &url,
        BUYER_ACCOUNT.private_key,
        PayOptions {
            max_value: Some(PRICE - 1),
            ..PayOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(refused.contains("exceeds maximum"), "{refused}");
    assert_eq!(paywall.seen().len(), 1);
}

/// A paid retry answered with 402 comes back to the caller as that 402: no client signs a second
/// payment or tries again. No chain is needed, as nothing is verified or settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_payment_is_not_retried() {
    let runs = PayClient::ALL.map(|client| async move {
        // The paywall refuses before any facilitator call, so this one needs no address.
        let (paywall, url) = serve("http://facilitator.invalid", true).await;
        let result = pay(client, &url, BUYER_ACCOUNT.private_key).await;
        (client, paywall.seen(), result)
    });
    for (client, seen, result) in futures_join(runs).await {
        assert_eq!(result.status, 402, "{}: {result:?}", client.name());
        assert_eq!(result.payment_response, None);
        let body: Value = serde_json::from_slice(&result.body).unwrap();
        assert_eq!(body["error"], "refused by the test", "{}", client.name());
        assert_eq!(seen.len(), 2, "{}: {seen:#?}", client.name());
        assert!(seen[1].payload.is_some());
    }
}

/// Runs the futures concurrently on the test's runtime.
async fn futures_join<F>(futures: [F; 3]) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles = futures.map(tokio::spawn);
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
