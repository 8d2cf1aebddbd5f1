//! A recording relay between hb402 and the devnode: it forwards every request, records what
//! reached it (method, path, headers) so a test can prove what did or did not get to the node,
//! and can fail object writes, reads or HEADs on demand.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

/// One request as the node would have seen it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    /// Answer object PUTs with this status instead of forwarding them (0: forward).
    fail_put: AtomicU16,
    /// Answer object HEADs with this status instead of forwarding them (0: forward).
    fail_head: AtomicU16,
    /// Answer this many object GETs (not HEADs) with `fail_get_status` instead of forwarding.
    fail_gets: AtomicUsize,
    fail_get_status: AtomicU16,
    /// Hold object GETs this many milliseconds before forwarding them.
    delay_gets_ms: std::sync::atomic::AtomicU64,
}

/// The running relay; stops with the test's runtime.
#[derive(Clone)]
pub struct Relay {
    pub url: String,
    state: Arc<State>,
}

impl Relay {
    /// A relay in front of `target` (`http://host:port`).
    pub async fn start(target: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&shared);
                let client = client.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = Arc::clone(&state);
                        let client = client.clone();
                        let target = target.clone();
                        async move { Ok::<_, hyper::Error>(relay(state, client, target, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Relay {
            url: format!("http://{addr}"),
            state,
        }
    }

    /// Everything that reached the relay so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many requests reached it so far (a mark for [`Relay::seen_since`]).
    pub fn mark(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    /// What reached it after `mark`.
    pub fn seen_since(&self, mark: usize) -> Vec<Seen> {
        self.state.seen.lock().unwrap()[mark..].to_vec()
    }

    /// Object PUTs get `status` (0: forwarded again).
    pub fn fail_puts(&self, status: u16) {
        self.state.fail_put.store(status, Ordering::SeqCst);
    }

    /// Object HEADs get `status` (0: forwarded again).
    pub fn fail_heads(&self, status: u16) {
        self.state.fail_head.store(status, Ordering::SeqCst);
    }

    /// Object GETs are held `delay` before they are forwarded (zero: at once).
    pub fn delay_gets(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_gets_ms.store(ms, Ordering::SeqCst);
    }

    /// The next `count` object GETs get `status`.
    pub fn fail_gets(&self, count: usize, status: u16) {
        self.state.fail_get_status.store(status, Ordering::SeqCst);
        self.state.fail_gets.store(count, Ordering::SeqCst);
    }
}

fn is_object(path: &str) -> bool {
    path.starts_with("/~s3@1.0/") && path.trim_start_matches("/~s3@1.0/").contains('/')
}

fn answer(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    resp
}

async fn relay(
    state: Arc<State>,
    client: reqwest::Client,
    target: String,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_owned();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    state.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        // As sent: an absolute-form target keeps its scheme and authority.
        target: parts.uri.to_string(),
        headers: headers.clone(),
    });
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return answer(400, "body"),
    };
    let object = is_object(parts.uri.path());
    let fail_put = state.fail_put.load(Ordering::SeqCst);
    if method == "PUT" && object && fail_put != 0 {
        return answer(fail_put, "S3 request failed");
    }
    let fail_head = state.fail_head.load(Ordering::SeqCst);
    if method == "HEAD" && object && fail_head != 0 {
        return answer(fail_head, "");
    }
    if method == "GET"
        && object
        && state
            .fail_gets
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        return answer(
            state.fail_get_status.load(Ordering::SeqCst),
            "S3 request failed",
        );
    }
    let delay = state.delay_gets_ms.load(Ordering::SeqCst);
    if method == "GET" && object && delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let mut out = client.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{target}{path_and_query}"),
    );
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection"
        ) {
            out = out.header(name, value);
        }
    }
    let Ok(resp) = out.body(body.to_vec()).send().await else {
        return answer(502, "relay: node unreachable");
    };
    let status = resp.status().as_u16();
    let resp_headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    let mut reply = Response::new(Full::new(bytes));
    *reply.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    for (name, value) in &resp_headers {
        if !matches!(name.as_str(), "transfer-encoding" | "connection") {
            reply.headers_mut().insert(name.clone(), value.clone());
        }
    }
    reply
}
