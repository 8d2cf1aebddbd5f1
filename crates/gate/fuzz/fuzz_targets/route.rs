//! The path normaliser and the route classifier: what decides what may reach the node.
//!
//! Input: byte 0 picks the method, the rest is the raw request path (a `?` splits off the
//! query). Nothing panics; the canonical form is a fixed point of normalising; the raw path and
//! its canonical form are classified alike; a pass-through is only ever a GET or HEAD under an
//! allowed prefix, never names the node's S3 device or a DataItem id, and is forwarded in a form
//! that normalises to itself.

#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use hb402_gate::config::{Config, Overrides};
use hb402_gate::path::normalize;
use hb402_gate::route::{Route, classify, starts_with_item_id};
use libfuzzer_sys::fuzz_target;

static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    Config::from_toml(
        "version = 1\n[passthrough]\nallow = [\"/~meta@1.0/info\", \"/~hyperbuddy@1.0\"]\n",
        Path::new("fuzz.toml"),
        &Overrides::default(),
        &|_| None,
    )
    .unwrap()
});

const METHODS: [&str; 7] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"];

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let Ok(target) = std::str::from_utf8(rest) else {
        return;
    };
    let method = METHODS[m as usize % METHODS.len()];
    let (raw, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Ok(path) = normalize(raw) else {
        return;
    };
    let wire = path.to_uri_path();
    let again = normalize(&wire).expect("the canonical form normalises");
    assert_eq!(again, path, "{raw:?} -> {wire:?}");
    let route = classify(&CONFIG, method, &path, query);
    assert_eq!(classify(&CONFIG, method, &again, query), route);
    if route == Route::PassThrough {
        // Forwarded at its canonical path.
        let forwarded = path;
        assert!(matches!(method, "GET" | "HEAD"), "{method} {raw:?}");
        assert_eq!(normalize(&forwarded.to_uri_path()).as_ref(), Ok(&forwarded));
        let segments = forwarded.parts();
        assert!(
            !segments
                .first()
                .is_some_and(|s| s.eq_ignore_ascii_case("~s3@1.0")),
            "{raw:?}"
        );
        assert!(!segments.iter().any(|s| starts_with_item_id(s)), "{raw:?}");
        assert!(
            CONFIG
                .passthrough
                .allow
                .iter()
                .any(|p| forwarded.starts_with(p)),
            "{raw:?}"
        );
        assert!(query.is_none_or(str::is_empty), "{raw:?}");
    }
});
