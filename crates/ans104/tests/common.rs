//! Shared helpers for the integration tests: the committed arbundles fixtures and the node scripts
//! that run the reference implementation.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct ManifestTag {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
pub struct Fixture {
    pub file: String,
    pub signature_type: u16,
    pub id: String,
    pub owner_b64url: String,
    pub owner_address: String,
    pub target_b64url: Option<String>,
    pub anchor_b64url: Option<String>,
    pub tags: Vec<ManifestTag>,
    pub tag_bytes: u64,
    pub data_offset: u64,
    pub data_size: u64,
    pub data_sha256_hex: String,
    pub valid: bool,
    pub size: u64,
}

pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

pub fn load_manifest(dir: &Path) -> Vec<Fixture> {
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest.json");
    serde_json::from_str(&text).expect("manifest parses")
}

pub fn fixtures() -> Vec<(Fixture, Vec<u8>)> {
    let dir = vectors_dir().join("fixtures");
    load_manifest(&dir)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f.file)).expect("fixture file");
            (f, bytes)
        })
        .collect()
}

/// Runs one of the arbundles scripts; fails the test with a clear message when the npm packages
/// have not been installed (`npm ci` in tests/vectors, which the test script does).
pub fn node(args: &[&str]) -> String {
    let dir = vectors_dir();
    assert!(
        dir.join("node_modules/@dha-team/arbundles").is_dir(),
        "the arbundles reference package is not installed: run `npm ci --ignore-scripts` in {} \
         (scripts/test.sh does it)",
        dir.display()
    );
    let out = Command::new("node")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "node {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

pub fn read_hex_key(name: &str) -> [u8; 32] {
    let text = std::fs::read_to_string(vectors_dir().join("keys").join(name)).expect("key file");
    hex::decode(text.trim())
        .expect("hex key")
        .try_into()
        .expect("32 bytes")
}
