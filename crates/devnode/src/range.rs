//! `Range` as the S3 backend (MinIO) reads it: one `bytes=` range; syntax it does not
//! understand (another unit, several ranges, garbage) is ignored and the whole object is
//! returned; a well-formed range that cannot be satisfied is an `InvalidRange` error.

/// What a `Range` header selects from an object of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeOutcome {
    /// No usable range: the whole object.
    Full,
    /// Bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// A range outside the object (`InvalidRange`, 416 from S3).
    Unsatisfiable,
}

fn digits(text: &str) -> Option<Option<u64>> {
    if text.is_empty() {
        return Some(None);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // More digits than fit in u64 is still a syntactically valid, just very large, number.
    Some(Some(text.parse().unwrap_or(u64::MAX)))
}

/// Resolves a raw `Range` header value against an object of `size` bytes.
pub(crate) fn resolve(header: Option<&[u8]>, size: u64) -> RangeOutcome {
    let Some(spec) = header
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| h.trim().strip_prefix("bytes="))
    else {
        return RangeOutcome::Full;
    };
    if spec.contains(',') {
        return RangeOutcome::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeOutcome::Full;
    };
    let (Some(first), Some(last)) = (digits(first.trim()), digits(last.trim())) else {
        return RangeOutcome::Full;
    };
    match (first, last) {
        (None, None) => RangeOutcome::Full,
        (None, Some(suffix)) => {
            if suffix == 0 || size == 0 {
                RangeOutcome::Unsatisfiable
            } else {
                RangeOutcome::Partial {
                    start: size.saturating_sub(suffix),
                    end: size - 1,
                }
            }
        }
        (Some(start), last) => {
            if last.is_some_and(|end| end < start) || start >= size {
                RangeOutcome::Unsatisfiable
            } else {
                RangeOutcome::Partial {
                    start,
                    end: last.map_or(size - 1, |end| end.min(size - 1)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(header: &str, size: u64) -> RangeOutcome {
        resolve(Some(header.as_bytes()), size)
    }

    #[test]
    fn resolves_single_ranges() {
        assert_eq!(
            r("bytes=0-3", 10),
            RangeOutcome::Partial { start: 0, end: 3 }
        );
        assert_eq!(
            r("bytes=4-", 10),
            RangeOutcome::Partial { start: 4, end: 9 }
        );
        assert_eq!(
            r("bytes=-3", 10),
            RangeOutcome::Partial { start: 7, end: 9 }
        );
        assert_eq!(
            r("bytes=-30", 10),
            RangeOutcome::Partial { start: 0, end: 9 }
        );
        assert_eq!(
            r("bytes=5-100", 10),
            RangeOutcome::Partial { start: 5, end: 9 }
        );
    }

    #[test]
    fn rejects_unsatisfiable_and_ignores_garbage() {
        assert_eq!(r("bytes=10-", 10), RangeOutcome::Unsatisfiable);
        assert_eq!(r("bytes=5-2", 10), RangeOutcome::Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), RangeOutcome::Unsatisfiable);
        assert_eq!(r("bytes=0-0", 0), RangeOutcome::Unsatisfiable);
        assert_eq!(r("bytes=0-1,3-4", 10), RangeOutcome::Full);
        assert_eq!(r("items=0-1", 10), RangeOutcome::Full);
        assert_eq!(r("bytes=a-b", 10), RangeOutcome::Full);
        assert_eq!(r("bytes=-", 10), RangeOutcome::Full);
        assert_eq!(resolve(None, 10), RangeOutcome::Full);
    }
}
