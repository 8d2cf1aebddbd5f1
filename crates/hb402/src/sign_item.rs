//! `hb402 sign-item`: makes a signed ANS-104 DataItem from a data file, tags and a key read from
//! the environment (Ethereum secp256k1 or Ed25519).

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, ValueEnum};
use hb402_ans104::{DataItem, SigningKey, Tag};
use serde_json::json;

/// The largest data file signed (the item is built in memory).
const MAX_DATA_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum KeyType {
    /// secp256k1 (signature type 3); the owner is an Ethereum address.
    Ethereum,
    /// Ed25519 (signature type 2); the key is a 32-byte seed.
    Ed25519,
}

/// `hb402 sign-item`.
#[derive(Debug, Args)]
pub(crate) struct SignItemArgs {
    /// The data file, or `-` for standard input.
    data: String,
    /// The environment variable holding the key (0x + 64 hex digits).
    #[arg(long, default_value = "HB402_ITEM_KEY")]
    key_env: String,
    /// The key's type.
    #[arg(long, value_enum, default_value_t = KeyType::Ethereum)]
    key_type: KeyType,
    /// A tag, `Name=value` (repeatable, in order).
    #[arg(long = "tag", short = 't')]
    tags: Vec<String>,
    /// The item's target (base64url, 32 bytes).
    #[arg(long)]
    target: Option<String>,
    /// The item's anchor (base64url, 32 bytes).
    #[arg(long)]
    anchor: Option<String>,
    /// Write the item here instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

fn failure(code: &str, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{}", json!({"error": code, "message": message.to_string()}));
    ExitCode::from(1)
}

fn bytes32(name: &str, text: &str) -> Result<[u8; 32], String> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| format!("--{name} must be 32 bytes in base64url"))
}

pub(crate) fn run(args: SignItemArgs) -> ExitCode {
    let Ok(secret) = std::env::var(&args.key_env) else {
        return failure(
            "no_key",
            format!(
                "set {} to the signing key (0x + 64 hex digits)",
                args.key_env
            ),
        );
    };
    let Some(secret) = hex::decode(secret.trim().trim_start_matches("0x"))
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
    else {
        return failure(
            "bad_key",
            format!("{} is not 32 bytes of hex", args.key_env),
        );
    };
    let key = match args.key_type {
        KeyType::Ed25519 => SigningKey::ed25519_from_seed(&secret),
        KeyType::Ethereum => match SigningKey::ethereum_from_bytes(&secret) {
            Ok(key) => key,
            Err(e) => return failure("bad_key", e),
        },
    };
    let mut tags = Vec::with_capacity(args.tags.len());
    for t in &args.tags {
        let Some((name, value)) = t.split_once('=') else {
            return failure("bad_tag", format!("{t:?} is not Name=value"));
        };
        tags.push(Tag::new(name, value));
    }
    let (target, anchor) = match (
        args.target
            .as_deref()
            .map(|t| bytes32("target", t))
            .transpose(),
        args.anchor
            .as_deref()
            .map(|a| bytes32("anchor", a))
            .transpose(),
    ) {
        (Ok(t), Ok(a)) => (t, a),
        (Err(e), _) | (_, Err(e)) => return failure("bad_argument", e),
    };
    let mut data = Vec::new();
    let read = if args.data == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_DATA_BYTES + 1)
            .read_to_end(&mut data)
    } else {
        std::fs::File::open(&args.data)
            .and_then(|f| f.take(MAX_DATA_BYTES + 1).read_to_end(&mut data))
    };
    if let Err(e) = read {
        return failure("io_error", format!("{}: {e}", args.data));
    }
    if data.len() as u64 > MAX_DATA_BYTES {
        return failure(
            "too_large",
            format!("the data exceeds {MAX_DATA_BYTES} bytes"),
        );
    }
    let item = match DataItem::sign(&key, target, anchor, tags, data) {
        Ok(item) => item,
        Err(e) => return failure(e.code(), e),
    };
    let bytes = item.to_bytes();
    let written = match &args.output {
        Some(path) => std::fs::write(path, &bytes),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes).and_then(|()| out.flush())
        }
    };
    if let Err(e) = written {
        return failure("io_error", e);
    }
    eprintln!(
        "{}",
        json!({"id": item.id().to_string(), "size": bytes.len(), "owner_address": owner_address(&item)})
    );
    ExitCode::SUCCESS
}

fn owner_address(item: &DataItem) -> String {
    item.header().owner_address()
}
