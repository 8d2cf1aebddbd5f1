//! A person paying in a browser: headless Chromium (the system's, driven by `puppeteer-core`)
//! opens an hb402 URL with a test wallet in the page and plays one scenario (`js/browser.mjs`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::process::run_node;

/// Bound on one scenario, browser start-up and settlement included.
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

/// The browser: `$HB402_CHROMIUM` if set, else Debian's `/usr/bin/chromium`.
pub fn chromium() -> PathBuf {
    std::env::var_os("HB402_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Checks that the browser and `puppeteer-core` are there; panics with instructions otherwise.
pub fn ensure_browser() {
    crate::js::ensure_js();
    let browser = chromium();
    assert!(
        browser.is_file(),
        "no browser at {}: install Debian's chromium (`apt-get install chromium`; .ci/run does) \
         or set HB402_CHROMIUM to a Chromium executable",
        browser.display()
    );
    assert!(
        crate::js::js_dir()
            .join("node_modules/puppeteer-core/package.json")
            .is_file(),
        "puppeteer-core is missing from the test kit: run `npm ci --ignore-scripts` in {}",
        crate::js::js_dir().display()
    );
}

/// Plays the scenario `spec` (see `js/browser.mjs` for its fields) and returns the report of
/// what the page showed, what the wallet was asked and what the page requested.
pub async fn browse(spec: &Value) -> Value {
    ensure_browser();
    // The script finds the browser through `HB402_CHROMIUM` too (inherited) or Debian's path.
    let out = run_node("browser.mjs", vec![spec.to_string()], None, BROWSER_TIMEOUT).await;
    out.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("browser scenario {} printed no report:\n{out}", spec["url"]))
}
