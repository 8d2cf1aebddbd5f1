//! Offers: byte-stable `PaymentRequirements` built from a price, and matching a client's payload
//! back to the offer it chose.

use alloy_primitives::{Address, U256};
use serde_json::{Map, Value};

use crate::network::{Asset, Registry};
use crate::types::{
    PaymentPayload, PaymentRequired, PaymentRequiredV1, PaymentRequirements, PaymentRequirementsV1,
    ResourceInfo, V1, V2,
};

/// The only scheme hb402 offers.
pub const SCHEME_EXACT: &str = "exact";

/// Why a price cannot be turned into atomic units.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PriceError {
    /// Not a plain non-negative decimal such as `0.01`.
    #[error("price {0:?} is not a non-negative decimal number such as 0.01")]
    Syntax(String),
    /// More fractional digits than the asset has decimals.
    #[error("price {price:?} has more than {decimals} decimal places")]
    TooPrecise {
        /// The price.
        price: String,
        /// The asset's decimals.
        decimals: u8,
    },
    /// Too large.
    #[error("price {0:?} is too large")]
    Overflow(String),
}

/// Converts a decimal price in asset units (`"0.01"`) to atomic units (`10000` for 6 decimals),
/// exactly: no floating point, and no silent rounding.
pub fn parse_price(price: &str, decimals: u8) -> Result<U256, PriceError> {
    let syntax = || PriceError::Syntax(price.to_owned());
    let (whole, frac) = price.split_once('.').unwrap_or((price, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty() || !digits(whole) || !digits(frac) {
        return Err(syntax());
    }
    if price.ends_with('.') {
        return Err(syntax());
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > decimals as usize {
        return Err(PriceError::TooPrecise {
            price: price.to_owned(),
            decimals,
        });
    }
    let mut text = String::with_capacity(whole.len() + decimals as usize);
    text.push_str(if whole.is_empty() { "0" } else { whole });
    text.push_str(frac);
    text.extend(std::iter::repeat_n('0', decimals as usize - frac.len()));
    U256::from_str_radix(&text, 10).map_err(|_| PriceError::Overflow(price.to_owned()))
}

/// What one offer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferTerms {
    /// The token (and its chain and EIP-712 domain).
    pub asset: Asset,
    /// The recipient.
    pub pay_to: Address,
    /// The price in atomic units.
    pub amount: U256,
    /// The authorization's validity window the client is asked to use.
    pub max_timeout_seconds: u64,
}

/// One offer in both protocol shapes. The same terms and resource always give the same bytes:
/// addresses in EIP-55 form, amounts in decimal, `extra` keys in a fixed order.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// The terms.
    pub terms: OfferTerms,
    /// The v2 requirements.
    pub v2: PaymentRequirements,
    /// The v1 requirements, when the network has a v1 name.
    pub v1: Option<PaymentRequirementsV1>,
    /// What a `batch-settlement` offer adds (`None`: an `exact` offer).
    pub batch: Option<BatchOffer>,
}

/// What a `batch-settlement` offer adds to its terms (`extra` of the v2 requirements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOffer {
    /// The key that signs the receiver's claims and refunds.
    pub receiver_authorizer: Address,
    /// How long a payer's timed withdrawal waits (seconds).
    pub withdraw_delay: u64,
    /// The smallest first deposit asked for (atomic units).
    pub min_deposit: U256,
    /// Whether a payer that is a contract account (EIP-1271) is taken: its signatures are then
    /// left for the chain to confirm ([`crate::batch::CheckedBatch::on_chain`]).
    pub contract_payers: bool,
}

impl Offer {
    /// Builds the offer for `resource`. The network must be registered.
    pub fn new(
        registry: &Registry,
        terms: OfferTerms,
        resource: &ResourceInfo,
    ) -> Result<Self, crate::network::RegistryError> {
        let network = registry
            .network_by_chain(terms.asset.chain_id)
            .ok_or_else(|| {
                crate::network::RegistryError::UnknownNetwork(format!(
                    "eip155:{}",
                    terms.asset.chain_id
                ))
            })?;
        let mut extra = Map::new();
        extra.insert(
            "name".into(),
            Value::String(terms.asset.eip712_name.clone()),
        );
        extra.insert(
            "version".into(),
            Value::String(terms.asset.eip712_version.clone()),
        );
        let v2 = PaymentRequirements {
            scheme: SCHEME_EXACT.to_owned(),
            network: network.caip2(),
            amount: terms.amount.to_string(),
            asset: terms.asset.address.to_checksum(None),
            pay_to: terms.pay_to.to_checksum(None),
            max_timeout_seconds: terms.max_timeout_seconds,
            extra: extra.clone(),
        };
        let v1 = network.v1_name.as_ref().map(|name| PaymentRequirementsV1 {
            scheme: SCHEME_EXACT.to_owned(),
            network: name.clone(),
            max_amount_required: v2.amount.clone(),
            resource: resource.url.clone(),
            description: resource.description.clone().unwrap_or_default(),
            mime_type: resource.mime_type.clone().unwrap_or_default(),
            output_schema: None,
            pay_to: v2.pay_to.clone(),
            max_timeout_seconds: v2.max_timeout_seconds,
            asset: v2.asset.clone(),
            extra: Some(extra),
        });
        Ok(Offer {
            terms,
            v2,
            v1,
            batch: None,
        })
    }

    /// The `batch-settlement` offer beside `exact` (x402 v2 only): the same terms and resource,
    /// paid with vouchers on an escrow channel.
    pub fn batch(exact: &Offer, batch: BatchOffer) -> Self {
        let mut offer = Offer {
            terms: exact.terms.clone(),
            v2: exact.v2.clone(),
            v1: None,
            batch: None,
        };
        let mut extra = Map::new();
        extra.insert(
            "receiverAuthorizer".into(),
            Value::String(batch.receiver_authorizer.to_checksum(None)),
        );
        extra.insert("withdrawDelay".into(), Value::from(batch.withdraw_delay));
        extra.insert(
            "name".into(),
            Value::String(offer.terms.asset.eip712_name.clone()),
        );
        extra.insert(
            "version".into(),
            Value::String(offer.terms.asset.eip712_version.clone()),
        );
        extra.insert(
            "minDeposit".into(),
            Value::String(batch.min_deposit.to_string()),
        );
        offer.v2.scheme = crate::batch::SCHEME_BATCH.to_owned();
        offer.v2.extra = extra;
        offer.batch = Some(batch);
        offer
    }

    /// The terms a `batch-settlement` payload is checked against (`None`: an `exact` offer, or
    /// a price past what a channel holds).
    pub fn batch_terms(&self) -> Option<crate::batch::BatchTerms> {
        let batch = self.batch.as_ref()?;
        Some(crate::batch::BatchTerms {
            chain_id: self.terms.asset.chain_id,
            pay_to: self.terms.pay_to,
            asset: self.terms.asset.address,
            asset_domain: (
                self.terms.asset.eip712_name.clone(),
                self.terms.asset.eip712_version.clone(),
            ),
            amount: u128::try_from(self.terms.amount).ok()?,
            receiver_authorizer: batch.receiver_authorizer,
            withdraw_delay: batch.withdraw_delay,
            contract_payers: batch.contract_payers,
        })
    }

    /// The offer in the shape a facilitator expects for a payload of `version`.
    pub fn requirements_json(&self, version: u32) -> Value {
        let value = match (version, &self.v1) {
            (V1, Some(v1)) => serde_json::to_value(v1),
            _ => serde_json::to_value(&self.v2),
        };
        value.unwrap_or(Value::Null)
    }
}

/// The v2 challenge for a set of offers.
pub fn payment_required(
    offers: &[Offer],
    resource: &ResourceInfo,
    error: Option<String>,
) -> PaymentRequired {
    PaymentRequired {
        x402_version: V2,
        error,
        resource: resource.clone(),
        accepts: offers.iter().map(|o| o.v2.clone()).collect(),
        extensions: None,
    }
}

/// The v1 challenge body (offers without a v1 network name are left out).
pub fn payment_required_v1(offers: &[Offer], error: String) -> PaymentRequiredV1 {
    PaymentRequiredV1 {
        x402_version: V1,
        error,
        accepts: offers.iter().filter_map(|o| o.v1.clone()).collect(),
    }
}

fn same_amount(a: &str, b: &str) -> bool {
    match (U256::from_str_radix(a, 10), U256::from_str_radix(b, 10)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Whether a client's `accepted` equals an offer field by field (addresses ignoring case).
pub fn accepted_matches(accepted: &PaymentRequirements, offer: &PaymentRequirements) -> bool {
    accepted.scheme == offer.scheme
        && accepted.network == offer.network
        && same_amount(&accepted.amount, &offer.amount)
        && accepted.asset.eq_ignore_ascii_case(&offer.asset)
        && accepted.pay_to.eq_ignore_ascii_case(&offer.pay_to)
        && accepted.max_timeout_seconds == offer.max_timeout_seconds
        && accepted.extra == offer.extra
}

/// The offers a payload may pay for, best first. v2: the offer its `accepted` copy equals field
/// by field (scheme, network, amount, asset, payTo, timeout, extra). v1 payloads name no asset:
/// every offer with the payload's scheme and network, those whose `payTo` and amount the
/// authorization repeats first. Which one it pays is decided by the local check (recipient,
/// amount, and the signature under each offer's asset domain): the caller takes the first
/// candidate that verifies, and reports the first one's refusal when none does.
pub fn match_offers<'a>(offers: &'a [Offer], payload: &PaymentPayload) -> Vec<&'a Offer> {
    match payload {
        PaymentPayload::V2(p) => offers
            .iter()
            .filter(|o| accepted_matches(&p.accepted, &o.v2))
            .take(1)
            .collect(),
        PaymentPayload::V1(p) => {
            let (mut exact, rest): (Vec<&Offer>, Vec<&Offer>) = offers
                .iter()
                .filter(|o| {
                    o.v1.as_ref()
                        .is_some_and(|v1| v1.scheme == p.scheme && v1.network == p.network)
                })
                .partition(|o| {
                    crate::exact::parse_exact_payload(&p.payload).is_ok_and(|(auth, _)| {
                        o.terms.pay_to == auth.to && o.terms.amount == auth.value
                    })
                });
            exact.extend(rest);
            exact
        }
    }
}

/// The first offer a payload may pay for (see [`match_offers`]).
pub fn match_offer<'a>(offers: &'a [Offer], payload: &PaymentPayload) -> Option<&'a Offer> {
    match_offers(offers, payload).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_convert_exactly() {
        let cases = [
            ("0.01", 6, 10_000u64),
            ("1", 6, 1_000_000),
            ("1.5", 6, 1_500_000),
            ("0.000001", 6, 1),
            ("0.0100", 6, 10_000),
            ("0", 6, 0),
            ("12.345", 3, 12_345),
            (".5", 6, 500_000),
        ];
        for (price, decimals, atomic) in cases {
            assert_eq!(
                parse_price(price, decimals),
                Ok(U256::from(atomic)),
                "{price}"
            );
        }
        for bad in ["", ".", "1.", "-1", "1e3", "0x10", "1.2.3", " 1", "NaN"] {
            assert!(
                matches!(parse_price(bad, 6), Err(PriceError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_price("0.0000001", 6),
            Err(PriceError::TooPrecise { .. })
        ));
        assert!(matches!(
            parse_price(&"9".repeat(90), 6),
            Err(PriceError::Overflow(_))
        ));
    }

    fn sample_offer() -> Offer {
        let registry = Registry::builtin();
        let terms = OfferTerms {
            asset: registry.usdc(84_532).unwrap().clone(),
            pay_to: "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc"
                .parse()
                .unwrap(),
            amount: U256::from(10_000),
            max_timeout_seconds: 300,
        };
        let resource = ResourceInfo {
            url: "https://gw.example/resolve/abc".into(),
            description: Some("DataItem abc".into()),
            mime_type: Some("text/plain".into()),
        };
        Offer::new(&registry, terms, &resource).unwrap()
    }

    #[test]
    fn offers_are_byte_stable_and_complete() {
        let a = serde_json::to_string(&sample_offer().v2).unwrap();
        let b = serde_json::to_string(&sample_offer().v2).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a,
            r#"{"scheme":"exact","network":"eip155:84532","amount":"10000","asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e","payTo":"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC","maxTimeoutSeconds":300,"extra":{"name":"USDC","version":"2"}}"#
        );
        let v1 = serde_json::to_value(sample_offer().v1.unwrap()).unwrap();
        for field in [
            "scheme",
            "network",
            "maxAmountRequired",
            "resource",
            "description",
            "mimeType",
            "payTo",
            "maxTimeoutSeconds",
            "asset",
            "extra",
        ] {
            assert!(v1.get(field).is_some(), "v1 offer lacks {field}");
        }
        assert_eq!(v1["network"], "base-sepolia");
        assert!(v1.get("outputSchema").is_none());
    }

    #[test]
    fn matching() {
        let offer = sample_offer();
        let offers = [offer.clone()];
        let mut accepted = offer.v2.clone();
        accepted.pay_to = accepted.pay_to.to_lowercase();
        accepted.asset = accepted.asset.to_uppercase().replace("0X", "0x");
        let v2 = |accepted: PaymentRequirements| {
            PaymentPayload::V2(crate::types::PaymentPayloadV2 {
                x402_version: 2,
                resource: None,
                accepted,
                payload: Value::Null,
                extensions: None,
            })
        };
        assert!(match_offer(&offers, &v2(accepted.clone())).is_some());
        for tamper in [
            |a: &mut PaymentRequirements| a.amount = "9999".into(),
            |a: &mut PaymentRequirements| a.network = "eip155:8453".into(),
            |a: &mut PaymentRequirements| {
                a.pay_to = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into()
            },
            |a: &mut PaymentRequirements| a.max_timeout_seconds = 60,
            |a: &mut PaymentRequirements| a.scheme = "upto".into(),
            |a: &mut PaymentRequirements| {
                a.extra.insert("name".into(), "USD Coin".into());
            },
        ] {
            let mut a = accepted.clone();
            tamper(&mut a);
            assert!(match_offer(&offers, &v2(a)).is_none());
        }
        let v1 = |network: &str| {
            PaymentPayload::V1(crate::types::PaymentPayloadV1 {
                x402_version: 1,
                scheme: "exact".into(),
                network: network.into(),
                payload: Value::Null,
            })
        };
        assert!(match_offer(&offers, &v1("base-sepolia")).is_some());
        assert!(match_offer(&offers, &v1("base")).is_none());
    }

    /// Regression: v1 matching compared only scheme and network, so with two offers on one
    /// network (two payees, or two prices) the first was taken whatever the authorization paid,
    /// and a payment for the second was refused. The offer it repeats now comes first.
    #[test]
    fn v1_candidates_start_with_the_offer_the_authorization_repeats() {
        let cheap = sample_offer();
        let mut terms = cheap.terms.clone();
        terms.pay_to = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
            .parse()
            .unwrap();
        terms.amount = U256::from(20_000);
        let resource = ResourceInfo {
            url: "https://gw.example/resolve/abc".into(),
            description: None,
            mime_type: None,
        };
        let other = Offer::new(&Registry::builtin(), terms, &resource).unwrap();
        let offers = [cheap.clone(), other.clone()];
        let v1 = |to: &str, value: &str| {
            PaymentPayload::V1(crate::types::PaymentPayloadV1 {
                x402_version: 1,
                scheme: "exact".into(),
                network: "base-sepolia".into(),
                payload: serde_json::json!({
                    "signature": format!("0x{}", "11".repeat(65)),
                    "authorization": {
                        "from": "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
                        "to": to,
                        "value": value,
                        "validAfter": "0",
                        "validBefore": "9999999999",
                        "nonce": format!("0x{}", "22".repeat(32)),
                    }
                }),
            })
        };
        let to_other = v1("0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "20000");
        assert_eq!(match_offers(&offers, &to_other), vec![&other, &cheap]);
        let to_cheap = v1("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", "10000");
        assert_eq!(match_offers(&offers, &to_cheap), vec![&cheap, &other]);
    }
}
