//! The gateway: the axum app with the node and session sockets, the dispatch path, and the sweep.

mod admin;
mod admission;
mod audio;
mod capabilities;
mod connections;
mod delivery;
mod dispatch;
mod forwarder;
mod jobs;
mod limits;
mod metrics;
mod node_socket;
mod ordering;
mod outcomes;
mod presence;
mod prometheus;
mod readiness;
mod rooms;
mod session_socket;
mod signalling;
mod socket;
mod speech;
mod sweeper;

pub use capabilities::{CapabilityError, language_pairs, ready_types};
pub use connections::{Outbox, Peers};
pub use dispatch::Dispatched;
pub use metrics::Metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::policy::{self, Breaker, Limits, Policies, PolicyHost};
use crate::protocol::{ErrorCode, ErrorFrame};
use crate::store::{Store, StoreError, new_id};

/// Handles shared by every request and socket of one gateway.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub policies: Arc<Policies>,
    pub peers: Peers,
    pub forwarder: forwarder::Forwarder,
    pub address_limits: limits::AddressLimits,
    pub metrics: Arc<Metrics>,
    pub gateway_id: Arc<str>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

impl AppState {
    /// Runs `future` on the task tracker (shutdown waits for it) inside `span`.
    pub fn spawn<F>(&self, span: tracing::Span, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(future.instrument(span));
    }
}

impl AppState {
    /// A place for one more socket from `addr`; `None` when it has too many (the caller answers
    /// with [`limits::refused`]).
    fn admit(&self, addr: SocketAddr) -> Option<limits::ConnectionSlot> {
        let slot = self.address_limits.acquire(addr.ip(), self.config.max_connections_per_address);
        if slot.is_none() {
            Metrics::inc(&self.metrics.connections_refused);
            tracing::warn!(%addr, "Connection refused: too many from this address.");
        }
        slot
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("redis URL is not set (--redis-url or SWITCHBOARD_REDIS_URL)")]
    NoRedisUrl,
    #[error("cannot reach Redis: {0}")]
    Scheduler(#[from] StoreError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/ws/node", get(node_socket::upgrade))
        .route("/ws/session", get(session_socket::upgrade))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readiness::readyz))
        .with_state(state)
}

/// A gateway bound to its listeners and connected to Redis, ready to [`serve`](Gateway::serve).
pub struct Gateway {
    listener: TcpListener,
    admin: Option<TcpListener>,
    forward: tokio::sync::mpsc::Receiver<forwarder::Queued>,
    pub state: AppState,
}

impl Gateway {
    /// Connects to Redis (loading the scripts) and builds the gateway's state.
    pub async fn bind(
        listener: TcpListener,
        config: Config,
        shutdown: CancellationToken,
    ) -> Result<Self, GatewayError> {
        let url = config.redis_url.clone().ok_or(GatewayError::NoRedisUrl)?;
        let store = Store::connect(&url, config.scheduler.clone()).await?;
        let gateway_id = config.gateway_id.clone().unwrap_or_else(|| new_id("gw-", 8));
        let limits = Limits {
            deadline: Duration::from_millis(config.policy.deadline_ms),
            memory_bytes: config.policy.memory_mib << 20,
        };
        let parameters = config.policy.config.clone().into_iter().collect();
        let pinned = config.policy.pinned_sha256.clone();
        let breaker = Breaker {
            failures: config.policy.breaker_failures,
            cooldown_ms: config.policy.breaker_cooldown_ms,
        };
        let canary = config.policy.canary_limits();
        let policies = Arc::new(
            Policies::new(PolicyHost::new(limits, parameters))
                .pinned(pinned)
                .breaker(breaker)
                .with_canary_limits(canary)
                .sampling(config.policy.replay_every, config.policy.replay_samples),
        );
        let (forwarder, forward) = forwarder::Forwarder::new();
        let state = AppState {
            config: Arc::new(config),
            store,
            policies,
            peers: Peers::default(),
            forwarder,
            address_limits: limits::AddressLimits::default(),
            metrics: Arc::default(),
            gateway_id: gateway_id.into(),
            shutdown,
            tasks: TaskTracker::new(),
        };
        Ok(Self { listener, admin: None, forward, state })
    }

    /// Serves the admin API on `listener` too.
    pub fn with_admin(mut self, listener: TcpListener) -> Self {
        self.admin = Some(listener);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the shutdown token is cancelled, then closes every socket and waits for
    /// in-flight work within the grace period.
    pub async fn serve(self) -> Result<(), GatewayError> {
        let state = self.state;
        let addr = self.listener.local_addr()?;
        tracing::info!(%addr, gateway.id = %state.gateway_id, "Gateway listening.");
        state.spawn(tracing::info_span!("sweeper"), sweeper::run(state.clone()));
        state.spawn(tracing::info_span!("inbox"), presence::run_inbox(state.clone()));
        state.spawn(tracing::info_span!("presence"), presence::run_presence(state.clone()));
        state.spawn(tracing::info_span!("outcome_audit"), delivery::run_outcome_audit(state.clone()));
        state.spawn(tracing::info_span!("scripts"), readiness::keep_scripts_loaded(state.clone()));
        // Not on the tracker: it drains what the tracked tasks send while they end, so it ends
        // after them (see the end of this function).
        let forwarder = tokio::spawn(
            forwarder::run_forwarder(state.clone(), self.forward)
                .instrument(tracing::info_span!("forwarder")),
        );
        let sync_interval = Duration::from_millis(state.config.policy.sync_interval_ms);
        let sync = policy::sync_stored(
            state.policies.clone(),
            state.store.clone(),
            state.gateway_id.clone(),
            sync_interval,
            state.shutdown.clone(),
        );
        state.spawn(tracing::info_span!("policy_sync"), sync);
        if let Some(dir) = state.config.policy.dir.clone() {
            let watch = policy::watch::run(state.policies.clone(), dir, state.shutdown.clone());
            state.spawn(tracing::info_span!("policy_watch"), watch);
        }
        let stop = state.shutdown.clone();
        let peers = state.peers.clone();
        // Small JSON frames both ways: Nagle's algorithm with delayed ACKs would add ~40 ms to a
        // request/response exchange.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let service = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let public = axum::serve(listener, service).with_graceful_shutdown(async move {
            stop.cancelled().await;
            // axum's graceful shutdown does not wait for WebSocket tasks: close them.
            peers.close_all(socket::CLOSE_GOING_AWAY, "gateway shutting down");
        });
        let admin = async {
            let Some(listener) = self.admin else { return Ok(()) };
            tracing::info!(addr = %listener.local_addr()?, "Admin API listening.");
            let stop = state.shutdown.clone();
            axum::serve(listener, admin::app(state.clone()))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        };
        let (public, admin) = tokio::join!(public, admin);
        public?;
        admin?;
        state.tasks.close();
        let grace = Duration::from_millis(state.config.shutdown_grace_ms);
        let deadline = tokio::time::Instant::now() + grace;
        if tokio::time::timeout_at(deadline, state.tasks.wait()).await.is_err()
            || tokio::time::timeout_at(deadline, forwarder).await.is_err()
        {
            tracing::warn!(?grace, "Shutdown grace period over with work still running.");
        }
        tracing::info!(gateway.id = %state.gateway_id, "Gateway stopped.");
        Ok(())
    }
}

/// The one place store failures become `error` frames.
pub fn error_frame(err: &StoreError) -> ErrorFrame {
    match err {
        StoreError::Redis(_) => {
            ErrorFrame::new(ErrorCode::SchedulerDependencyDown, "the scheduler store is unavailable; retry")
        }
        StoreError::Reply { .. } | StoreError::Script { .. } => {
            ErrorFrame::new(ErrorCode::InternalError, "internal error")
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// Whether a presented secret is the expected one, without leaking through timing where they
/// differ (`subtle`).
pub(crate) fn same_secret(presented: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}
