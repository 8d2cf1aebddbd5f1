//! The Redis store against a real `redis-server` (Debian package `redis-server`; a missing server
//! fails these tests): the redb store's behaviours, plus what a fleet needs — two connections
//! (two hb402 instances) racing for one replay lock, state shared between them, and failing
//! closed when Redis is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hb402_gate::meta::ItemMeta;
use hb402_gate::store::{
    Clock, NewPayment, PaymentState, Receipt, RedisOptions, RedisStore, Store, StoreError,
};
use hb402_testkit::RedisServer;

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

async fn connect(server: &RedisServer, clock: Clock) -> RedisStore {
    RedisStore::connect_with_clock(&server.url(), clock)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.logs()))
}

#[tokio::test]
async fn metadata_persists_across_reconnect() {
    let server = RedisServer::start().await;
    {
        let store = RedisStore::connect(&server.url()).await.unwrap();
        assert_eq!(store.url(), server.url());
        assert_eq!(store.get_meta("abc").await.unwrap(), None);
        store.put_meta(&meta("abc")).await.unwrap();
        let mut replaced = meta("def");
        store.put_meta(&replaced).await.unwrap();
        replaced.size = 5;
        store.put_meta(&replaced).await.unwrap();
        store.ping().await.unwrap();
    }
    let store = RedisStore::connect(&server.url()).await.unwrap();
    assert_eq!(store.get_meta("abc").await.unwrap(), Some(meta("abc")));
    assert_eq!(store.get_meta("def").await.unwrap().unwrap().size, 5);
    assert_eq!(store.get_meta("xyz").await.unwrap(), None);
}

#[tokio::test]
async fn connect_fails_cleanly_and_masks_the_password() {
    let mut server = RedisServer::start().await;
    let url = format!("redis://:hunter2@127.0.0.1:{}", server.port());
    server.kill();
    let started = Instant::now();
    let err = RedisStore::connect(&url).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    let message = err.to_string();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("redis://***@127.0.0.1"), "{message}");

    let err = RedisStore::connect("not a url").await.unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
}

/// Two instances (two connections) and ten requests on each race for one payment's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_try_lock_across_two_instances_has_exactly_one_winner() {
    let server = RedisServer::start().await;
    let a: Arc<dyn Store> = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    for round in 0..5 {
        let key = format!("84532:usdc:from:nonce{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(20));
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
                let barrier = Arc::clone(&barrier);
                let key = key.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.try_lock(&key, u64::MAX).await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            if task.await.unwrap().unwrap() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

/// A payment settled through one instance is refused on the other, and its receipt is seen there.
#[tokio::test]
async fn instances_share_spent_marks_receipts_and_the_ledger() {
    let server = RedisServer::start().await;
    let (clock, _) = manual_clock(1_000);
    let a = connect(&server, clock.clone()).await;
    let b = connect(&server, clock).await;

    assert!(a.try_lock("k", 1_300).await.unwrap());
    assert!(!b.try_lock("k", 1_300).await.unwrap());
    a.mark_spent("k", 1_300).await.unwrap();
    b.release("k").await.unwrap();
    assert!(!b.try_lock("k", 1_300).await.unwrap());

    let receipt = Receipt {
        resource: "https://gw.example/abc".into(),
        payer: "0x1111111111111111111111111111111111111111".into(),
        network: "eip155:84532".into(),
        transaction: "0xfeed".into(),
        valid_until: 1_600,
    };
    a.put_receipt("r", &receipt).await.unwrap();
    assert_eq!(b.get_receipt("r").await.unwrap(), Some(receipt));

    let first = a.ledger_append(&payment(1)).await.unwrap();
    let second = b.ledger_append(&payment(2)).await.unwrap();
    assert_eq!((first, second), (1, 2));
    b.ledger_update(first, PaymentState::Verified)
        .await
        .unwrap();
    let listed = a.ledger_list(0, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].state, PaymentState::Verified);
}

#[tokio::test]
async fn locks_expire_by_the_injected_clock() {
    let server = RedisServer::start().await;
    let (clock, now) = manual_clock(1_000);
    let store = connect(&server, clock).await;

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
    let server = RedisServer::start().await;
    let (clock, now) = manual_clock(100);
    let store = connect(&server, clock).await;

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

/// Lock times compare exactly as integers, even where Lua's doubles would not.
#[tokio::test]
async fn huge_lock_times_compare_exactly() {
    let server = RedisServer::start().await;
    let (clock, now) = manual_clock(u64::MAX - 2);
    let store = connect(&server, clock).await;
    assert!(store.try_lock("k", u64::MAX - 1).await.unwrap());
    assert!(!store.try_lock("k", u64::MAX).await.unwrap());
    now.store(u64::MAX - 1, Ordering::SeqCst);
    assert!(store.try_lock("k", u64::MAX).await.unwrap());
    store.mark_spent("k", u64::MAX).await.unwrap();
    store.mark_spent("k", u64::MAX - 1).await.unwrap();
    assert!(!store.try_lock("k", u64::MAX).await.unwrap());
}

#[tokio::test]
async fn receipts_expire_and_purge_removes_expired_state() {
    let server = RedisServer::start().await;
    let (clock, now) = manual_clock(1_000);
    let store = connect(&server, clock).await;
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
    store.put_meta(&meta("kept")).await.unwrap();

    now.store(1_060, Ordering::SeqCst);
    assert_eq!(store.get_receipt("r1").await.unwrap(), None);
    assert_eq!(store.purge_expired().await.unwrap(), 2);
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    // The spent mark and the metadata survived the purge.
    assert!(!store.try_lock("spent-long", 6_000).await.unwrap());
    assert!(store.get_meta("kept").await.unwrap().is_some());
}

/// Redis collects lapsed entries by itself (with a grace period), independently of purges.
#[tokio::test]
async fn redis_expires_lapsed_entries_itself() {
    let server = RedisServer::start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    assert!(store.try_lock("k", now + 5).await.unwrap());
    let mut raw = RawRedis::connect(server.port()).await;
    let ttl: i64 = raw.command(&["TTL", "hb402:lock:k"]).await.parse().unwrap();
    let grace = hb402_gate::store::redis::EXPIRY_GRACE_SECONDS as i64;
    assert!((grace..=grace + 5).contains(&ttl), "TTL {ttl}");
    // A lock taken until the end of time is never collected by Redis.
    assert!(store.try_lock("forever", u64::MAX).await.unwrap());
    assert_eq!(raw.command(&["TTL", "hb402:lock:forever"]).await, "-1");
}

#[tokio::test]
async fn key_prefixes_separate_deployments() {
    let server = RedisServer::start().await;
    let options = |prefix: &str| RedisOptions {
        key_prefix: prefix.to_owned(),
        ..RedisOptions::default()
    };
    let a = RedisStore::connect_with(&server.url(), options("h*:"))
        .await
        .unwrap();
    let b = RedisStore::connect_with(&server.url(), options("hb402:"))
        .await
        .unwrap();
    assert!(a.try_lock("k", u64::MAX).await.unwrap());
    assert!(b.try_lock("k", u64::MAX).await.unwrap());
    assert_eq!(a.ledger_append(&payment(1)).await.unwrap(), 1);
    assert_eq!(b.ledger_append(&payment(1)).await.unwrap(), 1);
    // A glob character in one prefix does not let its purge reach the other's keys.
    let (clock, _) = manual_clock(u64::MAX);
    let a_late = RedisStore::connect_with(
        &server.url(),
        RedisOptions {
            clock,
            ..options("h*:")
        },
    )
    .await
    .unwrap();
    assert_eq!(a_late.purge_expired().await.unwrap(), 1);
    assert!(!b.try_lock("k", u64::MAX).await.unwrap());
}

#[tokio::test]
async fn ledger_follows_the_state_machine() {
    let server = RedisServer::start().await;
    let (clock, now) = manual_clock(10);
    {
        let store = connect(&server, clock.clone()).await;
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
    // The ledger persists across connections; list pages by id.
    let store = connect(&server, clock).await;
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
    assert!(store.ledger_list(0, 0).await.unwrap().is_empty());
    assert!(store.ledger_list(u64::MAX, 10).await.unwrap().is_empty());
    // New ids continue after a reconnect.
    assert_eq!(store.ledger_append(&payment(4)).await.unwrap(), 4);
}

/// Concurrent updates of one entry from two instances: the state machine holds, exactly one
/// final state wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ledger_updates_keep_the_state_machine() {
    let server = RedisServer::start().await;
    let a: Arc<dyn Store> = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let id = a.ledger_append(&payment(1)).await.unwrap();
    a.ledger_update(id, PaymentState::Verified).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(10));
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                let state = if i == 0 {
                    PaymentState::Settled {
                        transaction: "0xabc".into(),
                    }
                } else {
                    PaymentState::Released
                };
                store.ledger_update(id, state).await
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => applied += 1,
            Err(StoreError::InvalidTransition { .. }) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(applied, 1);
    assert!(a.ledger_list(0, 1).await.unwrap()[0].state.is_final());
}

/// With Redis gone every operation fails promptly (the paywall then refuses: fail closed); once
/// a server is back on the address, the same store reconnects by itself.
#[tokio::test]
async fn fails_closed_while_redis_is_down_and_reconnects() {
    let mut server = RedisServer::start().await;
    let store = RedisStore::connect(&server.url()).await.unwrap();
    assert!(store.try_lock("before", u64::MAX).await.unwrap());

    server.kill();
    let started = Instant::now();
    let err = store.try_lock("k", u64::MAX).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    assert!(store.ping().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );

    server.restart().await;
    // The connection manager reconnects in the background; bounded polling for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "no reconnect\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A fresh, empty server (persistence off): the old lock is gone.
    assert!(store.try_lock("before", u64::MAX).await.unwrap());
}

/// Speaks just enough RESP to read a key's TTL without going through the store.
struct RawRedis(tokio::net::TcpStream);

impl RawRedis {
    async fn connect(port: u16) -> RawRedis {
        RawRedis(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        )
    }

    /// Sends a command; returns an integer or simple-string reply as text.
    async fn command(&mut self, args: &[&str]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut out = format!("*{}\r\n", args.len());
        for arg in args {
            out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.0.write_all(out.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        while !reply.ends_with(b"\r\n") {
            let mut byte = [0u8];
            self.0.read_exact(&mut byte).await.unwrap();
            reply.push(byte[0]);
        }
        let reply = String::from_utf8(reply).unwrap();
        assert!(matches!(reply.as_bytes()[0], b':' | b'+'), "{reply:?}");
        reply[1..reply.len() - 2].to_owned()
    }
}
