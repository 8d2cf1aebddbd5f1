//! The store contract, on redb and on Redis: copies per bucket, the expiry index, replay locks
//! as compare-and-swap records with owners, expiry by the store's clock, the ledger's state
//! machine, and purging.

mod store;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use hb402_gate::store::{ChannelRecord, LockRecord, LockState, PaymentState, Purged, StoreError};
use store::{channel, each, held, manual_clock, meta, payment};

#[tokio::test]
async fn each_bucket_holds_its_own_copy_and_expiring_copies_are_indexed() {
    each(|backend| async move {
        let (clock, _) = manual_clock(1_000);
        let store = backend.open(clock.clone()).await;
        let name = backend.name();
        assert_eq!(
            store.get_meta("offchain-dataitems", "a").await.unwrap(),
            None
        );
        store
            .put_meta(&meta("offchain-dataitems", "a", None))
            .await
            .unwrap();
        store
            .put_meta(&meta("hb402-private", "a", Some(1_500)))
            .await
            .unwrap();
        store
            .put_meta(&meta("offchain-dataitems", "b", Some(1_200)))
            .await
            .unwrap();
        store
            .put_meta(&meta("offchain-dataitems", "c", Some(9_000)))
            .await
            .unwrap();
        assert_eq!(
            store.get_meta("offchain-dataitems", "a").await.unwrap(),
            Some(meta("offchain-dataitems", "a", None)),
            "{name}"
        );
        assert!(
            store
                .get_meta("hb402-private", "a")
                .await
                .unwrap()
                .unwrap()
                .private
        );

        let ids = |v: Vec<hb402_gate::meta::ItemMeta>| {
            v.into_iter()
                .map(|m| format!("{}/{}", m.bucket, m.id))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(store.expired_items(999, 10).await.unwrap()),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(store.expired_items(1_500, 10).await.unwrap()),
            ["offchain-dataitems/b", "hb402-private/a"],
            "{name}"
        );
        assert_eq!(
            ids(store.expired_items(1_500, 1).await.unwrap()),
            ["offchain-dataitems/b"]
        );
        // A copy whose lifetime grows leaves its old place in the index.
        store
            .put_meta(&meta("offchain-dataitems", "b", None))
            .await
            .unwrap();
        assert_eq!(
            ids(store.expired_items(u64::MAX / 2, 10).await.unwrap()).len(),
            2,
            "{name}"
        );
        store.delete_meta("hb402-private", "a").await.unwrap();
        assert_eq!(store.get_meta("hb402-private", "a").await.unwrap(), None);
        assert_eq!(
            ids(store.expired_items(u64::MAX / 2, 10).await.unwrap()),
            ["offchain-dataitems/c"],
            "{name}"
        );
        // Another instance on the same state sees the same copies.
        let other = backend.open(clock).await;
        assert!(
            other
                .get_meta("offchain-dataitems", "c")
                .await
                .unwrap()
                .is_some(),
            "{name}"
        );
        other.ping().await.unwrap();
    })
    .await;
}

/// Forty requests, on two instances, race for one authorization's lock: exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_lock_takers_have_exactly_one_winner() {
    each(|backend| async move {
        let (clock, _) = manual_clock(1_000);
        let a = backend.open(clock.clone()).await;
        let b = backend.open(clock).await;
        for round in 0..3 {
            let key = format!("84532:usdc:from:nonce{round}");
            let barrier = Arc::new(tokio::sync::Barrier::new(40));
            let tasks: Vec<_> = (0..40)
                .map(|i| {
                    let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
                    let barrier = Arc::clone(&barrier);
                    let key = key.clone();
                    tokio::spawn(async move {
                        barrier.wait().await;
                        let mine = held(&format!("owner{i}"), 5_000);
                        store.lock_swap(&key, None, Some(&mine)).await.unwrap()
                    })
                })
                .collect();
            let mut winners = 0;
            for task in tasks {
                winners += usize::from(task.await.unwrap());
            }
            assert_eq!(winners, 1, "{} round {round}", backend.name());
        }
    })
    .await;
}

/// Regression: a lock was released by key alone, so a late release from one request could free
/// the lock a concurrent replay had just taken. A change now names the exact record it replaces.
#[tokio::test]
async fn a_lock_changes_only_from_the_exact_record_its_owner_holds() {
    each(|backend| async move {
        let name = backend.name();
        let (clock, now) = manual_clock(1_000);
        let store = backend.open(clock).await;
        let mine = held("mine", 1_300);
        assert!(store.lock_swap("k", None, Some(&mine)).await.unwrap());
        assert_eq!(store.lock_get("k").await.unwrap(), Some(mine.clone()));
        // Another request cannot take it, nor free it by naming another owner.
        assert!(
            !store
                .lock_swap("k", None, Some(&held("theirs", 1_300)))
                .await
                .unwrap()
        );
        assert!(
            !store
                .lock_swap("k", Some(&held("theirs", 1_300)), None)
                .await
                .unwrap()
        );
        // Settled and delivered by its owner.
        let delivered = LockRecord {
            state: LockState::Delivered,
            transaction: Some("0xfeed".into()),
            ledger_id: Some(7),
            ..mine.clone()
        };
        assert!(
            store
                .lock_swap("k", Some(&mine), Some(&delivered))
                .await
                .unwrap()
        );
        // The owner's stale view no longer matches: a second release does nothing.
        assert!(
            !store.lock_swap("k", Some(&mine), None).await.unwrap(),
            "{name}"
        );
        assert_eq!(store.lock_get("k").await.unwrap(), Some(delivered.clone()));
        // A pending record is taken over by exactly one retry.
        let pending = LockRecord {
            state: LockState::Pending,
            owner: String::new(),
            ..delivered.clone()
        };
        assert!(
            store
                .lock_swap("k", Some(&delivered), Some(&pending))
                .await
                .unwrap()
        );
        let retry = LockRecord {
            state: LockState::Held,
            owner: "retry".into(),
            ..pending.clone()
        };
        assert!(
            store
                .lock_swap("k", Some(&pending), Some(&retry))
                .await
                .unwrap()
        );
        assert!(
            !store
                .lock_swap("k", Some(&pending), Some(&retry))
                .await
                .unwrap()
        );
        // At `until` the record has lapsed: it reads as absent and can be taken afresh.
        now.store(1_299, Ordering::SeqCst);
        assert!(store.lock_get("k").await.unwrap().is_some(), "{name}");
        now.store(1_300, Ordering::SeqCst);
        assert_eq!(store.lock_get("k").await.unwrap(), None, "{name}");
        assert!(
            !store.lock_swap("k", Some(&retry), None).await.unwrap(),
            "{name}"
        );
        assert!(
            store
                .lock_swap("k", None, Some(&held("new", 2_000)))
                .await
                .unwrap()
        );
        // Deleting needs the exact record too.
        assert!(
            store
                .lock_swap("k", Some(&held("new", 2_000)), None)
                .await
                .unwrap()
        );
        assert_eq!(store.lock_get("k").await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn the_ledger_follows_its_state_machine_and_pages_by_id() {
    each(|backend| async move {
        let name = backend.name();
        let (clock, now) = manual_clock(10);
        let store = backend.open(clock.clone()).await;
        let a = store.ledger_append(&payment(1)).await.unwrap();
        let b = store.ledger_append(&payment(2)).await.unwrap();
        let c = store.ledger_append(&payment(3)).await.unwrap();
        assert_eq!((a, b, c), (1, 2, 3), "{name}");
        now.store(20, Ordering::SeqCst);
        store
            .ledger_update(
                a,
                PaymentState::Pending {
                    transaction: Some("0xabc".into()),
                },
            )
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
        // Final states are final.
        let err = store
            .ledger_update(a, PaymentState::Released)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::InvalidTransition {
                    id: 1,
                    from: "settled",
                    to: "released"
                }
            ),
            "{name}: {err}"
        );
        store
            .ledger_update(
                b,
                PaymentState::Failed {
                    reason: "settlement_failed".into(),
                },
            )
            .await
            .unwrap();
        store
            .ledger_update(c, PaymentState::Released)
            .await
            .unwrap();
        assert!(matches!(
            store.ledger_update(99, PaymentState::Released).await,
            Err(StoreError::UnknownPayment(99))
        ));
        let other = backend.open(clock).await;
        let all = other.ledger_list(0, 100).await.unwrap();
        assert_eq!(
            all.iter().map(|r| r.id).collect::<Vec<_>>(),
            [1, 2, 3],
            "{name}"
        );
        assert_eq!(
            all[0].state,
            PaymentState::Settled {
                transaction: "0xabc".into()
            }
        );
        assert_eq!((all[0].created_at, all[0].updated_at), (10, 20));
        assert_eq!(all[0].payment, payment(1));
        assert_eq!(all[1].state.name(), "failed");
        let page = other.ledger_list(1, 1).await.unwrap();
        assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), [2]);
        assert!(other.ledger_list(3, 10).await.unwrap().is_empty());
        assert!(other.ledger_list(0, 0).await.unwrap().is_empty());
        assert_eq!(other.ledger_append(&payment(4)).await.unwrap(), 4);
    })
    .await;
}

/// Regression: nothing was ever purged. Lapsed locks go; failed and released ledger entries go
/// once older than the retention; settlements, live locks and metadata stay.
#[tokio::test]
async fn purge_removes_lapsed_locks_and_stale_unpaid_ledger_entries_only() {
    each(|backend| async move {
        let name = backend.name();
        let (clock, now) = manual_clock(1_000);
        let store = backend.open(clock).await;
        assert!(
            store
                .lock_swap("short", None, Some(&held("a", 1_030)))
                .await
                .unwrap()
        );
        assert!(
            store
                .lock_swap("long", None, Some(&held("b", 9_000)))
                .await
                .unwrap()
        );
        store
            .put_meta(&meta("offchain-dataitems", "kept", None))
            .await
            .unwrap();
        let settled = store.ledger_append(&payment(1)).await.unwrap();
        let failed = store.ledger_append(&payment(2)).await.unwrap();
        let released = store.ledger_append(&payment(3)).await.unwrap();
        let open = store.ledger_append(&payment(4)).await.unwrap();
        store
            .ledger_update(
                settled,
                PaymentState::Settled {
                    transaction: "0x1".into(),
                },
            )
            .await
            .unwrap();
        store
            .ledger_update(failed, PaymentState::Failed { reason: "x".into() })
            .await
            .unwrap();
        store
            .ledger_update(released, PaymentState::Released)
            .await
            .unwrap();

        now.store(1_100, Ordering::SeqCst);
        // Entries changed at 1000: a retention boundary at 1000 keeps them.
        assert_eq!(
            store.purge(1_000).await.unwrap(),
            Purged {
                locks: 1,
                ledger: 0
            },
            "{name}"
        );
        assert_eq!(
            store.purge(1_001).await.unwrap(),
            Purged {
                locks: 0,
                ledger: 2
            },
            "{name}"
        );
        assert_eq!(store.purge(1_001).await.unwrap(), Purged::default());
        let left: Vec<u64> = store
            .ledger_list(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, [settled, open], "{name}");
        assert!(store.lock_get("long").await.unwrap().is_some());
        assert!(
            store
                .get_meta("offchain-dataitems", "kept")
                .await
                .unwrap()
                .is_some()
        );
    })
    .await;
}

#[tokio::test]
async fn learned_metadata_never_replaces_a_record() {
    each(|backend| async move {
        let (clock, _) = manual_clock(1_000);
        let store = backend.open(clock).await;
        let name = backend.name();
        let uploaded = meta("offchain-dataitems", "a", Some(5_000));
        store.put_meta(&uploaded).await.unwrap();
        let learned = meta("offchain-dataitems", "a", None);
        assert!(!store.put_meta_new(&learned).await.unwrap(), "{name}");
        assert_eq!(
            store.get_meta("offchain-dataitems", "a").await.unwrap(),
            Some(uploaded),
            "{name}"
        );
        // A copy with no record gets one, in the expiry index too.
        let fresh = meta("hb402-private", "b", Some(2_000));
        assert!(store.put_meta_new(&fresh).await.unwrap(), "{name}");
        assert_eq!(
            store.get_meta("hb402-private", "b").await.unwrap(),
            Some(fresh),
            "{name}"
        );
        let expired: Vec<_> = store
            .expired_items(3_000, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(expired, ["b"], "{name}");
    })
    .await;
}

/// Channel records change only from the exact record a request read (one request at a time
/// holds a channel, across a fleet), and the channels with charges not claimed yet are listed.
#[tokio::test]
async fn channel_records_change_only_from_the_exact_record_and_unclaimed_ones_are_listed() {
    use hb402_gate::store::ChannelHolder;
    each(|backend| async move {
        let (clock, _) = manual_clock(1_000);
        let store = backend.open(clock).await;
        let name = backend.name();
        assert_eq!(store.channel_get("0xaa").await.unwrap(), None, "{name}");
        let first = channel(1, 1_000, 0);
        assert!(
            store
                .channel_swap("0xaa", None, Some(&first))
                .await
                .unwrap()
        );
        assert!(
            !store
                .channel_swap("0xaa", None, Some(&first))
                .await
                .unwrap(),
            "{name}: created twice"
        );
        assert_eq!(
            store.channel_get("0xaa").await.unwrap(),
            Some(first.clone())
        );

        // Two requests race for the channel: one holds it.
        let held = |owner: &str| ChannelRecord {
            version: 2,
            holder: Some(ChannelHolder {
                owner: owner.into(),
                until: 1_030,
            }),
            ..first.clone()
        };
        assert!(
            store
                .channel_swap("0xaa", Some(&first), Some(&held("a")))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !store
                .channel_swap("0xaa", Some(&first), Some(&held("b")))
                .await
                .unwrap(),
            "{name}: a second holder"
        );
        // The holder charges and lets go.
        let charged = channel(3, 2_000, 0);
        assert!(
            store
                .channel_swap("0xaa", Some(&held("a")), Some(&charged))
                .await
                .unwrap()
        );

        let other = channel(1, 500, 0);
        assert!(
            store
                .channel_swap("0xbb", None, Some(&other))
                .await
                .unwrap()
        );
        let mut listed = store.channels_unclaimed("", 10).await.unwrap();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            listed,
            vec![
                ("0xaa".to_owned(), charged.clone()),
                ("0xbb".to_owned(), other.clone())
            ],
            "{name}"
        );
        // Paged in id order: after the first, the second; after the last, none.
        let first_page = store.channels_unclaimed("", 1).await.unwrap();
        assert_eq!(
            first_page,
            vec![("0xaa".to_owned(), charged.clone())],
            "{name}"
        );
        assert_eq!(
            store.channels_unclaimed("0xaa", 10).await.unwrap(),
            vec![("0xbb".to_owned(), other.clone())],
            "{name}"
        );
        assert_eq!(store.channels_unclaimed("0xbb", 10).await.unwrap(), vec![]);

        // Claimed in full: no longer listed, still kept; deleted: gone.
        let claimed = channel(4, 2_000, 2_000);
        assert!(
            store
                .channel_swap("0xaa", Some(&charged), Some(&claimed))
                .await
                .unwrap()
        );
        assert_eq!(
            store.channels_unclaimed("", 10).await.unwrap(),
            vec![("0xbb".to_owned(), other.clone())],
            "{name}"
        );
        assert_eq!(
            store.channel_get("0xaa").await.unwrap(),
            Some(claimed.clone())
        );
        assert!(
            store
                .channel_swap("0xbb", Some(&other), None)
                .await
                .unwrap()
        );
        assert_eq!(store.channel_get("0xbb").await.unwrap(), None);
        assert_eq!(store.channels_unclaimed("", 10).await.unwrap(), vec![]);
        // A stale reader (version 3) changes nothing.
        let stale = channel(4, 9_000, 0);
        assert!(
            !store
                .channel_swap("0xaa", Some(&charged), Some(&stale))
                .await
                .unwrap(),
            "{name}: a stale version"
        );
        assert_eq!(store.channel_get("0xaa").await.unwrap(), Some(claimed));
    })
    .await;
}

/// Records written behind (by the store's only writer, which keeps the latest in memory) land
/// as they are, several at once; a version the store already has or passed is never written
/// over, and the unclaimed listing follows.
#[tokio::test]
async fn channel_records_written_behind_never_go_back_a_version() {
    each(|backend| async move {
        let (clock, _) = manual_clock(1_000);
        let store = backend.open(clock).await;
        let name = backend.name();
        let (a, b) = (channel(5, 3_000, 0), channel(2, 700, 700));
        store
            .channels_put(&[("0xca".into(), a.clone()), ("0xcb".into(), b.clone())])
            .await
            .unwrap();
        assert_eq!(store.channel_get("0xca").await.unwrap(), Some(a.clone()));
        assert_eq!(store.channel_get("0xcb").await.unwrap(), Some(b.clone()));
        assert_eq!(
            store.channels_unclaimed("", 10).await.unwrap(),
            vec![("0xca".to_owned(), a.clone())],
            "{name}: only the channel with unclaimed charges"
        );
        // An older write arriving late changes nothing; a newer one replaces.
        let (older, newer) = (channel(4, 2_000, 0), channel(6, 3_000, 3_000));
        store.channels_put(&[("0xca".into(), older)]).await.unwrap();
        assert_eq!(store.channel_get("0xca").await.unwrap(), Some(a), "{name}");
        store
            .channels_put(&[("0xca".into(), newer.clone())])
            .await
            .unwrap();
        assert_eq!(store.channel_get("0xca").await.unwrap(), Some(newer));
        assert_eq!(
            store.channels_unclaimed("", 10).await.unwrap(),
            vec![],
            "{name}"
        );
    })
    .await;
}

/// Channels holding deposits not charged yet are listed by their last activity, least recent
/// first, those active before the given time only; a channel whose deposit is all charged (or
/// refunded) is not listed, and one active again moves back.
#[tokio::test]
async fn idle_channels_are_listed_by_their_last_activity() {
    each(|backend| async move {
        let (clock, _) = manual_clock(1_000);
        let store = backend.open(clock).await;
        let name = backend.name();
        let active_at = |version: u64, at: u64| {
            let mut record = channel(version, 2_000, 0);
            (record.last_request_at, record.synced_at) = (at, at - 50);
            record
        };
        let (old, older, recent) = (active_at(1, 500), active_at(1, 300), active_at(1, 900));
        let mut spent = active_at(1, 100);
        spent.balance = spent.charged;
        for (id, record) in [
            ("0xd1", &old),
            ("0xd2", &older),
            ("0xd3", &recent),
            ("0xd4", &spent),
        ] {
            assert!(store.channel_swap(id, None, Some(record)).await.unwrap());
        }
        let ids = |listed: Vec<(String, hb402_gate::store::ChannelRecord)>| {
            listed.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
        };
        assert_eq!(
            ids(store.channels_idle(600, 10).await.unwrap()),
            ["0xd2", "0xd1"],
            "{name}"
        );
        assert_eq!(ids(store.channels_idle(600, 1).await.unwrap()), ["0xd2"]);
        assert_eq!(
            ids(store.channels_idle(300, 10).await.unwrap()),
            Vec::<String>::new()
        );
        // Active again: no longer idle before 600. Refunded: never listed.
        let again = active_at(2, 950);
        assert!(
            store
                .channel_swap("0xd2", Some(&older), Some(&again))
                .await
                .unwrap()
        );
        let mut refunded = active_at(2, 500);
        refunded.balance = refunded.charged;
        assert!(
            store
                .channel_swap("0xd1", Some(&old), Some(&refunded))
                .await
                .unwrap()
        );
        assert_eq!(
            ids(store.channels_idle(1_000, 10).await.unwrap()),
            ["0xd3", "0xd2"],
            "{name}"
        );
        // A refund tried and failed puts the channel behind the others.
        let mut tried = recent.clone();
        (tried.version, tried.refund_tried_at) = (2, 990);
        assert!(
            store
                .channel_swap("0xd3", Some(&recent), Some(&tried))
                .await
                .unwrap()
        );
        assert_eq!(
            ids(store.channels_idle(1_000, 10).await.unwrap()),
            ["0xd2", "0xd3"],
            "{name}"
        );
    })
    .await;
}
