//! Building and running hb402: one Pingora server with the public proxy service and the admin
//! service on its own listener.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};

use crate::config::{Config, StoreKind};
use crate::gate::Gate;
use crate::items::Items;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::store::{RedbStore, Store};
use crate::upstream::Upstream;

/// Why hb402 could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The state store could not be opened.
    #[error("cannot open the state store: {0}")]
    Store(String),
    /// The node client could not be built.
    #[error("cannot set up the upstream client: {0}")]
    Upstream(String),
    /// A configured feature is not available in this build.
    #[error("{0}")]
    Unsupported(String),
}

/// A built server and its shared state.
pub struct Built {
    /// The Pingora server, ready to run.
    pub server: Server,
    /// The state its services share.
    pub gate: Arc<Gate>,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

/// Builds hb402 from a validated configuration: opens the store, creates the proxy service on
/// `listen.public` and the admin service on `listen.admin`.
pub fn build(config: Config) -> Result<Built, BuildError> {
    let config = Arc::new(config);
    let store: Arc<dyn Store> = match &config.store.kind {
        StoreKind::Redb => Arc::new(
            RedbStore::open(&config.store.state_dir.join("hb402.redb"))
                .map_err(|e| BuildError::Store(e.to_string()))?,
        ),
        StoreKind::Redis { url } => Arc::new(connect_redis(url)?),
    };
    let upstream =
        Arc::new(Upstream::new(&config.upstream).map_err(|e| BuildError::Upstream(e.to_string()))?);
    let metrics = Arc::new(Metrics::new());
    let (facilitator, local) = facilitator(&config)?;
    let receipt_key = match &config.payments.receipt_secret {
        Some(secret) => secret.expose().to_vec(),
        None => {
            use rand::RngCore as _;
            let mut key = vec![0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            key
        }
    };
    let chain = config
        .payments
        .chain_rpc_url
        .as_deref()
        .map(|url| crate::chain::ChainProbe::new(url, config.payments.verify_timeout))
        .transpose()
        .map_err(|e| BuildError::Unsupported(e.to_string()))?;
    let channels = channels(&config, (facilitator.clone(), local), chain.clone())?;
    let limiter = crate::limiter::FailureLimiter::new(
        config.payments.max_failures_per_payer,
        config.payments.max_failures_per_client,
        config.payments.failure_window,
    );
    let gate = Arc::new(Gate {
        facilitator,
        channels,
        receipt_key,
        chain,
        limiter,
        uploads: tokio::sync::Semaphore::new(config.limits.max_concurrent_uploads as usize),
        upload_slots: crate::limiter::ClientSlots::new(config.limits.max_uploads_per_client),
        items: Items::new(config.clone(), store.clone(), upstream.clone()),
        config: config.clone(),
        upstream,
        store: store.clone(),
        metrics: metrics.clone(),
    });

    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout.as_secs()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Proxy::new(gate.clone()),
        "hb402",
    );
    // A write buffer that holds a response head and a small body together: one send (and one
    // wake-up of the client) per answer instead of two (see docs/benchmarks.md). Bodies larger
    // than the buffer are written straight through, and Pingora flushes at the end of each
    // response, so nothing waits in it.
    let listener = pingora::listeners::ListenerConfig::tcp(config.listen.public.to_string())
        .l4_buffer(pingora::listeners::L4BufferSettings::default().write(WRITE_BUFFER_BYTES));
    proxy.add_listener(listener);
    server.add_service(proxy);

    server.add_service(pingora::services::background::background_service(
        "janitor",
        crate::janitor::Janitor::new(gate.clone()),
    ));

    if gate.channels.is_some() {
        server.add_service(pingora::services::background::background_service(
            "channels",
            crate::channels::Sweeper::new(gate.clone()),
        ));
        server.add_service(pingora::services::background::background_service(
            "channel records",
            crate::channels::RecordWriter::new(gate.clone()),
        ));
    }

    let admin = crate::admin::AdminApp::new(config.clone(), metrics, store)
        .with_channels(gate.channels.clone());
    server.add_service(crate::admin::admin_service(
        admin,
        &config.listen.admin.to_string(),
    ));
    Ok(Built { server, gate })
}

/// The public listener's per-connection write buffer (Pingora's default is one 1460-byte
/// segment, which splits a 1 KiB item's answer from its head).
const WRITE_BUFFER_BYTES: usize = 4096;

/// Connects to Redis on a runtime of its own that lives as long as the process: the connection
/// manager's driver task stays there, and the proxy's runtimes talk to it through channels.
fn connect_redis(url: &str) -> Result<crate::store::RedisStore, BuildError> {
    let url = url.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("hb402-redis".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            let connected = runtime.block_on(crate::store::RedisStore::connect(&url));
            let ok = connected.is_ok();
            let _ = tx.send(connected.map_err(|e| e.to_string()));
            if ok {
                runtime.block_on(std::future::pending::<()>());
            }
        })
        .map_err(|e| BuildError::Store(e.to_string()))?;
    rx.recv()
        .map_err(|e| BuildError::Store(e.to_string()))?
        .map_err(BuildError::Store)
}

/// `batch-settlement` channels, when `[payments.batch]` offers them: sending through local
/// settlement's pipeline, or through the facilitator (reading the chain over `chain`).
fn channels(
    config: &Config,
    (facilitator, local): Backend,
    chain: Option<crate::chain::ChainProbe>,
) -> Result<Option<Arc<crate::channels::Channels>>, BuildError> {
    use crate::channels::{Link, ViaFacilitator};
    let Some(batch) = &config.payments.batch else {
        return Ok(None);
    };
    let link = match (local, facilitator, chain) {
        (Some(local), _, Some(chain)) => (Link::Local(local), chain),
        (None, Some(facilitator), Some(chain)) => {
            let assets = config.payments.accept.iter().map(|t| t.asset.clone());
            let assets = assets.filter(|a| a.chain_id == batch.chain_id).collect();
            let via = ViaFacilitator::new(chain.clone(), facilitator, batch, assets);
            (Link::Facilitator(via), chain)
        }
        _ => {
            let why =
                "batch-settlement channels need local settlement, or a facilitator and an RPC";
            return Err(BuildError::Unsupported(why.into()));
        }
    };
    // The embedded store has one writer, this process: channel records may live in memory.
    let sole_writer = matches!(config.store.kind, StoreKind::Redb);
    let channels = crate::channels::Channels::new(batch.clone(), link, sole_writer)
        .map_err(|e| BuildError::Unsupported(e.to_string()))?;
    Ok(Some(Arc::new(channels)))
}

/// The settlement backend, and local settlement's own handle (channels send through it).
type Backend = (
    Option<Arc<dyn hb402_x402::Facilitator>>,
    Option<Arc<crate::facilitator::LocalSettlement>>,
);

fn facilitator(config: &Config) -> Result<Backend, BuildError> {
    use crate::config::PaymentMode;
    use crate::facilitator::{
        HttpFacilitator, HttpFacilitatorConfig, LocalSettlement, LocalSettlementConfig,
    };
    let p = &config.payments;
    Ok(match &p.mode {
        PaymentMode::Off => (None, None),
        PaymentMode::Facilitator { url } => {
            let mut c = HttpFacilitatorConfig::new(url.clone());
            c.verify_timeout = p.verify_timeout;
            c.settle_timeout = p.settle_timeout;
            let http =
                HttpFacilitator::new(c).map_err(|e| BuildError::Unsupported(e.to_string()))?;
            (Some(Arc::new(http)), None)
        }
        PaymentMode::Local {
            rpc_url,
            operator_key,
            chain_id,
            sending,
        } => {
            let local = Arc::new(
                LocalSettlement::new(LocalSettlementConfig {
                    rpc_url: rpc_url.clone(),
                    operator_key: String::from_utf8_lossy(operator_key.expose()).into_owned(),
                    chain_id: *chain_id,
                    registry: p.registry.clone(),
                    rpc_timeout: p.verify_timeout,
                    receipt_timeout: p.settle_timeout,
                    skew_seconds: p.skew_seconds,
                    max_batch: sending.max_batch,
                    multicall: sending.multicall,
                    receipt_poll: sending.receipt_poll,
                    batch_linger: sending.batch_linger,
                })
                .map_err(|e| BuildError::Unsupported(e.to_string()))?,
            );
            (Some(local.clone()), Some(local))
        }
    })
}

/// A shutdown signal driven by a watch channel: `true` asks for a fast shutdown.
#[derive(Debug)]
pub struct ChannelShutdown(pub tokio::sync::watch::Receiver<bool>);

#[async_trait]
impl ShutdownSignalWatch for ChannelShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        // A closed channel also means "stop".
        let _ = rx.wait_for(|stop| *stop).await;
        ShutdownSignal::FastShutdown
    }
}

/// Runs a built server until `shutdown` says so (for tests and embedding); blocks the thread.
pub fn run_until(server: Server, shutdown: tokio::sync::watch::Receiver<bool>) {
    server.run(RunArgs {
        shutdown_signal: Box::new(ChannelShutdown(shutdown)),
    });
}
