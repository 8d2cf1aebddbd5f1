//! The lease on one copy of an item: while an upload (or the janitor) works on a copy, no other
//! may, so two never race over what the node holds (one's failed payment deleting the other's
//! paid object, a shorter lifetime overwriting a longer one, both being charged, an expired copy
//! purged under a paid re-upload).
//!
//! A lease is a lock record in the store (shared by every hb402 on it) that lapses
//! [`LEASE`] after its last renewal; its holder renews it every [`RENEW_EVERY`] while it works.
//! A crashed holder's lease is free again within [`LEASE`], whatever the upload's time limit.
//! Renewal and release are compare-and-swap on the exact record held: a lease that lapsed and
//! was taken by another is never renewed or released by its former holder.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::store::{LockRecord, LockState, Store, StoreError};

/// How long a lease outlives its last renewal.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a held lease is renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);

/// A held lease; it ends when released or dropped.
#[derive(Debug)]
pub struct CopyLease {
    stop: Option<oneshot::Sender<()>>,
    renewer: Option<JoinHandle<()>>,
}

fn lease_key(bucket: &str, id: &str) -> String {
    format!("upload:{}", crate::store::item_key(bucket, id))
}

fn record(owner: &str, now: u64) -> LockRecord {
    LockRecord {
        state: LockState::Held,
        owner: owner.to_owned(),
        until: now + LEASE.as_secs(),
        ledger_id: None,
        transaction: None,
    }
}

impl CopyLease {
    /// Takes the lease on a copy, or `None` if another holds it.
    pub async fn take(
        store: &Arc<dyn Store>,
        bucket: &str,
        id: &str,
    ) -> Result<Option<CopyLease>, StoreError> {
        use rand::RngCore as _;
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let owner: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let key = lease_key(bucket, id);
        let held = record(&owner, crate::items::now_secs());
        if !store.lock_swap(&key, None, Some(&held)).await? {
            return Ok(None);
        }
        let (stop, stopped) = oneshot::channel();
        let renewer = tokio::spawn(renew(Arc::clone(store), key, owner, held, stopped));
        Ok(Some(CopyLease {
            stop: Some(stop),
            renewer: Some(renewer),
        }))
    }

    /// Releases the lease and waits (bounded) until the store says so.
    pub async fn release(mut self) {
        drop(self.stop.take());
        if let Some(renewer) = self.renewer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), renewer).await;
        }
    }
}

impl Drop for CopyLease {
    fn drop(&mut self) {
        // Dropping the sender ends the renewer, which then releases the record.
        drop(self.stop.take());
    }
}

/// Renews the record until told to stop (or the holder is gone), then releases it.
async fn renew(
    store: Arc<dyn Store>,
    key: String,
    owner: String,
    mut held: LockRecord,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            () = tokio::time::sleep(RENEW_EVERY) => {
                let next = record(&owner, crate::items::now_secs());
                match store.lock_swap(&key, Some(&held), Some(&next)).await {
                    Ok(true) => held = next,
                    Ok(false) => {
                        tracing::warn!(%key, "lease lost to another holder");
                        return;
                    }
                    // Tried again at the next tick; the lease lapses if the store stays down.
                    Err(e) => tracing::warn!(%key, error = %e, "lease not renewed"),
                }
            }
        }
    }
    if let Err(e) = store.lock_swap(&key, Some(&held), None).await {
        tracing::warn!(%key, error = %e, "lease not released; it lapses");
    }
}
