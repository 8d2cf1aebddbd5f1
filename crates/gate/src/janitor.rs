//! State that would otherwise only grow, purged on a schedule (`store.purge_interval_seconds`):
//!
//! - replay locks whose authorization can no longer be used (past `validBefore`);
//! - ledger entries that ended without moving money (failed, released) and are older than
//!   `payments.ledger_retention_days` (settlements are kept: they are money);
//! - expired copies, `expiry.tombstone_days` after they expired (until then they answer
//!   `410 Gone`): hb402 deletes the node's object (its lifecycle may have done so already) and
//!   then forgets the copy. A copy whose object cannot be deleted yet is kept and tried again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::gate::Gate;
use crate::items::now_secs;
use crate::lease::CopyLease;
use crate::meta::ItemMeta;

/// Expired copies handled per round.
const ITEMS_PER_ROUND: usize = 256;

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Lapsed locks removed.
    pub locks: u64,
    /// Ledger entries removed.
    pub ledger: u64,
    /// Expired copies deleted and forgotten.
    pub items: u64,
}

/// The purge task.
#[derive(Debug)]
pub struct Janitor {
    gate: Arc<Gate>,
}

impl Janitor {
    /// A janitor over shared state.
    pub fn new(gate: Arc<Gate>) -> Self {
        Janitor { gate }
    }

    /// One round of purging; errors are logged and the next round tries again.
    pub async fn round(&self) -> Round {
        let gate = &self.gate;
        let now = now_secs();
        let mut round = Round::default();
        let retention = gate.config.payments.ledger_retention.as_secs();
        match gate.store.purge(now.saturating_sub(retention)).await {
            Ok(p) => {
                round.locks = p.locks;
                round.ledger = p.ledger;
            }
            Err(e) => tracing::warn!(error = %e, "purging locks and the ledger failed"),
        }
        let tombstone = u64::from(gate.config.expiry.tombstone_days) * 86_400;
        let expired = match gate
            .store
            .expired_items(now.saturating_sub(tombstone), ITEMS_PER_ROUND)
            .await
        {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, "listing expired items failed");
                return round;
            }
        };
        let before = now.saturating_sub(tombstone);
        for meta in expired {
            if self.purge_copy(&meta, before).await {
                round.items += 1;
            }
        }
        if round != Round::default() {
            tracing::info!(?round, "purged");
        }
        round
    }

    /// Deletes and forgets one expired copy under its lease, so that no upload of it runs
    /// meanwhile: a paid re-upload is never deleted under its payer. `true` if it was purged.
    async fn purge_copy(&self, listed: &ItemMeta, before: u64) -> bool {
        let gate = &self.gate;
        let lease = match CopyLease::take(&gate.store, &listed.bucket, &listed.id).await {
            Ok(Some(lease)) => lease,
            // An upload of it is in progress: the next round decides.
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(id = %listed.id, error = %e, "expired item not purged yet");
                return false;
            }
        };
        let purged = self.purge_leased(listed, before).await;
        lease.release().await;
        purged
    }

    async fn purge_leased(&self, listed: &ItemMeta, before: u64) -> bool {
        let gate = &self.gate;
        // Read again under the lease: an upload may have renewed it since it was listed.
        let meta = match gate.store.get_meta(&listed.bucket, &listed.id).await {
            Ok(Some(meta)) if meta.expires_at.is_some_and(|at| at <= before) => meta,
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!(id = %listed.id, error = %e, "expired item not purged yet");
                return false;
            }
        };
        if let Err(e) = gate.upstream.delete_object(&meta.bucket, &meta.key).await {
            tracing::warn!(id = %meta.id, error = %e, "expired object not deleted yet");
            return false;
        }
        match gate.items.forget(&meta.bucket, &meta.id).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(id = %meta.id, error = %e, "expired item not forgotten");
                false
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Janitor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let period: Duration = self.gate.config.store.purge_interval;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.round().await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
