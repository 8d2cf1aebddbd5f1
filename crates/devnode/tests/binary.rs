//! Smoke tests of the `hb402-devnode` binary: it reports its address, serves, and stops on
//! SIGTERM; a bad configuration exits 64.

use std::process::Stdio;
use std::time::Duration;

use hb402_devnode::authorization_header;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hb402-devnode");

#[cfg(unix)]
#[tokio::test]
async fn the_binary_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--access-key-id", "smoke-key", "--day-seconds", "60"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the binary printed its address in time")
        .unwrap()
        .expect("a first line on stdout");
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert_ne!(addr.port(), 0);

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let address = client
        .get(format!("http://{addr}/~meta@1.0/info/address"))
        .send()
        .await
        .unwrap();
    assert_eq!(address.status(), reqwest::StatusCode::OK);
    assert_eq!(address.text().await.unwrap().len(), 43);
    let created = client
        .put(format!("http://{addr}/~s3@1.0/smoke"))
        .header("authorization", authorization_header("smoke-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), reqwest::StatusCode::OK);
    assert!(dir.path().join("buckets").join("smoke").is_dir());

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the binary stopped in time")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_bad_configuration_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(BIN)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--day-seconds", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(64));
}
