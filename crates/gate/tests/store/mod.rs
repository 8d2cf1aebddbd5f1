//! One contract, two stores: every behaviour of [`Store`] the gateway relies on, run against the
//! embedded redb file and a real `redis-server` (Debian package `redis-server`) alike.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hb402_gate::meta::ItemMeta;
use hb402_gate::store::{
    ChannelRecord, Clock, LockRecord, LockState, NewPayment, RedbStore, RedisStore, Store,
};
use hb402_testkit::RedisServer;

pub fn meta(bucket: &str, id: &str, expires_at: Option<u64>) -> ItemMeta {
    ItemMeta {
        id: id.into(),
        bucket: bucket.into(),
        key: format!("dataitems/{id}.ans104"),
        size: 1234,
        data_offset: 1100,
        content_type: Some("text/plain".into()),
        owner_address: "0xabc".into(),
        signature_type: 3,
        tags: vec![("Content-Type".into(), "text/plain".into())],
        expires_at,
        private: bucket == "hb402-private",
        uploaded_at: Some(7),
    }
}

/// A clock the test moves by hand.
pub fn manual_clock(start: u64) -> (Clock, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(start));
    let read = Arc::clone(&now);
    (Arc::new(move || read.load(Ordering::SeqCst)), now)
}

pub fn payment(n: u32) -> NewPayment {
    NewPayment {
        resource: format!("https://gw.example/{n}"),
        network: "base-sepolia".into(),
        asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
        payer: "0x1111111111111111111111111111111111111111".into(),
        pay_to: "0x2222222222222222222222222222222222222222".into(),
        amount: "10000".into(),
        lock_key: format!("84532:usdc:payer:nonce{n}"),
        kind: Default::default(),
    }
}

pub fn held(owner: &str, until: u64) -> LockRecord {
    LockRecord {
        state: LockState::Held,
        owner: owner.into(),
        until,
        ledger_id: None,
        transaction: None,
    }
}

/// The backends: each test body runs once per store, with a fresh store on `clock`.
pub enum Backend {
    /// One redb file is opened once per process: every `open` returns that one instance.
    Redb(tempfile::TempDir, std::sync::Mutex<Option<Arc<dyn Store>>>),
    Redis(RedisServer),
}

impl Backend {
    pub async fn all() -> Vec<Backend> {
        vec![
            Backend::Redb(tempfile::tempdir().unwrap(), Default::default()),
            Backend::Redis(RedisServer::start().await),
        ]
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Redb(..) => "redb",
            Backend::Redis(_) => "redis",
        }
    }

    /// A store (a second call: another instance on the same state).
    pub async fn open(&self, clock: Clock) -> Arc<dyn Store> {
        match self {
            Backend::Redb(dir, opened) => {
                let mut opened = opened.lock().unwrap();
                let store = opened.get_or_insert_with(|| {
                    Arc::new(
                        RedbStore::open_with_clock(&dir.path().join("hb402.redb"), clock).unwrap(),
                    )
                });
                Arc::clone(store)
            }
            Backend::Redis(server) => Arc::new(
                RedisStore::connect_with_clock(&server.url(), clock)
                    .await
                    .unwrap_or_else(|e| panic!("{e}\n{}", server.logs())),
            ),
        }
    }
}

/// Runs `body` against every backend.
pub async fn each<F, Fut>(body: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in Backend::all().await {
        body(backend).await;
    }
}

/// A channel record with the given version, charges and claims.
pub fn channel(version: u64, charged: u128, total_claimed: u128) -> ChannelRecord {
    let payer: alloy::primitives::Address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        .parse()
        .unwrap();
    ChannelRecord {
        version,
        config: hb402_x402::batch::ChannelConfigJson {
            payer,
            payer_authorizer: payer,
            receiver: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
                .parse()
                .unwrap(),
            receiver_authorizer: "0xF700794002FA597b646764b9422954303bab2003"
                .parse()
                .unwrap(),
            token: "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
                .parse()
                .unwrap(),
            withdraw_delay: 900,
            salt: Default::default(),
        },
        charged,
        signed_max: charged,
        signature: "0xabcd".into(),
        // Beyond what a JSON number holds exactly: kept as a decimal string.
        balance: u128::MAX - 1,
        total_claimed,
        withdraw_requested_at: 0,
        refund_nonce: 3,
        synced_at: 1_000,
        last_request_at: 1_000,
        refund_tried_at: 0,
        claim_refused_at: 0,
        holder: None,
    }
}
