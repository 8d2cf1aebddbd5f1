//! The header codec: standard base64 (RFC 4648 §4, with padding) of UTF-8 JSON, bounded in size.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize as _, Serialize};
use serde_json::Value;

use crate::types::{PaymentPayload, PaymentPayloadV1, PaymentPayloadV2, V1, V2};

/// Default bound on an encoded payment header. A real v2 `PAYMENT-SIGNATURE` for one EVM payment
/// is about 1 KiB; smart-wallet signatures make it larger.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;

/// Encoding is canonical (padded); decoding also accepts a missing padding.
const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a header could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The header is larger than the bound.
    #[error("header is {len} bytes, at most {max} are accepted")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Not standard base64.
    #[error("header is not valid base64")]
    Base64,
    /// Not JSON of the expected shape.
    #[error("header is not the expected JSON: {0}")]
    Json(String),
    /// `x402Version` is missing or not 1 or 2.
    #[error("unsupported x402Version {0}")]
    Version(String),
}

/// Encodes a value for a header.
pub fn encode_header<T: Serialize>(value: &T) -> String {
    // Serializing these plain data types cannot fail.
    let json = serde_json::to_vec(value).unwrap_or_default();
    STANDARD.encode(json)
}

fn decode_json(header: &str, max: usize) -> Result<Value, CodecError> {
    let header = header.trim();
    if header.len() > max {
        return Err(CodecError::TooLarge {
            len: header.len(),
            max,
        });
    }
    let bytes = STANDARD.decode(header).map_err(|_| CodecError::Base64)?;
    serde_json::from_slice(&bytes).map_err(|e| CodecError::Json(e.to_string()))
}

/// Decodes a header into any type.
pub fn decode_header<T: DeserializeOwned>(header: &str, max: usize) -> Result<T, CodecError> {
    let value = decode_json(header, max)?;
    serde_json::from_value(value).map_err(|e| CodecError::Json(e.to_string()))
}

/// A decoded payment header: the typed payload and the JSON exactly as the client sent it (to be
/// forwarded to the facilitator verbatim).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedPayment {
    /// Typed view.
    pub payload: PaymentPayload,
    /// The client's JSON.
    pub raw: Value,
}

/// Decodes a `PAYMENT-SIGNATURE` or `X-PAYMENT` header, dispatching on `x402Version`.
pub fn decode_payment(header: &str, max: usize) -> Result<DecodedPayment, CodecError> {
    let raw = decode_json(header, max)?;
    let version = raw.get("x402Version");
    // Read from the tree in place (`&Value` deserializes without a copy of the whole tree).
    let payload = match version.and_then(Value::as_u64) {
        Some(v) if v == u64::from(V1) => PaymentPayload::V1(
            PaymentPayloadV1::deserialize(&raw).map_err(|e| CodecError::Json(e.to_string()))?,
        ),
        Some(v) if v == u64::from(V2) => PaymentPayload::V2(
            PaymentPayloadV2::deserialize(&raw).map_err(|e| CodecError::Json(e.to_string()))?,
        ),
        _ => {
            return Err(CodecError::Version(
                version.map_or_else(|| "missing".to_owned(), Value::to_string),
            ));
        }
    };
    Ok(DecodedPayment { payload, raw })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SettleResponse;

    #[test]
    fn round_trip_uses_padded_standard_base64() {
        let s = SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer: Some("0xab".into()),
            transaction: "0x12".into(),
            network: "eip155:84532".into(),
        };
        let h = encode_header(&s);
        assert!(h.len().is_multiple_of(4));
        assert!(!h.contains('-') && !h.contains('_'));
        assert_eq!(decode_header::<SettleResponse>(&h, 1024).unwrap(), s);
    }

    #[test]
    fn each_failure_has_its_error() {
        assert_eq!(
            decode_payment(&"A".repeat(20), 10),
            Err(CodecError::TooLarge { len: 20, max: 10 })
        );
        assert_eq!(decode_payment("not base64!", 100), Err(CodecError::Base64));
        let not_json = STANDARD.encode("hello");
        assert!(matches!(
            decode_payment(&not_json, 100),
            Err(CodecError::Json(_))
        ));
        let v3 = STANDARD.encode(r#"{"x402Version":3}"#);
        assert_eq!(
            decode_payment(&v3, 100),
            Err(CodecError::Version("3".into()))
        );
        let none = STANDARD.encode(r#"{"scheme":"exact"}"#);
        assert_eq!(
            decode_payment(&none, 100),
            Err(CodecError::Version("missing".into()))
        );
        let v2_missing_accepted = STANDARD.encode(r#"{"x402Version":2,"payload":{}}"#);
        assert!(matches!(
            decode_payment(&v2_missing_accepted, 200),
            Err(CodecError::Json(_))
        ));
    }
}
