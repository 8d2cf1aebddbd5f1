//! The admin listener, run in process by a real Pingora server: health, readiness against the
//! devnode, metrics, and Load-compatible link minting with every refusal.

use hb402_testkit::free_port;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hb402_devnode::{Devnode, DevnodeConfig, DevnodeHandle, authorization_header};
use hb402_gate::admin::{AdminApp, admin_service};
use hb402_gate::config::{Config, Overrides};
use hb402_gate::metrics::Metrics;
use hb402_gate::share::{self, key_matches};
use hb402_gate::store::{RedbStore, Store};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use serde_json::Value;
use tokio::sync::watch;

const ADMIN_KEY: &str = "admin-key-0123456789";
const SHARE_SECRET: &str = "share-secret-0123456789";
const BASE_URL: &str = "https://gateway.example.org";
const ID: &str = "Q9qsw4QGrcQxfA3Fr9yW9Yk9Bxz8tEAGYJKqcn0Ghuo";
const PAYEE: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct WatchShutdown(watch::Receiver<bool>);

#[async_trait]
impl ShutdownSignalWatch for WatchShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
        ShutdownSignal::FastShutdown
    }
}

/// What a test configures.
struct Setup<'a> {
    upstream: String,
    admin_key: bool,
    share_secret: bool,
    state_dir: &'a Path,
}

/// A running admin listener.
struct Admin {
    base: String,
    client: reqwest::Client,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Admin {
    async fn start(setup: Setup<'_>) -> Admin {
        let admin_port = free_port();
        let mut toml = format!(
            "version = 1\n\
             [listen]\npublic = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{admin_port}\"\n\
             public_base_url = \"{BASE_URL}/\"\n\
             [upstream]\nurl = \"{}\"\n\
             [limits]\nmax_admin_body_bytes = 1024\n\
             [store]\nstate_dir = \"{}\"\n\
             [share_links]\ndefault_minutes = 60\nmax_minutes = 1440\n",
            free_port(),
            setup.upstream,
            setup.state_dir.display()
        );
        if setup.share_secret {
            toml.push_str("secret = \"${SHARE}\"\n");
        }
        if setup.admin_key {
            toml.push_str("[admin]\nbearer_key = \"${ADMIN}\"\n");
        }
        let env = |k: &str| match k {
            "SHARE" => Some(SHARE_SECRET.to_owned()),
            "ADMIN" => Some(ADMIN_KEY.to_owned()),
            _ => None,
        };
        let config = Config::from_toml(&toml, Path::new("test.toml"), &Overrides::default(), &env)
            .expect("valid test configuration");
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(&setup.state_dir.join("hb402.redb")).unwrap());
        let app = AdminApp::new(Arc::new(config), Arc::new(Metrics::new()), store);
        let addr = format!("127.0.0.1:{admin_port}");

        let conf = ServerConf {
            threads: 1,
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        server.add_service(admin_service(app, &addr));
        let (stop, rx) = watch::channel(false);
        let thread = std::thread::spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(WatchShutdown(rx)),
            })
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the admin listener did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Admin {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop,
            thread: Some(thread),
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join().unwrap())
                .await
                .unwrap();
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }

    /// A `POST` with the admin key and the given headers.
    fn sign(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_KEY);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Status, content type and JSON body; panics if the body is not JSON.
async fn json(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.bytes().await.unwrap();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
    (status, ctype, value)
}

/// Asserts a JSON refusal with this status and error code.
async fn refused(resp: reqwest::Response, status: u16, code: &str) -> String {
    let (got, ctype, body) = json(resp).await;
    assert_eq!(
        (got, body["error"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    assert_eq!(ctype, "application/json");
    body["message"].as_str().unwrap().to_owned()
}

fn sign_headers<'a>() -> Vec<(&'a str, &'a str)> {
    vec![
        ("x-bucket-name", "hb402-private"),
        ("x-load-acc", "load_acc_test"),
        (
            "x-dataitem-key",
            "dataitems/Q9qsw4QGrcQxfA3Fr9yW9Yk9Bxz8tEAGYJKqcn0Ghuo.ans104",
        ),
    ]
}

fn without<'a>(headers: &[(&'a str, &'a str)], name: &str) -> Vec<(&'a str, &'a str)> {
    headers
        .iter()
        .filter(|(n, _)| *n != name)
        .copied()
        .collect()
}

fn with<'a>(
    headers: &[(&'a str, &'a str)],
    name: &'a str,
    value: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut out = without(headers, name);
    out.push((name, value));
    out
}

fn closed_upstream() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

async fn start_devnode(dir: &Path) -> DevnodeHandle {
    let mut config = DevnodeConfig::new(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    Devnode::start(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn health_metrics_and_unknown_paths() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start(Setup {
        upstream: closed_upstream(),
        admin_key: true,
        share_secret: true,
        state_dir: dir.path(),
    })
    .await;

    let (status, ctype, body) = json(admin.get("/healthz").send().await.unwrap()).await;
    assert_eq!((status, ctype.as_str()), (200, "application/json"));
    assert_eq!(body, serde_json::json!({"status": "ok"}));

    let resp = admin.get("/metrics").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    assert!(text.contains("hb402_build_info{version=\""), "{text}");
    assert!(
        text.contains("# TYPE hb402_uploads_total counter"),
        "{text}"
    );

    refused(admin.get("/nope").send().await.unwrap(), 404, "not_found").await;
    refused(
        admin.get("/sign/402/x").send().await.unwrap(),
        404,
        "not_found",
    )
    .await;

    let resp = admin
        .client
        .post(format!("{}/metrics", admin.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "GET");
    refused(resp, 405, "method_not_allowed").await;
    let resp = admin.get("/sign").send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "POST");
    refused(resp, 405, "method_not_allowed").await;
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_follows_the_node_and_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let node_dir = tempfile::tempdir().unwrap();
    let node = start_devnode(node_dir.path()).await;
    let admin = Admin::start(Setup {
        upstream: node.url(),
        admin_key: true,
        share_secret: true,
        state_dir: dir.path(),
    })
    .await;

    // A fresh node has no public bucket yet.
    let message = refused(admin.get("/readyz").send().await.unwrap(), 503, "not_ready").await;
    assert!(
        message.contains("upstream") && message.contains("offchain-dataitems"),
        "{message}"
    );

    let created = reqwest::Client::new()
        .put(format!("{}/~s3@1.0/offchain-dataitems", node.url()))
        .header("authorization", authorization_header(node.access_key_id()))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let (status, _, body) = json(admin.get("/readyz").send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "checks": {"upstream": "ok", "store": "ok"}})
    );

    // The node goes away.
    node.shutdown().await.unwrap();
    let message = refused(admin.get("/readyz").send().await.unwrap(), 503, "not_ready").await;
    assert!(message.starts_with("not ready: upstream: "), "{message}");
    assert!(!message.contains("store:"), "{message}");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_503_without_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start(Setup {
        upstream: closed_upstream(),
        admin_key: false,
        share_secret: false,
        state_dir: dir.path(),
    })
    .await;
    let started = Instant::now();
    let message = refused(admin.get("/readyz").send().await.unwrap(), 503, "not_ready").await;
    assert!(message.contains("upstream: cannot connect"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Health and metrics need no key.
    assert_eq!(admin.get("/healthz").send().await.unwrap().status(), 200);
    assert_eq!(admin.get("/metrics").send().await.unwrap().status(), 200);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn minting_needs_the_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start(Setup {
        upstream: closed_upstream(),
        admin_key: true,
        share_secret: true,
        state_dir: dir.path(),
    })
    .await;
    for path in ["/sign", "/sign/402"] {
        let url = format!("{}{path}", admin.base);
        let missing = admin.client.post(&url).send().await.unwrap();
        assert_eq!(missing.headers()["www-authenticate"], "Bearer");
        refused(missing, 401, "unauthorized").await;
        let wrong = admin
            .client
            .post(&url)
            .bearer_auth("admin-key-0123456780")
            .send()
            .await
            .unwrap();
        refused(wrong, 401, "unauthorized").await;
        let short = admin
            .client
            .post(&url)
            .bearer_auth("admin")
            .send()
            .await
            .unwrap();
        refused(short, 401, "unauthorized").await;
        let basic = admin
            .client
            .post(&url)
            .header("authorization", format!("Basic {ADMIN_KEY}"))
            .send()
            .await
            .unwrap();
        refused(basic, 401, "unauthorized").await;
        let bare = admin
            .client
            .post(&url)
            .header("authorization", ADMIN_KEY)
            .send()
            .await
            .unwrap();
        refused(bare, 401, "unauthorized").await;
    }
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_admin_key_minting_is_always_refused() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start(Setup {
        upstream: closed_upstream(),
        admin_key: false,
        share_secret: true,
        state_dir: dir.path(),
    })
    .await;
    for path in ["/sign", "/sign/402"] {
        let message = refused(
            admin.sign(path, &sign_headers()).send().await.unwrap(),
            401,
            "unauthorized",
        )
        .await;
        assert!(message.contains("admin.bearer_key"), "{message}");
    }
    assert_eq!(admin.get("/healthz").send().await.unwrap().status(), 200);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_share_secret_minting_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start(Setup {
        upstream: closed_upstream(),
        admin_key: true,
        share_secret: false,
        state_dir: dir.path(),
    })
    .await;
    for path in ["/sign", "/sign/402"] {
        refused(
            admin.sign(path, &sign_headers()).send().await.unwrap(),
            503,
            "share_links_disabled",
        )
        .await;
    }
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_mints_a_verifiable_link() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start(Setup {
        upstream: closed_upstream(),
        admin_key: true,
        share_secret: true,
        state_dir: dir.path(),
    })
    .await;
    let key = format!("dataitems/{ID}.ans104");

    let before = now();
    let (status, ctype, body) =
        json(admin.sign("/sign", &sign_headers()).send().await.unwrap()).await;
    assert_eq!(
        (status, ctype.as_str()),
        (200, "application/json"),
        "{body}"
    );
    let url = body["signed_url"].as_str().unwrap();
    let prefix = format!("{BASE_URL}/resolve/");
    let rest = url.strip_prefix(&prefix).unwrap_or_else(|| panic!("{url}"));
    let (path_key, token) = rest.split_once("?token=").unwrap();
    assert_eq!(path_key, key);
    let claims = share::verify(SHARE_SECRET.as_bytes(), token, now()).unwrap();
    assert!(key_matches(&claims.dataitem_key, path_key));
    assert_eq!(claims.dataitem_key, key);
    assert_eq!(claims.bucket_name, "hb402-private");
    assert_eq!(claims.load_acc, "load_acc_test");
    assert!(claims.iat >= before && claims.iat <= now());
    assert_eq!(claims.exp - claims.iat, 60 * 60, "default_minutes");
    assert_eq!(body["expires_at"].as_i64(), Some(claims.exp));
    assert_eq!(
        (claims.payee, claims.amount, claims.network),
        (None, None, None)
    );
    // Signed with the configured secret only.
    assert!(share::verify(b"another-secret-0123456789", token, now()).is_err());

    // x-expires-minutes within bounds; a bare id in the public bucket.
    let headers = with(
        &with(&sign_headers(), "x-expires-minutes", "1440"),
        "x-dataitem-key",
        ID,
    );
    let headers = with(&headers, "x-bucket-name", "offchain-dataitems");
    let (status, _, body) = json(admin.sign("/sign", &headers).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let url = body["signed_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{BASE_URL}/resolve/{ID}?token=")),
        "{url}"
    );
    let token = url.split_once("?token=").unwrap().1;
    let claims = share::verify(SHARE_SECRET.as_bytes(), token, now()).unwrap();
    assert_eq!(claims.exp - claims.iat, 1440 * 60);
    assert_eq!(claims.bucket_name, "offchain-dataitems");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_refuses_bad_headers() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start(Setup {
        upstream: closed_upstream(),
        admin_key: true,
        share_secret: true,
        state_dir: dir.path(),
    })
    .await;
    let base = sign_headers();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (without(&base, "x-bucket-name"), "x-bucket-name"),
        (
            with(&base, "x-bucket-name", "someone-elses-bucket"),
            "x-bucket-name",
        ),
        (without(&base, "x-load-acc"), "x-load-acc"),
        (without(&base, "x-dataitem-key"), "x-dataitem-key"),
        (
            with(&base, "x-dataitem-key", "dataitems/not-an-id.ans104"),
            "x-dataitem-key",
        ),
        (
            with(
                &base,
                "x-dataitem-key",
                "../Q9qsw4QGrcQxfA3Fr9yW9Yk9Bxz8tEAGYJKqcn0Ghuo",
            ),
            "x-dataitem-key",
        ),
        (with(&base, "x-expires-minutes", "abc"), "x-expires-minutes"),
        (with(&base, "x-expires-minutes", "0"), "x-expires-minutes"),
        (with(&base, "x-expires-minutes", "-5"), "x-expires-minutes"),
        (
            with(&base, "x-expires-minutes", "1441"),
            "x-expires-minutes",
        ),
        (with(&base, "x-expires-minutes", "1.5"), "x-expires-minutes"),
    ];
    for path in ["/sign", "/sign/402"] {
        for (headers, names) in &cases {
            let message = refused(
                admin.sign(path, headers).send().await.unwrap(),
                400,
                "bad_request",
            )
            .await;
            assert!(message.contains(names), "{path} {headers:?}: {message}");
        }
    }
    let long = "a".repeat(600);
    let message = refused(
        admin
            .sign("/sign", &with(&base, "x-load-acc", &long))
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    assert!(message.contains("x-load-acc"), "{message}");

    // Bodies are bounded (limits.max_admin_body_bytes = 1024).
    let resp = admin
        .sign("/sign", &base)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    refused(resp, 413, "payload_too_large").await;
    // Also when the body streams without a Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'x'; 512])).collect();
    let resp = admin
        .sign("/sign", &base)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    refused(resp, 413, "payload_too_large").await;
    // A small body is read and ignored.
    let resp = admin.sign("/sign", &base).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_402_mints_a_payment_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start(Setup {
        upstream: closed_upstream(),
        admin_key: true,
        share_secret: true,
        state_dir: dir.path(),
    })
    .await;
    let key = format!("dataitems/{ID}.ans104");
    let lower = PAYEE.to_lowercase();
    let headers = [
        sign_headers(),
        vec![
            ("x-402-address", lower.as_str()),
            ("x-402-amount", "0.01"),
            ("x-402-network", "base-sepolia"),
            ("x-expires-minutes", "30"),
        ],
    ]
    .concat();
    let resp = admin.sign("/sign/402", &headers).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    let body = resp.text().await.unwrap();
    // URL-safe alphabet without padding (Load's standard base64 broke URL paths).
    assert!(
        body.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{body}"
    );
    let receipt: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&body).unwrap()).unwrap();
    let token = receipt["token"].as_str().unwrap();
    assert_eq!(receipt["dataitem_id"], key.as_str());
    assert_eq!(receipt["payee_address"], PAYEE, "checksummed");
    assert_eq!(receipt["amount"], 0.01);
    assert_eq!(receipt["network"], "base-sepolia");
    assert_eq!(
        receipt["protected_url"].as_str().unwrap(),
        format!("{BASE_URL}/protected/resolve/{PAYEE}/{key}/base-sepolia/0.01?token={token}")
    );
    let claims = share::verify(SHARE_SECRET.as_bytes(), token, now()).unwrap();
    assert_eq!(claims.payee.as_deref(), Some(PAYEE));
    assert_eq!(claims.amount, Some(0.01));
    assert_eq!(claims.network.as_deref(), Some("base-sepolia"));
    assert_eq!(claims.dataitem_key, key);
    assert_eq!(claims.exp - claims.iat, 30 * 60);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_402_refuses_incomplete_or_invalid_payment_terms() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start(Setup {
        upstream: closed_upstream(),
        admin_key: true,
        share_secret: true,
        state_dir: dir.path(),
    })
    .await;
    let full = [
        sign_headers(),
        vec![
            ("x-402-address", PAYEE),
            ("x-402-amount", "0.01"),
            ("x-402-network", "base-sepolia"),
        ],
    ]
    .concat();
    let mut cases: Vec<(Vec<(&str, &str)>, String)> = Vec::new();
    // Load minted a link without payment terms when one was missing (its defect #11).
    for name in ["x-402-address", "x-402-amount", "x-402-network"] {
        cases.push((without(&full, name), format!("missing {name}")));
        cases.push((with(&full, name, "  "), format!("missing {name}")));
    }
    cases.push((
        sign_headers(),
        "missing x-402-address, x-402-amount, x-402-network".into(),
    ));
    for bad in [
        "0x1234",
        "209693Bc6afc0C5328bA36FaF03C514EF312287C",
        "0x209693Bc6afc0C5328bA36FaF03C514EF312287c",
        "0xZZ9693bc6afc0c5328ba36faf03c514ef312287c",
    ] {
        cases.push((with(&full, "x-402-address", bad), "x-402-address".into()));
    }
    for bad in [
        "0",
        "0.000",
        "-1",
        "abc",
        "1e3",
        "0.0000001",
        "1.",
        ".",
        "NaN",
        "inf",
        "0x10",
    ] {
        cases.push((with(&full, "x-402-amount", bad), "x-402-amount".into()));
    }
    for bad in ["base-mainnet", "eip155:999999", "BASE"] {
        cases.push((with(&full, "x-402-network", bad), "x-402-network".into()));
    }
    for (headers, name) in &cases {
        let message = refused(
            admin.sign("/sign/402", headers).send().await.unwrap(),
            400,
            "bad_request",
        )
        .await;
        assert!(message.contains(name.as_str()), "{headers:?}: {message}");
    }
    // The complete set is accepted; a CAIP-2 network id too.
    assert_eq!(
        admin
            .sign("/sign/402", &full)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let caip = with(&full, "x-402-network", "eip155:84532");
    assert_eq!(
        admin
            .sign("/sign/402", &caip)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    admin.stop().await;
}
