//! `sign-payments CHALLENGE COUNT`: signs COUNT distinct x402 payments for one 402 challenge (the
//! base64 `PAYMENT-REQUIRED` header value) with the key in `HB402_PAYER_KEY`, one
//! `PAYMENT-SIGNATURE` value per line on stdout. The load bench replays them, each once.

use std::io::Write as _;
use std::process::ExitCode;

use alloy_primitives::{Address, B256};
use hb402_x402::Registry;
use hb402_x402::client::{Challenge, Limits, choose};
use k256::ecdsa::SigningKey;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [challenge, count] = args.as_slice() else {
        eprintln!("usage: sign-payments CHALLENGE COUNT (key in HB402_PAYER_KEY)");
        return ExitCode::from(2);
    };
    let Ok(count) = count.parse::<usize>() else {
        eprintln!("COUNT must be a whole number");
        return ExitCode::from(2);
    };
    let key = std::env::var("HB402_PAYER_KEY")
        .ok()
        .and_then(|k| hex_key(&k))
        .and_then(|k| SigningKey::from_slice(&k).ok());
    let Some(key) = key else {
        eprintln!("HB402_PAYER_KEY must hold a private key (0x + 64 hex digits)");
        return ExitCode::from(2);
    };
    let choice = match Challenge::parse(Some(challenge), b"").and_then(|c| {
        choose(
            &c,
            &Registry::builtin(),
            &Limits {
                network: None,
                max_amount: "1".into(),
            },
        )
    }) {
        Ok(choice) => choice,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let payer = Address::from_public_key(key.verifying_key());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for _ in 0..count {
        let auth = choice.authorization(payer, now, B256::from(rand::random::<[u8; 32]>()));
        let Ok((sig, recovery)) =
            key.sign_prehash_recoverable(choice.signing_hash(&auth).as_slice())
        else {
            eprintln!("signing failed");
            return ExitCode::from(1);
        };
        let mut bytes = sig.to_bytes().to_vec();
        bytes.push(27 + recovery.to_byte());
        let (_, header) = choice.header(&auth, &bytes);
        if writeln!(out, "{header}").is_err() {
            return ExitCode::from(1);
        }
    }
    if out.flush().is_err() {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn hex_key(text: &str) -> Option<[u8; 32]> {
    let digits = text.trim().trim_start_matches("0x");
    if digits.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}
