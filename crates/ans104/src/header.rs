//! The DataItem header (fields 1–10: everything before the data) and the incremental parser that
//! reads it from a stream of chunks.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::tags::{self, Tag};
use crate::{Error, ItemId, SignatureType};

/// Default bound on the header size: a type-1 header with 128 maximal tags is about 526 KB
/// (`ans104.md` §1), so 640 KiB accepts every valid item.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 640 * 1024;

/// The smallest header bound a parser accepts: the fixed fields of the largest signature type.
pub const MIN_MAX_HEADER_BYTES: usize = 2 + (32 * 64 + 4) + (32 * 32 + 1) + 2 + 64 + 16;

/// The parsed header of a DataItem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    signature_type: SignatureType,
    signature: Vec<u8>,
    owner: Vec<u8>,
    target: Option<[u8; 32]>,
    anchor: Option<[u8; 32]>,
    tags: Vec<Tag>,
    tag_bytes: Vec<u8>,
}

impl Header {
    /// An unsigned header (the signature is all zeros) for `owner`, checking field lengths and tag
    /// limits. Sign it with [`Header::set_signature`] after hashing the data.
    pub fn new_unsigned(
        signature_type: SignatureType,
        owner: Vec<u8>,
        target: Option<[u8; 32]>,
        anchor: Option<[u8; 32]>,
        tags: Vec<Tag>,
    ) -> Result<Self, Error> {
        if owner.len() != signature_type.owner_len() {
            return Err(Error::InvalidOwner {
                offset: 2 + signature_type.signature_len() as u64,
                reason: "owner length does not match the signature type",
            });
        }
        let tag_bytes = tags::encode_tags(&tags).map_err(|reason| Error::Encode { reason })?;
        Ok(Header {
            signature_type,
            signature: vec![0; signature_type.signature_len()],
            owner,
            target,
            anchor,
            tags,
            tag_bytes,
        })
    }

    /// Replaces the signature; it must have the length of the signature type.
    pub fn set_signature(&mut self, signature: Vec<u8>) -> Result<(), Error> {
        if signature.len() != self.signature_type.signature_len() {
            return Err(Error::MalformedSignature {
                reason: "signature length does not match the signature type",
            });
        }
        self.signature = signature;
        Ok(())
    }

    /// Field 1.
    pub fn signature_type(&self) -> SignatureType {
        self.signature_type
    }
    /// Field 2.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
    /// Field 3: the owner's public key (for type 7, its address text).
    pub fn owner(&self) -> &[u8] {
        &self.owner
    }
    /// Field 5, if present.
    pub fn target(&self) -> Option<&[u8; 32]> {
        self.target.as_ref()
    }
    /// Field 7, if present.
    pub fn anchor(&self) -> Option<&[u8; 32]> {
        self.anchor.as_ref()
    }
    /// The decoded tags.
    pub fn tags(&self) -> &[Tag] {
        &self.tags
    }
    /// Field 10 as it is on the wire (the raw Avro bytes are what the deep-hash covers).
    pub fn tag_bytes(&self) -> &[u8] {
        &self.tag_bytes
    }

    /// The offset at which the data starts, i.e. the header's length in bytes.
    pub fn data_offset(&self) -> u64 {
        (2 + self.signature.len()
            + self.owner.len()
            + 1
            + if self.target.is_some() { 32 } else { 0 }
            + 1
            + if self.anchor.is_some() { 32 } else { 0 }
            + 16
            + self.tag_bytes.len()) as u64
    }

    /// The item id: base64url of SHA-256 of the signature.
    pub fn id(&self) -> ItemId {
        ItemId(Sha256::digest(&self.signature).into())
    }

    /// Whether the tag bytes stay within arbundles' 4096-byte verification limit.
    pub fn is_portable(&self) -> bool {
        self.tag_bytes.len() <= tags::PORTABLE_TAG_BYTES
    }

    /// The value of the first tag whose name equals `name` ignoring ASCII case.
    pub fn tag(&self, name: &str) -> Option<&[u8]> {
        self.tags
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|t| t.value.as_slice())
    }

    /// The `Content-Type` tag, when it is present and valid UTF-8.
    pub fn content_type(&self) -> Option<&str> {
        self.tag("Content-Type")
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The owner's address in its chain's usual form: Arweave address (base64url of SHA-256 of
    /// the key) for type 1, EIP-55 checksummed `0x…` for Ethereum keys, base58 for Ed25519 keys,
    /// the address text itself for type 7.
    pub fn owner_address(&self) -> String {
        match self.signature_type {
            SignatureType::Ethereum | SignatureType::Kyve => {
                if self.owner.len() == 65 && self.owner[0] == 0x04 {
                    alloy_primitives::Address::from_raw_public_key(&self.owner[1..])
                        .to_checksum(None)
                } else {
                    format!("0x{}", hex_lower(&self.owner))
                }
            }
            SignatureType::Ed25519 | SignatureType::Solana | SignatureType::InjectedAptos => {
                bs58::encode(&self.owner).into_string()
            }
            SignatureType::TypedEthereum => String::from_utf8_lossy(&self.owner).into_owned(),
            SignatureType::Arweave | SignatureType::MultiAptos => {
                URL_SAFE_NO_PAD.encode(Sha256::digest(&self.owner))
            }
        }
    }

    /// The header bytes exactly as they appear on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data_offset() as usize);
        self.write_to(&mut out);
        out
    }

    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.signature_type.as_u16().to_le_bytes());
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&self.owner);
        for field in [&self.target, &self.anchor] {
            match field {
                Some(bytes) => {
                    out.push(1);
                    out.extend_from_slice(bytes);
                }
                None => out.push(0),
            }
        }
        out.extend_from_slice(&(self.tags.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.tag_bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.tag_bytes);
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What the header scan needs next.
enum Scan {
    /// The buffer must reach `needed` bytes to complete `field`.
    Need { field: &'static str, needed: usize },
    /// The header is complete and `len` bytes long.
    Complete { len: usize },
}

/// Works out from the bytes seen so far how long the header is (or how much more is needed),
/// refusing early what is already known to be invalid.
fn scan(buf: &[u8], limit: usize) -> Result<Scan, Error> {
    let need = |field: &'static str, needed: usize| -> Result<Scan, Error> {
        if needed > limit {
            return Err(Error::HeaderTooLarge {
                size: needed as u64,
                limit: limit as u64,
            });
        }
        Ok(Scan::Need { field, needed })
    };
    if buf.len() < 2 {
        return need("signature type", 2);
    }
    let ty = SignatureType::from_u16(u16::from_le_bytes([buf[0], buf[1]]))?;
    let target_flag = 2 + ty.signature_len() + ty.owner_len();
    if buf.len() <= target_flag {
        return need("signature and owner", target_flag + 1);
    }
    let target = presence(buf[target_flag], "target", target_flag)?;
    let anchor_flag = target_flag + 1 + if target { 32 } else { 0 };
    if buf.len() <= anchor_flag {
        return need("target", anchor_flag + 1);
    }
    let anchor = presence(buf[anchor_flag], "anchor", anchor_flag)?;
    let counts = anchor_flag + 1 + if anchor { 32 } else { 0 };
    if buf.len() < counts + 16 {
        return need("tag count and tag bytes length", counts + 16);
    }
    let count = u64::from_le_bytes(buf[counts..counts + 8].try_into().expect("8 bytes"));
    if count > tags::MAX_TAGS as u64 {
        return Err(Error::InvalidTags {
            offset: counts as u64,
            reason: tags::TagError::TooMany { count },
        });
    }
    let tag_len = u64::from_le_bytes(buf[counts + 8..counts + 16].try_into().expect("8 bytes"));
    let end = (counts as u64 + 16).saturating_add(tag_len);
    if end > limit as u64 {
        return Err(Error::HeaderTooLarge {
            size: end,
            limit: limit as u64,
        });
    }
    let end = end as usize;
    if buf.len() < end {
        return need("tags", end);
    }
    Ok(Scan::Complete { len: end })
}

fn presence(value: u8, field: &'static str, offset: usize) -> Result<bool, Error> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(Error::InvalidPresence {
            field,
            offset: offset as u64,
            value,
        }),
    }
}

/// Builds the header from a buffer that holds exactly its `len` bytes.
fn build(buf: &[u8]) -> Result<Header, Error> {
    let ty = SignatureType::from_u16(u16::from_le_bytes([buf[0], buf[1]]))?;
    let mut pos = 2;
    let mut take = |n: usize| {
        let out = &buf[pos..pos + n];
        pos += n;
        out
    };
    let signature = take(ty.signature_len()).to_vec();
    let owner = take(ty.owner_len()).to_vec();
    let target = (take(1)[0] == 1).then(|| take(32).try_into().expect("32 bytes"));
    let anchor = (take(1)[0] == 1).then(|| take(32).try_into().expect("32 bytes"));
    let count = u64::from_le_bytes(take(8).try_into().expect("8 bytes"));
    let tag_len = u64::from_le_bytes(take(8).try_into().expect("8 bytes")) as usize;
    let tag_bytes = take(tag_len).to_vec();
    // `buf` holds exactly the header, so the tags are its last `tag_len` bytes.
    let tags_start = buf.len() - tag_len;
    let tags = tags::decode_tags(&tag_bytes, count).map_err(|reason| Error::InvalidTags {
        offset: (tags_start + reason.offset()) as u64,
        reason,
    })?;
    Ok(Header {
        signature_type: ty,
        signature,
        owner,
        target,
        anchor,
        tags,
        tag_bytes,
    })
}

/// Parses the header at the start of `bytes` (which may hold more: the data). Returns the header;
/// its [`Header::data_offset`] says where the data starts.
pub fn parse_header(bytes: &[u8], max_header_bytes: usize) -> Result<Header, Error> {
    match scan(bytes, max_header_bytes.max(MIN_MAX_HEADER_BYTES))? {
        Scan::Need { field, needed } => Err(Error::Truncated {
            field,
            needed: needed as u64,
            available: bytes.len() as u64,
        }),
        Scan::Complete { len } => build(&bytes[..len]),
    }
}

/// Reads a DataItem header from a stream of chunks.
///
/// It buffers only header bytes (never data), at most `max_header_bytes` of them, and yields the
/// header as soon as its last byte has arrived, together with how many bytes of that chunk
/// belonged to the header (the rest of the chunk is data).
#[derive(Debug, Clone)]
pub struct HeaderParser {
    buf: Vec<u8>,
    limit: usize,
    done: bool,
}

/// The header, once complete, and how many bytes of the last chunk it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHeader {
    /// The header.
    pub header: Header,
    /// Bytes of the chunk passed to the completing [`HeaderParser::push`] that belong to the header.
    pub consumed: usize,
}

impl Default for HeaderParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_HEADER_BYTES)
    }
}

impl HeaderParser {
    /// A parser that refuses headers over `max_header_bytes` (raised to
    /// [`MIN_MAX_HEADER_BYTES`] if smaller).
    pub fn new(max_header_bytes: usize) -> Self {
        HeaderParser {
            buf: Vec::new(),
            limit: max_header_bytes.max(MIN_MAX_HEADER_BYTES),
            done: false,
        }
    }

    /// Feeds the next chunk. `Ok(None)` means more bytes are needed; `Ok(Some(_))` gives the header
    /// once (later calls return `Ok(None)` without reading).
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Option<ParsedHeader>, Error> {
        if self.done {
            return Ok(None);
        }
        let mut consumed = 0;
        loop {
            match scan(&self.buf, self.limit)? {
                Scan::Complete { len } => {
                    debug_assert_eq!(len, self.buf.len());
                    self.done = true;
                    let header = build(&self.buf)?;
                    self.buf = Vec::new();
                    return Ok(Some(ParsedHeader { header, consumed }));
                }
                Scan::Need { needed, .. } => {
                    if chunk.is_empty() {
                        return Ok(None);
                    }
                    let take = (needed - self.buf.len()).min(chunk.len());
                    self.buf.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    consumed += take;
                }
            }
        }
    }

    /// Header bytes buffered so far.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The total number of bytes the header needs at least, as far as is known yet (for reading
    /// more of an object from upstream). `None` once the header is complete.
    pub fn needed(&self) -> Option<usize> {
        if self.done {
            return None;
        }
        match scan(&self.buf, self.limit) {
            Ok(Scan::Need { needed, .. }) => Some(needed),
            _ => None,
        }
    }

    /// Whether the header is complete.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The error to report when the stream ended before the header was complete.
    pub fn truncated(&self) -> Error {
        match scan(&self.buf, self.limit) {
            Ok(Scan::Need { field, needed }) => Error::Truncated {
                field,
                needed: needed as u64,
                available: self.buf.len() as u64,
            },
            Ok(Scan::Complete { .. }) => Error::Truncated {
                field: "data",
                needed: self.buf.len() as u64,
                available: self.buf.len() as u64,
            },
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        let mut h = Header::new_unsigned(
            SignatureType::Ed25519,
            vec![7; 32],
            Some([0xaa; 32]),
            None,
            vec![Tag::new("Content-Type", "text/plain"), Tag::new("k", "v")],
        )
        .unwrap();
        h.set_signature(vec![9; 64]).unwrap();
        h
    }

    #[test]
    fn whole_and_chunked_parse_agree() {
        let h = sample();
        let mut bytes = h.to_bytes();
        assert_eq!(bytes.len() as u64, h.data_offset());
        bytes.extend_from_slice(b"data!");
        assert_eq!(parse_header(&bytes, DEFAULT_MAX_HEADER_BYTES).unwrap(), h);
        for size in [1, 2, 3, 7, 64, 1000] {
            let mut p = HeaderParser::default();
            let mut data = Vec::new();
            let mut got = None;
            for chunk in bytes.chunks(size) {
                match p.push(chunk).unwrap() {
                    Some(parsed) => {
                        data.extend_from_slice(&chunk[parsed.consumed..]);
                        got = Some(parsed.header);
                    }
                    None if got.is_some() => data.extend_from_slice(chunk),
                    None => {}
                }
            }
            assert_eq!(got.as_ref(), Some(&h), "chunk size {size}");
            assert_eq!(data, b"data!");
        }
    }

    #[test]
    fn limit_is_enforced_before_buffering() {
        let mut h = sample();
        h.tags = (0..100)
            .map(|i| Tag::new(format!("name{i}"), vec![b'v'; 3000]))
            .collect();
        h.tag_bytes = tags::encode_tags(&h.tags).unwrap();
        let bytes = h.to_bytes();
        let mut p = HeaderParser::new(MIN_MAX_HEADER_BYTES);
        // The error comes as soon as the declared tag length is known.
        let err = p.push(&bytes[..200]).unwrap_err();
        assert!(matches!(err, Error::HeaderTooLarge { .. }), "{err}");
        assert!(p.buffered() <= 200);
    }

    #[test]
    fn truncation_and_bad_flags_name_the_offset() {
        let bytes = sample().to_bytes();
        let err = parse_header(&bytes[..50], DEFAULT_MAX_HEADER_BYTES).unwrap_err();
        assert_eq!(
            err,
            Error::Truncated {
                field: "signature and owner",
                needed: 99,
                available: 50
            }
        );
        let mut bad = bytes.clone();
        bad[98] = 2;
        assert_eq!(
            parse_header(&bad, DEFAULT_MAX_HEADER_BYTES).unwrap_err(),
            Error::InvalidPresence {
                field: "target",
                offset: 98,
                value: 2
            }
        );
        let mut p = HeaderParser::default();
        assert!(p.push(&bytes[..120]).unwrap().is_none());
        assert_eq!(p.needed(), Some(132));
        assert!(matches!(
            p.truncated(),
            Error::Truncated {
                needed: 132,
                available: 120,
                ..
            }
        ));
        let unknown = [9u8, 0, 0, 0];
        assert_eq!(
            parse_header(&unknown, DEFAULT_MAX_HEADER_BYTES).unwrap_err(),
            Error::UnsupportedSignatureType { sig_type: 9 }
        );
    }
}
