//! The cost of checking one x402 payment locally, before any network call: decoding the header,
//! matching the offer, and the EIP-3009 checks with EIP-712 signer recovery.

use alloy_primitives::U256;
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use hb402_x402::{
    Offer, OfferTerms, Registry, ResourceInfo, decode_payment, match_offer, verify_locally,
};

const PAYMENTS: &str = include_str!("../crates/testkit/fixtures/payments.json");

fn bench(c: &mut Criterion) {
    let fixture: serde_json::Value = serde_json::from_str(PAYMENTS).unwrap();
    let now = fixture["now"].as_u64().unwrap();
    let registry = Registry::builtin();
    let offer = Offer::new(
        &registry,
        OfferTerms {
            asset: registry.usdc(84_532).unwrap().clone(),
            pay_to: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
                .parse()
                .unwrap(),
            amount: U256::from(10_000),
            max_timeout_seconds: 300,
        },
        &ResourceInfo {
            url: "http://127.0.0.1:8402/resolve/some-id".into(),
            description: Some("hb402 test resource".into()),
            mime_type: Some("application/octet-stream".into()),
        },
    )
    .unwrap();
    let offers = [offer];
    let mut group = c.benchmark_group("x402_local_verification");
    for version in ["v2", "v1"] {
        let header = fixture[version]["header"].as_str().unwrap().to_owned();
        group.bench_function(format!("{version}/decode"), |b| {
            b.iter(|| decode_payment(black_box(&header), 16 * 1024).unwrap())
        });
        let decoded = decode_payment(&header, 16 * 1024).unwrap();
        group.bench_function(format!("{version}/verify_locally"), |b| {
            b.iter(|| {
                let offer = match_offer(&offers, black_box(&decoded.payload)).unwrap();
                verify_locally(offer, &decoded.payload, now, 30).unwrap()
            })
        });
        group.bench_function(format!("{version}/decode_match_verify"), |b| {
            b.iter(|| {
                let decoded = decode_payment(black_box(&header), 16 * 1024).unwrap();
                let offer = match_offer(&offers, &decoded.payload).unwrap();
                verify_locally(offer, &decoded.payload, now, 30).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
