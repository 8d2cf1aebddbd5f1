//! The HTTP facilitator client against an in-process stand-in whose answers each test chooses:
//! strict verdict reading, timeouts, unreachable facilitators, the `/supported` cache and retries.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hb402_gate::facilitator::{HttpFacilitator, HttpFacilitatorConfig};
use hb402_x402::{Facilitator, FacilitatorError, VerifyRequest};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;

/// What the stand-in answers: status, body, delay.
type Answer = (u16, String, Duration);

#[derive(Clone)]
struct Mock {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    seen_headers: Arc<Mutex<Vec<(String, String)>>>,
}

impl Mock {
    async fn start(answer: impl Fn(&str, usize) -> Answer + Send + Sync + 'static) -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen_headers = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let mock = Mock {
            addr,
            hits: hits.clone(),
            seen_headers: seen_headers.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let hits = hits.clone();
                let answer = answer.clone();
                let seen = seen_headers.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let n = hits.fetch_add(1, Ordering::SeqCst);
                        let (status, body, delay) = answer(req.uri().path(), n);
                        seen.lock()
                            .unwrap()
                            .extend(req.headers().iter().map(|(k, v)| {
                                (k.to_string(), v.to_str().unwrap_or_default().to_owned())
                            }));
                        async move {
                            tokio::time::sleep(delay).await;
                            let mut resp = Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        mock
    }

    fn client(&self) -> HttpFacilitator {
        let mut config = HttpFacilitatorConfig::new(format!("http://{}/", self.addr));
        config.verify_timeout = Duration::from_millis(500);
        config.settle_timeout = Duration::from_millis(500);
        config.supported_ttl = Duration::from_millis(300);
        config.headers = vec![("x-api-key".into(), "sekrit".into())];
        HttpFacilitator::new(config).unwrap()
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn request() -> VerifyRequest {
    VerifyRequest {
        x402_version: 2,
        payment_payload: json!({"x402Version": 2}),
        payment_requirements: json!({"scheme": "exact"}),
    }
}

fn fixed(status: u16, body: serde_json::Value) -> impl Fn(&str, usize) -> Answer {
    move |_, _| (status, body.to_string(), Duration::ZERO)
}

#[tokio::test]
async fn verdicts_are_read_on_every_answer_status() {
    let ok = Mock::start(fixed(200, json!({"isValid": true, "payer": "0xabc"}))).await;
    let v = ok.client().verify(&request()).await.unwrap();
    assert!(v.is_valid);
    assert_eq!(v.payer.as_deref(), Some("0xabc"));
    // The configured static header is sent.
    assert!(
        ok.seen_headers
            .lock()
            .unwrap()
            .contains(&("x-api-key".into(), "sekrit".into()))
    );

    for status in [400, 412, 500] {
        let m = Mock::start(fixed(
            status,
            json!({"isValid": false, "invalidReason": "insufficient_funds", "payer": ""}),
        ))
        .await;
        let v = m.client().verify(&request()).await.unwrap();
        assert!(!v.is_valid);
        assert_eq!(v.invalid_reason.as_deref(), Some("insufficient_funds"));
    }

    let settled = Mock::start(fixed(
        200,
        json!({"success": true, "transaction": "0x12", "network": "eip155:84532"}),
    ))
    .await;
    let s = settled.client().settle(&request()).await.unwrap();
    assert!(s.success);
    assert_eq!(s.transaction, "0x12");

    // x402-rs spells the failure reason in snake_case on some paths.
    let failed = Mock::start(fixed(
        500,
        json!({"success": false, "error_reason": "unexpected_error"}),
    ))
    .await;
    let s = failed.client().settle(&request()).await.unwrap();
    assert!(!s.success);
    assert_eq!(s.error_reason.as_deref(), Some("unexpected_error"));
}

#[tokio::test]
async fn anything_unclear_is_a_failure() {
    let cases = [
        (200, "not json".to_owned()),
        (200, json!({}).to_string()),
        (200, json!({"isValid": "yes"}).to_string()),
        (500, json!({"isValid": true}).to_string()),
        (503, json!({"isValid": false}).to_string()),
        (302, String::new()),
    ];
    for (status, body) in cases {
        let m = Mock::start(move |_, _| (status, body.clone(), Duration::ZERO)).await;
        let err = m.client().verify(&request()).await.unwrap_err();
        assert!(
            matches!(err, FacilitatorError::BadResponse { .. }),
            "{status}: {err}"
        );
    }
    let missing_success = Mock::start(fixed(200, json!({"transaction": "0x12"}))).await;
    assert!(matches!(
        missing_success.client().settle(&request()).await,
        Err(FacilitatorError::BadResponse { .. })
    ));
    let positive_on_error =
        Mock::start(fixed(400, json!({"success": true, "transaction": "0x1"}))).await;
    assert!(matches!(
        positive_on_error.client().settle(&request()).await,
        Err(FacilitatorError::BadResponse { .. })
    ));
    let huge = Mock::start(|_, _| (200, "x".repeat(300 * 1024), Duration::ZERO)).await;
    assert!(matches!(
        huge.client().verify(&request()).await,
        Err(FacilitatorError::BadResponse { .. })
    ));
}

#[tokio::test]
async fn slow_and_absent_facilitators_fail_closed() {
    let slow = Mock::start(|_, _| {
        (
            200,
            json!({"isValid": true}).to_string(),
            Duration::from_secs(3),
        )
    })
    .await;
    let started = std::time::Instant::now();
    assert_eq!(
        slow.client().verify(&request()).await,
        Err(FacilitatorError::Timeout(500))
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let down = HttpFacilitator::new(HttpFacilitatorConfig::new(format!("http://{addr}"))).unwrap();
    assert!(matches!(
        down.settle(&request()).await,
        Err(FacilitatorError::Unreachable(_))
    ));
}

#[tokio::test]
async fn supported_is_cached_and_retried_on_429() {
    let supported = json!({
        "kinds": [{"x402Version": 2, "scheme": "exact", "network": "eip155:84532"}],
        "extensions": [],
        "signers": {"eip155:84532": ["0x90F79bf6EB2c4f870365E785982E1f101E93b906"]}
    });
    let m = Mock::start(move |path, n| {
        assert_eq!(path, "/supported");
        if n < 2 {
            (429, String::new(), Duration::ZERO)
        } else {
            (200, supported.to_string(), Duration::ZERO)
        }
    })
    .await;
    let client = m.client();
    let s = client.supported().await.unwrap();
    assert!(s.supports(2, "exact", "eip155:84532"));
    assert_eq!(m.hits(), 3, "two 429s, then the answer");
    client.supported().await.unwrap();
    assert_eq!(m.hits(), 3, "served from the cache");
    tokio::time::sleep(Duration::from_millis(350)).await;
    client.supported().await.unwrap();
    assert_eq!(m.hits(), 4, "refreshed after the TTL");

    let always_busy = Mock::start(|_, _| (429, String::new(), Duration::ZERO)).await;
    assert!(matches!(
        always_busy.client().supported().await,
        Err(FacilitatorError::BadResponse { status: 429, .. })
    ));
    assert_eq!(always_busy.hits(), 4);
}
