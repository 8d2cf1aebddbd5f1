//! Query strings, parsed the way `dev_s3:parse_query_string/1` does: split at `&`, then at the
//! first `=`, percent-decode both sides (`+` is a space), later duplicates win.

/// A `%` not followed by two characters Erlang's `list_to_integer(_, 16)` accepts: the device
/// crashes on it (answered `500 S3 request failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadEscape;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `dev_s3:uri_decode/1`. A `%` with fewer than two bytes after it is kept literally; two bytes
/// that do not parse as a base-16 integer are an error. Erlang accepts a sign there (`%+f` is
/// 15, `%-1` is -1, which lands in the binary as 255).
pub(crate) fn uri_decode(input: &[u8]) -> Result<Vec<u8>, BadEscape> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' if i + 2 < input.len() => {
                let (h1, h2) = (input[i + 1], input[i + 2]);
                let value = match (h1, hex(h1), hex(h2)) {
                    (_, Some(a), Some(b)) => a * 16 + b,
                    (b'+', _, Some(b)) => b,
                    (b'-', _, Some(b)) => b.wrapping_neg(),
                    _ => return Err(BadEscape),
                };
                out.push(value);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// A parsed query: `(name, value)` pairs in order; [`Query::get`] returns the last one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Query(Vec<(Vec<u8>, Vec<u8>)>);

impl Query {
    /// `dev_s3:parse_query_string/1` over the raw query (without `?`).
    pub(crate) fn parse(raw: &str) -> Result<Query, BadEscape> {
        let mut pairs = Vec::new();
        if raw.is_empty() {
            return Ok(Query(pairs));
        }
        for pair in raw.as_bytes().split(|&b| b == b'&') {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &[][..]),
            };
            pairs.push((uri_decode(name)?, uri_decode(value)?));
        }
        Ok(Query(pairs))
    }

    /// The value of the last parameter named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_erlang() {
        assert_eq!(uri_decode(b"a%2Fb+c").unwrap(), b"a/b c");
        assert_eq!(uri_decode(b"%41%4a%4A").unwrap(), b"AJJ");
        assert_eq!(uri_decode(b"50%").unwrap(), b"50%");
        assert_eq!(uri_decode(b"5%4").unwrap(), b"5%4");
        assert_eq!(uri_decode(b"%+f").unwrap(), [15]);
        assert_eq!(uri_decode(b"%-1").unwrap(), [255]);
        assert_eq!(uri_decode(b"%zz"), Err(BadEscape));
        assert_eq!(uri_decode(b"%4g"), Err(BadEscape));
    }

    #[test]
    fn parses_pairs_last_wins() {
        let q = Query::parse("prefix=a%2F&delimiter=%2F&max-keys=2&prefix=b&flag&=x").unwrap();
        assert_eq!(q.get("prefix"), Some(&b"b"[..]));
        assert_eq!(q.get("delimiter"), Some(&b"/"[..]));
        assert_eq!(q.get("flag"), Some(&b""[..]));
        assert_eq!(q.get("marker"), None);
        assert_eq!(Query::parse("").unwrap(), Query::default());
        assert_eq!(Query::parse("a=%zz"), Err(BadEscape));
    }
}
