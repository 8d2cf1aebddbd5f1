//! The page a browser gets with a 402: what is being bought, rendered by hb402 (escaped), and an
//! inline script that pays from the person's wallet (`page.js`). Self-contained: the script and
//! the style carry a per-response nonce, and the Content-Security-Policy lets the page load
//! nothing from anywhere and talk only to its own origin.

use bytes::Bytes;
use hb402_x402::PaymentRequired;
use hb402_x402::client::format_units;
use serde_json::json;

use crate::config::{PaywallConfig, WalletChain};
use crate::payment::{ItemFacts, Offered};

const TEMPLATE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// Chains a wallet may be asked to add, by chain id: (name, public RPC, explorer, currency).
const BUILTIN_CHAINS: &[(u64, &str, &str, &str, &str)] = &[
    (
        8453,
        "Base",
        "https://mainnet.base.org",
        "https://basescan.org",
        "ETH",
    ),
    (
        84_532,
        "Base Sepolia",
        "https://sepolia.base.org",
        "https://sepolia.basescan.org",
        "ETH",
    ),
    (
        43_114,
        "Avalanche C-Chain",
        "https://api.avax.network/ext/bc/C/rpc",
        "https://snowtrace.io",
        "AVAX",
    ),
    (
        43_113,
        "Avalanche Fuji",
        "https://api.avax-test.network/ext/bc/C/rpc",
        "https://testnet.snowtrace.io",
        "AVAX",
    ),
    (
        137,
        "Polygon",
        "https://polygon-rpc.com",
        "https://polygonscan.com",
        "POL",
    ),
    (
        80_002,
        "Polygon Amoy",
        "https://rpc-amoy.polygon.technology",
        "https://amoy.polygonscan.com",
        "POL",
    ),
];

/// The chain as the operator configured it, else as built in.
fn wallet_chain(paywall: &PaywallConfig, chain_id: u64) -> Option<WalletChain> {
    paywall
        .chains
        .iter()
        .find(|c| c.chain_id == chain_id)
        .cloned()
        .or_else(|| {
            BUILTIN_CHAINS.iter().find(|c| c.0 == chain_id).map(
                |&(chain_id, name, rpc, explorer, currency)| WalletChain {
                    chain_id,
                    name: name.to_owned(),
                    rpc_urls: vec![rpc.to_owned()],
                    explorer: Some(explorer.to_owned()),
                    currency: currency.to_owned(),
                },
            )
        })
}

/// The EIP-3085 parameters of `wallet_addEthereumChain`.
fn add_chain(chain: &WalletChain) -> serde_json::Value {
    json!({
        "chainId": format!("{:#x}", chain.chain_id),
        "chainName": chain.name,
        "rpcUrls": chain.rpc_urls,
        "nativeCurrency": {"name": chain.currency, "symbol": chain.currency, "decimals": 18},
        "blockExplorerUrls": chain.explorer.iter().collect::<Vec<_>>(),
    })
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON that cannot end the `<script>` element it sits in, nor be read as markup.
fn script_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// `1,234 bytes (1.2 KiB)`.
fn size_text(bytes: u64) -> String {
    let grouped = bytes
        .to_string()
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(",");
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = None;
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = Some(u);
    }
    match unit {
        Some(u) => format!("{grouped} bytes ({value:.1} {u})"),
        None => format!("{grouped} bytes"),
    }
}

/// `2026-11-30 10:26 UTC`.
fn utc_text(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

fn fact(out: &mut String, name: &str, value: &str, class: &str) {
    out.push_str(&format!(
        "<dt>{}</dt><dd class=\"{class}\">{}</dd>",
        html_escape(name),
        html_escape(value)
    ));
}

/// One offer as the page shows and pays it.
struct Shown {
    price: String,
    symbol: String,
    decimals: u8,
    chain_id: u64,
    network: String,
    chain: Option<WalletChain>,
}

fn shown(offered: &Offered, paywall: &PaywallConfig) -> Vec<Shown> {
    offered
        .offers
        .iter()
        .map(|o| {
            let chain = wallet_chain(paywall, o.terms.asset.chain_id);
            Shown {
                price: format_units(&o.terms.amount, o.terms.asset.decimals),
                symbol: o.terms.asset.symbol.clone(),
                decimals: o.terms.asset.decimals,
                chain_id: o.terms.asset.chain_id,
                network: chain
                    .as_ref()
                    .map_or_else(|| o.v2.network.clone(), |c| c.name.clone()),
                chain,
            }
        })
        .collect()
}

fn facts(item: Option<&ItemFacts>, offered: &Offered, shown: &[Shown]) -> String {
    let mut out = String::new();
    if let Some(item) = item {
        fact(&mut out, "Item", &item.id, "mono");
        fact(&mut out, "Type", &item.content_type, "mono");
        fact(&mut out, "Size", &size_text(item.size), "");
        let expiry = item.expires_at.map_or_else(|| "never".to_owned(), utc_text);
        fact(&mut out, "Expires", &expiry, "");
    }
    for (o, s) in offered.offers.iter().zip(shown) {
        fact(
            &mut out,
            "Price",
            &format!("{} {}", s.price, s.symbol),
            "price",
        );
        fact(
            &mut out,
            "Network",
            &format!("{} ({})", s.network, o.v2.network),
            "",
        );
        fact(&mut out, "Pay to", &o.v2.pay_to, "mono");
    }
    out
}

/// Fills `{{name}}` slots in one pass, so that a value can never fill another slot.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}").and_then(|end| {
            let name = &after[..end];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (v, end))
        }) {
            Some((value, end)) => {
                out.push_str(value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The page's headers and body.
pub(super) fn render(
    offered: &Offered,
    required: &PaymentRequired,
    message: &str,
    paywall: &PaywallConfig,
    now: u64,
) -> (Vec<(&'static str, String)>, Bytes) {
    use base64::Engine as _;
    let nonce = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 18]>());
    let shown = shown(offered, paywall);
    let item = offered.item.as_ref();
    let data = json!({
        "now": now,
        "resource": required.resource,
        "accepts": required.accepts,
        "offers": shown.iter().map(|s| json!({
            "price": s.price,
            "symbol": s.symbol,
            "decimals": s.decimals,
            "network": s.network,
            "chainId": s.chain_id,
            "addChain": s.chain.as_ref().filter(|c| !c.rpc_urls.is_empty()).map(add_chain),
            "explorer": s.chain.as_ref().and_then(|c| c.explorer.clone()),
        })).collect::<Vec<_>>(),
        "item": item.map(|i| json!({
            "id": i.id,
            "contentType": i.content_type,
            "size": i.size,
            "expiresAt": i.expires_at,
        })),
        "receiptHeader": crate::receipt::HEADER,
    });
    let title = item.map_or_else(
        || offered.resource.description.clone().unwrap_or_default(),
        |i| format!("DataItem {}", i.id),
    );
    let heading = match (shown.first(), item) {
        (Some(s), Some(_)) => format!("Pay {} {} to open this item", s.price, s.symbol),
        (Some(s), None) => format!("Pay {} {} to store this item", s.price, s.symbol),
        (None, _) => "Payment required".to_owned(),
    };
    let page = fill(
        TEMPLATE,
        &[
            ("nonce", &nonce),
            ("title", &html_escape(&title)),
            ("heading", &html_escape(&heading)),
            ("summary", &html_escape(message)),
            ("facts", &facts(item, offered, &shown)),
            ("data", &script_json(&data)),
            ("css", STYLE),
            ("js", SCRIPT),
        ],
    );
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         img-src blob: data:; media-src blob:; frame-src blob:; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let headers = vec![
        ("content-type", "text/html; charset=utf-8".to_owned()),
        ("content-security-policy", csp),
        ("x-content-type-options", "nosniff".to_owned()),
        ("x-frame-options", "DENY".to_owned()),
        ("referrer-policy", "no-referrer".to_owned()),
    ];
    (headers, Bytes::from(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_filled_once_and_values_are_never_read_as_slots() {
        let out = fill(
            "a{{x}}b{{y}}c{{unknown}}d{{",
            &[("x", "{{y}}"), ("y", "<Y>")],
        );
        assert_eq!(out, "a{{y}}b<Y>c{{unknown}}d{{");
    }

    #[test]
    fn embedded_json_cannot_close_its_script() {
        let v = json!({"t": "</script><script>alert(1)</script>\u{2028}&"});
        let s = script_json(&v);
        assert!(
            !s.contains('<') && !s.contains('>') && !s.contains('&'),
            "{s}"
        );
        assert_eq!(serde_json::from_str::<serde_json::Value>(&s).unwrap(), v);
    }

    #[test]
    fn sizes_and_dates_read_as_people_write_them() {
        assert_eq!(size_text(512), "512 bytes");
        assert_eq!(size_text(1_234_567), "1,234,567 bytes (1.2 MiB)");
        assert_eq!(utc_text(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_text(1_796_038_380), "2026-11-30 11:33 UTC");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn configured_chains_win_over_built_in_ones() {
        let mut paywall = PaywallConfig::default();
        assert_eq!(
            wallet_chain(&paywall, 84_532).unwrap().rpc_urls,
            ["https://sepolia.base.org"]
        );
        assert!(wallet_chain(&paywall, 31_337).is_none());
        paywall.chains.push(WalletChain {
            chain_id: 84_532,
            name: "Local".into(),
            rpc_urls: vec!["http://127.0.0.1:8545".into()],
            explorer: None,
            currency: "ETH".into(),
        });
        let chain = wallet_chain(&paywall, 84_532).unwrap();
        assert_eq!(chain.name, "Local");
        let add = add_chain(&chain);
        assert_eq!(add["chainId"], "0x14a34");
        assert_eq!(add["blockExplorerUrls"], json!([]));
    }
}
