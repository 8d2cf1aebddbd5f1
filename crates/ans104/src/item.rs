//! Whole DataItems (parse, serialize, sign, verify) and their ids.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::header::{DEFAULT_MAX_HEADER_BYTES, parse_header};
use crate::{DataItemHasher, Error, Header, SigningKey, Tag, verify_signature};

/// A DataItem id: SHA-256 of the signature, shown as 43 characters of base64url without padding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId(pub [u8; 32]);

impl ItemId {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Display for ItemId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl std::fmt::Debug for ItemId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ItemId({self})")
    }
}

impl std::str::FromStr for ItemId {
    type Err = Error;

    /// Accepts exactly the canonical form: 43 base64url characters, no padding.
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.len() != 43 {
            return Err(Error::InvalidId {
                reason: "an id is 43 characters",
            });
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| Error::InvalidId {
            reason: "not canonical base64url",
        })?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| Error::InvalidId {
            reason: "an id is 32 bytes",
        })?;
        Ok(ItemId(bytes))
    }
}

/// A complete DataItem held in memory. For items of any size, use [`crate::HeaderParser`] and
/// [`crate::StreamingVerifier`] instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataItem {
    header: Header,
    data: Vec<u8>,
}

impl DataItem {
    /// Parses a whole item (without verifying its signature). Everything after the header is data.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let header = parse_header(bytes, DEFAULT_MAX_HEADER_BYTES)?;
        let data = bytes[header.data_offset() as usize..].to_vec();
        Ok(DataItem { header, data })
    }

    /// Builds and signs an item.
    pub fn sign(
        key: &SigningKey,
        target: Option<[u8; 32]>,
        anchor: Option<[u8; 32]>,
        tags: Vec<Tag>,
        data: Vec<u8>,
    ) -> Result<Self, Error> {
        let mut header =
            Header::new_unsigned(key.signature_type(), key.owner(), target, anchor, tags)?;
        let mut hasher = DataItemHasher::new(&header);
        hasher.update(&data);
        header.set_signature(key.sign(&hasher.finalize())?)?;
        Ok(DataItem { header, data })
    }

    /// The serialized item, byte for byte as parsed or signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header.data_offset() as usize + self.data.len());
        self.header.write_to(&mut out);
        out.extend_from_slice(&self.data);
        out
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The data field.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The id.
    pub fn id(&self) -> ItemId {
        self.header.id()
    }

    /// The deep-hash the owner signed.
    pub fn message(&self) -> crate::DeepHash {
        let mut hasher = DataItemHasher::new(&self.header);
        hasher.update(&self.data);
        hasher.finalize()
    }

    /// Verifies the signature over the deep-hash.
    pub fn verify(&self) -> Result<(), Error> {
        verify_signature(&self.header, &self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_in_canonical_form() {
        let id: ItemId = "Ekaibo2KKp_NjU_R73cJQriRQ3CH5Nnejan4p8lhF3Y"
            .parse()
            .unwrap();
        assert_eq!(
            id.to_string(),
            "Ekaibo2KKp_NjU_R73cJQriRQ3CH5Nnejan4p8lhF3Y"
        );
        assert!(
            "Ekaibo2KKp_NjU_R73cJQriRQ3CH5Nnejan4p8lhF3Z"
                .parse::<ItemId>()
                .is_err()
        );
        assert!(
            "Ekaibo2KKp+NjU_R73cJQriRQ3CH5Nnejan4p8lhF3Y"
                .parse::<ItemId>()
                .is_err()
        );
        assert!("short".parse::<ItemId>().is_err());
    }
}
