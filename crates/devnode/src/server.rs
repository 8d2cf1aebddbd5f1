//! The HTTP server: binds, accepts, reads each request (bounded), routes it to the emulated
//! component, logs it, and stops gracefully.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::cache::{self, ObjectCache};
use crate::clock;
use crate::counters::Counters;
use crate::node_key::NodeKey;
use crate::reply::{self, Reply, with_ao_cors};
use crate::route::Route;
use crate::s3::{self, S3Request};
use crate::store::{Store, StoreError};
use crate::{DevnodeConfig, DevnodeError, bundler, gateway, presign};

/// How long in-flight requests may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) access_key_id: String,
    pub(crate) day_seconds: u64,
    pub(crate) max_body_bytes: u64,
    /// `http://<bound address>`, where presigned URLs point.
    pub(crate) public_base: String,
    pub(crate) node_key: NodeKey,
    pub(crate) counters: Arc<Counters>,
    store: Arc<Store>,
    cache: Mutex<ObjectCache>,
}

impl State {
    /// Runs a storage operation on the blocking pool.
    pub(crate) async fn with_store<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || op(&store))
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(io::Error::other(e))))
    }

    /// The `/cache/` route's LRU.
    pub(crate) fn cache(&self) -> MutexGuard<'_, ObjectCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts devnodes.
#[derive(Debug)]
pub struct Devnode;

impl Devnode {
    /// Validates `config`, opens (or creates) the data directory, binds the listener and starts
    /// serving in the background on the current tokio runtime.
    pub async fn start(config: DevnodeConfig) -> Result<DevnodeHandle, DevnodeError> {
        config.validate()?;
        let data_dir = config.data_dir.clone();
        let (store, node_key) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&data_dir).map_err(|source| DevnodeError::DataDir {
                path: data_dir.clone(),
                source,
            })?;
            let store = Store::open(&data_dir)?;
            let node_key = NodeKey::load_or_create(&data_dir)?;
            Ok::<_, DevnodeError>((store, node_key))
        })
        .await
        .map_err(|e| DevnodeError::DataDir {
            path: config.data_dir.clone(),
            source: io::Error::other(e),
        })??;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| DevnodeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| DevnodeError::Bind {
            addr: config.listen,
            source,
        })?;
        let counters = Arc::new(Counters::default());
        let state = Arc::new(State {
            access_key_id: config.access_key_id.clone(),
            day_seconds: config.day_seconds,
            max_body_bytes: config.max_body_bytes,
            public_base: format!("http://{}", reachable(addr)),
            node_key,
            counters: Arc::clone(&counters),
            store: Arc::new(store),
            cache: Mutex::new(ObjectCache::new(cache::MAX_BYTES, cache::MAX_ENTRIES)),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, state, shutdown_rx));
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "devnode listening");
        Ok(DevnodeHandle {
            addr,
            data_dir: config.data_dir,
            access_key_id: config.access_key_id,
            counters,
            shutdown: shutdown_tx,
            task: Some(task),
        })
    }
}

/// The address clients can reach: a wildcard bind is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// A running devnode. Dropping the handle stops the node too, without waiting for it.
#[derive(Debug)]
pub struct DevnodeHandle {
    addr: SocketAddr,
    data_dir: PathBuf,
    access_key_id: String,
    counters: Arc<Counters>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl DevnodeHandle {
    /// The bound address (the real port when the configuration asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", reachable(self.addr))
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The access key id the node accepts.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The node's counters (shared: they keep counting while the node runs).
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Stops accepting, lets in-flight requests finish (up to 10 s), and returns once the
    /// listener is closed.
    pub async fn shutdown(mut self) -> Result<(), DevnodeError> {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.await.map_err(|e| DevnodeError::DataDir {
                path: self.data_dir.clone(),
                source: io::Error::other(e),
            })?;
        }
        Ok(())
    }
}

impl Drop for DevnodeHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn serve(listener: TcpListener, state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let sweeper = tokio::spawn(sweep_expired(Arc::clone(&state), shutdown.clone()));
    let mut connections = JoinSet::new();
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, Arc::clone(&state), shutdown.clone()));
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("requests still running after the grace period were aborted");
        connections.abort_all();
    }
    let _ = sweeper.await;
    tracing::info!("devnode stopped");
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = service_fn(move |request| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(handle(state, request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopped(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Resolves once shutdown is asked for (or the handle is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The lifecycle scan: deletes expired objects a few times per "day" (at least every minute).
async fn sweep_expired(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_millis(state.day_seconds.saturating_mul(250).clamp(250, 60_000));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            () = stopped(&mut shutdown) => return,
        }
        let now = clock::now_ms();
        match state.with_store(move |store| store.sweep(now)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(objects = n, "expired objects deleted"),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
        }
    }
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let route = Route::classify(parts.method.as_str(), &path, parts.uri.query());
    let kind = route.kind();
    state.counters.record_request(kind);
    let reply = if route == Route::Preflight {
        // The node answers preflights before reading anything.
        reply::preflight()
    } else {
        match read_body(body, &parts.headers, state.max_body_bytes).await {
            Ok(body) => dispatch(&state, route, &parts.method, &parts.headers, &query, body).await,
            Err(reply) => reply,
        }
    };
    tracing::debug!(
        method = %parts.method,
        path = %path,
        route = kind.as_str(),
        status = reply.status.as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    reply.into_response(parts.method == Method::HEAD)
}

/// Reads the whole body, refusing more than `max` bytes with `413`.
async fn read_body(body: Incoming, headers: &HeaderMap, max: u64) -> Result<Bytes, Reply> {
    let too_large = || Reply::text(413, format!("request body larger than {max} bytes"));
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large());
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(Reply::text(
            400,
            format!("cannot read the request body: {e}"),
        )),
    }
}

async fn dispatch(
    state: &Arc<State>,
    route: Route,
    method: &Method,
    headers: &HeaderMap,
    query: &str,
    body: Bytes,
) -> Reply {
    match route {
        Route::Preflight => reply::preflight(),
        Route::S3(op) => s3::handle(
            state,
            op,
            S3Request {
                headers,
                query,
                body,
            },
        )
        .await
        .render(),
        Route::Bundler => with_ao_cors(bundler::upload(state, headers, query, body).await, headers),
        Route::Gateway(id) if method == Method::GET || method == Method::HEAD => {
            with_ao_cors(gateway::read(state, id).await, headers)
        }
        Route::MetaAddress if method == Method::GET || method == Method::HEAD => {
            with_ao_cors(Reply::text(200, state.node_key.address.clone()), headers)
        }
        Route::PresignedGet { bucket, key } => {
            presign::serve(state, method.as_str(), &bucket, &key, query, headers).await
        }
        Route::Root => Reply::new(302).header("location", "/~hyperbuddy@1.0/dashboard"),
        Route::Gateway(_) | Route::MetaAddress | Route::Other => {
            with_ao_cors(Reply::text(404, "not_found"), headers)
        }
    }
}
