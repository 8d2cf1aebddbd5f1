//! How the paywall answers (x402 v1 and v2 at once): the 402 challenge with the v2
//! `PAYMENT-REQUIRED` header and the v1 JSON body `{x402Version: 1, error, accepts}` (an HTML page
//! for browsers), the 429 of a throttled payer, and the 504 of a payment whose settlement is not
//! known yet. What the paywall decides lives in [`crate::payment`].

use bytes::Bytes;
use hb402_x402::encode_header;
use hb402_x402::offer::{payment_required, payment_required_v1};

use crate::error::{ApiError, JSON_CONTENT_TYPE};
use crate::payment::{Challenge, PaymentRefusal, RETRY_AFTER_SECONDS};
use crate::reply::{Asker, Reply};

mod page;

/// The prefix of `batch-settlement` refusal codes.
const BATCH_CODES: &str = "invalid_batch_settlement_evm_";

/// The 402.
fn challenge(ch: Challenge, asker: Asker<'_>) -> Reply {
    let Challenge {
        offered,
        code,
        message,
        settlement,
        ..
    } = ch;
    // A channel payment's refusal names its code, which the payer's client acts on (a stale
    // cumulative amount is corrected from the offer's channel state).
    let error = if code.starts_with(BATCH_CODES) {
        code.clone()
    } else {
        message.clone()
    };
    let v2 = payment_required(&offered.offers, &offered.resource, Some(error));
    let mut headers = vec![
        ("payment-required", encode_header(&v2)),
        ("cache-control", "no-store".to_owned()),
        // A page for browsers, JSON for the others.
        ("vary", "accept".to_owned()),
    ];
    if let Some((version, settle)) = settlement {
        headers.push((crate::payment::header_name(version), encode_header(&settle)));
    }
    let body = match asker.browser {
        Some(paywall) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // A person's wallet pays `exact`: the page offers only that.
            let mut exact = offered.clone();
            exact.offers.retain(|o| o.batch.is_none());
            let shown = payment_required(&exact.offers, &exact.resource, Some(message.clone()));
            let (page_headers, page) = page::render(&exact, &shown, &message, paywall, now);
            headers.extend(page_headers);
            page
        }
        None => {
            let mut v1 = serde_json::to_value(payment_required_v1(&offered.offers, code))
                .unwrap_or_default();
            v1["message"] = message.into();
            v1["request_id"] = asker.request_id.into();
            headers.push(("content-type", JSON_CONTENT_TYPE.to_owned()));
            Bytes::from(v1.to_string())
        }
    };
    Reply::new(402, headers, body)
}

/// Renders a payment refusal; [`crate::reply::rescue`] calls this for every payment refusal.
pub(crate) fn render(refusal: PaymentRefusal, asker: Asker<'_>) -> Reply {
    match refusal {
        PaymentRefusal::Required(ch) => challenge(*ch, asker),
        PaymentRefusal::Throttled { retry_after } => {
            let err = ApiError::new(
                429,
                "too_many_failed_payments",
                "recent payments from this payer or this client failed too often; try again later",
            );
            let mut reply = Reply::error(&err, asker.request_id);
            reply.headers.push(("retry-after", retry_after.to_string()));
            reply
        }
        PaymentRefusal::Pending {
            version,
            settlement,
        } => {
            let body = serde_json::json!({
                "error": "settlement_pending",
                "message": "the payment's settlement is not confirmed yet; send the same payment again to receive the content once it is (it is never charged twice)",
                "request_id": asker.request_id,
                "payment": {
                    "state": "pending",
                    "transaction": (!settlement.transaction.is_empty()).then_some(&settlement.transaction),
                    "payer": settlement.payer,
                },
            });
            let mut reply = Reply::json(504, &body);
            reply.headers.extend([
                ("retry-after", RETRY_AFTER_SECONDS.to_string()),
                ("cache-control", "no-store".to_owned()),
                (
                    crate::payment::header_name(version),
                    encode_header(&settlement),
                ),
            ]);
            reply
        }
        PaymentRefusal::Unavailable(e) => {
            tracing::error!(request_id = asker.request_id, error = %e, "payment lock store failed");
            let err = ApiError::service_unavailable(
                "store_unavailable",
                "payments cannot be taken right now; try again",
            );
            let mut reply = Reply::error(&err, asker.request_id);
            reply.headers.push(("retry-after", "5".to_owned()));
            reply
        }
    }
}
