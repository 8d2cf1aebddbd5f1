//! The README's quick start, as a newcomer runs it (`scripts/quickstart.sh`, on free ports and a
//! temporary state directory), then its paid item opened and paid in a browser.

use hb402_testkit::free_port;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hb402_testkit::{ANVIL_ACCOUNTS, browse, ensure_browser};
use serde_json::json;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn quickstart(state: &Path, ports: &[(&str, u16)], args: &[&str]) -> std::process::Output {
    let mut command = Command::new("bash");
    command
        .arg(root().join("scripts/quickstart.sh"))
        .args(args)
        .env("HB402_QUICKSTART_DIR", state)
        .stdin(Stdio::null());
    for (name, port) in ports {
        command.env(name, port.to_string());
    }
    command.output().unwrap()
}

/// Stops what `--detach` started, whatever the test's outcome.
struct Detached<'a> {
    state: &'a Path,
}

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        let _ = quickstart(self.state, &[], &["--stop"]);
    }
}

async fn usdc_balance(rpc: &str, usdc: &str, owner: &str) -> u128 {
    let data = format!("0x70a08231{:0>64}", owner.trim_start_matches("0x"));
    let out: serde_json::Value = reqwest::Client::new()
        .post(rpc)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
                      "params": [{"to": usdc, "data": data}, "latest"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    u128::from_str_radix(out["result"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn the_quick_start_refuses_arguments_it_does_not_know() {
    let state = tempfile::tempdir().unwrap();
    for args in [&["--detach", "now"][..], &["--dettach"][..]] {
        let out = quickstart(state.path(), &[], args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("usage:"),
            "{args:?}"
        );
        assert!(!state.path().join("quickstart.env").exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quick_start_item_is_paid_from_a_browser() {
    ensure_browser();
    let state = tempfile::tempdir().unwrap();
    let ports = [
        ("RPC_PORT", free_port()),
        ("DEVNODE_PORT", free_port()),
        ("HB402_PORT", free_port()),
        ("HB402_ADMIN_PORT", free_port()),
    ];
    let dir = state.path().to_owned();
    let out = tokio::task::spawn_blocking(move || quickstart(&dir, &ports, &["--detach"]))
        .await
        .unwrap();
    let _stop = Detached {
        state: state.path(),
    };
    assert!(
        out.status.success(),
        "quick start failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let facts: HashMap<String, String> =
        std::fs::read_to_string(state.path().join("quickstart.env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
    let (rpc, usdc, payee) = (&facts["RPC_URL"], &facts["USDC"], &facts["PAYEE"]);
    let price: u128 = facts["PRICE_ATOMIC"].parse().unwrap();
    let before = usdc_balance(rpc, usdc, payee).await;

    // Account #4 holds USDC on the quick start's chain; the wallet starts elsewhere.
    let report = browse(&json!({
        "url": facts["PAID_ITEM_URL"],
        "rpc": rpc,
        "account": ANVIL_ACCOUNTS[4].address_checksummed(),
        "chainId": 1,
        "knownChains": [1],
    }))
    .await;
    assert_eq!(report["status"], 402, "{report:#}");
    assert_eq!(report["after"]["resultVisible"], true, "{report:#}");
    assert_eq!(
        report["after"]["text"],
        "Hello from hb402: these bytes cost 0.01 USDC.\n"
    );
    let add = report["walletCalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["method"] == "wallet_addEthereumChain")
        .unwrap_or_else(|| panic!("the chain was never added: {report:#}"));
    assert_eq!(add["params"][0]["rpcUrls"], json!([rpc]));
    assert_eq!(usdc_balance(rpc, usdc, payee).await, before + price);
}
