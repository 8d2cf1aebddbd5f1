//! Payments made by the unmodified reference clients — `@x402/evm` 2.27 (v2), legacy `x402` 1.2
//! (v1) and `@x402/core`'s v1 path — decode, match hb402's own offer and verify locally; every
//! single-field tamper is refused with the specification's reason. Fixture: the test kit's
//! `fixtures/payments.json`, made by `payloads.mjs`.

use std::path::Path;

use alloy_primitives::U256;
use hb402_x402::exact::{Reason, SignatureCheck};
use hb402_x402::{
    Offer, OfferTerms, Registry, ResourceInfo, decode_payment, encode_header, match_offer,
    verify_locally,
};
use serde_json::Value;

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testkit/fixtures/payments.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn offer() -> Offer {
    let registry = Registry::builtin();
    let terms = OfferTerms {
        asset: registry.usdc(84_532).unwrap().clone(),
        pay_to: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
            .parse()
            .unwrap(),
        amount: U256::from(10_000),
        max_timeout_seconds: 300,
    };
    let resource = ResourceInfo {
        url: "http://127.0.0.1:8402/resolve/some-id".into(),
        description: Some("hb402 test resource".into()),
        mime_type: Some("application/octet-stream".into()),
    };
    Offer::new(&registry, terms, &resource).unwrap()
}

/// Decodes, matches and verifies a payment header at `now`.
fn check(header: &str, now: u64) -> Result<SignatureCheck, Result<Reason, &'static str>> {
    let offers = [offer()];
    let decoded = decode_payment(header, 16 * 1024).map_err(|_| Err("undecodable"))?;
    let matched = match_offer(&offers, &decoded.payload).ok_or(Err("no matching offer"))?;
    verify_locally(matched, &decoded.payload, now, 30)
        .map(|v| v.signature_check)
        .map_err(|r| Ok(r.reason))
}

fn tampered(payload: &Value, edit: impl FnOnce(&mut Value)) -> String {
    let mut p = payload.clone();
    edit(&mut p);
    encode_header(&p)
}

#[test]
fn our_offer_is_what_the_clients_accepted() {
    let f = fixture();
    assert_eq!(
        serde_json::to_value(&offer().v2).unwrap(),
        f["v2"]["requirements"]
    );
    assert_eq!(
        serde_json::to_value(offer().v1.unwrap()).unwrap(),
        f["v1"]["requirements"]
    );
}

#[test]
fn every_client_generation_verifies_locally() {
    let f = fixture();
    let now = f["now"].as_u64().unwrap();
    for version in ["v2", "v1", "v1core"] {
        let header = f[version]["header"].as_str().unwrap();
        assert_eq!(
            check(header, now),
            Ok(SignatureCheck::Recovered),
            "{version}"
        );
        let decoded = decode_payment(header, 16 * 1024).unwrap();
        // The raw JSON is kept verbatim for the facilitator.
        assert_eq!(decoded.raw, f[version]["payload"], "{version}");
    }
}

#[test]
fn each_single_field_tamper_is_refused_with_its_reason() {
    let f = fixture();
    let now = f["now"].as_u64().unwrap();
    let v2 = &f["v2"]["payload"];
    let set =
        |ptr: &'static str, value: Value| move |p: &mut Value| *p.pointer_mut(ptr).unwrap() = value;
    let cases: Vec<(String, Result<Reason, &str>)> = vec![
        (
            tampered(v2, set("/accepted/amount", "1".into())),
            Err("no matching offer"),
        ),
        (
            tampered(v2, set("/accepted/network", "eip155:8453".into())),
            Err("no matching offer"),
        ),
        (
            tampered(
                v2,
                set(
                    "/accepted/payTo",
                    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
                ),
            ),
            Err("no matching offer"),
        ),
        (
            tampered(
                v2,
                set(
                    "/payload/authorization/to",
                    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
                ),
            ),
            Ok(Reason::RecipientMismatch),
        ),
        (
            tampered(v2, set("/payload/authorization/value", "9999".into())),
            Ok(Reason::ValueMismatch),
        ),
        (
            tampered(v2, set("/payload/authorization/value", "10001".into())),
            Ok(Reason::ValueMismatch),
        ),
        (
            tampered(
                v2,
                set(
                    "/payload/authorization/validAfter",
                    (now + 60).to_string().into(),
                ),
            ),
            Ok(Reason::ValidAfter),
        ),
        (
            tampered(
                v2,
                set(
                    "/payload/authorization/validBefore",
                    (now + 5).to_string().into(),
                ),
            ),
            Ok(Reason::ValidBefore),
        ),
        (
            tampered(
                v2,
                set(
                    "/payload/authorization/validBefore",
                    (now + 3600).to_string().into(),
                ),
            ),
            Ok(Reason::ValidBefore),
        ),
        (
            tampered(
                v2,
                set(
                    "/payload/authorization/nonce",
                    format!("0x{}", "11".repeat(32)).into(),
                ),
            ),
            Ok(Reason::Signature),
        ),
        (
            tampered(
                v2,
                set(
                    "/payload/authorization/from",
                    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into(),
                ),
            ),
            Ok(Reason::Signature),
        ),
        (
            tampered(v2, |p| {
                let sig = p["payload"]["signature"].as_str().unwrap().to_owned();
                let flipped = if &sig[10..11] == "0" { "1" } else { "0" };
                p["payload"]["signature"] = format!("{}{flipped}{}", &sig[..10], &sig[11..]).into();
            }),
            Ok(Reason::Signature),
        ),
        (
            tampered(v2, |p| {
                let sig = p["payload"]["signature"].as_str().unwrap().to_owned();
                p["payload"]["signature"] = sig[..sig.len() - 2].into();
            }),
            Ok(Reason::Signature),
        ),
        (
            tampered(v2, set("/payload/authorization/value", "ten".into())),
            Ok(Reason::InvalidPayload),
        ),
        (
            tampered(v2, set("/payload/authorization/nonce", "0x1234".into())),
            Ok(Reason::InvalidPayload),
        ),
        (
            tampered(v2, set("/x402Version", 3.into())),
            Err("undecodable"),
        ),
        ("bm90IGpzb24=".into(), Err("undecodable")),
        (
            tampered(&f["v1"]["payload"], set("/network", "base".into())),
            Err("no matching offer"),
        ),
        (
            tampered(&f["v1"]["payload"], set("/scheme", "upto".into())),
            Err("no matching offer"),
        ),
        (
            tampered(
                &f["v1"]["payload"],
                set("/payload/authorization/value", "100000".into()),
            ),
            Ok(Reason::ValueMismatchV1),
        ),
        (
            tampered(
                &f["v1"]["payload"],
                set(
                    "/payload/authorization/nonce",
                    format!("0x{}", "22".repeat(32)).into(),
                ),
            ),
            Ok(Reason::Signature),
        ),
        ("!!!".into(), Err("undecodable")),
    ];
    for (i, (header, expected)) in cases.into_iter().enumerate() {
        assert_eq!(check(&header, now).err(), Some(expected), "case {i}");
    }
}
