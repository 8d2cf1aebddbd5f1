//! The `hb402` binary: `--validate` exit codes, and the shipped example configuration working as a
//! proxy in front of a devnode with only command-line overrides.

use hb402_testkit::free_port;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config.example.toml")
}

fn hb402() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hb402"));
    for var in [
        "HB402_LISTEN",
        "HB402_ADMIN_LISTEN",
        "HB402_UPSTREAM",
        "HB402_STATE_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn validate_exits_0_for_the_example_and_64_for_a_bad_file() {
    let out = hb402()
        .args(["--validate", "--config"])
        .arg(example())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "version = 1\n[upstream]\nurl = \"ftp://node\"\n").unwrap();
    let out = hb402()
        .args(["--validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("upstream.url"), "{stderr}");

    std::fs::write(&bad, "version = 1\n[upstream]\nurll = \"x\"\n").unwrap();
    let out = hb402()
        .args(["--validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("urll"));

    let out = hb402()
        .args(["--validate", "--config", "/nonexistent/hb402.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));

    // The environment overrides the file, the command line overrides the environment.
    let out = hb402()
        .args(["--validate", "--config"])
        .arg(example())
        .env("HB402_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = hb402()
        .args(["--validate", "--listen", "127.0.0.1:1", "--config"])
        .arg(example())
        .env("HB402_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_config_proxies_a_devnode() {
    let node_dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut node_config = hb402_devnode::DevnodeConfig::new(node_dir.path());
    node_config.listen = "127.0.0.1:0".parse().unwrap();
    let node = hb402_devnode::Devnode::start(node_config).await.unwrap();
    let (public, admin) = (free_port(), free_port());
    let child = hb402()
        .arg("--config")
        .arg(example())
        .args(["--upstream", &node.url()])
        .args(["--listen", &format!("127.0.0.1:{public}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--state-dir")
        .arg(state.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", public)).is_err() {
        assert!(Instant::now() < deadline, "hb402 did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../ans104/tests/vectors/fixtures/ethereum_tags.ans104"),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://127.0.0.1:{public}/upload"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: serde_json::Value = resp.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    let resp = client
        .get(format!("http://127.0.0.1:{public}/resolve/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.bytes().await.unwrap(), "hello hb402");
    let health = client
        .get(format!("http://127.0.0.1:{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // Metrics are on the admin listener only.
    let metrics = client
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("hb402_requests_total"), "{metrics}");
    let public_metrics = client
        .get(format!("http://127.0.0.1:{public}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!public_metrics.contains("hb402_requests_total"));
}
