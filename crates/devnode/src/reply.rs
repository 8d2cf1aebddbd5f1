//! Building responses: the `~s3@1.0` header whitelist (`hb_http_server:build_s3_response_headers/1`),
//! the device's plain-text error replies, and the CORS headers of the node's other replies.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
use hyper::{HeaderMap, Response, StatusCode};

/// A response before it is handed to hyper.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn new(status: u16) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header; values that are not valid header bytes are skipped.
    pub(crate) fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Reply {
        self.add_header(name, value.as_ref());
        self
    }

    pub(crate) fn add_header(&mut self, name: &str, value: &[u8]) -> bool {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }

    /// A `text/plain` reply.
    pub(crate) fn text(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply::new(status)
            .header("content-type", "text/plain")
            .body(body)
    }

    /// The hyper response. A `content-length` set by a handler is kept only where it is the
    /// truth on the wire: for `HEAD` (no body follows) or when it equals the body's length.
    pub(crate) fn into_response(mut self, head: bool) -> Response<Full<Bytes>> {
        if let Some(declared) = self.headers.get(CONTENT_LENGTH)
            && !head
            && declared.as_bytes() != self.body.len().to_string().as_bytes()
        {
            self.headers.remove(CONTENT_LENGTH);
        }
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

/// What a `dev_s3` handler returns, before `hb_http_server` turns it into HTTP.
#[derive(Debug)]
pub(crate) enum DeviceResult {
    /// `{ok, #{status, body, …fields}}`: only whitelisted fields become headers.
    Ok {
        status: u16,
        fields: Vec<(&'static str, String)>,
        body: Bytes,
    },
    /// `{error, #{status, body}}`: `text/plain` with `access-control-allow-origin` only.
    Err { status: u16, body: String },
    /// An Erlang exception inside the device (failed access-key assertion, bad argument):
    /// `500 S3 request failed`.
    Crash,
}

/// The only device fields `hb_http_server` copies into response headers (when non-empty).
pub(crate) const S3_HEADER_WHITELIST: [&str; 5] = [
    "etag",
    "last-modified",
    "content-type",
    "content-length",
    "accept-ranges",
];

impl DeviceResult {
    pub(crate) fn err(status: u16, body: impl Into<String>) -> DeviceResult {
        DeviceResult::Err {
            status,
            body: body.into(),
        }
    }

    /// The HTTP reply `hb_http_server:handle_s3_request_direct/4` makes of it.
    pub(crate) fn render(self) -> Reply {
        match self {
            DeviceResult::Ok {
                status,
                fields,
                body,
            } => {
                let mut reply = Reply::new(status)
                    .header("access-control-allow-origin", "*")
                    .header("access-control-allow-headers", "*")
                    .header(
                        "access-control-allow-methods",
                        "GET, POST, PUT, DELETE, OPTIONS",
                    );
                for (name, value) in fields {
                    if S3_HEADER_WHITELIST.contains(&name)
                        && !value.is_empty()
                        && !reply.headers.contains_key(name)
                    {
                        reply.add_header(name, value.as_bytes());
                    }
                }
                reply.body(body)
            }
            DeviceResult::Err { status, body } => {
                Reply::text(status, body).header("access-control-allow-origin", "*")
            }
            DeviceResult::Crash => {
                Reply::text(500, "S3 request failed").header("access-control-allow-origin", "*")
            }
        }
    }
}

/// The CORS headers HyperBEAM adds to every AO-Core reply (`hb_http:add_cors_headers/3`):
/// allowed request headers are echoed from `access-control-request-headers`.
pub(crate) fn with_ao_cors(mut reply: Reply, request: &HeaderMap) -> Reply {
    reply.add_header("access-control-allow-origin", b"*");
    reply.add_header(
        "access-control-allow-methods",
        b"GET, POST, PUT, DELETE, OPTIONS",
    );
    reply.add_header("access-control-expose-headers", b"*");
    if let Some(asked) = request.get("access-control-request-headers") {
        reply.add_header("access-control-allow-headers", asked.as_bytes());
    }
    reply
}

/// The HTTP server's answer to any `OPTIONS` request, before routing (`hb_http_server:cors_reply/2`).
pub(crate) fn preflight() -> Reply {
    Reply::new(204)
        .header("access-control-allow-origin", "*")
        .header("access-control-allow-headers", "*")
        .header(
            "access-control-allow-methods",
            "GET, POST, PUT, DELETE, OPTIONS, PATCH",
        )
}

/// Whether the reply is `text/plain` (used by tests of the renderer).
#[cfg(test)]
fn is_text(reply: &Reply) -> bool {
    reply
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        == Some(b"text/plain")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitelist_drops_other_fields() {
        let reply = DeviceResult::Ok {
            status: 204,
            fields: vec![
                ("x-amz-delete-marker", "false".into()),
                ("location", "/b".into()),
                ("etag", "\"e\"".into()),
                ("last-modified", String::new()),
            ],
            body: Bytes::new(),
        }
        .render();
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(reply.headers.get("etag").unwrap(), "\"e\"");
        assert!(reply.headers.get("x-amz-delete-marker").is_none());
        assert!(reply.headers.get("location").is_none());
        assert!(reply.headers.get("last-modified").is_none());
        assert_eq!(
            reply.headers.get("access-control-allow-origin").unwrap(),
            "*"
        );
        assert_eq!(
            reply.headers.get("access-control-allow-headers").unwrap(),
            "*"
        );
    }

    #[test]
    fn errors_are_plain_text_with_one_cors_header() {
        let reply = DeviceResult::Crash.render();
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(is_text(&reply));
        assert_eq!(reply.body, "S3 request failed");
        assert_eq!(reply.headers.len(), 2);
    }
}
