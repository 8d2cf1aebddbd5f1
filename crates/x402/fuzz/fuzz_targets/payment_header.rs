//! The x402 payment header decoder and everything hb402 does with a decoded payment before any
//! network call: matching it to an offer and the local EIP-3009 checks.
//!
//! The input is the header value as a client sends it (`PAYMENT-SIGNATURE` or `X-PAYMENT`).
//! Nothing panics; a header longer than the bound is refused before decoding; a decoded payload
//! keeps its raw JSON, which re-encodes and decodes to the same payload; matching returns only
//! offers on the payload's scheme and network (v2: one offer equal to `accepted`); the local
//! check of a candidate never accepts a payment whose recipient or amount differ from the
//! offer's.

#![no_main]

use alloy_primitives::U256;
use hb402_x402::{
    Offer, OfferTerms, PaymentPayload, Registry, ResourceInfo, decode_payment, encode_header,
    match_offers, verify_locally,
};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 16 * 1024;

fn offers() -> Vec<Offer> {
    let registry = Registry::builtin();
    let resource = ResourceInfo {
        url: "https://gw.example/resolve/x".into(),
        description: Some("fuzz".into()),
        mime_type: Some("text/plain".into()),
    };
    [
        (
            "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
            10_000u64,
            84_532u64,
        ),
        ("0x70997970C51812dc3A010C7d01b50e0d17dc79C8", 20_000, 84_532),
        ("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", 10_000, 8_453),
    ]
    .into_iter()
    .map(|(pay_to, amount, chain)| {
        let terms = OfferTerms {
            asset: registry.usdc(chain).unwrap().clone(),
            pay_to: pay_to.parse().unwrap(),
            amount: U256::from(amount),
            max_timeout_seconds: 300,
        };
        Offer::new(&registry, terms, &resource).unwrap()
    })
    .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = match decode_payment(header, MAX) {
        Ok(d) => d,
        Err(_) => return,
    };
    assert!(header.len() <= MAX, "a header over the bound decoded");
    // The raw JSON is what goes to the facilitator: it must still be the same payment.
    let again = decode_payment(&encode_header(&decoded.raw), MAX * 2).expect("raw re-decodes");
    assert_eq!(again.payload.version(), decoded.payload.version());
    assert_eq!(again.payload.payload(), decoded.payload.payload());

    let offers = offers();
    let candidates = match_offers(&offers, &decoded.payload);
    if let PaymentPayload::V2(_) = decoded.payload {
        assert!(candidates.len() <= 1);
    }
    for offer in candidates {
        if let PaymentPayload::V1(p) = &decoded.payload {
            let v1 = offer.v1.as_ref().expect("a v1 candidate has a v1 name");
            assert_eq!((&v1.scheme, &v1.network), (&p.scheme, &p.network));
        }
        for now in [0u64, 1_800_000_000] {
            if let Ok(v) = verify_locally(offer, &decoded.payload, now, 30) {
                assert_eq!(v.authorization.to, offer.terms.pay_to);
                assert_eq!(v.authorization.value, offer.terms.amount);
            }
        }
    }
});
