//! The paying side: read a 402 challenge (v2 header, else v1 body), choose an offer within a
//! spending limit, and build the payment header around an EIP-3009 signature made by the caller.
//!
//! Only assets the [`Registry`] knows are paid, and the EIP-712 domain signed is the registry's,
//! not the server's `extra`: a server cannot make the client sign for another token.

use alloy_primitives::{Address, B256, U256};
use serde_json::{Value, json};

use crate::codec::{decode_header, encode_header};
use crate::exact::{Authorization, domain, signing_hash};
use crate::network::{Asset, Registry};
use crate::types::{
    PaymentPayloadV1, PaymentPayloadV2, PaymentRequired, PaymentRequiredV1, PaymentRequirements,
    PaymentRequirementsV1, ResourceInfo, V1, V2,
};

/// Bound on a challenge header or body a client reads.
pub const MAX_CHALLENGE_BYTES: usize = 64 * 1024;

/// Why no payment can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The 402 carries neither a valid `PAYMENT-REQUIRED` header nor a v1 JSON body.
    #[error("the 402 carries no x402 challenge: {0}")]
    NoChallenge(String),
    /// No offer is payable within the limits.
    #[error("no offer can be paid: {0}")]
    NoOffer(String),
}

/// A 402 challenge of either version.
#[derive(Debug, Clone, PartialEq)]
pub enum Challenge {
    /// From the `PAYMENT-REQUIRED` header.
    V2(PaymentRequired),
    /// From the JSON body.
    V1(PaymentRequiredV1),
}

impl Challenge {
    /// Reads the challenge: the v2 header when present and valid, else the v1 body.
    pub fn parse(header: Option<&str>, body: &[u8]) -> Result<Challenge, ClientError> {
        if let Some(header) = header {
            match decode_header::<PaymentRequired>(header, MAX_CHALLENGE_BYTES) {
                Ok(required) if required.x402_version == V2 => return Ok(Challenge::V2(required)),
                Ok(_) | Err(_) if !body.is_empty() => {}
                Ok(required) => {
                    return Err(ClientError::NoChallenge(format!(
                        "x402Version {} is not supported",
                        required.x402_version
                    )));
                }
                Err(e) => return Err(ClientError::NoChallenge(e.to_string())),
            }
        }
        if body.len() > MAX_CHALLENGE_BYTES {
            return Err(ClientError::NoChallenge("the body is too large".into()));
        }
        match serde_json::from_slice::<PaymentRequiredV1>(body) {
            Ok(required) if required.x402_version == V1 => Ok(Challenge::V1(required)),
            Ok(required) => Err(ClientError::NoChallenge(format!(
                "x402Version {} is not supported",
                required.x402_version
            ))),
            Err(e) => Err(ClientError::NoChallenge(e.to_string())),
        }
    }

    /// The server's reason for the 402 (on a retry, why the payment was refused).
    pub fn error(&self) -> Option<&str> {
        match self {
            Challenge::V2(r) => r.error.as_deref(),
            Challenge::V1(r) => Some(r.error.as_str()).filter(|e| !e.is_empty()),
        }
    }
}

/// What the client is willing to pay.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Only this network (v1 name or CAIP-2 id).
    pub network: Option<String>,
    /// At most this amount, as a decimal in the asset's units (`"0.10"`).
    pub max_amount: String,
}

/// An offer chosen for payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The protocol version to answer with.
    pub version: u32,
    /// The v2 offer, copied verbatim (v2 only).
    accepted_v2: Option<PaymentRequirements>,
    /// The v1 offer (v1 only).
    accepted_v1: Option<PaymentRequirementsV1>,
    /// The challenge's resource (v2).
    resource: Option<ResourceInfo>,
    /// Echoed extensions (v2).
    extensions: Option<Value>,
    /// The asset paid.
    pub asset: Asset,
    /// The network as the offer names it.
    pub network: String,
    /// The recipient.
    pub pay_to: Address,
    /// The amount in atomic units.
    pub amount: U256,
    /// The authorization window asked for.
    pub max_timeout_seconds: u64,
}

struct Candidate<'a> {
    network: &'a str,
    asset: &'a str,
    pay_to: &'a str,
    amount: &'a str,
    scheme: &'a str,
}

fn evaluate(
    registry: &Registry,
    limits: &Limits,
    c: &Candidate<'_>,
) -> Result<(Asset, Address, U256), String> {
    if c.scheme != "exact" {
        return Err(format!("scheme {:?} is not supported", c.scheme));
    }
    let network = registry
        .network(c.network)
        .ok_or_else(|| format!("network {:?} is unknown", c.network))?;
    if let Some(wanted) = &limits.network {
        let same = registry
            .network(wanted)
            .is_some_and(|w| w.chain_id == network.chain_id);
        if !same {
            return Err(format!("network {} is not {wanted}", c.network));
        }
    }
    let address: Address = c
        .asset
        .parse()
        .map_err(|_| format!("asset {:?} is not an address", c.asset))?;
    let asset = registry
        .asset(network.chain_id, &address)
        .ok_or_else(|| format!("asset {} on {} is unknown", c.asset, c.network))?
        .clone();
    let pay_to: Address = c
        .pay_to
        .parse()
        .map_err(|_| format!("payTo {:?} is not an address", c.pay_to))?;
    let amount = U256::from_str_radix(c.amount, 10)
        .map_err(|_| format!("amount {:?} is not an integer", c.amount))?;
    let max = crate::offer::parse_price(&limits.max_amount, asset.decimals)
        .map_err(|e| format!("--max-amount: {e}"))?;
    if amount > max {
        return Err(format!(
            "{} atomic units of {} exceed the limit of {max}",
            c.amount, asset.symbol
        ));
    }
    Ok((asset, pay_to, amount))
}

/// Chooses the cheapest payable offer of a challenge; the error lists why each was refused.
pub fn choose(
    challenge: &Challenge,
    registry: &Registry,
    limits: &Limits,
) -> Result<Choice, ClientError> {
    let mut refusals = Vec::new();
    let mut best: Option<Choice> = None;
    let mut consider = |result: Result<Choice, String>| match result {
        Ok(choice) => {
            if best.as_ref().is_none_or(|b| choice.amount < b.amount) {
                best = Some(choice);
            }
        }
        Err(why) => refusals.push(why),
    };
    let (resource, extensions) = match challenge {
        Challenge::V2(r) => (
            Some(r.resource.clone()),
            r.extensions.clone().map(Value::Object),
        ),
        Challenge::V1(_) => (None, None),
    };
    // Each offer as (what is checked, its window, the verbatim offer to echo).
    type Raw<'a> = (
        Candidate<'a>,
        u64,
        Option<&'a PaymentRequirements>,
        Option<&'a PaymentRequirementsV1>,
    );
    let offers: Vec<Raw<'_>> = match challenge {
        Challenge::V2(required) => required
            .accepts
            .iter()
            .map(|o| {
                let c = Candidate {
                    network: &o.network,
                    asset: &o.asset,
                    pay_to: &o.pay_to,
                    amount: &o.amount,
                    scheme: &o.scheme,
                };
                (c, o.max_timeout_seconds, Some(o), None)
            })
            .collect(),
        Challenge::V1(required) => required
            .accepts
            .iter()
            .map(|o| {
                let c = Candidate {
                    network: &o.network,
                    asset: &o.asset,
                    pay_to: &o.pay_to,
                    amount: &o.max_amount_required,
                    scheme: &o.scheme,
                };
                (c, o.max_timeout_seconds, None, Some(o))
            })
            .collect(),
    };
    for (candidate, max_timeout_seconds, v2, v1) in offers {
        consider(
            evaluate(registry, limits, &candidate).map(|(asset, pay_to, amount)| Choice {
                version: if v2.is_some() { V2 } else { V1 },
                accepted_v2: v2.cloned(),
                accepted_v1: v1.cloned(),
                resource: resource.clone(),
                extensions: extensions.clone(),
                asset,
                network: candidate.network.to_owned(),
                pay_to,
                amount,
                max_timeout_seconds,
            }),
        );
    }
    best.ok_or_else(|| {
        if refusals.is_empty() {
            ClientError::NoOffer("the challenge has no offers".into())
        } else {
            ClientError::NoOffer(refusals.join("; "))
        }
    })
}

/// `10000` atomic units with 6 decimals → `"0.01"`.
pub fn format_units(atomic: &U256, decimals: u8) -> String {
    let d = usize::from(decimals);
    let padded = format!("{atomic:0>width$}", width = d + 1);
    let (whole, frac) = padded.split_at(padded.len() - d);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{frac}")
    }
}

impl Choice {
    /// The authorization to sign: from `payer`, valid from ten minutes ago (clock skew) until
    /// `now + maxTimeoutSeconds`, with a fresh `nonce`.
    pub fn authorization(&self, payer: Address, now: u64, nonce: B256) -> Authorization {
        Authorization {
            from: payer,
            to: self.pay_to,
            value: self.amount,
            valid_after: U256::from(now.saturating_sub(600)),
            valid_before: U256::from(now + self.max_timeout_seconds.max(1)),
            nonce,
        }
    }

    /// The EIP-712 digest the payer signs for `auth`.
    pub fn signing_hash(&self, auth: &Authorization) -> B256 {
        let d = domain(
            &self.asset.eip712_name,
            &self.asset.eip712_version,
            self.asset.chain_id,
            self.asset.address,
        );
        signing_hash(auth, &d)
    }

    /// The request header carrying the payment: `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1).
    pub fn header(&self, auth: &Authorization, signature: &[u8]) -> (&'static str, String) {
        let payload = json!({
            "signature": format!("0x{}", alloy_primitives::hex::encode(signature)),
            "authorization": {
                "from": auth.from.to_checksum(None),
                "to": auth.to.to_checksum(None),
                "value": auth.value.to_string(),
                "validAfter": auth.valid_after.to_string(),
                "validBefore": auth.valid_before.to_string(),
                "nonce": auth.nonce.to_string(),
            },
        });
        match (&self.accepted_v2, &self.accepted_v1) {
            (Some(accepted), _) => (
                "payment-signature",
                encode_header(&PaymentPayloadV2 {
                    x402_version: V2,
                    resource: self.resource.clone(),
                    accepted: accepted.clone(),
                    payload,
                    extensions: self.extensions.clone(),
                }),
            ),
            (None, _) => (
                "x-payment",
                encode_header(&PaymentPayloadV1 {
                    x402_version: V1,
                    scheme: "exact".into(),
                    network: self.network.clone(),
                    payload,
                }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offer::{Offer, OfferTerms, match_offer, payment_required, payment_required_v1};
    use crate::{decode_payment, verify_locally};
    use k256::ecdsa::SigningKey;

    fn offer(registry: &Registry, chain: u64, amount: u64) -> Offer {
        Offer::new(
            registry,
            OfferTerms {
                asset: registry.usdc(chain).unwrap().clone(),
                pay_to: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
                    .parse()
                    .unwrap(),
                amount: U256::from(amount),
                max_timeout_seconds: 300,
            },
            &ResourceInfo {
                url: "http://127.0.0.1:8402/x".into(),
                description: Some("x".into()),
                mime_type: Some("text/plain".into()),
            },
        )
        .unwrap()
    }

    fn sign(key: &SigningKey, hash: &B256) -> Vec<u8> {
        let (sig, recid) = key.sign_prehash_recoverable(hash.as_slice()).unwrap();
        let mut bytes = sig.to_bytes().to_vec();
        bytes.push(27 + recid.to_byte());
        bytes
    }

    #[test]
    fn pays_what_the_server_verifies_in_both_versions() {
        let registry = Registry::builtin();
        let offers = [
            offer(&registry, 8453, 20_000),
            offer(&registry, 84_532, 10_000),
        ];
        let resource = ResourceInfo {
            url: "http://127.0.0.1:8402/x".into(),
            description: Some("x".into()),
            mime_type: Some("text/plain".into()),
        };
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let payer = Address::from_public_key(key.verifying_key());
        let limits = Limits {
            network: None,
            max_amount: "0.10".into(),
        };
        let v2 = encode_header(&payment_required(&offers, &resource, None));
        let v1 =
            serde_json::to_vec(&payment_required_v1(&offers, "payment required".into())).unwrap();
        for (header, body) in [(Some(v2.as_str()), b"{}".as_slice()), (None, v1.as_slice())] {
            let challenge = Challenge::parse(header, body).unwrap();
            let choice = choose(&challenge, &registry, &limits).unwrap();
            assert_eq!(choice.amount, U256::from(10_000), "the cheapest offer");
            assert_eq!(choice.asset.chain_id, 84_532);
            let now = 1_800_000_000;
            let auth = choice.authorization(payer, now, B256::repeat_byte(9));
            let signature = sign(&key, &choice.signing_hash(&auth));
            let (name, value) = choice.header(&auth, &signature);
            let decoded = decode_payment(&value, 16 * 1024).unwrap();
            assert_eq!(decoded.payload.version(), choice.version);
            assert_eq!(name == "payment-signature", choice.version == V2);
            let matched = match_offer(&offers, &decoded.payload).unwrap();
            let verified = verify_locally(matched, &decoded.payload, now, 30).unwrap();
            assert_eq!(verified.authorization.from, payer);
        }
    }

    #[test]
    fn units() {
        assert_eq!(format_units(&U256::from(10_000), 6), "0.01");
        assert_eq!(format_units(&U256::from(1), 6), "0.000001");
        assert_eq!(format_units(&U256::from(1_500_000), 6), "1.5");
        assert_eq!(format_units(&U256::from(2_000_000), 6), "2");
    }

    #[test]
    fn refuses_what_is_over_the_limit_or_unknown() {
        let registry = Registry::builtin();
        let resource = ResourceInfo {
            url: "http://h/x".into(),
            description: None,
            mime_type: None,
        };
        let offers = [offer(&registry, 84_532, 200_000)];
        let header = encode_header(&payment_required(&offers, &resource, None));
        let challenge = Challenge::parse(Some(&header), b"").unwrap();
        let limits = |max: &str, network: Option<&str>| Limits {
            network: network.map(str::to_owned),
            max_amount: max.into(),
        };
        let err = choose(&challenge, &registry, &limits("0.10", None)).unwrap_err();
        assert!(err.to_string().contains("exceed the limit"), "{err}");
        assert!(choose(&challenge, &registry, &limits("0.2", None)).is_ok());
        assert!(choose(&challenge, &registry, &limits("1", Some("base-sepolia"))).is_ok());
        let err = choose(&challenge, &registry, &limits("1", Some("base"))).unwrap_err();
        assert!(err.to_string().contains("is not base"), "{err}");
        // An asset the registry does not know is never signed for.
        let mut unknown = payment_required(&offers, &resource, None);
        unknown.accepts[0].asset = "0x0000000000000000000000000000000000000001".into();
        let challenge = Challenge::V2(unknown);
        let err = choose(&challenge, &registry, &limits("1", None)).unwrap_err();
        assert!(err.to_string().contains("unknown"), "{err}");
        assert!(matches!(
            Challenge::parse(None, b"not json"),
            Err(ClientError::NoChallenge(_))
        ));
    }
}
