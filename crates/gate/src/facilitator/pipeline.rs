//! The settlement pipeline of local settlement: a simulator, a sender and a receipt watcher, on
//! a thread of their own.
//!
//! - The **simulator** checks payments against the chain before they are accepted: every
//!   transfer waiting while it was busy is simulated in one `eth_call` (an `aggregate3` of them,
//!   each allowed to fail on its own, when the batch contract is deployed).
//! - The **sender** owns the operator account's nonce (read once, read again after any refusal
//!   or doubt) and the fee estimate (kept for [`FEES_TTL`]). It takes every transfer queued while
//!   it was busy and sends them together: one `transferWithAuthorization` transaction, or — when
//!   several are waiting and the batch contract (Multicall3) is deployed — one `aggregate3`
//!   transaction carrying up to `max_batch` of them, each call allowed to fail on its own. Its
//!   gas is estimated with every call required to succeed; a batch that would not is split by a
//!   simulation, and the calls that revert are refused before anything is sent.
//! - The **watcher** follows every transaction in flight: a transaction is looked up by hash
//!   once after it was sent, then found in the receipts of each new block (one request per
//!   block, however many payments wait).
//!
//! Every payment keeps its own outcome: the receipt of its transaction shows whether *its*
//! authorization was used to pay ([`crate::chain::paid_in`]), whatever became of the others in
//! the same transaction.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::simulate::{SimBlock, SimulatePayload};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolCall;
use alloy::transports::RpcError;
use tokio::sync::{Notify, mpsc, oneshot};

sol! {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }
    struct Call3Result {
        bool success;
        bytes returnData;
    }
    interface IMulticall3 {
        function aggregate3(Call3[] calldata calls) external payable returns (Call3Result[] memory returnData);
    }
}

/// The Multicall3 address, the same on every chain that has it.
pub const MULTICALL3: Address =
    alloy::primitives::address!("cA11bde05977b3631167028862bE2a173976CA11");

/// How long a fee estimate is used before it is read again.
const FEES_TTL: Duration = Duration::from_secs(10);
/// How many times a transaction is signed again after the chain refused its nonce or fee.
const SEND_RETRIES: usize = 3;
/// Transfers waiting for the sender at most; beyond, a settlement is refused (nothing sent).
const QUEUE: usize = 8192;
/// New blocks read per watcher cycle at most; further behind, transactions are looked up by
/// hash instead.
const MAX_SCAN_BLOCKS: u64 = 64;
/// How often the sender compares its nonce with the chain's, and how long a gap must last
/// before it is filled.
const GAP_CHECK: Duration = Duration::from_secs(2);
/// Gas limit over the estimate, in percent.
const GAS_MARGIN_PERCENT: u64 = 25;

/// How the pipeline works.
#[derive(Debug, Clone)]
pub(super) struct PipelineConfig {
    /// The chain (signed into every transaction).
    pub(super) chain_id: u64,
    /// Transfers per transaction at most (1: no batching).
    pub(super) max_batch: usize,
    /// The batch contract; batching is used only when code is deployed there.
    pub(super) multicall: Option<Address>,
    /// Bound on each RPC call.
    pub(super) rpc_timeout: Duration,
    /// How often the watcher looks for new blocks while transactions are in flight.
    pub(super) receipt_poll: Duration,
    /// How long a busy sender goes on filling a batch.
    pub(super) linger: Duration,
}

/// One transfer to send.
#[derive(Debug, Clone)]
pub(super) struct Transfer {
    /// The token contract.
    pub(super) token: Address,
    /// The `transferWithAuthorization` call.
    pub(super) input: Bytes,
    /// Sent in a transaction of its own, never in a batch: its signature is checked by the
    /// payer's own contract (ERC-1271), which may spend any gas it is given and so make a whole
    /// batch run out of it.
    pub(super) alone: bool,
    /// The most gas its transaction may be given (sent alone): a call that needs more is
    /// refused as reverting, and the limit never exceeds it, whatever the simulation said. For
    /// calls that run code of someone else's (a contract payer's EIP-1271 check), which may
    /// spend more when mined than when simulated.
    pub(super) gas_cap: Option<u64>,
}

/// What the sender did with a transfer.
#[derive(Debug)]
pub(super) enum Dispatch {
    /// Broadcast, or possibly broadcast (the RPC did not answer): the transaction carrying it,
    /// and its receipt once mined.
    Tx(B256, Waiting),
    /// Not sent: the call reverts (a simulation said so).
    Reverts,
    /// Not sent: the RPC refused the transaction or could not be asked. Nothing moved.
    NotSent,
}

/// A receipt to come.
pub(super) type Waiting = oneshot::Receiver<Arc<TransactionReceipt>>;

/// What a simulation of a transfer said.
#[derive(Debug)]
pub(super) enum Simulated {
    /// It would succeed now.
    Passes,
    /// It reverts (the chain's reason, when it gave one).
    Reverts(String),
    /// The RPC did not say.
    Unanswered,
}

struct Job<V> {
    transfer: Transfer,
    reply: oneshot::Sender<V>,
}

/// The pipeline's handle; dropping it stops the simulator, the sender, the watcher and their
/// thread.
pub(super) struct Pipeline {
    checks: mpsc::Sender<Job<Simulated>>,
    jobs: mpsc::Sender<Job<Dispatch>>,
    watcher: Arc<Watcher>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts the sender and the watcher on a thread of their own.
    pub(super) fn start(
        provider: DynProvider,
        signer: PrivateKeySigner,
        config: PipelineConfig,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let (checks, check_queue) = mpsc::channel(QUEUE);
        let poll = config.receipt_poll;
        let rpc = Arc::new(Rpc {
            provider,
            operator: signer.address(),
            config,
            batch_contract: tokio::sync::OnceCell::new(),
            no_dry_run: AtomicBool::new(false),
        });
        let watcher = Arc::new(Watcher {
            rpc: rpc.clone(),
            poll,
            state: Mutex::new(WatchState::default()),
            wake: Notify::new(),
        });
        let simulator = rpc.clone();
        let key = secp256k1::SecretKey::from_byte_array(signer.to_bytes().0)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let sender = SenderTask {
            rpc,
            key,
            watcher: watcher.clone(),
            nonce: None,
            fees: None,
            gap: None,
            checked: Instant::now(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let follow = watcher.clone();
        std::thread::Builder::new()
            .name("hb402-settle".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // The watcher and the simulator end with the runtime, once the sender's
                    // queue is closed.
                    tokio::spawn(async move { follow.run().await });
                    tokio::spawn(async move { simulator.simulate_all(check_queue).await });
                    sender.run(queue).await;
                });
            })?;
        Ok(Pipeline {
            checks,
            jobs,
            watcher,
        })
    }

    /// Simulates `transfer` (with whatever else waits to be simulated).
    pub(super) async fn simulate(&self, transfer: Transfer) -> Simulated {
        let (reply, verdict) = oneshot::channel();
        if self.checks.try_send(Job { transfer, reply }).is_err() {
            tracing::warn!("simulation queue full; refusing the payment");
            return Simulated::Unanswered;
        }
        verdict.await.unwrap_or(Simulated::Unanswered)
    }

    /// Queues `transfer` and waits for the sender's verdict.
    pub(super) async fn send(&self, transfer: Transfer) -> Dispatch {
        let (reply, verdict) = oneshot::channel();
        if self.jobs.try_send(Job { transfer, reply }).is_err() {
            tracing::warn!("settlement queue full; refusing the settlement");
            return Dispatch::NotSent;
        }
        verdict.await.unwrap_or(Dispatch::NotSent)
    }

    /// The receipt of `tx` (sent earlier, possibly by another process) once it is mined.
    pub(super) fn watch(&self, tx: B256) -> Waiting {
        let mut waiting = self.watcher.expect(tx, 1);
        self.watcher.sent(tx);
        waiting.pop().expect("one receiver asked for")
    }
}

/// A fee estimate and when it was made.
#[derive(Debug, Clone, Copy)]
enum Fees {
    Eip1559 { max: u128, priority: u128 },
    Legacy(u128),
}

/// What the simulator and the sender share: the RPC, and whether batches can be sent.
struct Rpc {
    provider: DynProvider,
    operator: Address,
    config: PipelineConfig,
    /// Whether the batch contract is deployed (asked once).
    batch_contract: tokio::sync::OnceCell<bool>,
    /// The RPC has no `eth_simulateV1`.
    no_dry_run: AtomicBool,
}

struct SenderTask {
    rpc: Arc<Rpc>,
    /// The operator's key (its address is `rpc.operator`).
    key: secp256k1::SecretKey,
    watcher: Arc<Watcher>,
    /// The operator account's next nonce, as this sender counts it; `None`: read it again.
    nonce: Option<u64>,
    fees: Option<(Fees, Instant)>,
    /// The operator's mined count last seen below this sender's, and the head block then.
    gap: Option<(u64, u64)>,
    /// When the nonce was last compared with the chain's.
    checked: Instant,
}

/// Why the RPC refused something, as far as the sender cares.
enum Refusal {
    /// The call reverts.
    Reverts,
    /// Another transaction took the nonce, or this one is already known.
    Nonce,
    /// The fee is too low for the chain now.
    Fee,
    /// The transaction is already in the node's pool (sent before).
    Known,
    /// Anything else the node answered.
    Other,
    /// No answer (transport error, timeout): the request may have taken effect.
    NoAnswer,
}

fn refusal<E: std::fmt::Display>(error: &RpcError<E>) -> Refusal {
    match error {
        RpcError::ErrorResp(payload) => refusal_saying(&payload.message),
        _ => Refusal::NoAnswer,
    }
}

/// What a node's error message means to the sender.
fn refusal_saying(message: &str) -> Refusal {
    let message = message.to_ascii_lowercase();
    if message.contains("revert") {
        Refusal::Reverts
    } else if message.contains("already known") {
        Refusal::Known
    } else if message.contains("nonce too low")
        || message.contains("nonce too high")
        || message.contains("replacement transaction underpriced")
    {
        Refusal::Nonce
    } else if message.contains("underpriced")
        || message.contains("fee too low")
        || message.contains("less than block base fee")
    {
        Refusal::Fee
    } else {
        Refusal::Other
    }
}

/// Signs `hash` with libsecp256k1 (RFC 6979 nonce, low S): several times cheaper than the
/// pure-Rust signer, for one signature per transaction.
fn sign_hash(key: &secp256k1::SecretKey, hash: &B256) -> alloy::primitives::Signature {
    let message = secp256k1::Message::from_digest(hash.0);
    let (id, compact) = secp256k1::SECP256K1
        .sign_ecdsa_recoverable(message, key)
        .serialize_compact();
    alloy::primitives::Signature::new(
        U256::from_be_slice(&compact[..32]),
        U256::from_be_slice(&compact[32..]),
        i32::from(id) == 1,
    )
}

/// Each call's outcome in an `aggregate3` answer for `n` calls.
fn per_call(out: &[u8], n: usize) -> Option<Vec<Simulated>> {
    let results = IMulticall3::aggregate3Call::abi_decode_returns(out).ok()?;
    (results.len() == n).then(|| {
        results
            .into_iter()
            .map(|r| {
                if r.success {
                    Simulated::Passes
                } else {
                    let reason = alloy::sol_types::decode_revert_reason(&r.returnData);
                    Simulated::Reverts(reason.unwrap_or_else(|| "reverted".into()))
                }
            })
            .collect()
    })
}

/// Takes the first waiting job and every other one waiting, up to `max` (see [`fill_batch`]).
async fn next_batch<V>(
    queue: &mut mpsc::Receiver<Job<V>>,
    max: usize,
    linger: Duration,
) -> Option<Vec<Job<V>>> {
    let first = queue.recv().await?;
    Some(fill_batch(first, queue, max, linger).await)
}

/// `first` and every other job waiting, up to `max`. When more than one was waiting (the
/// queue is busy), goes on taking what arrives for up to `linger`: fewer, fuller
/// transactions. A lone job is never held back.
async fn fill_batch<V>(
    first: Job<V>,
    queue: &mut mpsc::Receiver<Job<V>>,
    max: usize,
    linger: Duration,
) -> Vec<Job<V>> {
    let max = max.max(1);
    let mut jobs = vec![first];
    while jobs.len() < max {
        match queue.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    if jobs.len() > 1 && !linger.is_zero() {
        let until = tokio::time::Instant::now() + linger;
        while jobs.len() < max {
            match tokio::time::timeout_at(until, queue.recv()).await {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) | Err(_) => break,
            }
        }
    }
    jobs
}

impl Rpc {
    async fn call<T, E: std::fmt::Display>(
        &self,
        call: impl IntoFuture<Output = Result<T, RpcError<E>>>,
    ) -> Result<T, Refusal> {
        match tokio::time::timeout(self.config.rpc_timeout, call.into_future()).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "settlement RPC refused");
                Err(refusal(&e))
            }
            Err(_) => Err(Refusal::NoAnswer),
        }
    }

    /// Whether `n` transfers may go in one batch: the batch contract is configured and
    /// deployed.
    async fn batching(&self, n: usize) -> bool {
        let Some(multicall) = self.config.multicall else {
            return false;
        };
        if n < 2 || self.config.max_batch < 2 {
            return false;
        }
        let deployed = self
            .batch_contract
            .get_or_try_init(|| async {
                let code = self.call(self.provider.get_code_at(multicall)).await?;
                if code.is_empty() {
                    tracing::info!(%multicall, "no batch contract deployed; one transaction per payment");
                }
                Ok::<_, Refusal>(!code.is_empty())
            })
            .await;
        matches!(deployed, Ok(true))
    }

    /// The call for `transfers`: the transfer itself, or a batch of them.
    fn encode<'a>(
        &self,
        transfers: impl ExactSizeIterator<Item = &'a Transfer>,
        allow_failure: bool,
    ) -> (Address, Bytes) {
        let mut transfers = transfers.peekable();
        if transfers.len() == 1 {
            let only = transfers.next().expect("one transfer");
            return (only.token, only.input.clone());
        }
        let calls = transfers
            .map(|t| Call3 {
                target: t.token,
                allowFailure: allow_failure,
                callData: t.input.clone(),
            })
            .collect();
        let multicall = self.config.multicall.unwrap_or(MULTICALL3);
        let input = IMulticall3::aggregate3Call { calls }.abi_encode();
        (multicall, input.into())
    }

    fn request(&self, to: Address, input: Bytes) -> TransactionRequest {
        TransactionRequest::default()
            .from(self.operator)
            .to(to)
            .input(input.into())
    }

    /// Per transfer of `transfers`, whether it succeeds when simulated in one batch (each
    /// allowed to fail); `None` when the simulation could not be read.
    async fn simulate_batch(&self, transfers: &[&Transfer]) -> Option<Vec<Simulated>> {
        let (to, input) = self.encode(transfers.iter().copied(), true);
        let out = self
            .call(self.provider.call(self.request(to, input)))
            .await
            .ok()?;
        per_call(&out, transfers.len())
    }

    /// One execution of the transaction for `transfers` (`eth_simulateV1`): whether each
    /// transfer succeeds in it, and the gas it used. `None` when the RPC cannot say (then gas
    /// is estimated instead); an RPC without `eth_simulateV1` is not asked again.
    async fn dry_run(&self, transfers: &[&Transfer]) -> Option<(u64, Vec<Simulated>)> {
        if self.no_dry_run.load(Ordering::Relaxed) {
            return None;
        }
        let (to, input) = self.encode(transfers.iter().copied(), true);
        let payload =
            SimulatePayload::default().extend(SimBlock::default().call(self.request(to, input)));
        let blocks = match self.call(self.provider.simulate(&payload)).await {
            Ok(blocks) => blocks,
            Err(Refusal::Other) => {
                tracing::info!("the RPC does not simulate transactions; estimating gas instead");
                self.no_dry_run.store(true, Ordering::Relaxed);
                return None;
            }
            Err(_) => return None,
        };
        let run = blocks.first()?.calls.first()?;
        let gas = run.max_used_gas.unwrap_or(run.gas_used);
        if let [_] = transfers {
            let verdict = if run.status {
                Simulated::Passes
            } else {
                let error = run.error.as_ref().map(|e| e.message.clone());
                Simulated::Reverts(error.unwrap_or_else(|| "reverted".into()))
            };
            return Some((gas, vec![verdict]));
        }
        // The batch itself failed (out of gas, say): estimate instead.
        if !run.status {
            return None;
        }
        Some((gas, per_call(&run.return_data, transfers.len())?))
    }

    async fn simulate_one(&self, transfer: &Transfer) -> Simulated {
        let call = self.request(transfer.token, transfer.input.clone());
        match tokio::time::timeout(self.config.rpc_timeout, self.provider.call(call)).await {
            Ok(Ok(_)) => Simulated::Passes,
            Ok(Err(RpcError::ErrorResp(e)))
                if e.message.to_ascii_lowercase().contains("revert") =>
            {
                Simulated::Reverts(e.message.to_string())
            }
            _ => Simulated::Unanswered,
        }
    }

    /// The simulator: everything waiting is simulated together.
    async fn simulate_all(&self, mut queue: mpsc::Receiver<Job<Simulated>>) {
        while let Some(jobs) = next_batch(&mut queue, self.config.max_batch, Duration::ZERO).await {
            if self.batching(jobs.len()).await {
                let transfers: Vec<&Transfer> = jobs.iter().map(|j| &j.transfer).collect();
                if let Some(results) = self.simulate_batch(&transfers).await {
                    for (job, result) in jobs.into_iter().zip(results) {
                        let _ = job.reply.send(result);
                    }
                    continue;
                }
                answer_all(jobs, || Simulated::Unanswered);
                continue;
            }
            for job in jobs {
                let result = self.simulate_one(&job.transfer).await;
                let _ = job.reply.send(result);
            }
        }
    }
}

impl SenderTask {
    async fn run(mut self, mut queue: mpsc::Receiver<Job<Dispatch>>) {
        let config = &self.rpc.config;
        let (max, linger) = (config.max_batch, config.linger);
        loop {
            // Idle or busy, the operator's nonce is looked at every GAP_CHECK.
            let first = match tokio::time::timeout(GAP_CHECK, queue.recv()).await {
                Ok(Some(first)) => Some(first),
                Ok(None) => return,
                Err(_) => None,
            };
            self.check_gap().await;
            let Some(first) = first else { continue };
            let (alone, jobs): (Vec<_>, Vec<_>) = fill_batch(first, &mut queue, max, linger)
                .await
                .into_iter()
                .partition(|job| job.transfer.alone);
            if self.rpc.batching(jobs.len()).await {
                self.send_group(jobs).await;
            } else {
                for job in jobs {
                    self.send_group(vec![job]).await;
                }
            }
            for job in alone {
                self.send_group(vec![job]).await;
            }
        }
    }

    /// Looks (at most every GAP_CHECK) for a gap below the nonce this sender counts: blocks
    /// are being mined but the operator's mined count stays below it, so a transaction this
    /// sender sent was lost (dropped, replaced, never arrived) and every later one waits behind
    /// it. Seen stuck twice, GAP_CHECK apart, with blocks mined in between, the lowest missing
    /// nonce is filled (with an empty transaction: if the transaction there was only slow, the
    /// chain refuses the filler, and nothing is lost).
    async fn check_gap(&mut self) {
        let Some(local) = self.nonce else { return };
        if self.checked.elapsed() < GAP_CHECK {
            return;
        }
        self.checked = Instant::now();
        let address = self.rpc.operator;
        let provider = &self.rpc.provider;
        let (mined, head) = tokio::join!(
            self.rpc
                .call(provider.get_transaction_count(address).latest()),
            self.rpc.call(provider.get_block_number()),
        );
        let (Ok(mined), Ok(head)) = (mined, head) else {
            return;
        };
        if mined >= local {
            if mined > local {
                // Another sender moved it on: read it again before the next send.
                self.nonce = None;
            }
            self.gap = None;
            return;
        }
        match self.gap {
            Some((seen, at)) if seen == mined && head > at => {
                self.fill_gap(mined, local).await;
                self.gap = None;
            }
            Some((seen, _)) if seen == mined => {}
            _ => self.gap = Some((mined, head)),
        }
    }

    /// Sends an empty transaction to the operator itself with nonce `at`.
    async fn fill_gap(&mut self, at: u64, local: u64) {
        tracing::warn!(
            at,
            next = local,
            "the operator's transactions are stuck behind nonce {at}: filling it"
        );
        let Ok(fees) = self.fees().await else { return };
        let address = self.rpc.operator;
        let (_, raw) = self.sign(at, fees, address, Bytes::new(), 21_000);
        match self
            .rpc
            .call(self.rpc.provider.send_raw_transaction(&raw))
            .await
        {
            Ok(_) | Err(Refusal::Known | Refusal::Nonce) => {}
            Err(Refusal::Fee) => self.fees = None,
            Err(_) => self.nonce = None,
        }
    }

    fn encode(&self, jobs: &[Job<Dispatch>], allow_failure: bool) -> (Address, Bytes) {
        self.rpc
            .encode(jobs.iter().map(|j| &j.transfer), allow_failure)
    }

    /// Sends `jobs` in one transaction, after dropping (and refusing) the calls that revert.
    async fn send_group(&mut self, jobs: Vec<Job<Dispatch>>) {
        let transfers: Vec<&Transfer> = jobs.iter().map(|j| &j.transfer).collect();
        let dry_run = self.rpc.dry_run(&transfers).await;
        let (jobs, gas) = match dry_run {
            Some((gas, results)) => (keep_passing(jobs, results), gas),
            None => match self.estimate(jobs).await {
                Some(estimated) => estimated,
                None => return,
            },
        };
        if jobs.is_empty() {
            return;
        }
        let mut limit = gas.saturating_add(gas * GAS_MARGIN_PERCENT / 100);
        if let [job] = jobs.as_slice()
            && let Some(cap) = job.transfer.gas_cap
        {
            if gas > cap {
                tracing::warn!(gas, cap, "a capped call needs more gas than it may use");
                answer_all(jobs, || Dispatch::Reverts);
                return;
            }
            limit = limit.min(cap);
        }
        let (to, input) = self.encode(&jobs, true);
        self.broadcast(jobs, to, input, limit).await;
    }

    /// The gas of one transaction for `jobs` by `eth_estimateGas` (every call required to
    /// succeed), after dropping the calls that revert; `None` when nothing is left to send.
    async fn estimate(
        &mut self,
        mut jobs: Vec<Job<Dispatch>>,
    ) -> Option<(Vec<Job<Dispatch>>, u64)> {
        let mut split = false;
        loop {
            let (to, input) = self.encode(&jobs, false);
            let request = self.rpc.request(to, input);
            match self.rpc.call(self.rpc.provider.estimate_gas(request)).await {
                Ok(gas) => return Some((jobs, gas)),
                Err(Refusal::Reverts) if jobs.len() > 1 && !split => {
                    split = true;
                    jobs = self.drop_reverting(jobs).await;
                    if jobs.is_empty() {
                        return None;
                    }
                }
                Err(Refusal::Reverts) => {
                    answer_all(jobs, || Dispatch::Reverts);
                    return None;
                }
                Err(_) => {
                    answer_all(jobs, || Dispatch::NotSent);
                    return None;
                }
            }
        }
    }

    /// Simulates the batch with every call allowed to fail, answers the reverting ones and
    /// returns the rest.
    async fn drop_reverting(&self, jobs: Vec<Job<Dispatch>>) -> Vec<Job<Dispatch>> {
        let transfers: Vec<&Transfer> = jobs.iter().map(|j| &j.transfer).collect();
        let Some(results) = self.rpc.simulate_batch(&transfers).await else {
            answer_all(jobs, || Dispatch::NotSent);
            return Vec::new();
        };
        keep_passing(jobs, results)
    }

    async fn nonce(&mut self) -> Result<u64, Refusal> {
        if let Some(n) = self.nonce {
            return Ok(n);
        }
        let address = self.rpc.operator;
        let n = self
            .rpc
            .call(self.rpc.provider.get_transaction_count(address).pending())
            .await?;
        self.nonce = Some(n);
        Ok(n)
    }

    async fn fees(&mut self) -> Result<Fees, Refusal> {
        if let Some((fees, at)) = self.fees
            && at.elapsed() < FEES_TTL
        {
            return Ok(fees);
        }
        let provider = &self.rpc.provider;
        let fees = match self.rpc.call(provider.estimate_eip1559_fees()).await {
            Ok(e) => Fees::Eip1559 {
                max: e.max_fee_per_gas,
                priority: e.max_priority_fee_per_gas,
            },
            Err(Refusal::NoAnswer) => return Err(Refusal::NoAnswer),
            Err(_) => Fees::Legacy(self.rpc.call(provider.get_gas_price()).await?),
        };
        self.fees = Some((fees, Instant::now()));
        Ok(fees)
    }

    /// The signed transaction and its hash.
    fn sign(&self, nonce: u64, fees: Fees, to: Address, input: Bytes, gas: u64) -> (B256, Vec<u8>) {
        let chain_id = self.rpc.config.chain_id;
        let envelope = match fees {
            Fees::Eip1559 { max, priority } => {
                let tx = TxEip1559 {
                    chain_id,
                    nonce,
                    gas_limit: gas,
                    max_fee_per_gas: max,
                    max_priority_fee_per_gas: priority,
                    to: TxKind::Call(to),
                    value: U256::ZERO,
                    access_list: Default::default(),
                    input,
                };
                let signature = sign_hash(&self.key, &tx.signature_hash());
                TxEnvelope::Eip1559(tx.into_signed(signature))
            }
            Fees::Legacy(price) => {
                let tx = TxLegacy {
                    chain_id: Some(chain_id),
                    nonce,
                    gas_price: price,
                    gas_limit: gas,
                    to: TxKind::Call(to),
                    value: U256::ZERO,
                    input,
                };
                let signature = sign_hash(&self.key, &tx.signature_hash());
                TxEnvelope::Legacy(tx.into_signed(signature))
            }
        };
        (*envelope.tx_hash(), envelope.encoded_2718())
    }

    /// Signs and sends one transaction for `jobs`, with a fresh nonce or fee after a refusal.
    async fn broadcast(&mut self, jobs: Vec<Job<Dispatch>>, to: Address, input: Bytes, gas: u64) {
        for _ in 0..=SEND_RETRIES {
            let (nonce, fees) = match (self.nonce().await, self.fees().await) {
                (Ok(n), Ok(f)) => (n, f),
                _ => break,
            };
            let (hash, raw) = self.sign(nonce, fees, to, input.clone(), gas);
            // Watched before it is sent: the watcher's first look at it comes after.
            let waiting = self.watcher.expect(hash, jobs.len());
            let sent = self
                .rpc
                .call(self.rpc.provider.send_raw_transaction(&raw))
                .await;
            let sent = match sent {
                Ok(_) | Err(Refusal::Known) => true,
                // It may have been broadcast: report it sent (its outcome is read from the
                // chain) and read the nonce again before the next one.
                Err(Refusal::NoAnswer) => {
                    self.nonce = None;
                    true
                }
                Err(Refusal::Nonce) => {
                    self.nonce = None;
                    false
                }
                Err(Refusal::Fee) => {
                    self.fees = None;
                    false
                }
                Err(Refusal::Reverts | Refusal::Other) => {
                    self.nonce = None;
                    self.watcher.forget(hash);
                    return answer_all(jobs, || Dispatch::NotSent);
                }
            };
            if sent {
                if let Some(n) = self.nonce.as_mut() {
                    *n += 1;
                }
                self.watcher.sent(hash);
                for (job, waiting) in jobs.into_iter().zip(waiting) {
                    let _ = job.reply.send(Dispatch::Tx(hash, waiting));
                }
                return;
            }
            self.watcher.forget(hash);
            tracing::info!("settlement transaction refused for its nonce or fee; signing again");
        }
        answer_all(jobs, || Dispatch::NotSent);
    }
}

/// The jobs whose transfer passed; the others are answered `Reverts`.
fn keep_passing(jobs: Vec<Job<Dispatch>>, results: Vec<Simulated>) -> Vec<Job<Dispatch>> {
    let mut kept = Vec::with_capacity(jobs.len());
    for (job, result) in jobs.into_iter().zip(results) {
        match result {
            Simulated::Passes => kept.push(job),
            _ => {
                let _ = job.reply.send(Dispatch::Reverts);
            }
        }
    }
    kept
}

fn answer_all<V>(jobs: Vec<Job<V>>, verdict: impl Fn() -> V) {
    for job in jobs {
        let _ = job.reply.send(verdict());
    }
}

#[derive(Default)]
struct WatchState {
    /// Transactions in flight and who waits for each.
    inflight: HashMap<B256, Vec<oneshot::Sender<Arc<TransactionReceipt>>>>,
    /// Transactions not looked up by hash yet.
    fresh: Vec<B256>,
}

/// Follows transactions until their receipts arrive.
struct Watcher {
    rpc: Arc<Rpc>,
    poll: Duration,
    state: Mutex<WatchState>,
    wake: Notify,
}

impl Watcher {
    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for `tx`'s receipt on behalf of `n` payments (before it is sent: from now on,
    /// the blocks the watcher reads are searched for it).
    fn expect(&self, tx: B256, n: usize) -> Vec<Waiting> {
        let mut state = self.state();
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| oneshot::channel()).unzip();
        state.inflight.entry(tx).or_default().extend(senders);
        receivers
    }

    /// `tx` was sent (or was sent before): look it up by hash, soon. It may have been mined in
    /// a block the watcher already read while it was being sent.
    fn sent(&self, tx: B256) {
        self.state().fresh.push(tx);
        self.wake.notify_one();
    }

    /// Stops following `tx` (it was never broadcast).
    fn forget(&self, tx: B256) {
        self.state().inflight.remove(&tx);
    }

    fn resolve(&self, receipt: TransactionReceipt) {
        let waiters = self.state().inflight.remove(&receipt.transaction_hash);
        if let Some(waiters) = waiters {
            let receipt = Arc::new(receipt);
            for waiter in waiters {
                let _ = waiter.send(receipt.clone());
            }
        }
    }

    /// `call` through the shared RPC: its answer, or `None` (refused, unanswered).
    async fn rpc<T, E: std::fmt::Display>(
        &self,
        call: impl IntoFuture<Output = Result<T, RpcError<E>>>,
    ) -> Option<T> {
        self.rpc.call(call).await.ok()
    }

    /// Cycles while anything is in flight; idles (and forgets where it was) otherwise.
    async fn run(&self) {
        let mut scanned: Option<u64> = None;
        loop {
            let idle = {
                let mut state = self.state();
                // Nobody waits any more (timed out, gone): stop following those.
                state
                    .inflight
                    .retain(|_, waiters| waiters.iter().any(|w| !w.is_closed()));
                state.inflight.is_empty()
            };
            if idle {
                scanned = None;
                self.wake.notified().await;
            } else {
                let _ = tokio::time::timeout(self.poll, self.wake.notified()).await;
            }
            self.cycle(&mut scanned).await;
        }
    }

    /// One look: transactions sent since the last look, by hash, then the blocks mined since
    /// the last look. A transaction is followed before it is sent; one whose sending ended
    /// before the head was read is looked up by hash after that read, so if it was mined by
    /// then it is found; any other is mined after the head the look before read, in a block
    /// this look or a later one scans, or is looked up by hash once its sending ended. Either
    /// way none is missed.
    async fn cycle(&self, scanned: &mut Option<u64>) {
        let Some(head) = self.rpc(self.rpc.provider.get_block_number()).await else {
            return;
        };
        let fresh = std::mem::take(&mut self.state().fresh);
        let lookups = fresh.iter().map(|tx| async move {
            (
                *tx,
                self.rpc(self.rpc.provider.get_transaction_receipt(*tx))
                    .await,
            )
        });
        for (tx, found) in futures_util::future::join_all(lookups).await {
            match found {
                Some(Some(receipt)) => self.resolve(receipt),
                Some(None) => {}
                // Not answered: look it up again next time.
                None => self.state().fresh.push(tx),
            }
        }
        if self.state().inflight.is_empty() {
            // Everything found: nothing to scan blocks for until something is sent.
            *scanned = None;
            return;
        }
        let from = match *scanned {
            Some(s) if head.saturating_sub(s) <= MAX_SCAN_BLOCKS => s + 1,
            // Too far behind: everything by hash.
            Some(_) => {
                self.recheck_all();
                head + 1
            }
            // First look: everything in flight is fresh, looked up above.
            None => head + 1,
        };
        for block in from..=head {
            let receipts = self
                .rpc(self.rpc.provider.get_block_receipts(block.into()))
                .await;
            match receipts {
                Some(Some(receipts)) => receipts.into_iter().for_each(|r| self.resolve(r)),
                Some(None) => {}
                None => {
                    // Not served (unsupported or failing): look everything up by hash.
                    self.recheck_all();
                    break;
                }
            }
        }
        *scanned = Some(head);
    }

    /// Looks every transaction in flight up by hash next time.
    fn recheck_all(&self) {
        let mut state = self.state();
        let all: Vec<B256> = state.inflight.keys().copied().collect();
        state.fresh = all;
    }
}

#[cfg(test)]
mod tests {
    use alloy::transports::TransportErrorKind;

    use super::*;

    fn job(n: u8) -> (Job<Dispatch>, oneshot::Receiver<Dispatch>) {
        let (reply, answer) = oneshot::channel();
        let transfer = Transfer {
            token: Address::repeat_byte(n),
            input: Bytes::new(),
            alone: false,
            gas_cap: None,
        };
        (Job { transfer, reply }, answer)
    }

    /// libsecp256k1's signatures are the pure-Rust signer's (both RFC 6979, low S), and recover
    /// to the operator.
    #[test]
    fn transactions_are_signed_as_alloy_signs_them() {
        use alloy::signers::SignerSync;
        for n in 1u8..=16 {
            let signer = PrivateKeySigner::from_bytes(&B256::repeat_byte(n)).unwrap();
            let key = secp256k1::SecretKey::from_byte_array(signer.to_bytes().0).unwrap();
            let hash = alloy::primitives::keccak256([n, 0x42]);
            let ours = sign_hash(&key, &hash);
            assert_eq!(ours, signer.sign_hash_sync(&hash).unwrap(), "{n}");
            assert_eq!(
                ours.recover_address_from_prehash(&hash).unwrap(),
                signer.address()
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_transfer_goes_at_once_and_a_busy_queue_fills_its_batch() {
        let (tx, mut queue) = mpsc::channel(16);
        let linger = Duration::from_millis(20);
        tx.try_send(job(1).0).unwrap();
        let started = tokio::time::Instant::now();
        let batch = next_batch(&mut queue, 8, linger).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "a lone job is not held back"
        );

        // Two waiting: the batch stays open for `linger`, taking what arrives meanwhile.
        tx.try_send(job(2).0).unwrap();
        tx.try_send(job(3).0).unwrap();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            late.try_send(job(4).0).unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            late.try_send(job(5).0).unwrap();
        });
        let started = tokio::time::Instant::now();
        let batch = next_batch(&mut queue, 8, linger).await.unwrap();
        let targets: Vec<u8> = batch.iter().map(|j| j.transfer.token.0[0]).collect();
        assert_eq!(
            targets,
            [2, 3, 4],
            "in order, and not what came after the linger"
        );
        assert_eq!(started.elapsed(), linger);

        // A full batch goes without waiting.
        for n in 10..14 {
            tx.try_send(job(n).0).unwrap();
        }
        let started = tokio::time::Instant::now();
        let batch = next_batch(&mut queue, 3, linger).await.unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[test]
    fn refusals_are_told_apart_and_silence_is_never_a_refusal() {
        let said = refusal_saying;
        assert!(matches!(
            said("execution reverted: FiatTokenV2: authorization is used or canceled"),
            Refusal::Reverts
        ));
        assert!(matches!(said("nonce too low"), Refusal::Nonce));
        assert!(matches!(
            said("replacement transaction underpriced"),
            Refusal::Nonce
        ));
        assert!(matches!(said("already known"), Refusal::Known));
        assert!(matches!(
            said("max fee per gas less than block base fee"),
            Refusal::Fee
        ));
        assert!(matches!(
            said("insufficient funds for gas * price + value"),
            Refusal::Other
        ));
        let silent = RpcError::<TransportErrorKind>::Transport(TransportErrorKind::BackendGone);
        assert!(
            matches!(refusal(&silent), Refusal::NoAnswer),
            "no answer: the transaction may have been sent"
        );
    }
}
