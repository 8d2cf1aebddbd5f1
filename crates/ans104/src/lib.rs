//! ANS-104 DataItems for hb402.
//!
//! A pure library (no async runtime, no I/O): the binary format with an incremental header
//! parser that never needs the whole item, byte-exact serialization, Avro tags with the ANS-104
//! limits, the deep-hash with streamed data, ids, and signature verification and signing for
//! types 1 (Arweave RSA-PSS), 2 (Ed25519), 3 (Ethereum secp256k1) and 4 (Solana hex message).
//!
//! ```
//! use hb402_ans104::{DataItem, SigningKey, Tag};
//!
//! let key = SigningKey::ed25519_from_seed(&[1; 32]);
//! let item = DataItem::sign(&key, None, None, vec![Tag::new("Content-Type", "text/plain")], b"hi".to_vec())?;
//! let bytes = item.to_bytes();
//! let parsed = DataItem::parse(&bytes)?;
//! parsed.verify()?;
//! assert_eq!(parsed.header().content_type(), Some("text/plain"));
//! assert_eq!(parsed.id(), item.id());
//! # Ok::<(), hb402_ans104::Error>(())
//! ```

mod deep_hash;
mod error;
mod header;
mod item;
mod sign;
mod signature_type;
mod stream;
pub mod tags;
mod verify;

pub use deep_hash::{DataItemHasher, DeepHash, DeepHashItem, deep_hash, deep_hash_blob};
pub use error::Error;
pub use header::{
    DEFAULT_MAX_HEADER_BYTES, Header, HeaderParser, MIN_MAX_HEADER_BYTES, ParsedHeader,
    parse_header,
};
pub use item::{DataItem, ItemId};
pub use sign::SigningKey;
pub use signature_type::SignatureType;
pub use stream::{StreamingVerifier, VerifiedItem};
pub use tags::Tag;
pub use verify::{ARWEAVE_SALT_LENGTHS, verify_signature};
