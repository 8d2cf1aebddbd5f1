//! Arweave's deep-hash (SHA-384) and the streaming hasher for a DataItem's signed message.
//!
//! The message a DataItem's owner signs is the deep-hash of the list
//! `["dataitem", "1", <signature type as decimal>, owner, target, anchor, tag bytes, data]`.
//! Because `data` is the last element and a blob's hash needs only its length up front, the
//! first seven elements are folded when the header is known and the data is hashed as it streams,
//! so an item of any size is verified in constant memory.

use sha2::{Digest, Sha384};

use crate::Header;

/// A 48-byte deep-hash.
pub type DeepHash = [u8; 48];

/// An element of a deep-hash input: a byte string or a nested list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeepHashItem<'a> {
    /// A byte string.
    Blob(&'a [u8]),
    /// A list of elements.
    List(Vec<DeepHashItem<'a>>),
}

fn tag_hash(kind: &str, len: u64) -> DeepHash {
    let mut h = Sha384::new();
    h.update(kind.as_bytes());
    h.update(len.to_string().as_bytes());
    h.finalize().into()
}

fn pair(a: &DeepHash, b: &DeepHash) -> DeepHash {
    let mut h = Sha384::new();
    h.update(a);
    h.update(b);
    h.finalize().into()
}

/// Deep-hash of one byte string: `SHA384(SHA384("blob" ‖ len) ‖ SHA384(bytes))`.
pub fn deep_hash_blob(bytes: &[u8]) -> DeepHash {
    pair(
        &tag_hash("blob", bytes.len() as u64),
        &Sha384::digest(bytes).into(),
    )
}

/// Deep-hash of an arbitrary element.
pub fn deep_hash(item: &DeepHashItem<'_>) -> DeepHash {
    match item {
        DeepHashItem::Blob(b) => deep_hash_blob(b),
        DeepHashItem::List(items) => {
            let mut acc = tag_hash("list", items.len() as u64);
            for item in items {
                acc = pair(&acc, &deep_hash(item));
            }
            acc
        }
    }
}

/// Computes a DataItem's signed message while its data streams by.
#[derive(Clone)]
pub struct DataItemHasher {
    acc: DeepHash,
    data: Sha384,
    data_len: u64,
}

impl std::fmt::Debug for DataItemHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataItemHasher")
            .field("data_len", &self.data_len)
            .finish_non_exhaustive()
    }
}

impl DataItemHasher {
    /// Folds the seven header elements of `header` (its signature is not part of the message).
    pub fn new(header: &Header) -> Self {
        let sig_type = header.signature_type().as_u16().to_string();
        let target = header.target().map(|t| &t[..]).unwrap_or(&[]);
        let anchor = header.anchor().map(|a| &a[..]).unwrap_or(&[]);
        let elements: [&[u8]; 7] = [
            b"dataitem",
            b"1",
            sig_type.as_bytes(),
            header.owner(),
            target,
            anchor,
            header.tag_bytes(),
        ];
        let mut acc = tag_hash("list", 8);
        for element in elements {
            acc = pair(&acc, &deep_hash_blob(element));
        }
        DataItemHasher {
            acc,
            data: Sha384::new(),
            data_len: 0,
        }
    }

    /// Hashes the next chunk of data.
    pub fn update(&mut self, data: &[u8]) {
        self.data.update(data);
        self.data_len += data.len() as u64;
    }

    /// Data bytes hashed so far.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The 48-byte message the owner signed.
    pub fn finalize(self) -> DeepHash {
        let data_hash = pair(
            &tag_hash("blob", self.data_len),
            &self.data.finalize().into(),
        );
        pair(&self.acc, &data_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn reference_vectors() {
        assert_eq!(
            hex(&deep_hash_blob(b"abc")),
            "71115a30152ebcffb6defbb643abc8ef76f01fe323f1d62340646085960f6e347cb2d8e9a46ddee655b3012c6131d4e0"
        );
        assert_eq!(
            hex(&deep_hash(&DeepHashItem::List(vec![]))),
            "a69e7d37fdc7f040a9ec16aae84de24fab4a653dac4de0bd247e36bab9fe45d9289c5a04a893c95285812f5cefc9707a"
        );
        let nested = DeepHashItem::List(vec![
            DeepHashItem::Blob(b"a"),
            DeepHashItem::List(vec![DeepHashItem::Blob(b"b"), DeepHashItem::Blob(b"")]),
        ]);
        assert_eq!(
            hex(&deep_hash(&nested)),
            "f6836f1d993d04b1a1c4add3023cb851638df615b6a2c194af97d855d79d1c0e111d21f17f7d06f01b5f790ca494cf51"
        );
    }
}
