//! The x402 paywall at the edge (x402 v1 and v2 at once).
//!
//! A priced read without a payment gets a 402 challenge: the v2 `PAYMENT-REQUIRED` header and the
//! v1 JSON body `{x402Version: 1, error, accepts}` (an HTML page for browsers). With a payment:
//! decode (bounded) → match an offer → local checks (no network) → replay lock on
//! (chain, asset, from, nonce) → facilitator `/verify` → (the proxy fetches upstream) → settle
//! before the first body byte leaves → `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`. Anything that is
//! not a clear success refuses (fail closed, x402.md §3.1); nothing is settled for a refused or
//! failed request, and a lock is released only when no settlement can have happened.

use std::time::Instant;

use bytes::Bytes;
use hb402_x402::client::format_units;
use hb402_x402::facilitator::SETTLEMENT_PENDING;
use hb402_x402::offer::{payment_required, payment_required_v1};
use hb402_x402::{
    Offer, PaymentPayload, ResourceInfo, SettleResponse, V1, VerifyRequest, decode_payment,
    encode_header, match_offer, verify_locally,
};
use pingora::http::RequestHeader;

use crate::gate::Gate;
use crate::metrics::{FacilitatorOp, PaymentRequiredReason, PaymentResult};
use crate::store::{NewPayment, PaymentState};

/// A response prepared by the paywall (a 402).
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Bytes,
}

/// A payment verified by the facilitator, waiting for its settlement.
#[derive(Debug)]
pub struct Verified {
    request: VerifyRequest,
    version: u32,
    lock_key: String,
    valid_before: u64,
    ledger_id: Option<u64>,
    network: String,
    payer: String,
    amount: String,
    /// Whether the settlement happened (the lock stays spent).
    pub settled: bool,
    /// Whether a settlement may have happened (the lock must not be released).
    pub maybe_settled: bool,
}

fn payment_header(req: &RequestHeader) -> Option<(&'static str, String)> {
    for name in ["payment-signature", "x-payment"] {
        if let Some(v) = req.headers.get(name) {
            return Some((name, v.to_str().unwrap_or_default().to_owned()));
        }
    }
    None
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The 402 challenge, with `error` saying why (on a retry) and the failed settlement, if any.
pub fn challenge(
    req: &RequestHeader,
    offers: &[Offer],
    resource: &ResourceInfo,
    error: &str,
    message: &str,
    settlement: Option<(u32, &SettleResponse)>,
) -> Prepared {
    let v2 = payment_required(offers, resource, Some(message.to_owned()));
    let mut v1 =
        serde_json::to_value(payment_required_v1(offers, error.to_owned())).unwrap_or_default();
    v1["message"] = message.into();
    let mut headers = vec![
        ("payment-required", encode_header(&v2)),
        ("access-control-allow-origin", "*".to_owned()),
        (
            "access-control-expose-headers",
            "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE".to_owned(),
        ),
        ("cache-control", "no-store".to_owned()),
    ];
    if let Some((version, settle)) = settlement {
        let name = if version == V1 {
            "x-payment-response"
        } else {
            "payment-response"
        };
        headers.push((name, encode_header(settle)));
    }
    let browser = req
        .headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let body = if browser {
        headers.push(("content-type", "text/html; charset=utf-8".to_owned()));
        let rows: String = offers
            .iter()
            .map(|o| {
                format!(
                    "<tr><td>{} {}</td><td>{}</td><td>{}</td></tr>",
                    html_escape(&format_units(&o.terms.amount, o.terms.asset.decimals)),
                    html_escape(&o.terms.asset.symbol),
                    html_escape(o.v1.as_ref().map_or(&o.v2.network, |v| &v.network)),
                    html_escape(&o.v2.pay_to)
                )
            })
            .collect();
        Bytes::from(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Payment required</title></head>\
             <body><h1>Payment required</h1><p>{}</p><p>{}</p>\
             <table><tr><th>price</th><th>network</th><th>pay to</th></tr>{rows}</table>\
             <p>Pay with an x402 client: it reads the PAYMENT-REQUIRED header of this response.</p>\
             </body></html>",
            html_escape(resource.description.as_deref().unwrap_or(&resource.url)),
            html_escape(message)
        ))
    } else {
        headers.push(("content-type", "application/json".to_owned()));
        Bytes::from(v1.to_string())
    };
    Prepared {
        status: 402,
        headers,
        body,
    }
}

fn now_secs() -> u64 {
    crate::items::now_secs()
}

/// Checks the request's payment against `offers`. `Ok(verified)` means: proceed to upstream,
/// then [`settle`]. `Err` is the 402 to send.
pub async fn check(
    gate: &Gate,
    req: &RequestHeader,
    offers: &[Offer],
    resource: &ResourceInfo,
) -> Result<Verified, Prepared> {
    let metrics = &gate.metrics;
    let refuse = |reason: PaymentRequiredReason, error: &str, message: &str| {
        metrics.record_payment_required(reason);
        challenge(req, offers, resource, error, message, None)
    };
    let Some((_, header)) = payment_header(req) else {
        return Err(refuse(
            PaymentRequiredReason::Missing,
            "payment_required",
            "Payment required",
        ));
    };
    let payments = &gate.config.payments;
    let decoded = match decode_payment(&header, gate.config.limits.max_payment_header_bytes) {
        Ok(d) => d,
        Err(e) => {
            return Err(refuse(
                PaymentRequiredReason::Malformed,
                "invalid_payload",
                &e.to_string(),
            ));
        }
    };
    let Some(offer) = match_offer(offers, &decoded.payload) else {
        return Err(refuse(
            PaymentRequiredReason::NoMatchingOffer,
            "invalid_payment_requirements",
            "the payment does not match any offer of this resource",
        ));
    };
    let now = now_secs();
    let local = match verify_locally(offer, &decoded.payload, now, payments.skew_seconds) {
        Ok(v) => v,
        Err(refusal) => {
            metrics.record_payment(&network_label(gate, offer), PaymentResult::Rejected);
            return Err(refuse(
                refusal.reason.into(),
                refusal.reason.as_str(),
                &refusal.message,
            ));
        }
    };
    let version = decoded.payload.version();
    let auth = &local.authorization;
    let lock_key = format!(
        "x402:{}:{:#x}:{:#x}:{}",
        offer.terms.asset.chain_id, offer.terms.asset.address, auth.from, auth.nonce
    );
    let valid_before = local.valid_before_secs();
    match gate.store.try_lock(&lock_key, valid_before).await {
        Ok(true) => {}
        Ok(false) => {
            metrics.record_payment(&network_label(gate, offer), PaymentResult::Replayed);
            return Err(refuse(
                PaymentRequiredReason::Replay,
                "duplicate_settlement",
                "this payment authorization was already used or is in use; sign a new one",
            ));
        }
        Err(e) => {
            return Err(refuse(
                PaymentRequiredReason::FacilitatorUnavailable,
                "unexpected_verify_error",
                &format!("the state store is unavailable: {e}"),
            ));
        }
    }
    let network = match (&decoded.payload, &offer.v1) {
        (PaymentPayload::V1(_), Some(v1)) => v1.network.clone(),
        _ => offer.v2.network.clone(),
    };
    let payer = auth.from.to_checksum(None);
    let amount = offer.terms.amount.to_string();
    let ledger_id = gate
        .store
        .ledger_append(&NewPayment {
            resource: resource.url.clone(),
            network: network.clone(),
            asset: offer.v2.asset.clone(),
            payer: payer.clone(),
            pay_to: offer.v2.pay_to.clone(),
            amount: amount.clone(),
            lock_key: lock_key.clone(),
        })
        .await
        .ok();
    let request = VerifyRequest {
        x402_version: version,
        payment_payload: decoded.raw.clone(),
        payment_requirements: offer.requirements_json(version),
    };
    let Some(facilitator) = &gate.facilitator else {
        let _ = gate.store.release(&lock_key).await;
        return Err(refuse(
            PaymentRequiredReason::FacilitatorUnavailable,
            "unexpected_verify_error",
            "payments are not configured",
        ));
    };
    let started = Instant::now();
    let verdict = facilitator.verify(&request).await;
    metrics.observe_facilitator(FacilitatorOp::Verify, started.elapsed());
    let failure = match verdict {
        Ok(v) if v.is_valid => None,
        Ok(v) => Some((
            v.invalid_reason.unwrap_or_else(|| "invalid_payload".into()),
            v.invalid_message
                .unwrap_or_else(|| "the facilitator refused the payment".into()),
            PaymentResult::VerifyFailed,
            PaymentRequiredReason::VerifyFailed,
        )),
        // Fail closed: an unreachable, slow or incoherent facilitator is a refusal.
        Err(e) => Some((
            "unexpected_verify_error".into(),
            e.to_string(),
            PaymentResult::FacilitatorError,
            PaymentRequiredReason::FacilitatorUnavailable,
        )),
    };
    if let Some((reason, message, result, label)) = failure {
        let _ = gate.store.release(&lock_key).await;
        record(
            gate,
            ledger_id,
            PaymentState::Failed {
                reason: reason.clone(),
            },
        )
        .await;
        metrics.record_payment(&network_label(gate, offer), result);
        metrics.record_payment_required(label);
        return Err(challenge(req, offers, resource, &reason, &message, None));
    }
    record(gate, ledger_id, PaymentState::Verified).await;
    Ok(Verified {
        request,
        version,
        lock_key,
        valid_before,
        ledger_id,
        network,
        payer,
        amount,
        settled: false,
        maybe_settled: false,
    })
}

fn network_label(gate: &Gate, offer: &Offer) -> crate::metrics::NetworkLabel {
    let registry = &gate.config.payments.registry;
    match registry.network_by_chain(offer.terms.asset.chain_id) {
        Some(network) => crate::metrics::NetworkLabel::new(network),
        // Offers are only built for registered networks.
        None => crate::metrics::NetworkLabel::new(&hb402_x402::Network {
            v1_name: None,
            chain_id: offer.terms.asset.chain_id,
        }),
    }
}

/// Settles a verified payment once the upstream answered with content. `Ok(header)` is the
/// response header to add; `Err` is the 402 to send instead of the content.
pub async fn settle(
    gate: &Gate,
    req: &RequestHeader,
    paid: &mut Verified,
    offers: &[Offer],
    resource: &ResourceInfo,
) -> Result<(&'static str, String), Prepared> {
    let Some(facilitator) = &gate.facilitator else {
        return Err(challenge(
            req,
            offers,
            resource,
            "unexpected_settle_error",
            "payments are not configured",
            None,
        ));
    };
    let started = Instant::now();
    let result = facilitator.settle(&paid.request).await;
    gate.metrics
        .observe_facilitator(FacilitatorOp::Settle, started.elapsed());
    let offer = offers.iter().find(|o| {
        o.v2.network == paid.network || o.v1.as_ref().is_some_and(|v| v.network == paid.network)
    });
    let header_name = if paid.version == V1 {
        "x-payment-response"
    } else {
        "payment-response"
    };
    match result {
        Ok(s) if s.success => {
            paid.settled = true;
            paid.maybe_settled = true;
            let _ = gate
                .store
                .mark_spent(&paid.lock_key, paid.valid_before)
                .await;
            record(
                gate,
                paid.ledger_id,
                PaymentState::Settled {
                    transaction: s.transaction.clone(),
                },
            )
            .await;
            if let Some(offer) = offer {
                let label = network_label(gate, offer);
                gate.metrics.record_payment(&label, PaymentResult::Settled);
                if let Ok(atomic) = paid.amount.parse::<u64>() {
                    gate.metrics.record_paid(
                        &label,
                        &crate::metrics::AssetLabel::new(&offer.terms.asset),
                        atomic,
                    );
                }
            }
            let mut response = s;
            fill_missing(&mut response, paid);
            Ok((header_name, encode_header(&response)))
        }
        other => {
            let (mut response, maybe_sent) = match other {
                Ok(s) => {
                    let pending = s.error_reason.as_deref() == Some(SETTLEMENT_PENDING);
                    (s, pending)
                }
                // A settle call that failed without an answer may have been broadcast: keep the
                // authorization locked rather than risk a second settlement.
                Err(e) => (
                    SettleResponse {
                        success: false,
                        error_reason: Some("unexpected_settle_error".into()),
                        error_message: Some(e.to_string()),
                        payer: None,
                        transaction: String::new(),
                        network: String::new(),
                    },
                    true,
                ),
            };
            fill_missing(&mut response, paid);
            paid.maybe_settled = maybe_sent;
            if maybe_sent {
                let _ = gate
                    .store
                    .mark_spent(&paid.lock_key, paid.valid_before)
                    .await;
            } else {
                let _ = gate.store.release(&paid.lock_key).await;
            }
            let reason = response
                .error_reason
                .clone()
                .unwrap_or_else(|| "unexpected_settle_error".into());
            record(
                gate,
                paid.ledger_id,
                PaymentState::Failed {
                    reason: reason.clone(),
                },
            )
            .await;
            if let Some(offer) = offer {
                gate.metrics
                    .record_payment(&network_label(gate, offer), PaymentResult::SettleFailed);
            }
            gate.metrics
                .record_payment_required(PaymentRequiredReason::SettleFailed);
            let message = response
                .error_message
                .clone()
                .unwrap_or_else(|| "settlement failed".into());
            Err(challenge(
                req,
                offers,
                resource,
                &reason,
                &message,
                Some((paid.version, &response)),
            ))
        }
    }
}

impl Verified {
    /// The payer's address.
    pub fn payer(&self) -> &str {
        &self.payer
    }
}

/// Moves a ledger entry, when the payment has one. The ledger is an audit trail: a store error
/// here does not change the answer already decided.
async fn record(gate: &Gate, id: Option<u64>, state: PaymentState) {
    if let Some(id) = id {
        let _ = gate.store.ledger_update(id, state).await;
    }
}

/// Some facilitators leave `payer` and `network` empty (x402.md §8.1): fill them from the
/// request.
fn fill_missing(response: &mut SettleResponse, paid: &Verified) {
    if response.payer.as_deref().is_none_or(str::is_empty) {
        response.payer = Some(paid.payer.clone());
    }
    if response.network.is_empty() {
        response.network = paid.network.clone();
    }
}

/// Releases a verified payment that will not be settled (upstream failed, client gone).
pub async fn release(gate: &Gate, paid: &Verified) {
    if paid.maybe_settled {
        return;
    }
    let _ = gate.store.release(&paid.lock_key).await;
    record(gate, paid.ledger_id, PaymentState::Released).await;
}
