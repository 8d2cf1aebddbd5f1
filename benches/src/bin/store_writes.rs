//! The store writes of paid reads, on a redb file: each "payment" takes its replay lock, appends
//! its ledger row, marks it settled and its lock delivered (four writes, as a paid read does).
//! Prints payments per second for 1 client at a time and for CONCURRENCY clients at once: with
//! writes committed in groups, concurrent payments share each `fsync`.
//!
//!   store-writes DIR [PAYMENTS] [CONCURRENCY]     (the file goes in DIR: put it on a real disk)

use std::sync::Arc;
use std::time::Instant;

use hb402_gate::store::{LockRecord, LockState, NewPayment, PaymentState, RedbStore, Store};

fn lock(owner: &str, state: LockState) -> LockRecord {
    LockRecord {
        state,
        owner: owner.to_owned(),
        until: u64::MAX / 2,
        ledger_id: None,
        transaction: None,
    }
}

async fn pay(store: &RedbStore, n: usize) {
    let key = format!("x402:84532:usdc:payer:{n}");
    let owner = format!("owner{n}");
    let held = lock(&owner, LockState::Held);
    assert!(store.lock_swap(&key, None, Some(&held)).await.unwrap());
    let id = store
        .ledger_append(&NewPayment {
            resource: format!("https://gw.example/{n}"),
            network: "base-sepolia".into(),
            asset: "usdc".into(),
            payer: "payer".into(),
            pay_to: "payee".into(),
            amount: "10000".into(),
            lock_key: key.clone(),
        })
        .await
        .unwrap();
    let settled = PaymentState::Settled {
        transaction: format!("0x{n:064x}"),
    };
    store.ledger_update(id, settled).await.unwrap();
    let delivered = lock(&owner, LockState::Delivered);
    assert!(
        store
            .lock_swap(&key, Some(&held), Some(&delivered))
            .await
            .unwrap()
    );
}

async fn run(store: Arc<RedbStore>, payments: usize, concurrency: usize, first: usize) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut n = first + c;
                while n < first + payments {
                    pay(&store, n).await;
                    n += concurrency;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    payments as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: store-writes DIR [PAYMENTS] [CONCURRENCY]");
        std::process::exit(64);
    };
    let payments = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let concurrency = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let path = std::path::Path::new(&dir).join("store-writes.redb");
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(RedbStore::open(&path).unwrap());
    let one = run(Arc::clone(&store), payments / 4, 1, 0).await;
    let many = run(Arc::clone(&store), payments, concurrency, payments).await;
    println!("| clients | paid-read store writes, payments/s |");
    println!("|---|---|");
    println!("| 1 | {one:.0} |");
    println!("| {concurrency} | {many:.0} |");
    println!("ratio {concurrency} / 1: {:.2}", many / one);
    drop(store);
    let _ = std::fs::remove_file(&path);
}
