//! The store writes of paid reads, on a redb file: each "payment" takes its replay lock, appends
//! its ledger row, marks it settled and its lock delivered (four writes, as a paid read does).
//! Prints payments per second and the process's CPU per payment for 1 client at a time, for
//! CONCURRENCY clients at once (as fast as they go), and for CONCURRENCY clients held to 500
//! payments per second (a busy gateway's paid reads): with writes committed in groups,
//! concurrent payments share each `fsync`.
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
            kind: Default::default(),
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

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name).
    (ticks(11) + ticks(12)) / 100.0
}

/// Payments per second and CPU µs per payment; `rate`: payments per second to hold to.
async fn run(
    store: Arc<RedbStore>,
    payments: usize,
    concurrency: usize,
    first: usize,
    rate: Option<f64>,
) -> (f64, f64) {
    let started = Instant::now();
    let cpu = cpu_seconds();
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut n = first + c;
                while n < first + payments {
                    if let Some(rate) = rate {
                        let due =
                            started + std::time::Duration::from_secs_f64((n - first) as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    pay(&store, n).await;
                    n += concurrency;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let per_second = payments as f64 / started.elapsed().as_secs_f64();
    (per_second, (cpu_seconds() - cpu) / payments as f64 * 1e6)
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
    let one = run(Arc::clone(&store), payments / 4, 1, 0, None).await;
    let many = run(Arc::clone(&store), payments, concurrency, payments, None).await;
    let held = run(
        Arc::clone(&store),
        payments,
        concurrency,
        2 * payments,
        Some(500.0),
    )
    .await;
    println!("| clients | paid-read store writes, payments/s | CPU µs/payment |");
    println!("|---|---|---|");
    println!("| 1 | {:.0} | {:.0} |", one.0, one.1);
    println!("| {concurrency} | {:.0} | {:.0} |", many.0, many.1);
    println!(
        "| {concurrency}, held to 500/s | {:.0} | {:.0} |",
        held.0, held.1
    );
    println!("ratio {concurrency} / 1: {:.2}", many.0 / one.0);
    drop(store);
    let _ = std::fs::remove_file(&path);
}
