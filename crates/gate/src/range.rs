//! `Range` requests (RFC 9110 §14) on a representation of known length: a single range, a suffix
//! range or an open range. Multiple ranges are answered with the whole representation (allowed by
//! §14.2: a server may ignore `Range`).

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReply {
    /// No (usable) range: 200 with the whole representation.
    Full,
    /// 206 with bytes `start..=end` (inclusive) of a representation of `total` bytes.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
        /// Representation length.
        total: u64,
    },
    /// 416: no byte of the range exists; `Content-Range: bytes */total`.
    Unsatisfiable {
        /// Representation length.
        total: u64,
    },
}

impl RangeReply {
    /// The `Content-Range` header value, if any.
    pub fn content_range(&self) -> Option<String> {
        match *self {
            RangeReply::Full => None,
            RangeReply::Partial { start, end, total } => {
                Some(format!("bytes {start}-{end}/{total}"))
            }
            RangeReply::Unsatisfiable { total } => Some(format!("bytes */{total}")),
        }
    }
}

/// Evaluates a `Range` header value against a representation of `total` bytes.
pub fn evaluate(header: Option<&str>, total: u64) -> RangeReply {
    let Some(spec) = header.map(str::trim).and_then(|h| h.strip_prefix("bytes=")) else {
        // Absent, or a unit other than bytes: ignored (§14.2).
        return RangeReply::Full;
    };
    if spec.contains(',') {
        return RangeReply::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeReply::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    match (first.is_empty(), last.is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => RangeReply::Unsatisfiable { total },
            Some(_) if total == 0 => RangeReply::Unsatisfiable { total },
            Some(n) => RangeReply::Partial {
                start: total.saturating_sub(n),
                end: total - 1,
                total,
            },
            None => RangeReply::Full,
        },
        // `bytes=A-` or `bytes=A-B`.
        (false, _) => {
            let Some(start) = number(first) else {
                return RangeReply::Full;
            };
            let end = if last.is_empty() {
                None
            } else {
                match number(last) {
                    Some(end) if end >= start => Some(end),
                    // Syntactically invalid: ignored.
                    _ => return RangeReply::Full,
                }
            };
            if start >= total {
                return RangeReply::Unsatisfiable { total };
            }
            RangeReply::Partial {
                start,
                end: end.map_or(total - 1, |e| e.min(total - 1)),
                total,
            }
        }
        (true, true) => RangeReply::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(start: u64, end: u64, total: u64) -> RangeReply {
        RangeReply::Partial { start, end, total }
    }

    #[test]
    fn rfc9110_cases() {
        assert_eq!(evaluate(None, 10), RangeReply::Full);
        assert_eq!(evaluate(Some("bytes=0-0"), 10), partial(0, 0, 10));
        assert_eq!(evaluate(Some("bytes=9-9"), 10), partial(9, 9, 10));
        assert_eq!(evaluate(Some("bytes=2-"), 10), partial(2, 9, 10));
        assert_eq!(evaluate(Some("bytes=2-100"), 10), partial(2, 9, 10));
        assert_eq!(evaluate(Some("bytes=-3"), 10), partial(7, 9, 10));
        assert_eq!(evaluate(Some("bytes=-30"), 10), partial(0, 9, 10));
        assert_eq!(
            evaluate(Some("bytes=10-"), 10),
            RangeReply::Unsatisfiable { total: 10 }
        );
        assert_eq!(
            evaluate(Some("bytes=10-20"), 10),
            RangeReply::Unsatisfiable { total: 10 }
        );
        assert_eq!(
            evaluate(Some("bytes=-0"), 10),
            RangeReply::Unsatisfiable { total: 10 }
        );
        assert_eq!(
            evaluate(Some("bytes=0-"), 0),
            RangeReply::Unsatisfiable { total: 0 }
        );
        assert_eq!(
            evaluate(Some("bytes=-5"), 0),
            RangeReply::Unsatisfiable { total: 0 }
        );
        // Ignored: invalid syntax, other units, several ranges.
        for ignored in [
            "bytes=5-2",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-",
            "bytes=1",
        ] {
            assert_eq!(evaluate(Some(ignored), 10), RangeReply::Full, "{ignored}");
        }
        assert_eq!(partial(7, 9, 10).content_range().unwrap(), "bytes 7-9/10");
        assert_eq!(
            RangeReply::Unsatisfiable { total: 10 }
                .content_range()
                .unwrap(),
            "bytes */10"
        );
    }
}
