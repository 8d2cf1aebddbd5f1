//! Input layout shared by the fuzz targets that feed a DataItem in chunks.
//!
//! ```text
//! byte 0         control: low 4 bits = k, the number of chunk-size bytes that follow;
//!                bit 7 = use the smallest header bound instead of the default
//! bytes 1..=k    chunk sizes, used in turn (0 feeds an empty chunk)
//! the rest       the DataItem bytes
//! ```
//!
//! With no chunk sizes (or only zeros) the item is fed as one chunk. Seeds are the committed
//! fixtures behind a control prefix (see `seed-corpus.sh`).

use hb402_ans104::{DEFAULT_MAX_HEADER_BYTES, MIN_MAX_HEADER_BYTES};

/// A decoded fuzz input.
#[derive(Debug, Clone, Copy)]
pub struct ChunkedInput<'a> {
    /// The header bound to give the parser.
    pub max_header_bytes: usize,
    /// Chunk sizes, used cyclically.
    pub sizes: &'a [u8],
    /// The item bytes.
    pub item: &'a [u8],
}

impl<'a> ChunkedInput<'a> {
    /// Splits a raw fuzz input into control, chunk sizes and item.
    pub fn new(data: &'a [u8]) -> Self {
        let Some((&control, rest)) = data.split_first() else {
            return ChunkedInput {
                max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
                sizes: &[],
                item: &[],
            };
        };
        let k = usize::from(control & 0x0f).min(rest.len());
        let (sizes, item) = rest.split_at(k);
        let max_header_bytes = if control & 0x80 != 0 {
            MIN_MAX_HEADER_BYTES
        } else {
            DEFAULT_MAX_HEADER_BYTES
        };
        ChunkedInput {
            max_header_bytes,
            sizes,
            item,
        }
    }

    /// The item cut into chunks of the given sizes; together they are exactly the item.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        let item = self.item;
        if self.sizes.iter().all(|&s| s == 0) {
            return vec![item];
        }
        let mut out = Vec::new();
        let mut pos = 0;
        for &size in self.sizes.iter().cycle() {
            if pos == item.len() {
                break;
            }
            let end = (pos + usize::from(size)).min(item.len());
            out.push(&item[pos..end]);
            pos = end;
        }
        out
    }
}
