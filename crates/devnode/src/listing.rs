//! ListObjects v1 over a sorted snapshot of a bucket (pure): prefix, delimiter roll-up into
//! common prefixes, marker, max-keys, truncation.

use crate::store::ObjectMeta;

/// The largest page S3 returns, and the default `max-keys`.
pub(crate) const MAX_KEYS: usize = 1000;

/// The v1 parameters the device passes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListParams {
    pub(crate) prefix: String,
    pub(crate) delimiter: String,
    pub(crate) marker: String,
    pub(crate) max_keys: usize,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listing {
    pub(crate) contents: Vec<ObjectMeta>,
    pub(crate) common_prefixes: Vec<String>,
    pub(crate) is_truncated: bool,
    /// The last key or common prefix of a truncated page: where the next page starts.
    pub(crate) next_marker: Option<String>,
}

/// Lists `objects` (sorted by key) the way S3 answers ListObjects v1.
pub(crate) fn list_v1(objects: &[ObjectMeta], params: &ListParams) -> Listing {
    let mut listing = Listing {
        contents: Vec::new(),
        common_prefixes: Vec::new(),
        is_truncated: false,
        next_marker: None,
    };
    if params.max_keys == 0 {
        return listing;
    }
    let mut count = 0;
    let mut last: Option<String> = None;
    for meta in objects {
        let key = meta.key.as_str();
        if !key.starts_with(&params.prefix) || key <= params.marker.as_str() {
            continue;
        }
        let rest = &key[params.prefix.len()..];
        let common_prefix = (!params.delimiter.is_empty())
            .then(|| rest.find(&params.delimiter))
            .flatten()
            .map(|at| format!("{}{}", params.prefix, &rest[..at + params.delimiter.len()]));
        if let Some(cp) = &common_prefix {
            // Keys of one common prefix are adjacent in sorted order; a marker inside the
            // group means the group was already returned.
            if listing.common_prefixes.last() == Some(cp) || cp.as_str() <= params.marker.as_str() {
                continue;
            }
        }
        if count == params.max_keys {
            listing.is_truncated = true;
            listing.next_marker = last;
            return listing;
        }
        count += 1;
        match common_prefix {
            Some(cp) => {
                last = Some(cp.clone());
                listing.common_prefixes.push(cp);
            }
            None => {
                last = Some(meta.key.clone());
                listing.contents.push(meta.clone());
            }
        }
    }
    listing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(keys: &[&str]) -> Vec<ObjectMeta> {
        keys.iter()
            .map(|k| ObjectMeta {
                key: (*k).to_owned(),
                size: 1,
                etag: "\"e\"".into(),
                last_modified_ms: 0,
                expires_at_ms: None,
            })
            .collect()
    }

    fn params(prefix: &str, delimiter: &str, marker: &str, max_keys: usize) -> ListParams {
        ListParams {
            prefix: prefix.into(),
            delimiter: delimiter.into(),
            marker: marker.into(),
            max_keys,
        }
    }

    fn keys(listing: &Listing) -> Vec<&str> {
        listing.contents.iter().map(|m| m.key.as_str()).collect()
    }

    const KEYS: &[&str] = &["a.txt", "dir/x", "dir/y", "dir/z/1", "other/1", "z"];

    #[test]
    fn prefix_and_delimiter_roll_up() {
        let all = objects(KEYS);
        let l = list_v1(&all, &params("", "/", "", 1000));
        assert_eq!(keys(&l), ["a.txt", "z"]);
        assert_eq!(l.common_prefixes, ["dir/", "other/"]);
        assert!(!l.is_truncated);
        let l = list_v1(&all, &params("dir/", "/", "", 1000));
        assert_eq!(keys(&l), ["dir/x", "dir/y"]);
        assert_eq!(l.common_prefixes, ["dir/z/"]);
    }

    #[test]
    fn pages_with_marker_and_max_keys() {
        let all = objects(KEYS);
        let l = list_v1(&all, &params("", "/", "", 2));
        assert_eq!(keys(&l), ["a.txt"]);
        assert_eq!(l.common_prefixes, ["dir/"]);
        assert!(l.is_truncated);
        assert_eq!(l.next_marker.as_deref(), Some("dir/"));
        let l = list_v1(&all, &params("", "/", "dir/", 2));
        assert_eq!(keys(&l), ["z"]);
        assert_eq!(l.common_prefixes, ["other/"]);
        assert!(!l.is_truncated);
        let l = list_v1(&all, &params("", "", "dir/y", 1000));
        assert_eq!(keys(&l), ["dir/z/1", "other/1", "z"]);
        let l = list_v1(&all, &params("", "", "", 0));
        assert!(l.contents.is_empty() && !l.is_truncated);
        let l = list_v1(&all, &params("", "", "", 6));
        assert_eq!(l.contents.len(), 6);
        assert!(!l.is_truncated);
    }
}
