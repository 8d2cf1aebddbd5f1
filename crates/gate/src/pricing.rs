//! Pricing: a pure function from a read's facts to its price, deterministic for the same request
//! (clients echo offers verbatim, so the retry must produce the same offer byte for byte).

use alloy::primitives::{Address, U256};
use hb402_x402::{Asset, Offer, OfferTerms, Registry, ResourceInfo, parse_price};

/// The read routes a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceRoute {
    /// `/<id>`, `/resolve/<id>`: the data.
    Data,
    /// `/binary/<id>`: the whole item.
    Binary,
    /// The raw `~s3@1.0` route.
    Raw,
}

impl PriceRoute {
    /// From its configuration name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "data" => Some(PriceRoute::Data),
            "binary" => Some(PriceRoute::Binary),
            "raw" => Some(PriceRoute::Raw),
            _ => None,
        }
    }
}

/// How a rule prices a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceSpec {
    /// No payment.
    Free,
    /// A fixed price, decimal in asset units (`"0.01"`).
    Flat(String),
    /// A price per MiB served (rounded up to the atomic unit), with an optional minimum.
    PerMib {
        /// Decimal in asset units per MiB.
        per_mib: String,
        /// Decimal in asset units.
        minimum: Option<String>,
    },
}

/// One pricing rule; empty lists match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceRule {
    /// Routes it applies to.
    pub routes: Vec<PriceRoute>,
    /// Buckets it applies to.
    pub buckets: Vec<String>,
    /// Content types (`text/plain`, or `image/*`).
    pub content_types: Vec<String>,
    /// Owner addresses (compared ignoring case).
    pub owners: Vec<String>,
    /// The price.
    pub price: PriceSpec,
    /// Description offered to clients.
    pub description: Option<String>,
}

/// One recipient and asset to offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptTarget {
    /// The asset and its network.
    pub asset: Asset,
    /// The recipient.
    pub pay_to: Address,
}

/// The facts of a read that pricing looks at.
#[derive(Debug, Clone, Copy)]
pub struct ReadFacts<'a> {
    /// Which route.
    pub route: PriceRoute,
    /// The item's bucket.
    pub bucket: &'a str,
    /// Its content type.
    pub content_type: &'a str,
    /// Its owner's address.
    pub owner: &'a str,
    /// Bytes served (the representation's length).
    pub bytes: u64,
}

fn content_type_matches(pattern: &str, content_type: &str) -> bool {
    let ct = content_type.split(';').next().unwrap_or_default().trim();
    match pattern.strip_suffix("/*") {
        Some(major) => ct
            .split_once('/')
            .is_some_and(|(m, _)| m.eq_ignore_ascii_case(major)),
        None => ct.eq_ignore_ascii_case(pattern),
    }
}

impl PriceRule {
    fn matches(&self, f: &ReadFacts<'_>) -> bool {
        (self.routes.is_empty() || self.routes.contains(&f.route))
            && (self.buckets.is_empty() || self.buckets.iter().any(|b| b == f.bucket))
            && (self.content_types.is_empty()
                || self
                    .content_types
                    .iter()
                    .any(|p| content_type_matches(p, f.content_type)))
            && (self.owners.is_empty()
                || self.owners.iter().any(|o| o.eq_ignore_ascii_case(f.owner)))
    }
}

/// The amount in atomic units of `spec` for `bytes` bytes of an asset with `decimals`.
pub fn amount(spec: &PriceSpec, bytes: u64, decimals: u8) -> Option<U256> {
    match spec {
        PriceSpec::Free => None,
        PriceSpec::Flat(price) => parse_price(price, decimals).ok(),
        PriceSpec::PerMib { per_mib, minimum } => {
            let per_mib = parse_price(per_mib, decimals).ok()?;
            let mib = U256::from(1u64 << 20);
            // Saturating, never wrapping: an absurd price is still a price, never free.
            let cost = per_mib.saturating_mul(U256::from(bytes)).div_ceil(mib);
            let minimum = minimum
                .as_deref()
                .map_or(Ok(U256::ZERO), |m| parse_price(m, decimals))
                .ok()?;
            Some(cost.max(minimum))
        }
    }
    .filter(|a| !a.is_zero())
}

/// The first matching rule.
pub fn rule_for<'a>(rules: &'a [PriceRule], facts: &ReadFacts<'_>) -> Option<&'a PriceRule> {
    rules.iter().find(|r| r.matches(facts))
}

/// The offers for a read, or none when it is free.
pub fn offers(
    registry: &Registry,
    rules: &[PriceRule],
    accept: &[AcceptTarget],
    max_timeout_seconds: u64,
    facts: &ReadFacts<'_>,
    resource: &ResourceInfo,
) -> Vec<Offer> {
    let Some(rule) = rule_for(rules, facts) else {
        return Vec::new();
    };
    accept
        .iter()
        .filter_map(|target| {
            let amount = amount(&rule.price, facts.bytes, target.asset.decimals)?;
            let terms = OfferTerms {
                asset: target.asset.clone(),
                pay_to: target.pay_to,
                amount,
                max_timeout_seconds,
            };
            let mut resource = resource.clone();
            if let Some(d) = &rule.description {
                resource.description = Some(d.clone());
            }
            Offer::new(registry, terms, &resource).ok()
        })
        .collect()
}

/// The `batch-settlement` offer beside an `exact` one: the same terms, paid with vouchers on an
/// escrow channel whose first deposit covers `min_deposit_reads` reads. `None` for a price
/// larger than a channel holds.
pub fn batch_offer(batch: &crate::config::BatchConfig, exact: &Offer) -> Option<Offer> {
    u128::try_from(exact.terms.amount).ok()?;
    let min_deposit = exact
        .terms
        .amount
        .saturating_mul(U256::from(batch.min_deposit_reads));
    let terms = hb402_x402::BatchOffer {
        receiver_authorizer: batch.receiver_authorizer,
        withdraw_delay: batch.withdraw_delay.as_secs(),
        min_deposit,
        contract_payers: batch.contract_payers,
    };
    Some(Offer::batch(exact, terms))
}

/// A price that does not fit in 256 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the price overflows")]
pub struct PriceOverflow;

/// What storing an item costs (`[pricing.uploads]`): per MiB stored plus per MiB per day kept,
/// rounded up to the atomic unit, never below the minimum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPrice {
    /// Decimal in asset units per MiB stored.
    pub per_mib: Option<String>,
    /// Decimal in asset units per MiB per day the item is kept.
    pub per_mib_day: Option<String>,
    /// Decimal in asset units.
    pub minimum: Option<String>,
    /// Days charged for an item uploaded without an expiry.
    pub days_without_expiry: u32,
    /// Description offered to clients.
    pub description: Option<String>,
}

impl UploadPrice {
    /// The amount in atomic units for storing `bytes` for `days` (`None`: no expiry); `Ok(None)`
    /// when it comes to nothing. Every step is checked: an overflow is an error, never a wrap.
    pub fn amount(
        &self,
        bytes: u64,
        days: Option<u32>,
        decimals: u8,
    ) -> Result<Option<U256>, PriceOverflow> {
        let decimal = |d: &Option<String>| {
            d.as_deref()
                .map_or(Ok(U256::ZERO), |d| parse_price(d, decimals))
                .map_err(|_| PriceOverflow)
        };
        let days = U256::from(days.unwrap_or(self.days_without_expiry));
        let per_mib = decimal(&self.per_mib_day)?
            .checked_mul(days)
            .and_then(|d| d.checked_add(decimal(&self.per_mib).ok()?))
            .ok_or(PriceOverflow)?;
        let cost = per_mib
            .checked_mul(U256::from(bytes))
            .ok_or(PriceOverflow)?
            .div_ceil(U256::from(1u64 << 20));
        Ok(Some(cost.max(decimal(&self.minimum)?)).filter(|a| !a.is_zero()))
    }

    /// The offers for storing `bytes` for `days`, or none when it is free.
    pub fn offers(
        &self,
        registry: &Registry,
        accept: &[AcceptTarget],
        max_timeout_seconds: u64,
        bytes: u64,
        days: Option<u32>,
        resource: &ResourceInfo,
    ) -> Result<Vec<Offer>, PriceOverflow> {
        let mut resource = resource.clone();
        if let Some(d) = &self.description {
            resource.description = Some(d.clone());
        }
        let mut offers = Vec::new();
        for target in accept {
            let Some(amount) = self.amount(bytes, days, target.asset.decimals)? else {
                continue;
            };
            let terms = OfferTerms {
                asset: target.asset.clone(),
                pay_to: target.pay_to,
                amount,
                max_timeout_seconds,
            };
            offers.extend(Offer::new(registry, terms, &resource).ok());
        }
        Ok(offers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(ct: &'static str, bytes: u64) -> ReadFacts<'static> {
        ReadFacts {
            route: PriceRoute::Data,
            bucket: "offchain-dataitems",
            content_type: ct,
            owner: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            bytes,
        }
    }

    fn rule(price: PriceSpec) -> PriceRule {
        PriceRule {
            routes: vec![],
            buckets: vec![],
            content_types: vec![],
            owners: vec![],
            price,
            description: None,
        }
    }

    #[test]
    fn prices() {
        assert_eq!(
            amount(&PriceSpec::Flat("0.01".into()), 5, 6),
            Some(U256::from(10_000))
        );
        assert_eq!(amount(&PriceSpec::Free, 5, 6), None);
        assert_eq!(amount(&PriceSpec::Flat("0".into()), 5, 6), None);
        let per = PriceSpec::PerMib {
            per_mib: "0.01".into(),
            minimum: Some("0.001".into()),
        };
        assert_eq!(amount(&per, 1 << 20, 6), Some(U256::from(10_000)));
        assert_eq!(amount(&per, 3 << 19, 6), Some(U256::from(15_000)));
        assert_eq!(amount(&per, 10, 6), Some(U256::from(1_000)), "the minimum");
        // Rounded up to the atomic unit.
        let tiny = PriceSpec::PerMib {
            per_mib: "0.000001".into(),
            minimum: None,
        };
        assert_eq!(amount(&tiny, 1, 6), Some(U256::from(1)));
    }

    #[test]
    fn upload_prices() {
        let price = UploadPrice {
            per_mib: Some("0.01".into()),
            per_mib_day: Some("0.0001".into()),
            minimum: Some("0.001".into()),
            days_without_expiry: 365,
            description: None,
        };
        // 1 MiB for 30 days: 0.01 + 30 × 0.0001.
        assert_eq!(
            price.amount(1 << 20, Some(30), 6),
            Ok(Some(U256::from(13_000)))
        );
        // No expiry: charged as 365 days.
        assert_eq!(price.amount(1 << 20, None, 6), Ok(Some(U256::from(46_500))));
        // Small items pay the minimum; a part of a MiB is rounded up to the atomic unit.
        assert_eq!(price.amount(10, Some(1), 6), Ok(Some(U256::from(1_000))));
        assert_eq!(
            price.amount(3 << 19, Some(0), 6),
            Ok(Some(U256::from(15_000)))
        );
        // Regression: the day count used to wrap; an overflow is now an error, never free.
        let huge = UploadPrice {
            per_mib_day: Some("1".repeat(70)),
            ..price.clone()
        };
        assert_eq!(huge.amount(u64::MAX, Some(u32::MAX), 6), Err(PriceOverflow));
        let free = UploadPrice {
            per_mib: None,
            per_mib_day: None,
            minimum: None,
            ..price
        };
        assert_eq!(free.amount(1 << 30, Some(30), 6), Ok(None));
    }

    #[test]
    fn first_matching_rule_wins() {
        let mut text = rule(PriceSpec::Flat("0.02".into()));
        text.content_types = vec!["text/*".into()];
        let mut owner = rule(PriceSpec::Free);
        owner.owners = vec!["0x70997970c51812dc3a010c7d01b50e0d17dc79c8".into()];
        let rules = [text, owner, rule(PriceSpec::Flat("0.01".into()))];
        assert_eq!(
            rule_for(&rules, &facts("text/plain; charset=utf-8", 1))
                .unwrap()
                .price,
            PriceSpec::Flat("0.02".into())
        );
        assert_eq!(
            rule_for(&rules, &facts("image/png", 1)).unwrap().price,
            PriceSpec::Free
        );
        let mut other = facts("image/png", 1);
        other.owner = "0x0000000000000000000000000000000000000001";
        assert_eq!(
            rule_for(&rules, &other).unwrap().price,
            PriceSpec::Flat("0.01".into())
        );
        assert!(rule_for(&[], &other).is_none());
    }

    #[test]
    fn offers_are_deterministic() {
        let registry = Registry::builtin();
        let accept = [AcceptTarget {
            asset: registry.usdc(84_532).unwrap().clone(),
            pay_to: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
                .parse()
                .unwrap(),
        }];
        let resource = ResourceInfo {
            url: "http://127.0.0.1:8402/x".into(),
            description: Some("d".into()),
            mime_type: Some("text/plain".into()),
        };
        let rules = [rule(PriceSpec::Flat("0.01".into()))];
        let a = offers(
            &registry,
            &rules,
            &accept,
            300,
            &facts("text/plain", 3),
            &resource,
        );
        let b = offers(
            &registry,
            &rules,
            &accept,
            300,
            &facts("text/plain", 3),
            &resource,
        );
        assert_eq!(a.len(), 1);
        assert_eq!(
            serde_json::to_string(&a[0].v2).unwrap(),
            serde_json::to_string(&b[0].v2).unwrap()
        );
        assert_eq!(a[0].v2.amount, "10000");
        let free = [rule(PriceSpec::Free)];
        assert!(
            offers(
                &registry,
                &free,
                &accept,
                300,
                &facts("text/plain", 3),
                &resource
            )
            .is_empty()
        );
    }
}

/// The offer an item asks for in its own signed tags (`X402-Price` in USDC, `X402-Pay-To`,
/// `X402-Network`), if the operator honours them and the price is within `max` atomic units.
/// Local settlement serves one chain: `chain` restricts the network when set.
pub fn item_tag_offer(
    registry: &Registry,
    tags: &[(String, String)],
    max: U256,
    max_timeout_seconds: u64,
    chain: Option<u64>,
    resource: &ResourceInfo,
) -> Option<Offer> {
    let tag = |name: &str| {
        tags.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    let network = registry.network(tag("X402-Network")?)?;
    if chain.is_some_and(|c| c != network.chain_id) {
        return None;
    }
    let asset = registry.usdc(network.chain_id)?.clone();
    let amount = parse_price(tag("X402-Price")?, asset.decimals).ok()?;
    if amount.is_zero() || amount > max {
        return None;
    }
    let pay_to: Address = tag("X402-Pay-To")?.parse().ok()?;
    let terms = OfferTerms {
        asset,
        pay_to,
        amount,
        max_timeout_seconds,
    };
    Offer::new(registry, terms, resource).ok()
}

#[cfg(test)]
mod item_tags {
    use super::*;

    #[test]
    fn item_tags_price_within_the_operator_bound() {
        let registry = Registry::builtin();
        let resource = ResourceInfo {
            url: "http://h/x".into(),
            description: None,
            mime_type: None,
        };
        let tags = |price: &str| {
            vec![
                ("X402-Price".to_owned(), price.to_owned()),
                (
                    "X402-Pay-To".to_owned(),
                    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".to_owned(),
                ),
                ("X402-Network".to_owned(), "base-sepolia".to_owned()),
            ]
        };
        let max = U256::from(50_000);
        let offer = item_tag_offer(&registry, &tags("0.05"), max, 300, None, &resource).unwrap();
        assert_eq!(offer.v2.amount, "50000");
        assert_eq!(offer.v2.network, "eip155:84532");
        assert!(item_tag_offer(&registry, &tags("0.06"), max, 300, None, &resource).is_none());
        assert!(item_tag_offer(&registry, &tags("abc"), max, 300, None, &resource).is_none());
        assert!(
            item_tag_offer(&registry, &tags("0.01"), max, 300, Some(8453), &resource).is_none()
        );
        assert!(item_tag_offer(&registry, &tags("0.01")[..2], max, 300, None, &resource).is_none());
    }
}
