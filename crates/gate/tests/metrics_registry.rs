//! Metrics: every metric and label value appears in the text format and in `docs/metrics.md`;
//! registries are per instance.

use std::time::Duration;

use hb402_gate::metrics::{
    AssetLabel, CacheLabel, CacheResult, FacilitatorOp, MetaSource, Metrics, NetworkLabel, Outcome,
    PaymentRequiredReason, PaymentResult, RouteLabel, UploadResult,
};

const DOC: &str = include_str!("../../../docs/metrics.md");

const METRICS: &[&str] = &[
    "hb402_requests_total",
    "hb402_request_duration_seconds",
    "hb402_upstream_duration_seconds",
    "hb402_payments_total",
    "hb402_paid_amount_atomic_total",
    "hb402_facilitator_duration_seconds",
    "hb402_cache_requests_total",
    "hb402_uploads_total",
    "hb402_upload_bytes_total",
    "hb402_build_info",
    "hb402_payment_required_total",
];

fn label_values() -> Vec<&'static str> {
    let mut all = Vec::new();
    all.extend(RouteLabel::ALL.iter().map(|v| v.as_str()));
    all.extend(Outcome::ALL.iter().map(|v| v.as_str()));
    all.extend(PaymentResult::ALL.iter().map(|v| v.as_str()));
    all.extend(PaymentRequiredReason::ALL.iter().map(|v| v.as_str()));
    all.extend(FacilitatorOp::ALL.iter().map(|v| v.as_str()));
    all.extend(CacheLabel::ALL.iter().map(|v| v.as_str()));
    all.extend(CacheResult::ALL.iter().map(|v| v.as_str()));
    all.extend(UploadResult::ALL.iter().map(|v| v.as_str()));
    all
}

fn exercise(m: &Metrics) {
    let registry = hb402_x402::Registry::builtin();
    let network = registry.network("base-sepolia").unwrap();
    let net = NetworkLabel::new(network);
    let asset = AssetLabel::new(registry.usdc(network.chain_id).unwrap());
    m.record_request(RouteLabel::Data, Outcome::Partial, Duration::from_millis(3));
    m.observe_upstream(Duration::from_millis(2));
    m.record_payment(&net, PaymentResult::Settled);
    m.record_paid(&net, &asset, 10_000);
    m.record_paid(&net, &asset, 5);
    m.observe_facilitator(FacilitatorOp::Settle, Duration::from_millis(40));
    m.record_metadata_lookup(MetaSource::Store);
    m.record_metadata_lookup(MetaSource::Memory);
    m.record_upload(UploadResult::Duplicate, 100);
    m.record_upload(UploadResult::Stored, 20);
    m.record_payment_required(PaymentRequiredReason::Missing);
    m.record_payment_required(hb402_x402::Reason::DuplicateSettlement.into());
}

#[test]
fn every_metric_is_exported_with_its_labels() {
    let m = Metrics::new();
    exercise(&m);
    let text = m.encode();
    for name in METRICS {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{text}"
        );
    }
    for line in [
        r#"hb402_requests_total{outcome="partial",route="data"} 1"#,
        r#"hb402_request_duration_seconds_count{route="data"} 1"#,
        r#"hb402_upstream_duration_seconds_count 1"#,
        r#"hb402_payments_total{network="base-sepolia",result="settled"} 1"#,
        r#"hb402_paid_amount_atomic_total{asset="USDC",network="base-sepolia"} 10005"#,
        r#"hb402_facilitator_duration_seconds_count{op="settle"} 1"#,
        r#"hb402_cache_requests_total{cache="metadata",result="hit"} 1"#,
        r#"hb402_cache_requests_total{cache="metadata",result="miss"} 1"#,
        r#"hb402_cache_requests_total{cache="store",result="hit"} 1"#,
        r#"hb402_uploads_total{result="duplicate"} 1"#,
        r#"hb402_uploads_total{result="stored"} 1"#,
        r#"hb402_upload_bytes_total 120"#,
        r#"hb402_payment_required_total{reason="missing"} 1"#,
        r#"hb402_payment_required_total{reason="replay"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
}

#[test]
fn registries_are_per_instance() {
    let a = Metrics::new();
    let b = Metrics::new();
    a.record_upload(UploadResult::Stored, 1);
    assert!(
        a.encode()
            .contains(r#"hb402_uploads_total{result="stored"} 1"#)
    );
    assert!(
        b.encode()
            .contains(r#"hb402_uploads_total{result="stored"} 0"#)
    );
}

#[test]
fn docs_list_every_metric_and_label_value() {
    for name in METRICS {
        assert!(
            DOC.contains(&format!("`{name}`")),
            "docs/metrics.md lacks {name}"
        );
    }
    for value in label_values() {
        assert!(
            DOC.contains(&format!("| `{value}` |"))
                || DOC.contains(&format!("`{value}` or"))
                || DOC.contains(&format!("or `{value}`")),
            "docs/metrics.md lacks the label value {value}"
        );
    }
}

#[test]
fn label_values_are_snake_case_and_unique_per_enum() {
    fn check(values: &[&str]) {
        let mut seen = std::collections::HashSet::new();
        for v in values {
            assert!(
                !v.is_empty() && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{v}"
            );
            assert!(seen.insert(*v), "duplicate {v}");
        }
    }
    check(
        &RouteLabel::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>(),
    );
    check(&Outcome::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>());
    check(
        &PaymentResult::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>(),
    );
    check(
        &PaymentRequiredReason::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>(),
    );
    check(
        &UploadResult::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>(),
    );
}
