//! The redb store's own behaviours: state survives a restart, writes committed in groups are
//! answered once durable, and a bad path fails cleanly.

use hb402_gate::store::{PaymentState, RedbStore, Store, StoreError};

mod store;

use store::{channel, held, meta, payment};

/// Channel records are committed without `fsync` (a voucher read writes its channel twice) and
/// made durable shortly after, and at the latest when the store closes.
#[tokio::test]
async fn channel_records_are_seen_at_once_and_kept_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hb402.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        assert!(
            store
                .channel_swap("0xc1", None, Some(&channel(1, 5, 0)))
                .await
                .unwrap()
        );
        // A durable write after it leaves both durable.
        assert!(
            store
                .channel_swap("0xc2", None, Some(&channel(1, 7, 0)))
                .await
                .unwrap()
        );
        assert_eq!(
            store.channel_get("0xc1").await.unwrap(),
            Some(channel(1, 5, 0))
        );
        let id = store.ledger_append(&payment(1)).await.unwrap();
        assert!(id > 0);
        assert!(
            store
                .channel_swap("0xc2", Some(&channel(1, 7, 0)), Some(&channel(2, 9, 0)))
                .await
                .unwrap()
        );
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(
        store.channel_get("0xc1").await.unwrap(),
        Some(channel(1, 5, 0))
    );
    assert_eq!(
        store.channel_get("0xc2").await.unwrap(),
        Some(channel(2, 9, 0))
    );
}

#[tokio::test]
async fn state_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // Parent directories are created.
    let path = dir.path().join("state").join("nested").join("hb402.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        store
            .put_meta(&meta("offchain-dataitems", "abc", None))
            .await
            .unwrap();
        assert!(
            store
                .lock_swap("k", None, Some(&held("a", u64::MAX)))
                .await
                .unwrap()
        );
        let id = store.ledger_append(&payment(1)).await.unwrap();
        store
            .ledger_update(
                id,
                PaymentState::Settled {
                    transaction: "0x1".into(),
                },
            )
            .await
            .unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(
        store.get_meta("offchain-dataitems", "abc").await.unwrap(),
        Some(meta("offchain-dataitems", "abc", None))
    );
    assert_eq!(
        store.lock_get("k").await.unwrap(),
        Some(held("a", u64::MAX))
    );
    assert_eq!(
        store.ledger_list(0, 10).await.unwrap()[0].state.name(),
        "settled"
    );
}

#[tokio::test]
async fn open_fails_cleanly_on_an_unusable_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = RedbStore::open(&file.join("hb402.redb")).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
}

/// Writes are committed in groups: many at once each get their own answer (distinct ledger ids,
/// one lock winner per key), and every answered write is in the file after a reopen.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_are_answered_once_durable_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hb402.redb");
    {
        let store = std::sync::Arc::new(RedbStore::open(&path).unwrap());
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let store = std::sync::Arc::clone(&store);
                tokio::spawn(async move {
                    let id = store.ledger_append(&payment(i)).await.unwrap();
                    let key = format!("key{}", i % 20);
                    let won = store
                        .lock_swap(&key, None, Some(&held(&format!("o{i}"), u64::MAX)))
                        .await
                        .unwrap();
                    store
                        .put_meta(&meta("offchain-dataitems", &format!("item{i}"), None))
                        .await
                        .unwrap();
                    (id, won)
                })
            })
            .collect();
        let mut ids = Vec::new();
        let mut winners = 0;
        for task in tasks {
            let (id, won) = task.await.unwrap();
            ids.push(id);
            winners += usize::from(won);
        }
        ids.sort_unstable();
        assert_eq!(ids, (1..=200).collect::<Vec<u64>>());
        assert_eq!(winners, 20, "one winner per key");
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.ledger_list(0, 1000).await.unwrap().len(), 200);
    for i in 0..200 {
        let name = format!("item{i}");
        assert!(
            store
                .get_meta("offchain-dataitems", &name)
                .await
                .unwrap()
                .is_some()
        );
    }
    for k in 0..20 {
        assert!(store.lock_get(&format!("key{k}")).await.unwrap().is_some());
    }
}
