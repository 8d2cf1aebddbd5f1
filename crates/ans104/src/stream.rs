//! Verifying an item while it streams: the header is parsed as it arrives, the data is hashed
//! chunk by chunk, and the signature is checked at the end. Memory: the header plus one hasher.

use crate::header::{HeaderParser, ParsedHeader};
use crate::{DataItemHasher, Error, Header, ItemId, verify_signature};

/// Feeds an item's bytes in any chunking; [`StreamingVerifier::finish`] verifies it.
#[derive(Debug)]
pub struct StreamingVerifier {
    state: State,
    total: u64,
}

// One verifier exists per upload; keeping the hasher inline avoids an allocation per item.
#[expect(clippy::large_enum_variant)]
#[derive(Debug)]
enum State {
    Header(HeaderParser),
    Data {
        header: Box<Header>,
        hasher: DataItemHasher,
    },
}

/// A verified item's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedItem {
    /// The header.
    pub header: Header,
    /// The item id.
    pub id: ItemId,
    /// Size of the data field.
    pub data_size: u64,
    /// Size of the whole item.
    pub size: u64,
}

impl StreamingVerifier {
    /// A verifier refusing headers larger than `max_header_bytes`.
    pub fn new(max_header_bytes: usize) -> Self {
        StreamingVerifier {
            state: State::Header(HeaderParser::new(max_header_bytes)),
            total: 0,
        }
    }

    /// Feeds the next chunk. Returns the header the first time it is complete, so a caller can
    /// refuse an item early (unsupported type, policy) before the data arrives.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Option<&Header>, Error> {
        self.total += chunk.len() as u64;
        match &mut self.state {
            State::Header(parser) => {
                let Some(ParsedHeader { header, consumed }) = parser.push(chunk)? else {
                    return Ok(None);
                };
                if !header.signature_type().is_verifiable() {
                    return Err(Error::UnverifiableSignatureType {
                        sig_type: header.signature_type().as_u16(),
                        name: header.signature_type().name(),
                    });
                }
                let mut hasher = DataItemHasher::new(&header);
                hasher.update(&chunk[consumed..]);
                self.state = State::Data {
                    header: Box::new(header),
                    hasher,
                };
                match &self.state {
                    State::Data { header, .. } => Ok(Some(header)),
                    State::Header(_) => unreachable!("state was just set"),
                }
            }
            State::Data { hasher, .. } => {
                hasher.update(chunk);
                Ok(None)
            }
        }
    }

    /// The header, once complete.
    pub fn header(&self) -> Option<&Header> {
        match &self.state {
            State::Data { header, .. } => Some(header),
            State::Header(_) => None,
        }
    }

    /// Bytes fed so far.
    pub fn bytes_seen(&self) -> u64 {
        self.total
    }

    /// Ends the stream: refuses a truncated item and verifies the signature.
    pub fn finish(self) -> Result<VerifiedItem, Error> {
        match self.state {
            State::Header(parser) => Err(parser.truncated()),
            State::Data { header, hasher } => {
                let data_size = hasher.data_len();
                let message = hasher.finalize();
                verify_signature(&header, &message)?;
                Ok(VerifiedItem {
                    id: header.id(),
                    header: *header,
                    data_size,
                    size: self.total,
                })
            }
        }
    }
}
