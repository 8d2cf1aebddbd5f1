//! The redb store's own behaviours: state survives a restart, and a bad path fails cleanly.

use hb402_gate::store::{PaymentState, RedbStore, Store, StoreError};

mod store;

use store::{held, meta, payment};

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
