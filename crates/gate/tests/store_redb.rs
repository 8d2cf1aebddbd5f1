//! The redb store: persistence, atomic replay locks, expiry with an injected clock, receipts and
//! the payment ledger.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hb402_gate::meta::ItemMeta;
use hb402_gate::store::{Clock, NewPayment, PaymentState, Receipt, RedbStore, Store, StoreError};

fn meta(id: &str) -> ItemMeta {
    ItemMeta {
        id: id.into(),
        bucket: "offchain-dataitems".into(),
        key: format!("dataitems/{id}.ans104"),
        size: 1234,
        data_offset: 1100,
        content_type: Some("text/plain".into()),
        owner_address: "0xabc".into(),
        signature_type: 3,
        tags: vec![("Content-Type".into(), "text/plain".into())],
        expires_at: Some(99),
        private: false,
        uploaded_at: Some(7),
    }
}

/// A clock the test moves by hand.
fn manual_clock(start: u64) -> (Clock, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(start));
    let read = Arc::clone(&now);
    (Arc::new(move || read.load(Ordering::SeqCst)), now)
}

fn payment(n: u32) -> NewPayment {
    NewPayment {
        resource: format!("https://gw.example/{n}"),
        network: "base-sepolia".into(),
        asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
        payer: "0x1111111111111111111111111111111111111111".into(),
        pay_to: "0x2222222222222222222222222222222222222222".into(),
        amount: "10000".into(),
        lock_key: format!("84532:usdc:payer:nonce{n}"),
    }
}

#[tokio::test]
async fn metadata_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // Parent directories are created.
    let path = dir.path().join("state").join("nested").join("hb402.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.get_meta("abc").await.unwrap(), None);
        store.put_meta(&meta("abc")).await.unwrap();
        let mut replaced = meta("def");
        store.put_meta(&replaced).await.unwrap();
        replaced.size = 5;
        store.put_meta(&replaced).await.unwrap();
        store.ping().await.unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.get_meta("abc").await.unwrap(), Some(meta("abc")));
    assert_eq!(store.get_meta("def").await.unwrap().unwrap().size, 5);
    assert_eq!(store.get_meta("xyz").await.unwrap(), None);
}

#[tokio::test]
async fn open_fails_cleanly_on_an_unusable_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = RedbStore::open(&file.join("hb402.redb")).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_try_lock_has_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                store.try_lock("84532:usdc:from:nonce", u64::MAX).await
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn locks_expire_by_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, now) = manual_clock(1_000);
    let store = RedbStore::open_with_clock(&dir.path().join("s.redb"), clock).unwrap();

    assert!(store.try_lock("k", 1_010).await.unwrap());
    assert!(!store.try_lock("k", 2_000).await.unwrap());
    now.store(1_009, Ordering::SeqCst);
    assert!(!store.try_lock("k", 2_000).await.unwrap());
    // At `until` the lock is over.
    now.store(1_010, Ordering::SeqCst);
    assert!(store.try_lock("k", 1_020).await.unwrap());
    // Other keys are independent.
    assert!(store.try_lock("other", 1_020).await.unwrap());
}

#[tokio::test]
async fn release_frees_a_lock_but_never_a_spent_mark() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, now) = manual_clock(100);
    let store = RedbStore::open_with_clock(&dir.path().join("s.redb"), clock).unwrap();

    assert!(store.try_lock("k", 200).await.unwrap());
    store.release("k").await.unwrap();
    assert!(store.try_lock("k", 200).await.unwrap());

    // Settled: spent until the authorization's validBefore.
    store.mark_spent("k", 500).await.unwrap();
    store.release("k").await.unwrap();
    assert!(!store.try_lock("k", 600).await.unwrap());
    // A later, shorter mark does not shorten it.
    store.mark_spent("k", 300).await.unwrap();
    now.store(400, Ordering::SeqCst);
    assert!(!store.try_lock("k", 600).await.unwrap());
    now.store(500, Ordering::SeqCst);
    assert!(store.try_lock("k", 600).await.unwrap());

    // Releasing an unknown key is fine.
    store.release("never-locked").await.unwrap();
}

#[tokio::test]
async fn receipts_expire_and_purge_removes_expired_state() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, now) = manual_clock(1_000);
    let store = RedbStore::open_with_clock(&dir.path().join("s.redb"), clock).unwrap();
    let receipt = Receipt {
        resource: "https://gw.example/abc".into(),
        payer: "0x1111111111111111111111111111111111111111".into(),
        network: "base-sepolia".into(),
        transaction: "0xfeed".into(),
        valid_until: 1_060,
    };
    store.put_receipt("r1", &receipt).await.unwrap();
    assert_eq!(
        store.get_receipt("r1").await.unwrap(),
        Some(receipt.clone())
    );
    assert_eq!(store.get_receipt("r2").await.unwrap(), None);

    assert!(store.try_lock("lock-short", 1_030).await.unwrap());
    store.mark_spent("spent-long", 5_000).await.unwrap();

    now.store(1_060, Ordering::SeqCst);
    assert_eq!(store.get_receipt("r1").await.unwrap(), None);
    assert_eq!(store.purge_expired().await.unwrap(), 2);
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    // The spent mark survived the purge.
    assert!(!store.try_lock("spent-long", 6_000).await.unwrap());
}

#[tokio::test]
async fn ledger_follows_the_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let (clock, now) = manual_clock(10);
    {
        let store = RedbStore::open_with_clock(&path, clock.clone()).unwrap();
        let a = store.ledger_append(&payment(1)).await.unwrap();
        let b = store.ledger_append(&payment(2)).await.unwrap();
        let c = store.ledger_append(&payment(3)).await.unwrap();
        assert_eq!((a, b, c), (1, 2, 3));

        now.store(20, Ordering::SeqCst);
        store
            .ledger_update(a, PaymentState::Verified)
            .await
            .unwrap();
        store
            .ledger_update(
                a,
                PaymentState::Settled {
                    transaction: "0xabc".into(),
                },
            )
            .await
            .unwrap();
        // Nothing is settled unverified, and final states are final.
        let err = store
            .ledger_update(
                b,
                PaymentState::Settled {
                    transaction: "0x1".into(),
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::InvalidTransition {
                    id: 2,
                    from: "reserved",
                    to: "settled"
                }
            ),
            "{err}"
        );
        assert!(
            store
                .ledger_update(a, PaymentState::Released)
                .await
                .is_err()
        );
        store
            .ledger_update(
                b,
                PaymentState::Failed {
                    reason: "verify refused".into(),
                },
            )
            .await
            .unwrap();
        store
            .ledger_update(c, PaymentState::Verified)
            .await
            .unwrap();
        store
            .ledger_update(c, PaymentState::Released)
            .await
            .unwrap();
        assert!(matches!(
            store.ledger_update(99, PaymentState::Verified).await,
            Err(StoreError::UnknownPayment(99))
        ));
    }
    // The ledger persists; list pages by id.
    let store = RedbStore::open_with_clock(&path, clock).unwrap();
    let all = store.ledger_list(0, 100).await.unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        all[0].state,
        PaymentState::Settled {
            transaction: "0xabc".into()
        }
    );
    assert_eq!((all[0].created_at, all[0].updated_at), (10, 20));
    assert_eq!(all[0].payment, payment(1));
    assert_eq!(all[1].state.name(), "failed");
    assert_eq!(all[2].state, PaymentState::Released);
    let page = store.ledger_list(1, 1).await.unwrap();
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), [2]);
    assert!(store.ledger_list(3, 10).await.unwrap().is_empty());
    assert!(store.ledger_list(u64::MAX, 10).await.unwrap().is_empty());
    // New ids continue after a reopen.
    assert_eq!(store.ledger_append(&payment(4)).await.unwrap(), 4);
}
