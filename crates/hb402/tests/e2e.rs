//! End to end, from the outside: the real binaries as separate processes on loopback — `hb402`,
//! `hb402-devnode`, anvil with USDC (and the x402 batch contracts), the reference facilitator,
//! the npm and PyPI clients and `hb402 fetch` / `upload` / `sign-item` — with faults injected
//! between them, hb402 killed among them. The invariant
//! checked throughout: no content leaves without a settlement and no settlement happens without
//! content, on chain (the payee's USDC balance) and in hb402's ledger.

use hb402_testkit::free_port;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hb402_testkit::{
    ANVIL_ACCOUNTS, BUYER_ACCOUNT, FACILITATOR_ACCOUNT, Facilitator, LocalChain, OPERATOR_ACCOUNT,
    PAYEE_ACCOUNT, PayClient, PaymentOptions, batch_pay, pay, payments,
};
use serde_json::{Value, json};

const PRICE: u128 = 10_000;
const ADMIN_KEY: &str = "e2e-admin-key-0123456789abcdef";
const UPLOAD_KEY: &str = "e2e-upload-key-0123456789abcdef";
const SHARE_SECRET: &str = "e2e-share-secret-0123456789abcdef";
const RECEIPT_SECRET: &str = "e2e-receipt-secret-0123456789abcdef";
const RECEIVER_AUTHORIZER_KEY: &str =
    "0x5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e";

fn wait_listening(addr: SocketAddr, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} is not listening on {addr}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process, killed when dropped; its output goes to a log file.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(mut command: Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        Proc { child }
    }

    /// Kills it (SIGKILL: durability must not depend on a clean stop) and reaps it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn hb402_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hb402"))
}

/// The devnode binary, built beside hb402 (the workspace test run builds it; a run of this
/// package alone builds it here).
fn devnode_bin() -> PathBuf {
    let path = hb402_bin().with_file_name("hb402-devnode");
    if !path.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "hb402-devnode"])
            .status()
            .unwrap();
        assert!(status.success(), "could not build hb402-devnode");
    }
    path
}

fn devnode(addr: SocketAddr, data: &Path, log: &Path) -> Proc {
    let mut cmd = Command::new(devnode_bin());
    cmd.arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(data);
    let proc = Proc::spawn(cmd, log);
    wait_listening(addr, "hb402-devnode", log);
    proc
}

/// A relay between hb402 and the node that can be told to stall: requests are then swallowed
/// and never answered, on new and pooled connections alike.
struct Relay {
    addr: SocketAddr,
    stall: Arc<AtomicBool>,
}

impl Relay {
    fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stall = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stall);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let flag = Arc::clone(&flag);
                std::thread::spawn(move || relay(client, to, &flag));
            }
        });
        Relay { addr, stall }
    }
}

fn relay(mut client: TcpStream, to: SocketAddr, stall: &Arc<AtomicBool>) {
    let Ok(mut upstream) = TcpStream::connect(to) else {
        return; // the node is down: the connection closes unanswered
    };
    let (Ok(mut from_client), Ok(mut to_node)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let flag = Arc::clone(stall);
    let up = std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from_client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                // Stalled: the request is read and dropped, so the node never answers it.
                Ok(_) if flag.load(Ordering::SeqCst) => {}
                Ok(n) => {
                    if to_node.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_node.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
}

/// hb402 as a process, restartable on the same configuration and state.
struct Gateway {
    config: PathBuf,
    log: PathBuf,
    url: String,
    admin_url: String,
    public: SocketAddr,
    admin: SocketAddr,
    proc: Option<Proc>,
}

impl Gateway {
    fn start(dir: &Path, upstream: &str, facilitator: &str) -> Gateway {
        Self::start_with(dir, upstream, facilitator, "")
    }

    /// [`Gateway::start`] with `payments` added to the `[payments]` table.
    fn start_with(dir: &Path, upstream: &str, facilitator: &str, payments: &str) -> Gateway {
        let settlement = format!(
            "mode = \"facilitator\"\nfacilitator_url = \"{facilitator}\"\n\
             verify_timeout_seconds = 5\nsettle_timeout_seconds = 10\n{payments}"
        );
        Self::settling(dir, upstream, &settlement)
    }

    /// A gateway settling on `chain` itself (local settlement, anvil #8 paying gas) and offering
    /// channel payments (`batch`: more of `[payments.batch]`).
    fn local(dir: &Path, upstream: &str, chain: &LocalChain, batch: &str) -> Gateway {
        let settlement = format!(
            "mode = \"local\"\nrpc_url = \"{}\"\noperator_key = \"${{E2E_OPERATOR_KEY}}\"\n\
             chain_id = 84532\n[payments.batch]\n\
             receiver_authorizer_key = \"${{E2E_RECEIVER_AUTHORIZER_KEY}}\"\n{batch}",
            chain.rpc_url()
        );
        Self::settling(dir, upstream, &settlement)
    }

    /// A gateway with `settlement` (the settlement keys and tables of `[payments]`).
    fn settling(dir: &Path, upstream: &str, settlement: &str) -> Gateway {
        let public: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let url = format!("http://{public}");
        let config = dir.join("hb402.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 1
[server]
threads = 2
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1
[listen]
public = "{public}"
admin = "{admin}"
public_base_url = "{url}"
[upstream]
url = "{upstream}"
connect_timeout_seconds = 2
read_timeout_seconds = 2
[store]
state_dir = "{state}"
[share_links]
secret = "${{E2E_SHARE_SECRET}}"
[admin]
bearer_key = "${{E2E_ADMIN_KEY}}"
[uploads]
key = "${{E2E_UPLOAD_KEY}}"
[payments]
receipt_secret = "${{E2E_RECEIPT_SECRET}}"
{settlement}
[[payments.accept]]
network = "base-sepolia"
pay_to = "{payee}"
[[pricing.rules]]
content_types = ["text/*", "application/octet-stream"]
price = "0.01"
"#,
                state = dir.join("state").display(),
                payee = PAYEE_ACCOUNT.address_checksummed(),
            ),
        )
        .unwrap();
        let mut gateway = Gateway {
            config,
            log: dir.join("hb402.log"),
            url,
            admin_url: format!("http://{admin}"),
            public,
            admin,
            proc: None,
        };
        gateway.restart();
        gateway
    }

    fn restart(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
        let mut cmd = Command::new(hb402_bin());
        cmd.arg("--config")
            .arg(&self.config)
            .env("E2E_SHARE_SECRET", SHARE_SECRET)
            .env("E2E_ADMIN_KEY", ADMIN_KEY)
            .env("E2E_UPLOAD_KEY", UPLOAD_KEY)
            .env("E2E_RECEIPT_SECRET", RECEIPT_SECRET)
            .env(
                "E2E_OPERATOR_KEY",
                format!("{:#x}", OPERATOR_ACCOUNT.private_key),
            )
            .env("E2E_RECEIVER_AUTHORIZER_KEY", RECEIVER_AUTHORIZER_KEY)
            .env("RUST_LOG", "info");
        for var in [
            "HB402_LISTEN",
            "HB402_ADMIN_LISTEN",
            "HB402_UPSTREAM",
            "HB402_STATE_DIR",
        ] {
            cmd.env_remove(var);
        }
        self.proc = Some(Proc::spawn(cmd, &self.log));
        wait_listening(self.public, "hb402", &self.log);
        wait_listening(self.admin, "hb402 admin", &self.log);
    }

    /// `GET <path>` on the admin listener, with the admin key: the JSON answer.
    async fn admin(&self, client: &reqwest::Client, path: &str) -> Value {
        client
            .get(format!("{}{path}", self.admin_url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The ledger's entries as (resource path, state).
    async fn ledger(&self, client: &reqwest::Client) -> Vec<(String, String)> {
        let ledger = self.admin(client, "/admin/payments?limit=1000").await;
        ledger["payments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let resource = e["resource"].as_str().unwrap();
                (
                    resource
                        .strip_prefix(&self.url)
                        .unwrap_or(resource)
                        .to_owned(),
                    e["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Waits (bounded) until no entry is still in flight, then returns the ledger: releases are
    /// written after the answer.
    async fn settled_ledger(&self, client: &reqwest::Client) -> Vec<(String, String)> {
        for _ in 0..50 {
            let ledger = self.ledger(client).await;
            if ledger
                .iter()
                .all(|(_, s)| s != "reserved" && s != "verified")
            {
                return ledger;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.ledger(client).await
    }
}

/// Runs `hb402 <args>` with `env`; returns (exit code, stdout, stderr).
fn hb402_cli(args: &[&str], env: &[(&str, String)]) -> (i32, Vec<u8>, String) {
    let mut cmd = Command::new(hb402_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn payer_env() -> Vec<(&'static str, String)> {
    vec![(
        "HB402_PAYER_KEY",
        format!("{:#x}", BUYER_ACCOUNT.private_key),
    )]
}

/// Signs `data` with `hb402 sign-item` (Ethereum key of anvil account #3) and uploads it with
/// `hb402 upload`; returns the item id.
fn sign_and_upload(
    dir: &Path,
    name: &str,
    data: &[u8],
    tags: &[&str],
    extra: &[&str],
    url: &str,
) -> String {
    let data_file = dir.join(format!("{name}.data"));
    let item_file = dir.join(format!("{name}.ans104"));
    std::fs::write(&data_file, data).unwrap();
    let mut args = vec!["sign-item", "-o", item_file.to_str().unwrap()];
    for tag in tags {
        args.extend(["--tag", tag]);
    }
    args.push(data_file.to_str().unwrap());
    let key = vec![(
        "HB402_ITEM_KEY",
        format!("{:#x}", hb402_testkit::ANVIL_ACCOUNTS[3].private_key),
    )];
    let (code, _, err) = hb402_cli(&args, &key);
    assert_eq!(code, 0, "sign-item: {err}");
    let mut args = vec!["upload", item_file.to_str().unwrap(), url];
    args.extend_from_slice(extra);
    let (code, out, err) = hb402_cli(&args, &[("HB402_UPLOAD_KEY", UPLOAD_KEY.to_owned())]);
    assert_eq!(code, 0, "upload: {err}");
    let answer: Value = serde_json::from_slice(&out).unwrap();
    answer["id"].as_str().unwrap().to_owned()
}

/// An item made by the reference `arbundles` package: 5 MiB of data, Ed25519, octet-stream.
fn arbundles_item(dir: &Path) -> (Vec<u8>, String) {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ans104/tests/vectors");
    assert!(
        vectors.join("node_modules/@dha-team/arbundles").is_dir(),
        "run `npm ci --ignore-scripts` in {} (./scripts/test.sh does this)",
        vectors.display()
    );
    let out = dir.join("arbundles");
    let status = Command::new("node")
        .current_dir(&vectors)
        .arg("generate.mjs")
        .arg("--large")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "arbundles could not make the item");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let entry = &manifest[0];
    let bytes = std::fs::read(out.join(entry["file"].as_str().unwrap())).unwrap();
    (bytes, entry["id"].as_str().unwrap().to_owned())
}

/// The 402's offers as `payments()` takes them.
async fn requirements(client: &reqwest::Client, url: &str) -> Value {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 402, "{url}");
    let header = resp.headers()["payment-required"]
        .to_str()
        .unwrap()
        .to_owned();
    let v2: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, header).unwrap(),
    )
    .unwrap();
    let v1: Value = resp.json().await.unwrap();
    json!({"v2": v2["accepts"][0], "v1": v1["accepts"][0], "resource": v2["resource"]})
}

async fn signed_payment(client: &reqwest::Client, url: &str) -> String {
    let paid = payments(PaymentOptions {
        requirements: Some(requirements(client, url).await),
        ..PaymentOptions::default()
    })
    .await;
    paid["v2"]["header"].as_str().unwrap().to_owned()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn separate_processes_upload_pay_expire_and_share() {
    let dir = tempfile::tempdir().unwrap();
    let chain = LocalChain::start().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let node_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _node = devnode(
        node_addr,
        &dir.path().join("node"),
        &dir.path().join("node.log"),
    );
    let gw = Gateway::start(
        dir.path(),
        &format!("http://{node_addr}"),
        facilitator.url(),
    );
    let http = client();
    let upload_url = format!("{}/upload", gw.url);
    let payee = PAYEE_ACCOUNT.address;

    // Uploads: an item made by arbundles, and one made and sent by hb402 itself.
    let (big, big_id) = arbundles_item(dir.path());
    let resp = http
        .post(&upload_url)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let text = b"paid for, by every client";
    let text_id = sign_and_upload(
        dir.path(),
        "text",
        text,
        &["Content-Type=text/plain"],
        &[],
        &upload_url,
    );

    // Paid reads: each client pays once and gets the bytes; the payee gets the price each time.
    let text_url = format!("{}/{text_id}", gw.url);
    let mut paid_reads = 0;
    for client in PayClient::ALL {
        let before = chain.usdc_balance(payee).await;
        let result = pay(client, &text_url, BUYER_ACCOUNT.private_key).await;
        assert_eq!(result.status, 200, "{}", client.name());
        assert_eq!(result.body, text);
        assert_eq!(chain.usdc_balance(payee).await, before + PRICE);
        paid_reads += 1;
    }
    let before = chain.usdc_balance(payee).await;
    let out_file = dir.path().join("fetched.bin");
    let (code, _, err) = hb402_cli(
        &[
            "fetch",
            "-o",
            out_file.to_str().unwrap(),
            &format!("{}/{big_id}", gw.url),
        ],
        &payer_env(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("transaction 0x"), "{err}");
    assert_eq!(
        std::fs::read(&out_file).unwrap(),
        big[big.len() - (5 << 20)..],
        "the data of the arbundles item"
    );
    assert_eq!(chain.usdc_balance(payee).await, before + PRICE);
    paid_reads += 1;
    // A limit below the price: nothing is signed, nothing paid.
    let (code, out, err) = hb402_cli(&["fetch", "--max-amount", "0.001", &text_url], &payer_env());
    assert_eq!(code, 1);
    assert!(out.is_empty() && err.contains("exceed the limit"), "{err}");

    // Expiry: readable, then 410 from its second on, and never charged.
    let expires_at = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2)
    .to_string();
    let brief_id = sign_and_upload(
        dir.path(),
        "brief",
        b"briefly",
        &["Content-Type=text/plain"],
        &["--expires-at", &expires_at],
        &upload_url,
    );
    let brief_url = format!("{}/{brief_id}", gw.url);
    assert_eq!(http.get(&brief_url).send().await.unwrap().status(), 402);
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let before = chain.usdc_balance(payee).await;
    let (code, out, err) = hb402_cli(&["fetch", &brief_url], &payer_env());
    assert_eq!(code, 1);
    assert!(out.is_empty() && err.contains("410"), "{err}");
    assert_eq!(chain.usdc_balance(payee).await, before);

    // A private item: refused without a link, served with one minted on the admin listener,
    // and the Load-compatible key route works the same.
    let secret_id = sign_and_upload(
        dir.path(),
        "secret",
        b"for link holders",
        &["Content-Type=image/png"],
        &["--private"],
        &upload_url,
    );
    let resp = http
        .get(format!("{}/{secret_id}", gw.url))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    assert!(!resp.text().await.unwrap().contains("for link holders"));
    let minted: Value = http
        .post(format!("{}/sign", gw.admin_url))
        .bearer_auth(ADMIN_KEY)
        .header("x-bucket-name", "hb402-private")
        .header("x-load-acc", "e2e")
        .header("x-dataitem-key", format!("dataitems/{secret_id}.ans104"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let link = minted["signed_url"].as_str().unwrap();
    let resp = http.get(link).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{link}");
    assert_eq!(resp.bytes().await.unwrap(), "for link holders");
    let (_, token) = link.split_once("?token=").unwrap();
    let id_link = format!("{}/resolve/{secret_id}?token={token}", gw.url);
    assert_eq!(http.get(&id_link).send().await.unwrap().status(), 200);

    // The ledger agrees with the chain: one settlement per paid read, nothing else.
    let ledger = gw.settled_ledger(&http).await;
    let settled = ledger.iter().filter(|(_, s)| s == "settled").count();
    assert_eq!(settled, paid_reads, "{ledger:?}");
    assert!(ledger.iter().all(|(_, s)| s == "settled"), "{ledger:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_never_separate_content_from_settlement() {
    let dir = tempfile::tempdir().unwrap();
    let chain = LocalChain::start().await;
    let mut facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let node_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let node_data = dir.path().join("node");
    let mut node = devnode(node_addr, &node_data, &dir.path().join("node.log"));
    let relay = Relay::start(node_addr);
    let mut gw = Gateway::start(
        dir.path(),
        &format!("http://{}", relay.addr),
        facilitator.url(),
    );
    let http = client();
    let payee = PAYEE_ACCOUNT.address;
    let upload_url = format!("{}/upload", gw.url);
    let text = b"worth paying for";
    let id = sign_and_upload(
        dir.path(),
        "text",
        text,
        &["Content-Type=text/plain"],
        &[],
        &upload_url,
    );
    let url = format!("{}/{id}", gw.url);
    let path = format!("/{id}");
    let start_balance = chain.usdc_balance(payee).await;
    let mut settlements = 0u128;

    // The node restarts: while it is down a paid read fails and costs nothing; once it is back
    // the same kind of read is served and paid.
    node.kill();
    let before = chain.usdc_balance(payee).await;
    let (code, out, err) = hb402_cli(&["fetch", &url], &payer_env());
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty() && err.contains("502"), "{err}");
    assert_eq!(chain.usdc_balance(payee).await, before);
    let _node = devnode(node_addr, &node_data, &dir.path().join("node2.log"));
    let (code, out, err) = hb402_cli(&["fetch", &url], &payer_env());
    assert_eq!((code, out.as_slice()), (0, text.as_slice()), "{err}");
    settlements += 1;
    assert_eq!(chain.usdc_balance(payee).await, before + PRICE);

    // The node stalls on an item hb402 does not hold in memory yet: hb402 gives up after its
    // read timeout; no content, no settlement.
    let cold = sign_and_upload(
        dir.path(),
        "cold",
        b"not read yet",
        &["Content-Type=text/plain"],
        &[],
        &upload_url,
    );
    relay.stall.store(true, Ordering::SeqCst);
    let before = chain.usdc_balance(payee).await;
    let started = Instant::now();
    let cold_url = format!("{}/{cold}", gw.url);
    let (code, out, err) = hb402_cli(&["fetch", &cold_url], &payer_env());
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(chain.usdc_balance(payee).await, before);
    relay.stall.store(false, Ordering::SeqCst);

    // A client that disconnects after the headers: the payment settled before the first body
    // byte, and the receipt in those headers re-reads the item without paying twice.
    let before = chain.usdc_balance(payee).await;
    let header = signed_payment(&http, &url).await;
    let mut socket = TcpStream::connect(gw.public).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nhost: {}\r\npayment-signature: {header}\r\n\r\n",
        gw.public
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65_536 {
        socket.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    drop(socket);
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("payment-response:"),
        "{head}"
    );
    let receipt = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-receipt:")
                .then(|| l[10..].trim().to_owned())
        })
        .expect("a receipt");
    settlements += 1;
    assert_eq!(chain.usdc_balance(payee).await, before + PRICE);

    // hb402 is killed and restarted between the payment and its replay: the replay is still
    // refused and the receipt still re-reads (state and receipt key are durable).
    gw.restart();
    let resp = http
        .get(&url)
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let resp = http
        .get(&url)
        .header("x-receipt", &receipt)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), text.as_slice());

    // The facilitator dies mid-run: payments are refused (fail closed), nothing is served.
    facilitator.kill();
    let before = chain.usdc_balance(payee).await;
    let result = pay(PayClient::Python, &url, BUYER_ACCOUNT.private_key).await;
    assert_eq!(result.status, 402);
    assert!(!result.body.windows(text.len()).any(|w| w == text));
    let (code, out, _) = hb402_cli(&["fetch", &url], &payer_env());
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(chain.usdc_balance(payee).await, before);

    // Overall: the chain moved exactly the settled payments, and the ledger says the same.
    assert_eq!(
        chain.usdc_balance(payee).await,
        start_balance + settlements * PRICE
    );
    let ledger = gw.settled_ledger(&http).await;
    let settled = ledger.iter().filter(|(_, s)| s == "settled").count() as u128;
    assert_eq!(settled, settlements, "{ledger:?}");
    assert!(
        ledger
            .iter()
            .all(|(p, s)| p == &path && s != "reserved" && s != "verified"),
        "{ledger:?}"
    );
}

/// Regression (from an attack on the running proxy): `hb402 fetch` signed a new authorization on
/// every run, so a settlement reported pending (504) and retried by running it again was
/// charged again each time. It now sends the same payment again until it settles.
#[tokio::test(flavor = "multi_thread")]
async fn the_client_resends_a_pending_payment_instead_of_paying_again() {
    let dir = tempfile::tempdir().unwrap();
    let chain = LocalChain::start().await;
    let facilitator = Facilitator::start(&chain, FACILITATOR_ACCOUNT.private_key).await;
    let node_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _node = devnode(
        node_addr,
        &dir.path().join("node"),
        &dir.path().join("node.log"),
    );
    // hb402 reads the chain to learn what became of a settlement the facilitator did not report.
    let gw = Gateway::start_with(
        dir.path(),
        &format!("http://{node_addr}"),
        facilitator.url(),
        &format!("rpc_url = \"{}\"", chain.rpc_url()),
    );
    let text = b"paid for once";
    let id = sign_and_upload(
        dir.path(),
        "text",
        text,
        &["Content-Type=text/plain"],
        &[],
        &format!("{}/upload", gw.url),
    );
    let url = format!("{}/{id}", gw.url);
    let payee = PAYEE_ACCOUNT.address;
    let before = chain.usdc_balance(payee).await;
    // Blocks stop until well after hb402's settlement deadline (10 s): the first answer is 504.
    chain.rpc("evm_setAutomine", json!([false])).await;
    let miner = {
        let rpc = chain.rpc_url().to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(13)).await;
            let http = reqwest::Client::new();
            for (method, params) in [("evm_mine", json!([])), ("evm_setAutomine", json!([true]))] {
                http.post(&rpc)
                    .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    let fetch_url = url.clone();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || hb402_cli(&["fetch", &fetch_url], &payer_env()))
            .await
            .unwrap();
    miner.await.unwrap();
    assert_eq!((code, out.as_slice()), (0, text.as_slice()), "{err}");
    assert!(
        err.contains("settlement pending; sending the same payment again"),
        "{err}"
    );
    assert_eq!(
        chain.usdc_balance(payee).await,
        before + PRICE,
        "charged once"
    );
}

/// A chain with USDC and the batch contracts, a devnode, and a gateway in `dir` settling on the
/// chain itself and offering channels (`batch`: more of `[payments.batch]`), with `n` text
/// items stored: their URLs.
async fn channel_stack(
    dir: &Path,
    batch: &str,
    n: usize,
) -> (LocalChain, Proc, Gateway, Vec<String>) {
    let chain = LocalChain::start().await;
    chain.install_batch_settlement().await;
    let node_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let node = devnode(node_addr, &dir.join("node"), &dir.join("node.log"));
    let gw = Gateway::local(dir, &format!("http://{node_addr}"), &chain, batch);
    let urls = (0..n)
        .map(|i| {
            let id = sign_and_upload(
                dir,
                &format!("text{i}"),
                format!("read {i}, paid by voucher").as_bytes(),
                &["Content-Type=text/plain"],
                &[],
                &format!("{}/upload", gw.url),
            );
            format!("{}/{id}", gw.url)
        })
        .collect();
    (chain, node, gw, urls)
}

/// The `payment-required` header of a 402, decoded.
fn payment_required(resp: &reqwest::Response) -> Value {
    let header = resp.headers()["payment-required"].to_str().unwrap();
    serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, header).unwrap(),
    )
    .unwrap()
}

/// The sum of what `/admin/channels` lists as charged and not claimed yet.
async fn unclaimed(gw: &Gateway, client: &reqwest::Client) -> String {
    let listed = gw.admin(client, "/admin/channels").await;
    listed["unclaimed"].as_str().unwrap().to_owned()
}

/// hb402 killed (SIGKILL) right after serving voucher-paid reads, then started again on the
/// same state: the stock batch-settlement client, starting over with no memory of its channel,
/// reads on and gets its refund. The buyer pays once for each read it got at most (the charges
/// of the last moments before the kill may be lost: those reads are free), and what was claimed
/// before the kill stays paid and is not charged again.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_gateway_never_charges_a_read_twice_nor_loses_a_claim() {
    let dir = tempfile::tempdir().unwrap();
    let batch = "claim_interval_seconds = 2\nmin_deposit_reads = 20\n";
    let (chain, _node, mut gw, urls) = channel_stack(dir.path(), batch, 16).await;
    let buyer = ANVIL_ACCOUNTS[4];
    let funds = chain.usdc_balance(buyer.address).await;
    let http = client();
    let read_all = |run: &hb402_testkit::BatchRun, n: usize| {
        assert_eq!(run.reads.len(), n, "{run:?}");
        assert!(run.reads.iter().all(|r| r.status == 200), "{run:?}");
    };

    let first = batch_pay(chain.rpc_url(), buyer.private_key, &urls[..8], None, false).await;
    read_all(&first, 8);
    assert_eq!(first.charged(), 8 * PRICE);
    // The sweeper claims them on chain.
    let deadline = Instant::now() + Duration::from_secs(60);
    while unclaimed(&gw, &http).await != "0" {
        assert!(
            Instant::now() < deadline,
            "the first reads were not claimed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second = batch_pay(
        chain.rpc_url(),
        buyer.private_key,
        &urls[8..10],
        None,
        false,
    )
    .await;
    read_all(&second, 2);
    gw.restart();

    let refund_url = urls[0].clone();
    let third = batch_pay(
        chain.rpc_url(),
        buyer.private_key,
        &urls[10..],
        Some(&refund_url),
        false,
    )
    .await;
    read_all(&third, 6);
    assert_eq!(third.charged(), 6 * PRICE, "{third:?}");
    assert!(third.refund.is_some(), "{third:?}");

    // The buyer paid what hb402 claimed: every read at most once, the claimed ones and those
    // after the restart surely, the two just before the kill at most.
    let paid = funds - chain.usdc_balance(buyer.address).await;
    assert_eq!(paid % PRICE, 0, "whole reads only: {paid}");
    assert!(
        (14 * PRICE..=16 * PRICE).contains(&paid),
        "paid {paid} for 16 reads of {PRICE}"
    );
    assert_eq!(unclaimed(&gw, &http).await, "0");
}

/// A channel payment made by hand for `url` (`kind`: `voucher` or `refund`) on `payer`'s
/// channel (the one the stock client opens with hb402's offer, withdraw delay `delay`), ceiling
/// `max`: the `payment-signature` header.
async fn hand_payment(
    client: &reqwest::Client,
    url: &str,
    (payer, delay): (&hb402_testkit::AnvilAccount, u64),
    kind: &str,
    max: u128,
) -> String {
    use hb402_x402::batch::{ChannelConfig, channel_id, voucher_digest};
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 402, "{url}");
    let required = payment_required(&resp);
    let accepted = required["accepts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["scheme"] == "batch-settlement")
        .expect("a batch-settlement offer")
        .clone();
    let authorizer = accepted["extra"]["receiverAuthorizer"].as_str().unwrap();
    let config = ChannelConfig {
        payer: payer.address,
        payerAuthorizer: payer.address,
        receiver: PAYEE_ACCOUNT.address,
        receiverAuthorizer: authorizer.parse().unwrap(),
        token: hb402_testkit::USDC,
        withdrawDelay: alloy_primitives::aliases::U40::from(delay),
        salt: alloy_primitives::B256::ZERO,
    };
    let id = channel_id(&config, 84_532);
    let key = k256::ecdsa::SigningKey::from_bytes(payer.private_key.as_slice().into()).unwrap();
    let (signature, recovery) = key
        .sign_prehash_recoverable(voucher_digest(id, max, 84_532).as_slice())
        .unwrap();
    let mut bytes = signature.to_bytes().to_vec();
    bytes.push(27 + recovery.to_byte());
    let payment = json!({
        "x402Version": 2,
        "resource": required["resource"],
        "accepted": accepted,
        "payload": {
            "type": kind,
            "channelConfig": {
                "payer": config.payer,
                "payerAuthorizer": config.payerAuthorizer,
                "receiver": config.receiver,
                "receiverAuthorizer": config.receiverAuthorizer,
                "token": config.token,
                "withdrawDelay": delay,
                "salt": config.salt,
            },
            "voucher": {
                "channelId": id,
                "maxClaimableAmount": max.to_string(),
                "signature": format!("0x{}", hex::encode(bytes)),
            },
        },
    });
    base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        payment.to_string(),
    )
}

/// Regression (from an attack on the running proxy): killed right after a refund, before the
/// channel's record reached the file, and started again within the same second, hb402 trusted
/// the record from before the refund and served vouchers against the balance refunded. Here the
/// chain changes while hb402 is down (a refund its previous run made and did not record, sent
/// with the receiver authorizer's signature): the record it left is read from the chain again
/// before it is used.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_gateway_reads_the_chain_before_trusting_a_record_it_left() {
    use alloy_sol_types::SolCall as _;
    use hb402_x402::batch::{BATCH_SETTLEMENT, ChannelConfig, IBatchSettlement};
    let dir = tempfile::tempdir().unwrap();
    let batch =
        "withdraw_delay_seconds = 900\nclaim_interval_seconds = 300\nmin_deposit_reads = 20\n";
    let (chain, _node, mut gw, urls) = channel_stack(dir.path(), batch, 3).await;
    let buyer = ANVIL_ACCOUNTS[5];
    let run = batch_pay(chain.rpc_url(), buyer.private_key, &urls[..2], None, false).await;
    assert!(run.reads.iter().all(|r| r.status == 200), "{run:?}");
    // Its record written, hb402 goes down; meanwhile the rest of the deposit is refunded.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(mut proc) = gw.proc.take() {
        proc.kill();
    }
    let authorizer = k256::ecdsa::SigningKey::from_slice(
        &hex::decode(RECEIVER_AUTHORIZER_KEY.trim_start_matches("0x")).unwrap(),
    )
    .unwrap();
    let config = ChannelConfig {
        payer: buyer.address,
        payerAuthorizer: buyer.address,
        receiver: PAYEE_ACCOUNT.address,
        receiverAuthorizer: alloy_primitives::Address::from_private_key(&authorizer),
        token: hb402_testkit::USDC,
        withdrawDelay: alloy_primitives::aliases::U40::from(900u64),
        salt: alloy_primitives::B256::ZERO,
    };
    let id = hb402_x402::batch::channel_id(&config, 84_532);
    let (amount, nonce) = (18 * PRICE, alloy_primitives::U256::ZERO);
    let digest = hb402_x402::batch::refund_digest(id, nonce, amount, 84_532);
    let (signature, recovery) = authorizer
        .sign_prehash_recoverable(digest.as_slice())
        .unwrap();
    let mut signature = signature.to_bytes().to_vec();
    signature.push(27 + recovery.to_byte());
    let call = IBatchSettlement::refundWithSignatureCall {
        config,
        amount,
        nonce,
        signature: signature.into(),
    };
    let refund = call.abi_encode();
    let receipt = chain
        .transact(ANVIL_ACCOUNTS[0].address, BATCH_SETTLEMENT, &refund)
        .await;
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    gw.restart();

    // The channel holds what was charged and nothing more: the next voucher is above it.
    let http = client();
    let next = hand_payment(&http, &urls[2], (&buyer, 900), "voucher", 3 * PRICE).await;
    let resp = http
        .get(&urls[2])
        .header("payment-signature", next)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let required = payment_required(&resp);
    assert_eq!(
        required["error"], "invalid_batch_settlement_evm_cumulative_exceeds_balance",
        "{required}"
    );
}
