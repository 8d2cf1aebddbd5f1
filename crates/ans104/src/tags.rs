//! Tags: the Avro array of `{name, value}` byte pairs in field 10, with the ANS-104 limits.
//!
//! Decoding accepts everything Avro allows (several blocks, negative block counts with a size),
//! requires the array to consume exactly the declared tag bytes and to match the declared count,
//! rejects empty names and accepts empty values (HyperBEAM writes them). Encoding refuses what the
//! standard forbids, empty values included, and writes one block like every known writer.

/// At most this many tags (ANS-104 §2.1).
pub const MAX_TAGS: usize = 128;
/// A tag name is at most this many bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// A tag value is at most this many bytes.
pub const MAX_VALUE_BYTES: usize = 3072;
/// arbundles' `DataItem.verify` refuses items whose tag bytes exceed this (`MAX_TAG_BYTES`): a
/// larger tag field is valid ANS-104 but not portable to arbundles-based verifiers.
pub const PORTABLE_TAG_BYTES: usize = 4096;

/// One tag. Names and values are bytes; most are UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag {
    /// The tag name.
    pub name: Vec<u8>,
    /// The tag value.
    pub value: Vec<u8>,
}

impl Tag {
    /// A tag from two strings.
    pub fn new(name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Tag {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The name as text (invalid UTF-8 replaced).
    pub fn name_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    /// The value as text (invalid UTF-8 replaced).
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// What is wrong with a tag set. `at` offsets are relative to the start of the tag bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TagError {
    /// More than [`MAX_TAGS`] tags are declared or present.
    #[error("{count} tags, at most {MAX_TAGS} are allowed")]
    TooMany {
        /// The count found.
        count: u64,
    },
    /// The Avro array holds a different number of tags than the item declares.
    #[error("{declared} tags declared but {found} encoded")]
    CountMismatch {
        /// The count in field 8.
        declared: u64,
        /// The count decoded from field 10.
        found: u64,
    },
    /// A tag name is empty.
    #[error("tag {index} has an empty name")]
    EmptyName {
        /// Index of the tag.
        index: usize,
        /// Relative offset of the name.
        at: usize,
    },
    /// A tag value is empty (refused when encoding only).
    #[error("tag {index} has an empty value")]
    EmptyValue {
        /// Index of the tag.
        index: usize,
    },
    /// A tag name is longer than [`MAX_NAME_BYTES`].
    #[error("tag {index} name is {len} bytes, at most {MAX_NAME_BYTES} are allowed")]
    NameTooLong {
        /// Index of the tag.
        index: usize,
        /// Its length.
        len: u64,
        /// Relative offset of the name.
        at: usize,
    },
    /// A tag value is longer than [`MAX_VALUE_BYTES`].
    #[error("tag {index} value is {len} bytes, at most {MAX_VALUE_BYTES} are allowed")]
    ValueTooLong {
        /// Index of the tag.
        index: usize,
        /// Its length.
        len: u64,
        /// Relative offset of the value.
        at: usize,
    },
    /// A length or block count is negative where it may not be.
    #[error("negative length {value}")]
    NegativeLength {
        /// The value decoded.
        value: i64,
        /// Relative offset.
        at: usize,
    },
    /// A variable-length integer is longer than 10 bytes or overflows 64 bits.
    #[error("malformed variable-length integer")]
    BadVarint {
        /// Relative offset.
        at: usize,
    },
    /// The Avro data ends before the array is complete.
    #[error("tag bytes end early")]
    Truncated {
        /// Relative offset where more bytes were needed.
        at: usize,
    },
    /// Bytes remain after the array's terminating block.
    #[error("{count} bytes remain after the tag array")]
    TrailingBytes {
        /// How many bytes.
        count: usize,
        /// Relative offset of the first one.
        at: usize,
    },
}

impl TagError {
    /// Offset of the problem relative to the start of the tag bytes (0 when it concerns the whole
    /// field).
    pub fn offset(&self) -> usize {
        match self {
            TagError::EmptyName { at, .. }
            | TagError::NameTooLong { at, .. }
            | TagError::ValueTooLong { at, .. }
            | TagError::NegativeLength { at, .. }
            | TagError::BadVarint { at }
            | TagError::Truncated { at }
            | TagError::TrailingBytes { at, .. } => *at,
            TagError::TooMany { .. }
            | TagError::CountMismatch { .. }
            | TagError::EmptyValue { .. } => 0,
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    /// An Avro `long`: zig-zag encoded, 7 bits per byte, least significant group first.
    fn long(&mut self) -> Result<i64, TagError> {
        let start = self.pos;
        let mut acc: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(TagError::Truncated { at: self.pos });
            };
            self.pos += 1;
            let group = u64::from(byte & 0x7f);
            // The tenth byte may only carry the single remaining bit.
            if i == 9 && group > 1 {
                return Err(TagError::BadVarint { at: start });
            }
            acc |= group << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(((acc >> 1) as i64) ^ -((acc & 1) as i64));
            }
        }
        Err(TagError::BadVarint { at: start })
    }

    fn bytes(
        &mut self,
        max: usize,
        too_long: impl FnOnce(u64, usize) -> TagError,
    ) -> Result<&[u8], TagError> {
        let at = self.pos;
        let len = self.long()?;
        if len < 0 {
            return Err(TagError::NegativeLength { value: len, at });
        }
        let len = len as u64;
        if len > max as u64 {
            return Err(too_long(len, at));
        }
        let len = len as usize;
        let end = self.pos + len;
        if end > self.bytes.len() {
            return Err(TagError::Truncated {
                at: self.bytes.len(),
            });
        }
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
}

/// Decodes field 10 given the count declared in field 8.
pub fn decode_tags(bytes: &[u8], declared: u64) -> Result<Vec<Tag>, TagError> {
    if declared > MAX_TAGS as u64 {
        return Err(TagError::TooMany { count: declared });
    }
    if bytes.is_empty() {
        // No tags: every writer emits an empty field (not even the terminator).
        return if declared == 0 {
            Ok(Vec::new())
        } else {
            Err(TagError::CountMismatch { declared, found: 0 })
        };
    }
    let mut r = Reader { bytes, pos: 0 };
    let mut tags = Vec::with_capacity(declared as usize);
    loop {
        let at = r.pos;
        let count = r.long()?;
        if count == 0 {
            break;
        }
        if count < 0 {
            // A negative count is followed by the block's size in bytes, which only serves to skip.
            let size = r.long()?;
            if size < 0 {
                return Err(TagError::NegativeLength { value: size, at });
            }
        }
        let n = count.unsigned_abs();
        let total = (tags.len() as u64).saturating_add(n);
        if total > MAX_TAGS as u64 {
            return Err(TagError::TooMany { count: total });
        }
        for _ in 0..n {
            let index = tags.len();
            let name_at = r.pos;
            let name = r
                .bytes(MAX_NAME_BYTES, |len, at| TagError::NameTooLong {
                    index,
                    len,
                    at,
                })?
                .to_vec();
            if name.is_empty() {
                return Err(TagError::EmptyName { index, at: name_at });
            }
            let value = r
                .bytes(MAX_VALUE_BYTES, |len, at| TagError::ValueTooLong {
                    index,
                    len,
                    at,
                })?
                .to_vec();
            tags.push(Tag { name, value });
        }
    }
    if r.pos != bytes.len() {
        return Err(TagError::TrailingBytes {
            count: bytes.len() - r.pos,
            at: r.pos,
        });
    }
    if tags.len() as u64 != declared {
        return Err(TagError::CountMismatch {
            declared,
            found: tags.len() as u64,
        });
    }
    Ok(tags)
}

/// Checks a tag set against the ANS-104 limits, as a writer must (empty values refused).
pub fn validate_tags(tags: &[Tag]) -> Result<(), TagError> {
    if tags.len() > MAX_TAGS {
        return Err(TagError::TooMany {
            count: tags.len() as u64,
        });
    }
    for (index, tag) in tags.iter().enumerate() {
        if tag.name.is_empty() {
            return Err(TagError::EmptyName { index, at: 0 });
        }
        if tag.value.is_empty() {
            return Err(TagError::EmptyValue { index });
        }
        if tag.name.len() > MAX_NAME_BYTES {
            return Err(TagError::NameTooLong {
                index,
                len: tag.name.len() as u64,
                at: 0,
            });
        }
        if tag.value.len() > MAX_VALUE_BYTES {
            return Err(TagError::ValueTooLong {
                index,
                len: tag.value.len() as u64,
                at: 0,
            });
        }
    }
    Ok(())
}

fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Encodes a tag set as field 10: empty for no tags, otherwise one block and the terminator.
pub fn encode_tags(tags: &[Tag]) -> Result<Vec<u8>, TagError> {
    validate_tags(tags)?;
    let mut out = Vec::new();
    if tags.is_empty() {
        return Ok(out);
    }
    write_long(&mut out, tags.len() as i64);
    for tag in tags {
        write_long(&mut out, tag.name.len() as i64);
        out.extend_from_slice(&tag.name);
        write_long(&mut out, tag.value.len() as i64);
        out.extend_from_slice(&tag.value);
    }
    out.push(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_bytes(n: i64) -> Vec<u8> {
        let mut v = Vec::new();
        write_long(&mut v, n);
        v
    }

    #[test]
    fn avro_long_examples_from_the_reference() {
        let cases: [(i64, &[u8]); 9] = [
            (0, &[0x00]),
            (1, &[0x02]),
            (2, &[0x04]),
            (12, &[0x18]),
            (63, &[0x7e]),
            (64, &[0x80, 0x01]),
            (127, &[0xfe, 0x01]),
            (1024, &[0x80, 0x10]),
            (3072, &[0x80, 0x30]),
        ];
        for (n, bytes) in cases {
            assert_eq!(long_bytes(n), bytes, "{n}");
            let mut r = Reader { bytes, pos: 0 };
            assert_eq!(r.long(), Ok(n));
        }
        for n in [-1i64, -64, i64::MIN, i64::MAX] {
            let b = long_bytes(n);
            assert_eq!(Reader { bytes: &b, pos: 0 }.long(), Ok(n));
        }
    }

    #[test]
    fn worked_example_encodes_byte_exact() {
        let tags = [
            Tag::new("Content-Type", "text/plain"),
            Tag::new("App-Name", "hb402-test"),
        ];
        let encoded = encode_tags(&tags).unwrap();
        let expected = hex_decode(
            "0418436f6e74656e742d5479706514746578742f706c61696e104170702d4e616d651468623430322d746573740\
             0",
        );
        assert_eq!(encoded, expected);
        assert_eq!(encoded.len(), 46);
        assert_eq!(decode_tags(&encoded, 2).unwrap(), tags);
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn empty_tag_set_is_an_empty_field() {
        assert!(encode_tags(&[]).unwrap().is_empty());
        assert_eq!(decode_tags(&[], 0), Ok(vec![]));
        assert_eq!(
            decode_tags(&[], 1),
            Err(TagError::CountMismatch {
                declared: 1,
                found: 0
            })
        );
    }

    #[test]
    fn several_blocks_and_negative_counts_are_read() {
        // Two blocks: a negative count (-1) with a size, then a positive count (1), then 0.
        let mut b = Vec::new();
        write_long(&mut b, -1);
        write_long(&mut b, 6);
        write_long(&mut b, 1);
        b.push(b'a');
        write_long(&mut b, 2);
        b.extend_from_slice(b"bc");
        write_long(&mut b, 1);
        write_long(&mut b, 1);
        b.push(b'd');
        write_long(&mut b, 1);
        b.push(b'e');
        b.push(0);
        assert_eq!(
            decode_tags(&b, 2).unwrap(),
            vec![Tag::new("a", "bc"), Tag::new("d", "e")]
        );
    }

    #[test]
    fn strict_errors() {
        let good = encode_tags(&[Tag::new("a", "b")]).unwrap();
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            decode_tags(&trailing, 1),
            Err(TagError::TrailingBytes {
                count: 1,
                at: good.len()
            })
        );
        assert!(matches!(
            decode_tags(&good[..good.len() - 1], 1),
            Err(TagError::Truncated { .. })
        ));
        assert_eq!(
            decode_tags(&good, 2),
            Err(TagError::CountMismatch {
                declared: 2,
                found: 1
            })
        );
        assert_eq!(
            decode_tags(&good, 129),
            Err(TagError::TooMany { count: 129 })
        );
        // Empty name.
        let mut b = Vec::new();
        write_long(&mut b, 1);
        write_long(&mut b, 0);
        write_long(&mut b, 1);
        b.push(b'x');
        b.push(0);
        assert_eq!(
            decode_tags(&b, 1),
            Err(TagError::EmptyName { index: 0, at: 1 })
        );
        // Empty value is accepted on read.
        let mut b = Vec::new();
        write_long(&mut b, 1);
        write_long(&mut b, 1);
        b.push(b'x');
        write_long(&mut b, 0);
        b.push(0);
        assert_eq!(decode_tags(&b, 1).unwrap(), vec![Tag::new("x", "")]);
        // ... but refused on write.
        assert_eq!(
            encode_tags(&[Tag::new("x", "")]),
            Err(TagError::EmptyValue { index: 0 })
        );
        // A name over 1024 bytes.
        let long = Tag::new(vec![b'n'; 1025], "v");
        assert!(matches!(
            encode_tags(&[long]),
            Err(TagError::NameTooLong { len: 1025, .. })
        ));
        let mut b = Vec::new();
        write_long(&mut b, 1);
        write_long(&mut b, 1025);
        b.extend(std::iter::repeat_n(b'n', 1025));
        write_long(&mut b, 1);
        b.push(b'v');
        b.push(0);
        assert!(matches!(
            decode_tags(&b, 1),
            Err(TagError::NameTooLong {
                len: 1025,
                at: 1,
                ..
            })
        ));
        // A value over 3072 bytes.
        assert!(matches!(
            encode_tags(&[Tag::new("n", vec![b'v'; 3073])]),
            Err(TagError::ValueTooLong { len: 3073, .. })
        ));
        // An overlong varint.
        let b = [0xffu8; 11];
        assert_eq!(decode_tags(&b, 1), Err(TagError::BadVarint { at: 0 }));
        // A huge count is refused before allocating.
        let mut b = Vec::new();
        write_long(&mut b, i64::MAX);
        assert!(matches!(decode_tags(&b, 1), Err(TagError::TooMany { .. })));
    }

    #[test]
    fn limits_are_inclusive() {
        let tags: Vec<Tag> = (0..MAX_TAGS)
            .map(|i| Tag::new(format!("n{i}"), "v"))
            .collect();
        let b = encode_tags(&tags).unwrap();
        assert_eq!(decode_tags(&b, 128).unwrap().len(), 128);
        let max = Tag::new(vec![b'n'; MAX_NAME_BYTES], vec![b'v'; MAX_VALUE_BYTES]);
        let b = encode_tags(std::slice::from_ref(&max)).unwrap();
        assert_eq!(decode_tags(&b, 1).unwrap(), vec![max]);
        let too_many: Vec<Tag> = (0..=MAX_TAGS)
            .map(|i| Tag::new(format!("n{i}"), "v"))
            .collect();
        assert_eq!(
            encode_tags(&too_many),
            Err(TagError::TooMany { count: 129 })
        );
    }
}
