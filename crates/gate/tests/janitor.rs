//! The janitor: what would otherwise only grow is purged on a schedule. Expired copies past
//! their tombstone are deleted from the node and forgotten; younger ones still answer 410;
//! lapsed locks and stale unpaid ledger rows go, settlements stay.

mod common;

use hb402_gate::janitor::Janitor;
use hb402_gate::lease::CopyLease;
use hb402_gate::meta::ItemMeta;
use hb402_gate::store::{LockRecord, LockState, NewPayment, PaymentState};

fn object_url(node: &str, id: &str) -> String {
    format!("{node}/~s3@1.0/offchain-dataitems/dataitems/{id}.ans104")
}

/// A devnode with an empty bucket and a gate over it (not serving: the tests run the janitor's
/// rounds themselves), `tombstone_days = 2`.
struct Fixture {
    node: hb402_devnode::DevnodeHandle,
    gate: std::sync::Arc<hb402_gate::gate::Gate>,
    http: reqwest::Client,
    auth: String,
    _dirs: [tempfile::TempDir; 2],
}

impl Fixture {
    async fn start() -> Fixture {
        let node_dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let mut node_config = hb402_devnode::DevnodeConfig::new(node_dir.path());
        node_config.listen = "127.0.0.1:0".parse().unwrap();
        let node = hb402_devnode::Devnode::start(node_config).await.unwrap();
        let toml = format!(
            "version = 1\n[upstream]\nurl = \"{}\"\n[store]\nstate_dir = \"{}\"\n[expiry]\ntombstone_days = 2\n",
            node.url(),
            state.path().display()
        );
        let config = hb402_gate::config::Config::from_toml(
            &toml,
            std::path::Path::new("t.toml"),
            &Default::default(),
            &|_| None,
        )
        .unwrap();
        let gate = hb402_gate::build(config).unwrap().gate.clone();
        let http = reqwest::Client::new();
        let auth = hb402_devnode::authorization_header("hb402-dev");
        http.put(format!("{}/~s3@1.0/offchain-dataitems", node.url()))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        Fixture {
            node,
            gate,
            http,
            auth,
            _dirs: [node_dir, state],
        }
    }

    /// Stores an item on the node and records it as a copy expiring at `expires_at`.
    async fn copy(&self, seed: u8, expires_at: Option<u64>) -> ItemMeta {
        let it = common::item(seed, vec![], b"bytes");
        let id = it.id().to_string();
        let resp = self
            .http
            .put(object_url(&self.node.url(), &id))
            .header("authorization", &self.auth)
            .body(it.to_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let meta = ItemMeta::from_header(
            it.header(),
            "offchain-dataitems",
            format!("dataitems/{id}.ans104"),
            it.to_bytes().len() as u64,
            false,
            expires_at,
            Some(common::now() - 4 * 86_400),
        );
        self.gate.items.remember(meta.clone()).await.unwrap();
        meta
    }

    /// The node's answer to a HEAD of a copy.
    async fn head(&self, id: &str) -> reqwest::StatusCode {
        self.http
            .head(object_url(&self.node.url(), id))
            .header("authorization", &self.auth)
            .send()
            .await
            .unwrap()
            .status()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_items_past_their_tombstone_leave_the_node_and_the_store() {
    let f = Fixture::start().await;
    let gate = f.gate.clone();
    let now = common::now();
    // Three copies on the node: long expired, just expired, never expiring.
    let mut metas = Vec::new();
    for (seed, expires_at) in [
        (1u8, Some(now - 3 * 86_400)),
        (2, Some(now - 60)),
        (3, None),
    ] {
        metas.push(f.copy(seed, expires_at).await);
    }
    // A lapsed lock, a live one; a settled, a released and a failed ledger row.
    let lock = |owner: &str, until| LockRecord {
        state: LockState::Held,
        owner: owner.into(),
        until,
        ledger_id: None,
        transaction: None,
    };
    assert!(
        gate.store
            .lock_swap("lapsed", None, Some(&lock("a", now - 1)))
            .await
            .unwrap()
    );
    assert!(
        gate.store
            .lock_swap("live", None, Some(&lock("b", now + 600)))
            .await
            .unwrap()
    );
    let payment = NewPayment {
        resource: "r".into(),
        network: "base-sepolia".into(),
        asset: "0xa".into(),
        payer: "0xb".into(),
        pay_to: "0xc".into(),
        amount: "1".into(),
        lock_key: "k".into(),
        kind: Default::default(),
    };
    for state in [
        PaymentState::Settled {
            transaction: "0x1".into(),
        },
        PaymentState::Released,
    ] {
        let id = gate.store.ledger_append(&payment).await.unwrap();
        gate.store.ledger_update(id, state).await.unwrap();
    }

    let janitor = Janitor::new(gate.clone());
    let round = janitor.round().await;
    assert_eq!(
        (round.items, round.locks, round.ledger),
        (1, 1, 0),
        "{round:?}"
    );
    // The long-expired copy is gone from the node and from hb402; the others stay.
    assert_ne!(f.head(&metas[0].id).await, 200);
    assert_eq!(f.head(&metas[1].id).await, 200);
    assert_eq!(f.head(&metas[2].id).await, 200);
    assert!(
        gate.store
            .get_meta("offchain-dataitems", &metas[0].id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        gate.items
            .known("offchain-dataitems", &metas[0].id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        gate.store
            .get_meta("offchain-dataitems", &metas[1].id)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        gate.store
            .get_meta("offchain-dataitems", &metas[2].id)
            .await
            .unwrap()
            .is_some()
    );
    // The lapsed lock was dropped; the live one stays.
    assert!(gate.store.lock_get("lapsed").await.unwrap().is_none());
    assert!(gate.store.lock_get("live").await.unwrap().is_some());
    // Ledger rows of today are within the retention: both kept.
    assert_eq!(gate.store.ledger_list(0, 10).await.unwrap().len(), 2);
    // A second round has nothing left to do.
    assert_eq!(janitor.round().await.items, 0);
}

/// Regression: the janitor deleted an expired copy while a paid upload was storing it again, so
/// the payer was charged for an object that was then gone. Copies are purged under the same
/// lease uploads take, and only if still expired once it is held.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_being_uploaded_again_is_never_purged() {
    let f = Fixture::start().await;
    let gate = f.gate.clone();
    let now = common::now();
    // Two copies long past their tombstone: one is being uploaded again, one is not.
    let mut metas = Vec::new();
    for seed in [11u8, 12] {
        metas.push(f.copy(seed, Some(now - 3 * 86_400)).await);
    }
    // The upload holds the copy's lease (as it does from the item's header to its answer).
    let lease = CopyLease::take(&gate.store, "offchain-dataitems", &metas[0].id)
        .await
        .unwrap()
        .expect("the copy is free");
    let janitor = Janitor::new(gate.clone());
    assert_eq!(
        janitor.round().await.items,
        1,
        "only the copy nobody uploads"
    );
    assert_eq!(f.head(&metas[0].id).await, 200);
    assert_ne!(f.head(&metas[1].id).await, 200);
    // While it is held, no other upload (or janitor) takes it.
    assert!(
        CopyLease::take(&gate.store, "offchain-dataitems", &metas[0].id)
            .await
            .unwrap()
            .is_none()
    );
    // The upload is paid and records the new lifetime, then lets go: nothing is purged.
    let mut renewed = metas[0].clone();
    renewed.expires_at = Some(now + 86_400);
    gate.items.remember(renewed).await.unwrap();
    lease.release().await;
    assert_eq!(janitor.round().await.items, 0);
    assert_eq!(f.head(&metas[0].id).await, 200);
    // The lease is free again once released.
    let again = CopyLease::take(&gate.store, "offchain-dataitems", &metas[0].id)
        .await
        .unwrap();
    assert!(again.is_some());
}
