//! The typed errors of this crate. Every variant says what is wrong and, where it applies,
//! the byte offset in the item at which the problem was found.

use crate::tags::TagError;

/// Why a DataItem could not be parsed, encoded or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The two-byte signature type at offset 0 names a type this crate does not know.
    #[error("unsupported signature type {sig_type} at offset 0")]
    UnsupportedSignatureType {
        /// The type number found.
        sig_type: u16,
    },
    /// The signature type is known but this crate cannot verify or produce it.
    #[error("signature type {sig_type} ({name}) cannot be verified by hb402")]
    UnverifiableSignatureType {
        /// The type number.
        sig_type: u16,
        /// The arbundles name of the type.
        name: &'static str,
    },
    /// The input ended before `field` was complete.
    #[error(
        "truncated item: {field} needs bytes up to offset {needed} but the item ends at {available}"
    )]
    Truncated {
        /// The field that was being read.
        field: &'static str,
        /// The offset the item must reach for the field to be complete.
        needed: u64,
        /// How many bytes there were.
        available: u64,
    },
    /// A presence byte (target or anchor) was neither 0 nor 1.
    #[error("invalid {field} presence byte {value:#04x} at offset {offset}: must be 0 or 1")]
    InvalidPresence {
        /// `target` or `anchor`.
        field: &'static str,
        /// Where the byte is.
        offset: u64,
        /// The byte found.
        value: u8,
    },
    /// The header (everything before the data) is larger than the configured bound.
    #[error("header of {size} bytes exceeds the limit of {limit} bytes")]
    HeaderTooLarge {
        /// The header size the item declares (or at least needs).
        size: u64,
        /// The configured maximum.
        limit: u64,
    },
    /// The declared tag count or the Avro tag bytes are invalid.
    #[error("invalid tags at offset {offset}: {reason}")]
    InvalidTags {
        /// Absolute offset of the problem in the item.
        offset: u64,
        /// What is wrong.
        reason: TagError,
    },
    /// The owner field is not a valid public key for the signature type.
    #[error("invalid owner key at offset {offset}: {reason}")]
    InvalidOwner {
        /// Absolute offset of the owner field.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The signature field is not well formed for its type (before any cryptography).
    #[error("malformed signature at offset 2: {reason}")]
    MalformedSignature {
        /// What is wrong.
        reason: &'static str,
    },
    /// The signature does not verify over the item's deep-hash.
    #[error("signature does not verify for the item's owner")]
    InvalidSignature,
    /// A value handed to an encoder is out of range (for example a tag set over the limits).
    #[error("cannot encode: {reason}")]
    Encode {
        /// What is wrong.
        reason: TagError,
    },
    /// A signing key could not be loaded.
    #[error("invalid signing key: {reason}")]
    InvalidKey {
        /// What is wrong.
        reason: String,
    },
    /// A string is not a valid DataItem id (43 characters of base64url).
    #[error("invalid item id: {reason}")]
    InvalidId {
        /// What is wrong.
        reason: &'static str,
    },
}

impl Error {
    /// A stable, machine-readable code for this error, suitable for the `error` field of a JSON
    /// error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnsupportedSignatureType { .. } => "unsupported_signature_type",
            Error::UnverifiableSignatureType { .. } => "unsupported_signature_type",
            Error::Truncated { .. } => "truncated_item",
            Error::InvalidPresence { .. } => "invalid_presence_byte",
            Error::HeaderTooLarge { .. } => "header_too_large",
            Error::InvalidTags { .. } => "invalid_tags",
            Error::InvalidOwner { .. } => "invalid_owner",
            Error::MalformedSignature { .. } => "malformed_signature",
            Error::InvalidSignature => "invalid_signature",
            Error::Encode { .. } => "invalid_tags",
            Error::InvalidKey { .. } => "invalid_key",
            Error::InvalidId { .. } => "invalid_id",
        }
    }
}
