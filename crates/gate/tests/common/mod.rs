//! The in-process harness: a devnode and hb402 on free loopback ports, torn down on drop.
#![allow(dead_code, unreachable_pub)]

pub mod relay;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hb402_devnode::{Devnode, DevnodeConfig, DevnodeHandle};
use hb402_gate::config::{Config, Overrides};

pub const SHARE_SECRET: &str = "test-share-secret-0123456789";
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
/// The key that signs hb402's channel claims and refunds in tests (it needs no funds).
pub const RECEIVER_AUTHORIZER_KEY: &str =
    "0x5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e";

pub use hb402_testkit::free_port;

pub struct Harness {
    pub node: Option<DevnodeHandle>,
    /// The recording relay between hb402 and the devnode, when asked for.
    pub relay: Option<relay::Relay>,
    pub url: String,
    pub admin_url: String,
    pub client: reqwest::Client,
    shutdown: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dirs: Vec<tempfile::TempDir>,
}

pub struct Options {
    pub extra_toml: String,
    pub day_seconds: u64,
    /// Put this hb402 in front of an existing node instead of starting a devnode.
    pub node_url: Option<String>,
    /// Put a recording relay between hb402 and the devnode.
    pub relay: bool,
    /// Keep hb402's state here (another harness's, to restart on the same state).
    pub state_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            extra_toml: String::new(),
            day_seconds: 86_400,
            node_url: None,
            relay: false,
            state_dir: None,
        }
    }
}

fn wait_for(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(Options::default()).await
    }

    /// Two instances with `extra_toml` in front of one node (a fleet, when it names a shared
    /// store).
    pub async fn fleet(extra_toml: String) -> (Harness, Harness) {
        let a = Self::start_with(Options {
            extra_toml: extra_toml.clone(),
            ..Options::default()
        })
        .await;
        let b = a.beside(extra_toml).await;
        (a, b)
    }

    /// Another instance, with `extra_toml`, in front of this one's node.
    pub async fn beside(&self, extra_toml: String) -> Harness {
        Self::start_with(Options {
            extra_toml,
            node_url: Some(self.node().url()),
            ..Options::default()
        })
        .await
    }

    pub async fn start_with(options: Options) -> Harness {
        let node_dir = tempfile::tempdir().unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        let mut node_config = DevnodeConfig::new(node_dir.path());
        node_config.listen = "127.0.0.1:0".parse().unwrap();
        node_config.day_seconds = options.day_seconds;
        let node = match &options.node_url {
            Some(_) => None,
            None => Some(Devnode::start(node_config).await.unwrap()),
        };
        let mut node_url = options
            .node_url
            .clone()
            .unwrap_or_else(|| node.as_ref().unwrap().url());
        let relay = match options.relay {
            true => Some(relay::Relay::start(node_url.clone()).await),
            false => None,
        };
        if let Some(relay) = &relay {
            node_url = relay.url.clone();
        }
        let public: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let toml = format!(
            "version = 1\n{}\n[server]\nthreads = 2\ngrace_period_seconds = 0\ngraceful_shutdown_timeout_seconds = 1\n\
             [listen]\npublic = \"{public}\"\nadmin = \"{admin}\"\n\
             [upstream]\nurl = \"{}\"\nread_timeout_seconds = 5\n\
             [store]\nstate_dir = \"{}\"\n\
             [share_links]\nsecret = \"${{HB402_TEST_SHARE_SECRET}}\"\n\
             [admin]\nbearer_key = \"${{HB402_TEST_ADMIN_KEY}}\"\n",
            "",
            node_url,
            options
                .state_dir
                .as_deref()
                .unwrap_or(state_dir.path())
                .display(),
        );
        let toml = merge(&toml, &options.extra_toml);
        let env = |k: &str| match k {
            "HB402_TEST_SHARE_SECRET" => Some(SHARE_SECRET.to_owned()),
            "HB402_TEST_ADMIN_KEY" => Some(ADMIN_KEY.to_owned()),
            "HB402_TEST_RECEIVER_AUTHORIZER_KEY" => Some(RECEIVER_AUTHORIZER_KEY.to_owned()),
            "HB402_TEST_OPERATOR_KEY" => Some(format!(
                "{:#x}",
                hb402_testkit::OPERATOR_ACCOUNT.private_key
            )),
            _ => None,
        };
        let config = Config::from_toml(&toml, Path::new("test.toml"), &Overrides::default(), &env)
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let built = hb402_gate::build(config).unwrap();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let thread = std::thread::spawn(move || hb402_gate::run_until(built.server, rx));
        tokio::task::spawn_blocking(move || {
            wait_for(public);
            wait_for(admin);
        })
        .await
        .unwrap();
        Harness {
            node,
            relay,
            url: format!("http://{public}"),
            admin_url: format!("http://{admin}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            shutdown: tx,
            thread: Some(thread),
            _dirs: vec![node_dir, state_dir],
        }
    }

    /// The payments ledger (`GET /admin/payments` on the admin listener).
    pub async fn ledger(&self) -> serde_json::Value {
        self.admin("/admin/payments").await
    }

    /// `GET <path>` on the admin listener with the admin key: the JSON answer.
    pub async fn admin(&self, path: &str) -> serde_json::Value {
        self.client
            .get(format!("{}{path}", self.admin_url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn node(&self) -> &DevnodeHandle {
        self.node.as_ref().unwrap()
    }

    pub fn objects_stored(&self) -> u64 {
        self.node().counters().objects_stored()
    }

    pub fn node_requests(&self, kind: hb402_devnode::RouteKind) -> u64 {
        self.node().counters().requests(kind)
    }

    /// Removes an item's public object on the node directly, behind hb402's back.
    pub async fn remove_on_node(&self, id: &str) {
        let resp = reqwest::Client::new()
            .delete(format!(
                "{}/~s3@1.0/offchain-dataitems/dataitems/{id}.ans104",
                self.node().url()
            ))
            .header(
                "authorization",
                hb402_devnode::authorization_header(self.node().access_key_id()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }
}

/// Appends `extra` TOML, letting its sections' keys override the base ones of the same section.
fn merge(base: &str, extra: &str) -> String {
    let mut value: toml::Table = base.parse().unwrap();
    let extra: toml::Table = extra.parse().unwrap();
    for (section, table) in extra {
        match (value.get_mut(&section), table) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(add)) => existing.extend(add),
            (_, other) => {
                value.insert(section, other);
            }
        }
    }
    toml::to_string(&value).unwrap()
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ans104/tests/vectors/fixtures")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A freshly signed Ed25519 item (unique per `seed`).
pub fn item(seed: u8, tags: Vec<hb402_ans104::Tag>, data: &[u8]) -> hb402_ans104::DataItem {
    hb402_ans104::DataItem::sign(
        &hb402_ans104::SigningKey::ed25519_from_seed(&[seed; 32]),
        None,
        None,
        tags,
        data.to_vec(),
    )
    .unwrap()
}

/// A response read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The status line as sent.
    pub status_line: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The whole response as text (head and body), to look for leaked strings.
    pub fn all_text(&self) -> String {
        let head: String = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\n"))
            .collect();
        format!("{}\n{head}\n{}", self.status_line, self.text())
    }
}

/// Sends `head` (request line and headers, without the final blank line; `Connection: close`
/// and `Host` are added) and `body` to the server at `url` byte for byte: paths are not
/// normalised or re-encoded on the way, as any HTTP client library would.
pub async fn raw(url: &str, head: &str, body: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{head}\r\nhost: {addr}\r\nconnection: close\r\n\r\n").into_bytes();
    request.extend_from_slice(body);
    socket.write_all(&request).await.unwrap();
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut bytes)).await;
    assert!(read.is_ok(), "no answer to {head:?}");
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no response head to {head:?}: {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
    let text = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_owned();
    let status = Some(status_line.as_str())
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line for {head:?}: {text}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        status_line,
        headers,
        body: bytes[split + 4..].to_vec(),
    }
}

/// Mints a share link on the admin listener: `route` is `/sign` or `/sign/402`, for `key` in
/// the private bucket, with `extra` headers (the payment terms of `/sign/402`).
pub async fn sign(
    h: &Harness,
    route: &str,
    key: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = h
        .client
        .post(format!("{}{route}", h.admin_url))
        .bearer_auth(ADMIN_KEY)
        .header("x-bucket-name", "hb402-private")
        .header("x-load-acc", "load_acc_test")
        .header("x-dataitem-key", key);
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// Mints a Load-style paywalled link (`/sign/402`) for `key` in the private bucket, paying
/// `amount` USDC to `payee` on base-sepolia; returns the decoded receipt (`token`,
/// `protected_url`, …).
pub async fn sign_paywalled(
    h: &Harness,
    key: &str,
    payee: &str,
    amount: &str,
) -> serde_json::Value {
    use base64::Engine as _;
    let terms = [
        ("x-402-address", payee),
        ("x-402-amount", amount),
        ("x-402-network", "base-sepolia"),
    ];
    let resp = sign(h, "/sign/402", key, &terms).await;
    assert_eq!(resp.status(), 200);
    let receipt = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(resp.text().await.unwrap().trim())
        .unwrap();
    serde_json::from_slice(&receipt).unwrap()
}

/// The sum of the samples of a metric series (name and labels as printed) on the admin
/// listener.
pub async fn metric(h: &Harness, series: &str) -> f64 {
    let text = h
        .client
        .get(format!("{}/metrics", h.admin_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
