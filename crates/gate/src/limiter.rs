//! Payers that keep failing are refused without asking the facilitator.
//!
//! A payment that passes hb402's local checks costs a facilitator (or RPC) round trip; one that
//! the facilitator then refuses (an unfunded key, a revoked authorization) or whose settlement
//! fails costs that and nothing else. After `max_failures_per_payer` such failures within the
//! window, that payer's payments are answered 429 until the window ends. Memory is bounded: the
//! counters live in a cache of a fixed number of payers, each forgotten when its window ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use moka::sync::Cache;

/// The most payers tracked at once.
const MAX_TRACKED: u64 = 100_000;

/// Failure counts per payer.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    counts: Cache<String, Arc<AtomicU32>>,
    max: u32,
    window: Duration,
}

impl FailureLimiter {
    /// A limiter allowing `max` failures per `window`.
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        FailureLimiter {
            counts: Cache::builder()
                .max_capacity(MAX_TRACKED)
                .time_to_live(window)
                .build(),
            max,
            window,
        }
    }

    /// `Err(seconds to wait)` when `payer` has used up its failures.
    pub(crate) fn check(&self, payer: &str) -> Result<(), u64> {
        match self.counts.get(&payer.to_ascii_lowercase()) {
            Some(count) if count.load(Ordering::Relaxed) >= self.max => Err(self.window.as_secs()),
            _ => Ok(()),
        }
    }

    /// Counts a failure of `payer`.
    pub(crate) fn failed(&self, payer: &str) {
        self.counts
            .get_with(payer.to_ascii_lowercase(), || Arc::new(AtomicU32::new(0)))
            .fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payer_is_refused_after_its_failures_and_others_are_not() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let a = "0xAbC0000000000000000000000000000000000001";
        for _ in 0..3 {
            assert_eq!(limiter.check(a), Ok(()));
            limiter.failed(a);
        }
        assert_eq!(limiter.check(a), Err(60));
        assert_eq!(limiter.check(&a.to_ascii_lowercase()), Err(60));
        assert_eq!(
            limiter.check("0x0000000000000000000000000000000000000002"),
            Ok(())
        );
    }
}
