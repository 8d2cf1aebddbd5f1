//! Payers (and clients) that keep failing are refused without asking the facilitator.
//!
//! A payment that passes hb402's local checks costs a facilitator (or RPC) round trip; one that
//! the facilitator then refuses (an unfunded key, a revoked authorization) or whose settlement
//! fails for the payer's fault costs that and nothing else. After `max_failures_per_payer` such
//! failures within the window, that payer's new payments are answered 429 until the window ends.
//! Throwaway keys each start with a fresh budget, so the connection's address has one too
//! (`max_failures_per_client`; IPv6 by /64). A failure of the facilitator itself (unreachable,
//! slow) is nobody's fault and counts against neither. Memory is bounded: the counters live in
//! caches of a fixed number of entries, each forgotten when its window ends.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use moka::sync::Cache;

/// The most payers (and clients) tracked at once.
const MAX_TRACKED: u64 = 100_000;

/// Failure counts per key within a window.
#[derive(Debug)]
struct Budget<K: std::hash::Hash + Eq + Send + Sync + 'static> {
    counts: Cache<K, Arc<AtomicU32>>,
    max: u32,
}

impl<K: std::hash::Hash + Eq + Send + Sync + Clone + 'static> Budget<K> {
    fn new(max: u32, window: Duration) -> Self {
        Budget {
            counts: Cache::builder()
                .max_capacity(MAX_TRACKED)
                .time_to_live(window)
                .build(),
            max,
        }
    }

    fn spent(&self, key: &K) -> bool {
        self.counts
            .get(key)
            .is_some_and(|count| count.load(Ordering::Relaxed) >= self.max)
    }

    fn failed(&self, key: K) {
        self.counts
            .get_with(key, || Arc::new(AtomicU32::new(0)))
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// The address a client's failures are counted under: IPv4 as is, IPv6 by its /64 (one host's
/// usual allocation).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}

/// Failure budgets per payer and per client address.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    payers: Budget<String>,
    /// `None` when `max_failures_per_client` is 0.
    clients: Option<Budget<IpAddr>>,
    window: Duration,
}

impl FailureLimiter {
    /// A limiter allowing `per_payer` failures per payer and `per_client` per client address
    /// (0: unlimited) per `window`.
    pub(crate) fn new(per_payer: u32, per_client: u32, window: Duration) -> Self {
        FailureLimiter {
            payers: Budget::new(per_payer, window),
            clients: (per_client > 0).then(|| Budget::new(per_client, window)),
            window,
        }
    }

    /// `Err(seconds to wait)` when `payer`, or the client it came from, has used up its
    /// failures.
    pub(crate) fn check(&self, payer: &str, client: Option<IpAddr>) -> Result<(), u64> {
        let client_spent = match (&self.clients, client) {
            (Some(clients), Some(ip)) => clients.spent(&client_key(ip)),
            _ => false,
        };
        if client_spent || self.payers.spent(&payer.to_ascii_lowercase()) {
            Err(self.window.as_secs())
        } else {
            Ok(())
        }
    }

    /// Counts a failure of `client`'s that no payer is known to be behind.
    pub(crate) fn failed_client(&self, client: Option<IpAddr>) {
        if let (Some(clients), Some(ip)) = (&self.clients, client) {
            clients.failed(client_key(ip));
        }
    }

    /// Counts a failure of `payer`, from `client`.
    pub(crate) fn failed(&self, payer: &str, client: Option<IpAddr>) {
        self.payers.failed(payer.to_ascii_lowercase());
        if let (Some(clients), Some(ip)) = (&self.clients, client) {
            clients.failed(client_key(ip));
        }
    }
}

/// Uploads in progress per client address (`limits.max_uploads_per_client`). Memory is bounded
/// by the uploads in progress: an address is forgotten when its last upload ends.
#[derive(Debug)]
pub(crate) struct ClientSlots {
    max: u32,
    held: std::sync::Mutex<std::collections::HashMap<IpAddr, u32>>,
}

/// One upload's slot; freed when dropped.
#[derive(Debug)]
pub(crate) struct ClientSlot {
    slots: Arc<ClientSlots>,
    key: IpAddr,
}

impl ClientSlots {
    /// At most `max` per client (0: no limit).
    pub(crate) fn new(max: u32) -> Arc<Self> {
        Arc::new(ClientSlots {
            max,
            held: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// A slot for `client`: `Ok(None)` when there is no limit (or no address), `Err(())` when
    /// the client holds all of its own.
    pub(crate) fn enter(
        self: &Arc<Self>,
        client: Option<IpAddr>,
    ) -> Result<Option<ClientSlot>, ()> {
        let (Some(ip), true) = (client, self.max > 0) else {
            return Ok(None);
        };
        let key = client_key(ip);
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = held.entry(key).or_insert(0);
        if *count >= self.max {
            return Err(());
        }
        *count += 1;
        Ok(Some(ClientSlot {
            slots: Arc::clone(self),
            key,
        }))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0xAbC0000000000000000000000000000000000001";
    const B: &str = "0x0000000000000000000000000000000000000002";

    #[test]
    fn a_payer_is_refused_after_its_failures_and_others_are_not() {
        let limiter = FailureLimiter::new(3, 0, Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(limiter.check(A, None), Ok(()));
            limiter.failed(A, None);
        }
        assert_eq!(limiter.check(A, None), Err(60));
        assert_eq!(limiter.check(&A.to_ascii_lowercase(), None), Err(60));
        assert_eq!(limiter.check(B, None), Ok(()));
    }

    #[test]
    fn a_client_of_many_throwaway_payers_is_refused_after_its_failures() {
        let limiter = FailureLimiter::new(3, 5, Duration::from_secs(60));
        let client: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let neighbour: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        for n in 0..5 {
            let payer = format!("0x{n:040x}");
            assert_eq!(limiter.check(&payer, Some(client)), Ok(()));
            limiter.failed(&payer, Some(client));
        }
        assert_eq!(limiter.check(B, Some(client)), Err(60));
        assert_eq!(limiter.check(B, Some(neighbour)), Err(60), "same /64");
        assert_eq!(limiter.check(B, Some(elsewhere)), Ok(()));
        assert_eq!(limiter.check(B, None), Ok(()));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), v4);
    }

    #[test]
    fn a_client_holds_at_most_its_upload_slots_and_gets_them_back() {
        let slots = ClientSlots::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = slots.enter(Some(a)).unwrap();
        let second = slots.enter(Some(a)).unwrap();
        assert!(first.is_some() && second.is_some());
        assert!(slots.enter(Some(a)).is_err());
        assert!(slots.enter(Some(b)).unwrap().is_some());
        drop(first);
        let again = slots.enter(Some(a)).unwrap();
        assert!(again.is_some());
        drop((second, again));
        assert!(slots.held.lock().unwrap().is_empty(), "forgotten");
        assert!(ClientSlots::new(0).enter(Some(a)).unwrap().is_none());
    }

    #[test]
    fn without_a_client_budget_only_payers_count() {
        let limiter = FailureLimiter::new(3, 0, Duration::from_secs(60));
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        for n in 0..50 {
            limiter.failed(&format!("0x{n:040x}"), Some(client));
        }
        assert_eq!(limiter.check(B, Some(client)), Ok(()));
    }
}
