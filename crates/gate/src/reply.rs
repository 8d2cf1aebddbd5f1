//! What hb402 answers itself on the public listener: one [`Reply`] type, and the one function,
//! [`rescue`], that turns every refusal into a reply.
//!
//! Domain errors stay typed ([`Refusal`] and the enums it wraps) until `rescue`, which decides
//! each one's status, stable code and message. Clients get codes, fixed messages and the
//! request id; what the node, the store, the facilitator or the RPC said is logged with that
//! request id and never sent.

use bytes::Bytes;

use crate::error::{ApiError, JSON_CONTENT_TYPE};
use crate::payment::PaymentRefusal;
use crate::read::ReadError;
use crate::route::Refused;
use crate::store::StoreError;
use crate::upload::UploadError;
use crate::upstream::UpstreamError;

/// Headers a browser may read on hb402's routes.
pub(crate) const EXPOSE_HEADERS: &str = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE, X-Receipt, X-Request-Id, Content-Range, Content-Length, ETag, X-Expires-At, Retry-After";
/// Request headers a browser may send on hb402's routes.
pub(crate) const ALLOW_HEADERS: &str = "PAYMENT-SIGNATURE, X-PAYMENT, X-Receipt, Range, Content-Type, Authorization, X-Expiry-Days, X-Expires-At, X-Private";

/// A complete response written by hb402.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// Status.
    pub(crate) status: u16,
    /// Headers (`Content-Length` is added from the body unless present).
    pub(crate) headers: Vec<(&'static str, String)>,
    /// Body.
    pub(crate) body: Bytes,
    /// Only the head is sent (`HEAD`).
    pub(crate) head_only: bool,
    /// For a body from the item cache: its share of the in-flight budget, held until the reply
    /// has been written.
    pub(crate) budget: Option<std::sync::Arc<tokio::sync::OwnedSemaphorePermit>>,
}

impl Reply {
    /// A reply with CORS headers.
    pub(crate) fn new(status: u16, headers: Vec<(&'static str, String)>, body: Bytes) -> Self {
        let mut reply = Reply {
            status,
            headers,
            body,
            head_only: false,
            budget: None,
        };
        reply.cors();
        reply
    }

    /// A JSON reply.
    pub(crate) fn json(status: u16, value: &serde_json::Value) -> Self {
        Reply::new(
            status,
            vec![("content-type", JSON_CONTENT_TYPE.to_owned())],
            Bytes::from(value.to_string()),
        )
    }

    /// The CORS preflight answer.
    pub(crate) fn preflight() -> Self {
        let mut reply = Reply::new(204, Vec::new(), Bytes::new());
        reply.headers.extend([
            (
                "access-control-allow-methods",
                "GET, HEAD, POST, PUT, OPTIONS".to_owned(),
            ),
            ("access-control-allow-headers", ALLOW_HEADERS.to_owned()),
            ("access-control-max-age", "600".to_owned()),
        ]);
        reply
    }

    fn cors(&mut self) {
        if !self.has("access-control-allow-origin") {
            self.headers
                .push(("access-control-allow-origin", "*".to_owned()));
            self.headers
                .push(("access-control-expose-headers", EXPOSE_HEADERS.to_owned()));
        }
    }

    /// Whether a header is set.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| *n == name)
    }

    /// An [`ApiError`] as `{"error", "message", "request_id"}`.
    pub(crate) fn error(err: &ApiError, request_id: &str) -> Self {
        let body = serde_json::json!({
            "error": err.code,
            "message": err.message,
            "request_id": request_id,
        });
        let mut reply = Reply::json(err.status, &body);
        reply.headers.push(("cache-control", "no-store".to_owned()));
        reply
    }
}

/// Every way a public request is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    /// At routing, before anything else.
    #[error("route: {0:?}")]
    Route(Refused),
    /// By the read policy.
    #[error("read: {0}")]
    Read(#[from] ReadError),
    /// By the upload path.
    #[error("upload: {0}")]
    Upload(#[from] UploadError),
    /// By the paywall.
    #[error("payment: {0}")]
    Payment(#[from] PaymentRefusal),
    /// The state store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The node failed.
    #[error("node: {0}")]
    Node(#[from] UpstreamError),
}

impl From<Refused> for Refusal {
    fn from(r: Refused) -> Self {
        Refusal::Route(r)
    }
}

/// What [`rescue`] needs of the request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asker<'a> {
    /// The request id, in every error body and in the logs.
    pub(crate) request_id: &'a str,
    /// When the client prefers HTML (a browser), the paywall page's settings: its 402 is then
    /// a page.
    pub(crate) browser: Option<&'a crate::config::PaywallConfig>,
}

fn route_error(r: &Refused) -> (ApiError, Vec<(&'static str, String)>) {
    match r {
        Refused::BadPath(e) => (ApiError::new(400, "bad_path", e.to_string()), vec![]),
        Refused::NotFound => (
            ApiError::not_found("nothing is served or forwarded at this path"),
            vec![],
        ),
        Refused::MethodNotAllowed { allow } => (
            ApiError::method_not_allowed(format!("this route accepts {allow}")),
            vec![("allow", allow.clone())],
        ),
        Refused::NodeApi => (
            ApiError::forbidden(
                "the node's S3 API is not served here: only DataItem objects are read and written",
            ),
            vec![],
        ),
        Refused::QueryNotForwarded => (
            ApiError::bad_request("query strings are not forwarded to the node on this route"),
            vec![],
        ),
        Refused::NodeRefused(status) => (
            ApiError::new(*status, "refused_by_node", "the node refused this request"),
            vec![],
        ),
        Refused::BodyNotAllowed => (
            ApiError::bad_request("this route takes no request body"),
            vec![],
        ),
    }
}

/// The one mapping from a refusal to the reply the client gets.
pub(crate) fn rescue(refusal: Refusal, asker: Asker<'_>) -> Reply {
    let id = asker.request_id;
    let (err, extra) = match refusal {
        Refusal::Payment(p) => return crate::paywall::render(p, asker),
        Refusal::Route(r) => route_error(&r),
        Refusal::Read(e) => e.into_api(),
        Refusal::Upload(e) => e.into_api(id),
        Refusal::Store(e) => {
            tracing::error!(request_id = id, error = %e, "state store failed");
            (
                ApiError::service_unavailable(
                    "store_unavailable",
                    "hb402's state store is unavailable; try again",
                ),
                vec![("retry-after", "5".to_owned())],
            )
        }
        Refusal::Node(e) => {
            tracing::warn!(request_id = id, error = %e, "node failed");
            (
                ApiError::bad_gateway("the node could not serve this request"),
                vec![],
            )
        }
    };
    let mut reply = Reply::error(&err, id);
    reply.headers.extend(extra);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_and_store_text_never_reaches_the_client() {
        let asker = Asker {
            request_id: "r1",
            browser: None,
        };
        for refusal in [
            Refusal::Node(UpstreamError::Unreachable(
                "error sending request for url (http://10.0.0.7:8734/secret?key=abc)".into(),
            )),
            Refusal::Store(StoreError::Backend("redis://:pw@10.0.0.9 refused".into())),
        ] {
            let reply = rescue(refusal, asker);
            let body = String::from_utf8(reply.body.to_vec()).unwrap();
            assert!(!body.contains("10.0.0"), "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["request_id"], "r1");
            assert!(v["error"].is_string() && v["message"].is_string());
        }
    }
}
