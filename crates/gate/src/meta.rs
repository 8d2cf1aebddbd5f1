//! The metadata of a stored DataItem: what the policy and the range logic need, learnt once from
//! the item's header (at upload, or by reading the head of the object upstream) and then cached and
//! stored. Serialised as JSON so stores can persist it.

use serde::{Deserialize, Serialize};

/// RFC 9110 `tchar`.
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A content type as an item's tag gives it, if it is one RFC 9110 media type (`type/subtype`,
/// then `; name=value` parameters of plain tokens), lower-cased. Anything a browser might read
/// otherwise (a comma list, quotes, stray characters) is not kept: the item is then bytes.
pub fn media_type(tag: &str) -> Option<String> {
    let ct = tag.trim();
    let token = |s: &str| !s.is_empty() && s.bytes().all(tchar);
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or_default().trim();
    let media_ok = ct.len() <= 255
        && media
            .split_once('/')
            .is_some_and(|(t, sub)| token(t) && token(sub));
    let params_ok = parts.all(|p| {
        p.trim()
            .split_once('=')
            .is_some_and(|(n, v)| token(n.trim()) && token(v.trim()))
    });
    (media_ok && params_ok).then(|| ct.to_ascii_lowercase())
}

/// What hb402 knows about one stored DataItem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemMeta {
    /// The item id (base64url, 43 characters).
    pub id: String,
    /// The node bucket holding it.
    pub bucket: String,
    /// The full object key, e.g. `dataitems/<id>.ans104`.
    pub key: String,
    /// Size of the whole signed item in bytes.
    pub size: u64,
    /// Where the data field starts (the header's length).
    pub data_offset: u64,
    /// The item's `Content-Type` tag, if it is one well-formed media type ([`media_type`]).
    #[serde(default)]
    pub content_type: Option<String>,
    /// The owner's address in its chain's usual form.
    pub owner_address: String,
    /// The ANS-104 signature type (1 Arweave, 2 Ed25519, 3 Ethereum, 4 Solana, …).
    pub signature_type: u16,
    /// The tags, as text (invalid UTF-8 replaced).
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// When the item expires (unix seconds); reads at or after it answer 410.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Stored in the private bucket: readable only with a share link.
    #[serde(default)]
    pub private: bool,
    /// When hb402 stored it (unix seconds), if it went through hb402.
    #[serde(default)]
    pub uploaded_at: Option<u64>,
}

impl ItemMeta {
    /// About how many bytes this takes in memory (the metadata cache is bounded by the sum).
    pub fn weight(&self) -> usize {
        const FIXED: usize = 256;
        FIXED
            + self.id.len()
            + self.bucket.len()
            + self.key.len()
            + self.content_type.as_ref().map_or(0, String::len)
            + self.owner_address.len()
            + self
                .tags
                .iter()
                .map(|(n, v)| n.len() + v.len() + 48)
                .sum::<usize>()
    }

    /// The size of the data field (what `/<id>` serves and ranges refer to).
    pub fn data_size(&self) -> u64 {
        self.size.saturating_sub(self.data_offset)
    }

    /// Metadata from a parsed header and what the caller knows of where and how it is stored.
    pub fn from_header(
        header: &hb402_ans104::Header,
        bucket: impl Into<String>,
        key: impl Into<String>,
        size: u64,
        private: bool,
        expires_at: Option<u64>,
        uploaded_at: Option<u64>,
    ) -> ItemMeta {
        ItemMeta {
            id: header.id().to_string(),
            bucket: bucket.into(),
            key: key.into(),
            size,
            data_offset: header.data_offset(),
            content_type: header.content_type().and_then(media_type),
            owner_address: header.owner_address(),
            signature_type: header.signature_type().as_u16(),
            tags: header
                .tags()
                .iter()
                .map(|t| (t.name_str().into_owned(), t.value_str().into_owned()))
                .collect(),
            expires_at,
            private,
            uploaded_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb402_ans104::{DataItem, SigningKey, Tag};

    #[test]
    fn from_header_reads_the_item() {
        let key = SigningKey::ed25519_from_seed(&[7; 32]);
        let item = DataItem::sign(
            &key,
            None,
            None,
            vec![
                Tag::new("content-type", "text/plain"),
                Tag::new("Name", vec![0xff, b'a']),
            ],
            b"hello".to_vec(),
        )
        .unwrap();
        let header = item.header();
        let size = item.to_bytes().len() as u64;
        let meta = ItemMeta::from_header(
            header,
            "offchain-dataitems",
            "dataitems/x.ans104",
            size,
            false,
            Some(9),
            None,
        );
        assert_eq!(meta.id, item.id().to_string());
        assert_eq!(meta.content_type.as_deref(), Some("text/plain"));
        assert_eq!(meta.data_size(), 5);
        assert_eq!(meta.signature_type, 2);
        assert_eq!(meta.tags[1], ("Name".into(), "\u{fffd}a".into()));
        let json = serde_json::to_string(&meta).unwrap();
        assert_eq!(serde_json::from_str::<ItemMeta>(&json).unwrap(), meta);
    }
}
