//! Request paths in one canonical form, so that no spelling of a path reaches the node as
//! something hb402 did not decide on.
//!
//! A path is split at `/`, each segment percent-decoded once, and then: empty segments (`//`, a
//! trailing `/`) and `.` are dropped, `..` removes the segment before it. What cannot be decoded
//! to one unambiguous meaning is refused rather than guessed at: an escape that is not two hex
//! digits, bytes that are not UTF-8, control characters, a `/` or `\` inside a segment (encoded
//! or not), a `%` that survives decoding (double encoding), a `..` above the root. Routes are
//! classified on the canonical segments, and what hb402 forwards is built from them, never from
//! the client's bytes.
//!
//! Case is kept: the classifier compares its own route names without regard to case, and the
//! node's identifiers (ids, keys) are case-sensitive.

use std::fmt::Write as _;

/// The longest raw path accepted.
pub const MAX_PATH_BYTES: usize = 2 * 1024;

/// The most segments a path may have.
pub const MAX_SEGMENTS: usize = 64;

/// Why a path has no canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Longer than [`MAX_PATH_BYTES`] or with more than [`MAX_SEGMENTS`] segments.
    #[error("the path is too long")]
    TooLong,
    /// Not starting with `/`.
    #[error("the path must start with /")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("the path has a malformed percent escape")]
    BadEscape,
    /// Decoded bytes that are not UTF-8.
    #[error("the path is not UTF-8 once decoded")]
    NotUtf8,
    /// A control character (including NUL), raw or encoded.
    #[error("the path contains a control character")]
    ControlCharacter,
    /// `%2F`, `%5C` or a raw `\`: a separator hidden inside a segment.
    #[error("the path hides a separator inside a segment")]
    HiddenSeparator,
    /// A `%` left after decoding: the path was encoded twice.
    #[error("the path is percent-encoded twice")]
    DoubleEncoded,
    /// A `..` that would climb above the root.
    #[error("the path climbs above the root")]
    AboveRoot,
}

/// A normalised path: its decoded segments, none empty, `.` or `..`, kept as one text (`/`
/// and the segments joined by `/`; a decoded segment never contains `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    text: String,
    /// Every byte may go on the wire as it is (nothing to escape).
    plain: bool,
}

impl Default for CanonicalPath {
    fn default() -> Self {
        CanonicalPath {
            text: "/".to_owned(),
            plain: true,
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one raw segment.
fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    let text = String::from_utf8(out).map_err(|_| PathError::NotUtf8)?;
    for c in text.chars() {
        match c {
            '/' | '\\' => return Err(PathError::HiddenSeparator),
            '%' => return Err(PathError::DoubleEncoded),
            c if c.is_control() => return Err(PathError::ControlCharacter),
            _ => {}
        }
    }
    Ok(text)
}

/// The common case, without decoding: a path already in canonical form (only plain bytes, no
/// empty, `.` or `..` segment, no trailing `/`).
fn already_canonical(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    if bytes == b"/" {
        return true;
    }
    bytes.first() == Some(&b'/')
        && bytes.last() != Some(&b'/')
        && bytes.iter().all(|&b| b == b'/' || plain(b))
        && raw[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && bytes.iter().filter(|&&b| b == b'/').count() <= MAX_SEGMENTS
}

/// Normalises a raw request path (without its query).
pub fn normalize(raw: &str) -> Result<CanonicalPath, PathError> {
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if already_canonical(raw) {
        return Ok(CanonicalPath {
            text: raw.to_owned(),
            plain: true,
        });
    }
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut segments: Vec<String> = Vec::new();
    for raw_segment in rest.split('/') {
        let segment = decode_segment(raw_segment)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
            }
            _ => {
                if segments.len() == MAX_SEGMENTS {
                    return Err(PathError::TooLong);
                }
                segments.push(segment);
            }
        }
    }
    let path = CanonicalPath {
        text: format!("/{}", segments.join("/")),
        plain: segments.iter().all(|s| s.bytes().all(plain)),
    };
    // Bounded as it is forwarded (escaped), so that the canonical form normalises to itself.
    if path.wire_len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    Ok(path)
}

/// The bytes that may appear unescaped in a forwarded path segment (RFC 3986 `pchar` without
/// `%`), as a table: this is looked up for every byte of every request's path.
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        b += 1;
    }
    table
};

/// Whether a decoded byte may appear unescaped in a forwarded path segment.
fn plain(b: u8) -> bool {
    PLAIN[b as usize]
}

impl CanonicalPath {
    /// The decoded segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.text[1..].split('/').filter(|s| !s.is_empty())
    }

    /// The segments, for slice patterns.
    pub fn parts(&self) -> Vec<&str> {
        self.segments().collect()
    }

    /// The length of [`CanonicalPath::to_uri_path`], without building it.
    fn wire_len(&self) -> usize {
        if self.plain {
            return self.text.len();
        }
        self.text
            .bytes()
            .map(|b| if b == b'/' || plain(b) { 1 } else { 3 })
            .sum()
    }

    /// The path as it goes on the wire, when that is its text (nothing to escape).
    pub fn as_wire(&self) -> Option<&str> {
        self.plain.then_some(self.text.as_str())
    }

    /// The path to put on the wire: `/` and the segments, each escaped where it must be. It
    /// normalises to itself.
    pub fn to_uri_path(&self) -> String {
        if self.plain {
            return self.text.clone();
        }
        let mut out = String::with_capacity(self.wire_len());
        for &b in self.text.as_bytes() {
            if b == b'/' || plain(b) {
                out.push(b as char);
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
        out
    }

    /// Whether `prefix`'s segments start this path, byte for byte (a path the node might read
    /// differently, in another case, is not under an allowed prefix).
    pub fn starts_with(&self, prefix: &CanonicalPath) -> bool {
        prefix.text == "/"
            || self.text == prefix.text
            || (self.text.starts_with(&prefix.text)
                && self.text.as_bytes().get(prefix.text.len()) == Some(&b'/'))
    }
}

impl std::fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_uri_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canon(raw: &str) -> String {
        normalize(raw).unwrap().to_uri_path()
    }

    #[test]
    fn spellings_of_one_path_are_one_path() {
        let id = "Ekaibo2KKp_NjU_R73cJQriRQ3CH5Nnejan4p8lhF3Y";
        let want = format!("/~s3@1.0/offchain-dataitems/dataitems/{id}.ans104");
        for raw in [
            want.clone(),
            format!("/~s3@1.0/offchain-dataitems/dataitems/{id}.ans104/"),
            format!("//~s3@1.0//offchain-dataitems///dataitems/{id}.ans104"),
            format!("/%7Es3%401.0/offchain-dataitems/dataitems/{id}%2eans104"),
            format!("/~s3@1.0/x/../offchain-dataitems/./dataitems/{id}.ans104"),
            format!("/~s3@1.0/x/%2e%2e/offchain-dataitems/%2E/dataitems/{id}.ans104"),
        ] {
            assert_eq!(canon(&raw), want, "{raw}");
        }
        assert_eq!(canon("/"), "/");
        assert_eq!(canon("//"), "/");
        assert_eq!(canon("/a/.."), "/");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (raw, err) in [
            ("/a%2Fb", PathError::HiddenSeparator),
            ("/a%5cb", PathError::HiddenSeparator),
            ("/a\\b", PathError::HiddenSeparator),
            ("/a%2", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
            ("/a%00", PathError::ControlCharacter),
            ("/a%0d%0a", PathError::ControlCharacter),
            ("/a%ff", PathError::NotUtf8),
            ("/a%252F", PathError::DoubleEncoded),
            ("/..", PathError::AboveRoot),
            ("/a/../..", PathError::AboveRoot),
            ("a", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
        ] {
            assert_eq!(normalize(raw), Err(err), "{raw}");
        }
        assert_eq!(
            normalize(&format!("/{}", "a/".repeat(MAX_SEGMENTS + 1))),
            Err(PathError::TooLong)
        );
        assert_eq!(
            normalize(&format!("/{}", "a".repeat(MAX_PATH_BYTES))),
            Err(PathError::TooLong)
        );
        // Found by fuzzing: a path short as sent but longer once escaped for the wire had a
        // canonical form that did not normalise again.
        let wide = format!("/{}", "é".repeat(MAX_PATH_BYTES / 4));
        assert!(wide.len() <= MAX_PATH_BYTES);
        assert_eq!(normalize(&wide), Err(PathError::TooLong));
        let fits = format!("/{}", "é".repeat(MAX_PATH_BYTES / 7));
        let p = normalize(&fits).unwrap();
        assert_eq!(normalize(&p.to_uri_path()), Ok(p.clone()));
        assert_eq!(p.wire_len(), p.to_uri_path().len());
    }

    #[test]
    fn escaping_keeps_what_must_be_escaped() {
        assert_eq!(canon("/a%20b/%E2%82%AC"), "/a%20b/%E2%82%AC");
        assert_eq!(canon("/a b"), "/a%20b");
        assert_eq!(canon("/x?y"), "/x%3Fy");
        assert_eq!(canon("/a#b"), "/a%23b");
        assert_eq!(canon("/~meta@1.0/info"), "/~meta@1.0/info");
    }

    #[test]
    fn prefixes_match_whole_segments_exactly() {
        let p = normalize("/~meta@1.0/info/address").unwrap();
        assert!(p.starts_with(&normalize("/~meta@1.0/info").unwrap()));
        assert!(!p.starts_with(&normalize("/~meta@1.0/inf").unwrap()));
        assert!(p.starts_with(&normalize("/").unwrap()));
        assert!(
            !normalize("/~META@1.0/INFO/address")
                .unwrap()
                .starts_with(&normalize("/~meta@1.0/info").unwrap())
        );
    }

    proptest! {
        /// The canonical form is a fixed point, and every encoding of a canonical path (escaping
        /// any byte, doubling slashes, adding dot segments and a trailing slash) normalises to it.
        #[test]
        fn every_encoding_normalises_to_the_canonical_form(
            segments in proptest::collection::vec("[a-zA-Z0-9~@._ -]{1,8}|[^/\\\\%\\x00-\\x1f\\x7f]{1,4}", 0..6),
            escape in proptest::collection::vec(any::<bool>(), 64),
            noise in proptest::collection::vec(0u8..4, 8),
        ) {
            let segments: Vec<String> = segments
                .into_iter()
                .filter(|s| s != "." && s != ".." && !s.chars().any(char::is_control))
                .collect();
            let path = CanonicalPath {
                text: format!("/{}", segments.join("/")),
                plain: segments.iter().all(|s| s.bytes().all(plain)),
            };
            let wire = path.to_uri_path();
            prop_assert_eq!(normalize(&wire).unwrap(), path.clone());

            let mut spelled = String::new();
            for (i, segment) in segments.iter().enumerate() {
                match noise[i % noise.len()] {
                    0 => spelled.push('/'),
                    1 => spelled.push_str("//"),
                    2 => spelled.push_str("/./"),
                    _ => spelled.push_str("/zz/../"),
                }
                for (j, b) in segment.bytes().enumerate() {
                    if escape[(i * 7 + j) % escape.len()] || !plain(b) {
                        spelled.push_str(&format!("%{b:02x}"));
                    } else {
                        spelled.push(b as char);
                    }
                }
            }
            spelled.push('/');
            prop_assert_eq!(normalize(&spelled).unwrap(), path);
        }

        /// Whatever the input, normalising never panics, and what it accepts is a fixed point.
        #[test]
        fn normalising_is_idempotent(raw in "/[ -~]{0,64}") {
            if let Ok(p) = normalize(&raw) {
                prop_assert_eq!(normalize(&p.to_uri_path()).unwrap(), p);
            }
        }
    }
}
