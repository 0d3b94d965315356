//! The forwarder: frames for peers on other gateways go through one task that resolves where each
//! peer is and appends to the inboxes in one pipeline per batch, in the order the frames were
//! produced: an expectation is always appended before the outcome it announces.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::connections::Frame;
use super::delivery::{Envelope, json};
use super::{AppState, Metrics};
use crate::store::{SessionRoute, is_cell_tag};

/// Frames queued for the forwarder before producers start dropping them.
const FORWARD_QUEUE: usize = 65_536;
/// Frames the forwarder resolves and appends per round trip.
const FORWARD_BATCH: usize = 512;

/// A frame for the forwarder.
#[derive(Debug, Clone)]
pub struct Queued {
    envelope: Envelope,
    /// This gateway holds the session's record but no longer its socket: keep the frame.
    keep: bool,
}

/// The producer side of the forwarder.
#[derive(Debug, Clone)]
pub struct Forwarder {
    tx: mpsc::Sender<Queued>,
}

impl Forwarder {
    pub fn new() -> (Self, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
        (Self { tx }, rx)
    }
}

impl AppState {
    /// Queues a frame for a peer on another gateway (`keep`: this gateway holds the session's
    /// record but no longer its socket).
    pub(super) fn forward(&self, envelope: Envelope, keep: bool) {
        if self.forwarder.tx.try_send(Queued { envelope, keep }).is_err() {
            Metrics::inc(&self.metrics.undeliverable);
            warn!("Forwarder queue full; a frame for another gateway was dropped.");
        }
    }
}

/// The forwarder: resolves where each queued frame's peer is and appends it to that gateway's
/// inbox, batch by batch, in order.
pub async fn run_forwarder(state: AppState, mut rx: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(FORWARD_BATCH);
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, FORWARD_BATCH) => n,
            // Shutdown: what is queued still goes, and what the sockets produce while they close:
            // the forwarder drains once every tracked task (the sockets among them) has ended.
            _ = state.shutdown.cancelled() => {
                state.tasks.wait().await;
                while let Ok(queued) = rx.try_recv() {
                    batch.push(queued);
                }
                if !batch.is_empty() {
                    let _ = forward_batch(&state, std::mem::take(&mut batch)).await;
                }
                return;
            }
        };
        if received == 0 {
            return;
        }
        let frames = batch.len();
        if let Err(err) = forward_with_retries(&state, std::mem::take(&mut batch)).await {
            state.metrics.undeliverable.fetch_add(frames as u64, std::sync::atomic::Ordering::Relaxed);
            warn!(%err, frames, "Forwarding frames to other gateways failed; they are lost.");
        }
    }
}

/// Forwards a batch, trying again while Redis is away for a moment (frozen, restarting, failing
/// over): the frames are results and job assignments whose loss would leave an utterance without
/// an outcome. Later frames wait behind the batch, so order holds. Past the job timeout the batch
/// is given up: by then the tasks' own deadlines have acted on them. A try that timed out may have
/// run after all; a frame appended twice is harmless (a listener drops an outcome it already had,
/// a node's second result for a job is stale).
async fn forward_with_retries(state: &AppState, batch: Vec<Queued>) -> crate::store::Result<()> {
    let give_up = Instant::now() + Duration::from_millis(state.config.scheduler.job_timeout_ms);
    let mut backoff = Duration::from_millis(50);
    loop {
        match forward_batch(state, batch.clone()).await {
            Err(err) if err.is_transient() && Instant::now() + backoff < give_up => {
                debug!(%err, frames = batch.len(), "Forwarding again after a Redis error.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            done => return done,
        }
    }
}

async fn forward_batch(state: &AppState, batch: Vec<Queued>) -> crate::store::Result<()> {
    let me = &*state.gateway_id;
    let kept: Vec<(&str, String, Option<bool>)> = batch
        .iter()
        .filter_map(|q| match &q.envelope {
            Envelope::Session { id, item } if item.worth_keeping() => {
                Some((id.as_str(), json(item), Some(q.keep)))
            }
            Envelope::Session { id, .. } => Some((id.as_str(), String::new(), None)),
            Envelope::Node { .. } => None,
        })
        .collect();
    let sessions: Vec<(&str, &str, Option<bool>)> =
        kept.iter().map(|(id, item, keep)| (*id, item.as_str(), *keep)).collect();
    let nodes: Vec<(&str, &str)> = batch
        .iter()
        .filter_map(|q| match &q.envelope {
            // A tag from another gateway's inbox goes into a key name: only a cell tag does.
            Envelope::Node { id, cell, .. } if is_cell_tag(cell) => Some((cell.as_str(), id.as_str())),
            Envelope::Node { .. } => None,
            Envelope::Session { .. } => None,
        })
        .collect();
    let sessions_config = &state.config.sessions;
    let mut session_routes = if sessions.is_empty() {
        Vec::new()
    } else {
        state.store.route_sessions(&sessions, sessions_config.backlog, state.detached_ttl_ms()).await?
    }
    .into_iter();
    let mut node_routes =
        if nodes.is_empty() { Vec::new() } else { state.store.node_routes(&nodes).await? }.into_iter();

    let mut appends: Vec<(String, String)> = Vec::new();
    let mut keep_here = Vec::new();
    for queued in batch {
        match &queued.envelope {
            Envelope::Session { id, .. } => match session_routes.next() {
                Some(SessionRoute::Kept) => Metrics::inc(&state.metrics.frames_kept),
                Some(SessionRoute::Gone) | None => Metrics::inc(&state.metrics.undeliverable),
                Some(SessionRoute::Attached { gateway }) if gateway == me => match state.peers.session(id) {
                    // It attached here while the frame was on its way.
                    Some(peer) => {
                        let Envelope::Session { id, item } = queued.envelope else { unreachable!() };
                        state.deliver_local(&id, &peer, item);
                    }
                    None if !queued.keep => keep_here.push(Queued { keep: true, ..queued }),
                    None => Metrics::inc(&state.metrics.undeliverable),
                },
                Some(SessionRoute::Attached { gateway }) => appends.push((gateway, json(&queued.envelope))),
            },
            Envelope::Node { cell, .. } if !is_cell_tag(cell) => Metrics::inc(&state.metrics.undeliverable),
            Envelope::Node { id, .. } => match node_routes.next().flatten() {
                Some(route) if route.online && route.gateway != me => {
                    appends.push((route.gateway, json(&queued.envelope)))
                }
                Some(route) if route.online => match state.peers.node(id) {
                    Some(outbox) => {
                        let Envelope::Node { frame, .. } = queued.envelope else { unreachable!() };
                        outbox.send_frame(Frame::Text(frame));
                    }
                    None => Metrics::inc(&state.metrics.undeliverable),
                },
                _ => Metrics::inc(&state.metrics.undeliverable),
            },
        }
    }
    let frames: Vec<(&str, &str)> = appends.iter().map(|(g, p)| (g.as_str(), p.as_str())).collect();
    state.store.append_to_inboxes(&frames, state.config.gateways.inbox_maxlen).await?;
    state.metrics.frames_forwarded.fetch_add(frames.len() as u64, std::sync::atomic::Ordering::Relaxed);
    if !keep_here.is_empty() {
        Box::pin(forward_batch(state, keep_here)).await?;
    }
    Ok(())
}
