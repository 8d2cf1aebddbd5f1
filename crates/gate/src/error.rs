//! The one place where an error becomes an HTTP status and a JSON body.
//!
//! Every refusal hb402 writes itself — on the public listener and on the admin listener — is an
//! [`ApiError`]: a status, a stable machine-readable `code` and a human `message`, sent as
//! `{"error": code, "message": message}` with `Content-Type: application/json`. Errors of other
//! families (store, share links) are mapped here by `From` impls, so their status is decided once.

use bytes::Bytes;

use crate::share::ShareError;
use crate::store::StoreError;

/// The content type of every [`ApiError`] body.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// An HTTP error answer: status, stable code, human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// The HTTP status (4xx or 5xx).
    pub status: u16,
    /// A stable, machine-readable code (`snake_case`), the `error` field of the body.
    pub code: &'static str,
    /// What went wrong, for a human; never contains secrets.
    pub message: String,
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The JSON body: `{"error": code, "message": message}`.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        Bytes::from(body.to_string())
    }

    /// 400: the request is malformed or names something invalid.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// 401: credentials (bearer key, share-link token) are missing or wrong.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message)
    }

    /// 403: the path is denied by configuration.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }

    /// 404: nothing is there.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    /// 405: the method is not allowed on this route.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "method_not_allowed", message)
    }

    /// 410: the item expired; its metadata is kept, its bytes are no longer served.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "expired", message)
    }

    /// 413: the body is larger than the configured bound.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(413, "payload_too_large", message)
    }

    /// 416: no byte of the requested range exists.
    pub fn range_not_satisfiable(message: impl Into<String>) -> Self {
        Self::new(416, "range_not_satisfiable", message)
    }

    /// 500: a fault of hb402 itself.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal_error", message)
    }

    /// 502: the node failed or answered something unusable.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(502, "bad_gateway", message)
    }

    /// 503: a dependency (store, node) is unavailable, or a feature is not configured.
    pub fn service_unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(503, code, message)
    }
}

impl From<StoreError> for ApiError {
    /// The state store failing is a temporary unavailability of hb402, never the client's fault.
    fn from(e: StoreError) -> Self {
        Self::service_unavailable("store_unavailable", e.to_string())
    }
}

impl From<ShareError> for ApiError {
    /// Every share-link failure (bad signature, expired, malformed) is a 401, never a fetch.
    fn from(e: ShareError) -> Self {
        Self::new(401, "invalid_token", e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_with_error_and_message() {
        let e = ApiError::not_found("no item \"abc\"");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "not_found", "message": "no item \"abc\""})
        );
        assert_eq!(e.to_string(), "404 not_found: no item \"abc\"");
    }

    #[test]
    fn constructors_have_their_status() {
        let cases = [
            (ApiError::bad_request(""), 400),
            (ApiError::unauthorized(""), 401),
            (ApiError::forbidden(""), 403),
            (ApiError::not_found(""), 404),
            (ApiError::method_not_allowed(""), 405),
            (ApiError::gone(""), 410),
            (ApiError::payload_too_large(""), 413),
            (ApiError::range_not_satisfiable(""), 416),
            (ApiError::internal(""), 500),
            (ApiError::bad_gateway(""), 502),
            (ApiError::service_unavailable("x", ""), 503),
        ];
        for (e, status) in cases {
            assert_eq!(e.status, status, "{e}");
        }
    }

    #[test]
    fn share_errors_are_401() {
        let e = ApiError::from(ShareError::BadSignature);
        assert_eq!((e.status, e.code), (401, "invalid_token"));
    }
}
