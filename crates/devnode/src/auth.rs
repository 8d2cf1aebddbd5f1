//! The device's only authentication: access-key-id parity. The id is the text between
//! `Credential=` and the next `/` in `Authorization`; the secret and the SigV4 signature are
//! never checked (`hb_http_server:handle_s3_request_direct/4`, `dev_s3:load_s3_credentials/1`).

use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;

/// A dummy SigV4 `Authorization` header the device accepts for `access_key_id`: only the id
/// matters, the date, region, signed headers and signature are never looked at.
pub fn authorization_header(access_key_id: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/20250101/us-east-1/s3/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=dummy"
    )
}

/// The access key id a request carries: the bytes after the first `Credential=` up to the next
/// `/` (or to the end when there is none). Repeated headers are joined with `, `, as the node's
/// HTTP server does.
pub(crate) fn request_access_key_id(headers: &HeaderMap) -> Option<Vec<u8>> {
    let joined = joined_header(headers, AUTHORIZATION.as_str())?;
    let marker = b"Credential=";
    let start = joined.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let rest = &joined[start..];
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    Some(rest[..end].to_vec())
}

/// Whether the request's access key id equals the configured one.
pub(crate) fn authorized(headers: &HeaderMap, access_key_id: &str) -> bool {
    request_access_key_id(headers).is_some_and(|id| id == access_key_id.as_bytes())
}

/// All values of a header joined with `, ` (how the node's HTTP server presents repeated
/// headers to the device), or `None` when absent.
pub(crate) fn joined_header(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter();
    let mut joined = values.next()?.as_bytes().to_vec();
    for value in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value.as_bytes());
    }
    Some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn extracts_the_id_between_credential_and_slash() {
        let h = headers(&authorization_header("my-key"));
        assert_eq!(request_access_key_id(&h).unwrap(), b"my-key");
        assert!(authorized(&h, "my-key"));
        assert!(!authorized(&h, "other"));
    }

    #[test]
    fn takes_the_rest_when_there_is_no_slash() {
        assert_eq!(
            request_access_key_id(&headers("x Credential=abc")).unwrap(),
            b"abc"
        );
        assert_eq!(request_access_key_id(&headers("Bearer abc")), None);
        assert!(!authorized(&HeaderMap::new(), "abc"));
        assert!(!authorized(&headers("Credential=/x"), "abc"));
    }
}
