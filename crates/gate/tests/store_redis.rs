//! The Redis store's own behaviours, against a real `redis-server` (the shared contract is in
//! `store_contract.rs`): credentials never printed, Redis collecting lapsed entries itself,
//! deployments separated by key prefix, and failing closed while Redis is down.

use std::time::{Duration, Instant};

use hb402_gate::store::{RedisOptions, RedisStore, Store, StoreError};
use hb402_testkit::RedisServer;

mod store;

use store::{held, manual_clock, meta, payment};

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

/// Redis collects lapsed entries by itself (with a grace period), independently of purges; an
/// expiring item's metadata carries a TTL too.
#[tokio::test]
async fn redis_expires_lapsed_entries_itself() {
    let server = RedisServer::start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    assert!(
        store
            .lock_swap("k", None, Some(&held("a", now + 5)))
            .await
            .unwrap()
    );
    let mut raw = RawRedis::connect(server.port()).await;
    let ttl: i64 = raw.command(&["TTL", "hb402:hold:k"]).await.parse().unwrap();
    let grace = hb402_gate::store::redis::EXPIRY_GRACE_SECONDS as i64;
    assert!((grace..=grace + 5).contains(&ttl), "TTL {ttl}");

    store
        .put_meta(&meta("offchain-dataitems", "e", Some(now + 10)))
        .await
        .unwrap();
    let ttl: i64 = raw
        .command(&["TTL", "hb402:item:offchain-dataitems/e"])
        .await
        .parse()
        .unwrap();
    let item_grace = hb402_gate::store::redis::ITEM_GRACE_SECONDS as i64;
    assert!(
        (item_grace..=item_grace + 10 + grace).contains(&ttl),
        "TTL {ttl}"
    );
    // A copy that never expires has no TTL.
    store
        .put_meta(&meta("offchain-dataitems", "f", None))
        .await
        .unwrap();
    assert_eq!(
        raw.command(&["TTL", "hb402:item:offchain-dataitems/f"])
            .await,
        "-1"
    );
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
    assert!(
        a.lock_swap("k", None, Some(&held("a", 4_000_000_000)))
            .await
            .unwrap()
    );
    assert!(
        b.lock_swap("k", None, Some(&held("b", 4_000_000_000)))
            .await
            .unwrap()
    );
    assert_eq!(a.ledger_append(&payment(1)).await.unwrap(), 1);
    assert_eq!(b.ledger_append(&payment(1)).await.unwrap(), 1);
    // A glob character in one prefix does not let its purge reach the other's keys.
    let (clock, _) = manual_clock(4_000_000_001);
    let a_late = RedisStore::connect_with(
        &server.url(),
        RedisOptions {
            clock,
            ..options("h*:")
        },
    )
    .await
    .unwrap();
    assert_eq!(a_late.purge(0).await.unwrap().locks, 1);
    assert!(b.lock_get("k").await.unwrap().is_some());
}

/// With Redis gone every operation fails promptly (the paywall then refuses: fail closed); once
/// a server is back on the address, the same store reconnects by itself.
#[tokio::test]
async fn fails_closed_while_redis_is_down_and_reconnects() {
    let mut server = RedisServer::start().await;
    let store = RedisStore::connect(&server.url()).await.unwrap();
    assert!(
        store
            .lock_swap("before", None, Some(&held("a", u64::MAX / 2)))
            .await
            .unwrap()
    );

    server.kill();
    let started = Instant::now();
    let err = store
        .lock_swap("k", None, Some(&held("a", u64::MAX / 2)))
        .await
        .unwrap_err();
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
    assert!(
        store
            .lock_swap("before", None, Some(&held("a", u64::MAX / 2)))
            .await
            .unwrap()
    );
}

/// Channels with unclaimed charges that an earlier hb402 listed in a set are listed (and so
/// claimed) by this one: the set is moved to the sorted listing when the store connects.
#[tokio::test]
async fn unclaimed_channels_listed_the_earlier_way_are_moved_over() {
    let server = RedisServer::start().await;
    let first = RedisStore::connect(&server.url()).await.unwrap();
    let record = store::channel(1, 2_000, 0);
    assert!(
        first
            .channel_swap("0xee", None, Some(&record))
            .await
            .unwrap()
    );
    // As an earlier hb402 left it: the id in a plain set, none in the sorted listing.
    let mut raw = RawRedis::connect(server.port()).await;
    raw.command(&["DEL", "hb402:channels:unclaimed-by-id"])
        .await;
    raw.command(&["SADD", "hb402:channels:unclaimed", "0xee"])
        .await;
    assert_eq!(first.channels_unclaimed("", 10).await.unwrap(), vec![]);

    let second = RedisStore::connect(&server.url()).await.unwrap();
    assert_eq!(
        second.channels_unclaimed("", 10).await.unwrap(),
        vec![("0xee".to_owned(), record)]
    );
    assert_eq!(
        raw.command(&["EXISTS", "hb402:channels:unclaimed"]).await,
        "0"
    );
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
