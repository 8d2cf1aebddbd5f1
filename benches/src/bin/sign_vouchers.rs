//! `sign-vouchers CHALLENGE CHANNELS COUNT`: signs the x402 `batch-settlement` payments of
//! CHANNELS channels (one payer, key in `HB402_PAYER_KEY`, channel salts 1…CHANNELS) paying
//! COUNT reads each of the resource whose 402 challenge (the base64 `PAYMENT-REQUIRED` header
//! value) offers `batch-settlement`: per channel a deposit of COUNT reads with the first voucher,
//! then vouchers for the cumulative 2…COUNT reads. One `PAYMENT-SIGNATURE` value per line,
//! interleaved (line i belongs to channel i mod CHANNELS), so that a wrk thread per channel sends
//! its channel's payments in order. The load bench replays them, each once.

use std::io::Write as _;
use std::process::ExitCode;

use alloy_primitives::{Address, B256, U256};
use base64::Engine as _;
use hb402_x402::batch::{BatchTerms, ChannelConfig, channel_id, deposit_digest, voucher_digest};
use k256::ecdsa::SigningKey;
use serde_json::{Value, json};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [challenge, channels, count] = args.as_slice() else {
        eprintln!("usage: sign-vouchers CHALLENGE CHANNELS COUNT (key in HB402_PAYER_KEY)");
        return ExitCode::from(2);
    };
    let (Ok(channels), Ok(count)) = (channels.parse::<u64>(), count.parse::<u128>()) else {
        eprintln!("CHANNELS and COUNT must be whole numbers");
        return ExitCode::from(2);
    };
    let key = std::env::var("HB402_PAYER_KEY")
        .ok()
        .and_then(|k| alloy_primitives::hex::decode(k.trim()).ok())
        .and_then(|k| SigningKey::from_slice(&k).ok());
    let Some(key) = key else {
        eprintln!("HB402_PAYER_KEY must hold a private key (0x + 64 hex digits)");
        return ExitCode::from(2);
    };
    let Some((required, accepted, terms)) = offer(challenge) else {
        eprintln!("the challenge offers no batch-settlement");
        return ExitCode::from(1);
    };
    let payer = Address::from_public_key(key.verifying_key());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let configs: Vec<ChannelConfig> = (1..=channels)
        .map(|salt| ChannelConfig {
            payer,
            payerAuthorizer: payer,
            receiver: terms.pay_to,
            receiverAuthorizer: terms.receiver_authorizer,
            token: terms.asset,
            withdrawDelay: alloy_primitives::aliases::U40::from(terms.withdraw_delay),
            salt: B256::from(U256::from(salt)),
        })
        .collect();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for read in 1..=count {
        for config in &configs {
            let id = channel_id(config, terms.chain_id);
            let mut payload = json!({
                "type": if read == 1 { "deposit" } else { "voucher" },
                "channelConfig": config_json(config, terms.withdraw_delay),
                "voucher": {
                    "channelId": id,
                    "maxClaimableAmount": (read * terms.amount).to_string(),
                    "signature": sign(&key, &voucher_digest(id, read * terms.amount, terms.chain_id)),
                },
            });
            if read == 1 {
                let amount = count * terms.amount;
                let salt = B256::from(rand::random::<[u8; 32]>());
                let window = (0, u128::from(now + 3600));
                let digest = deposit_digest(&terms, payer, id, amount, window, salt);
                payload["deposit"] = json!({
                    "amount": amount.to_string(),
                    "authorization": {"erc3009Authorization": {
                        "validAfter": "0",
                        "validBefore": window.1.to_string(),
                        "salt": salt,
                        "signature": sign(&key, &digest),
                    }},
                });
            }
            let envelope = json!({
                "x402Version": 2,
                "resource": required["resource"],
                "accepted": accepted,
                "payload": payload,
            });
            let line = base64::engine::general_purpose::STANDARD.encode(envelope.to_string());
            if writeln!(out, "{line}").is_err() {
                return ExitCode::from(1);
            }
        }
    }
    if out.flush().is_err() {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// The challenge, its batch-settlement offer, and that offer's terms.
fn offer(challenge: &str) -> Option<(Value, Value, BatchTerms)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(challenge.trim())
        .ok()?;
    let required: Value = serde_json::from_slice(&bytes).ok()?;
    let accepted = required["accepts"]
        .as_array()?
        .iter()
        .find(|a| a["scheme"] == "batch-settlement")?
        .clone();
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let extra = &accepted["extra"];
    let terms = BatchTerms {
        chain_id: accepted["network"]
            .as_str()?
            .strip_prefix("eip155:")?
            .parse()
            .ok()?,
        pay_to: accepted["payTo"].as_str()?.parse().ok()?,
        asset: accepted["asset"].as_str()?.parse().ok()?,
        asset_domain: (text(&extra["name"])?, text(&extra["version"])?),
        amount: accepted["amount"].as_str()?.parse().ok()?,
        receiver_authorizer: extra["receiverAuthorizer"].as_str()?.parse().ok()?,
        withdraw_delay: extra["withdrawDelay"].as_u64()?,
        contract_payers: false,
    };
    Some((required, accepted, terms))
}

fn config_json(config: &ChannelConfig, withdraw_delay: u64) -> Value {
    json!({
        "payer": config.payer,
        "payerAuthorizer": config.payerAuthorizer,
        "receiver": config.receiver,
        "receiverAuthorizer": config.receiverAuthorizer,
        "token": config.token,
        "withdrawDelay": withdraw_delay,
        "salt": config.salt,
    })
}

fn sign(key: &SigningKey, digest: &B256) -> String {
    let (sig, recovery) = key
        .sign_prehash_recoverable(digest.as_slice())
        .expect("a prehash of 32 bytes signs");
    let mut bytes = sig.to_bytes().to_vec();
    bytes.push(27 + recovery.to_byte());
    format!("0x{}", alloy_primitives::hex::encode(bytes))
}
