//! `/ws/node`: a worker node's socket. The first message registers the node; then heartbeats,
//! job acknowledgements, partial transcripts, results, errors and drain. When the socket ends, the
//! node goes offline and its in-flight jobs are re-dispatched at once.

use std::net::SocketAddr;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use tracing::{Instrument, debug, info, info_span, warn};

use super::capabilities::{language_pairs, ready_types};
use super::socket::{CLOSE_POLICY, Incoming, Socket};
use super::{AppState, Metrics, bearer, error_frame, same_secret};
use crate::protocol::{
    ClientAsrPartial, DecodeError, ErrorCode, ErrorFrame, FromNode, JobAck, JobResult, NodeHeartbeat,
    NodeRegister, NodeRegisterAck, ToClient, ToNode, UiEventKind, decode,
};
use crate::store::{
    CapabilityUpdate, CellKeys, CompleteReply, Ended, JobReply, NodeRegistration, NodeReply, OfflineReply,
    Outcome, RegisterReply, Usage, new_id,
};

pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(slot) = state.admit(addr) else { return super::limits::refused() };
    let bearer = bearer(&headers).map(str::to_owned);
    let limit = state.config.max_frame_bytes;
    super::socket::configure(ws, limit).on_upgrade(move |ws| {
        let tasks = state.tasks.clone();
        tasks.track_future(
            async move {
                serve(state, ws, bearer).await;
                drop(slot);
            }
            .instrument(info_span!("node", node.id = tracing::field::Empty)),
        )
    })
}

/// The node this socket registered.
struct Registered {
    id: String,
    conn: String,
    /// The node's cell (by its id or its cell label).
    cell: CellKeys,
    /// Explicit `language_pairs` from the register: heartbeats' capabilities do not replace them.
    explicit_pairs: bool,
}

async fn serve(state: AppState, ws: WebSocket, bearer: Option<String>) {
    let (mut socket, writer) = Socket::new(ws, &state);
    let outbox = socket.outbox.clone();
    let session = async {
        let mut node: Option<Registered> = None;
        while let Some(incoming) = socket.next().await {
            let text = match incoming {
                Incoming::Text(text) => text,
                Incoming::Binary => {
                    invalid(&state, &socket, DecodeError::Binary);
                    continue;
                }
            };
            match decode::<FromNode>(&text, FromNode::TYPES) {
                Ok(FromNode::NodeRegister(register)) => {
                    if let Some(old) = node.take() {
                        go_offline(&state, &old).await;
                    }
                    node = register_node(&state, &socket, register, bearer.as_deref()).await;
                }
                // Never answered, registered or not: an error answered with an error could
                // bounce between a node and the gateway for ever.
                Ok(FromNode::Error(err)) => {
                    Metrics::inc(&state.metrics.node_errors);
                    let id = node.as_ref().map_or("", |n| n.id.as_str());
                    warn!(node.id = %id, code = %err.code, message = %err.message, "Node sent an error frame.");
                }
                Ok(FromNode::NodeControl(control)) => {
                    tracing::debug!(command = %control.command, "node_control from a node ignored (it is the scheduler's command).")
                }
                Ok(message) => match &node {
                    Some(registered) => handle(&state, &socket, registered, message).await,
                    None => reply_error(
                        &socket,
                        ErrorFrame::new(ErrorCode::NodeNotRegistered, "send node_register first"),
                    ),
                },
                Err(err) => invalid(&state, &socket, err),
            }
        }
        if let Some(registered) = node {
            go_offline(&state, &registered).await;
        }
        socket.outbox.closed().cancel();
    };
    tokio::join!(writer, session);
    drop(outbox);
}

fn invalid(state: &AppState, socket: &Socket, err: DecodeError) {
    Metrics::inc(&state.metrics.invalid_messages);
    reply_error(socket, ErrorFrame::new(ErrorCode::InvalidMessage, err.to_string()));
}

fn reply_error(socket: &Socket, frame: ErrorFrame) {
    socket.outbox.send(&ToNode::Error(frame));
}

async fn register_node(
    state: &AppState,
    socket: &Socket,
    msg: NodeRegister,
    bearer: Option<&str>,
) -> Option<Registered> {
    if let Some(expected) = &state.config.node_token {
        let presented = msg.token.as_deref().or(bearer).unwrap_or("");
        if !same_secret(presented, expected) {
            reply_error(socket, ErrorFrame::new(ErrorCode::Unauthorized, "invalid node token"));
            socket.outbox.close(CLOSE_POLICY, "unauthorized");
            return None;
        }
    }
    let id = match msg.node_id.as_deref() {
        None | Some("") => new_id("node-", 8),
        Some(id) if is_node_id(id) => id.to_owned(),
        Some(_) => {
            reply_error(
                socket,
                ErrorFrame::new(ErrorCode::InvalidMessage, "node_id: 1-64 letters, digits, `.`, `-`, `_`"),
            );
            return None;
        }
    };
    let limit = state.config.max_language_pairs;
    let pairs = match language_pairs(msg.language_pairs.as_deref(), &msg.language_capabilities, limit) {
        Ok(pairs) => pairs,
        Err(err) => {
            reply_error(socket, ErrorFrame::new(ErrorCode::InvalidMessage, err.to_string()));
            return None;
        }
    };
    let capacity =
        msg.max_concurrent_jobs.unwrap_or(state.config.default_capacity).clamp(1, state.config.max_capacity);
    let registration = NodeRegistration {
        id: id.clone(),
        presented_secret: msg.node_secret.clone(),
        secret: new_id("", 32),
        conn: new_id(&format!("{}/", state.gateway_id), 12),
        gateway: state.gateway_id.to_string(),
        capacity,
        pairs,
        ready: ready_types(&msg.capability_by_type),
        labels: msg.labels.clone(),
        info: serde_json::json!({
            "version": msg.version,
            "platform": msg.platform,
            "hardware": msg.hardware,
            "installed_services": msg.installed_services,
            "features_supported": msg.features_supported,
            "language_capabilities": msg.language_capabilities,
        }),
    };
    let cell = state.store.node_cell(&id, &registration.labels).clone();
    match state.store.register_node(&cell, &registration).await {
        Ok(RegisterReply::Registered { released }) => {
            state.peers.add_node(&id, &registration.conn, socket.outbox.clone());
            tracing::Span::current().record("node.id", id.as_str());
            info!(node.id = %id, capacity, pairs = registration.pairs.len(), "Node registered.");
            socket.outbox.send(&ToNode::NodeRegisterAck(NodeRegisterAck {
                node_id: id.clone(),
                message: "registered".into(),
                status: "ready".into(),
                heartbeat_interval_ms: state.config.scheduler.heartbeat_interval_ms,
                node_secret: registration.secret,
            }));
            state.handle_released(&cell, released);
            Some(Registered {
                id,
                conn: registration.conn,
                cell,
                explicit_pairs: msg.language_pairs.is_some(),
            })
        }
        Ok(RegisterReply::NodeIdConflict) => {
            reply_error(
                socket,
                ErrorFrame::new(
                    ErrorCode::NodeIdConflict,
                    "this node_id is connected; present its node_secret",
                ),
            );
            None
        }
        Err(err) => {
            warn!(%err, "Node registration failed.");
            reply_error(socket, error_frame(&err));
            None
        }
    }
}

async fn handle(state: &AppState, socket: &Socket, node: &Registered, message: FromNode) {
    match message {
        FromNode::NodeRegister(_) | FromNode::Error(_) | FromNode::NodeControl(_) => {
            unreachable!("handled by the caller")
        }
        FromNode::NodeHeartbeat(hb) => heartbeat(state, socket, node, hb).await,
        FromNode::JobAck(ack) => job_ack(state, node, ack, false).await,
        FromNode::JobStarted(ack) => job_ack(state, node, ack, true).await,
        FromNode::AsrPartial(partial) => match state.store.job_route(&partial.job_id, &node.id).await {
            Ok(JobReply::Ok { spec, .. }) => {
                if partial.is_final {
                    state.ui_event(&spec, &partial.job_id, UiEventKind::AsrFinal, None);
                }
                let message = ToClient::AsrPartial(ClientAsrPartial {
                    session_id: spec.session_id.clone(),
                    utterance_index: spec.utterance_index,
                    job_id: partial.job_id,
                    text: partial.text,
                    is_final: partial.is_final,
                    trace_id: spec.trace_id.clone(),
                });
                state.to_recipients(&spec, &message);
            }
            Ok(JobReply::Stale) => Metrics::inc(&state.metrics.partials_dropped),
            Err(err) => warn!(%err, "asr_partial routing failed."),
        },
        FromNode::JobResult(result) => job_result(state, socket, node, result).await,
        FromNode::NodeError(err) => {
            Metrics::inc(&state.metrics.node_errors);
            warn!(node.id = %node.id, code = %err.code, message = %err.message, "Node reported an error.");
        }
        FromNode::NodeDrain {} => match state.store.drain_node(&node.cell, &node.id, &node.conn).await {
            Ok(NodeReply::NotRegistered) => reply_error(socket, not_registered()),
            Ok(_) => info!(node.id = %node.id, "Node draining."),
            Err(err) => reply_error(socket, error_frame(&err)),
        },
    }
}

async fn job_ack(state: &AppState, node: &Registered, ack: JobAck, started: bool) {
    match state.store.ack_job(&ack.job_id, &node.id, ack.attempt_id, started).await {
        // The UI hears of the node accepting the job once, not again when it starts.
        Ok(JobReply::Ok { spec, .. }) if !started => {
            state.ui_event(&spec, &ack.job_id, UiEventKind::NodeAccepted, None)
        }
        Ok(JobReply::Ok { .. }) => {}
        Ok(JobReply::Stale) => debug!(job.id = %ack.job_id, "Ack for a job this node does not hold."),
        Err(err) => warn!(%err, "job_ack failed."),
    }
}

async fn heartbeat(state: &AppState, socket: &Socket, node: &Registered, hb: NodeHeartbeat) {
    if !hb.node_id.is_empty() && hb.node_id != node.id {
        reply_error(socket, not_registered());
        return;
    }
    let r = &hb.resource_usage;
    let usage = Usage {
        cpu: r.cpu_percent,
        gpu: r.gpu_percent,
        gpu_mem: r.gpu_mem_percent,
        mem: r.mem_percent,
        gpu_queue: r.gpu_queue_length,
    };
    let mut update =
        CapabilityUpdate { pairs: None, ready: hb.capability_by_type.as_deref().map(ready_types) };
    if let (Some(caps), false) = (&hb.language_capabilities, node.explicit_pairs) {
        match language_pairs(None, caps, state.config.max_language_pairs) {
            Ok(pairs) => update.pairs = Some(pairs),
            Err(err) => reply_error(socket, ErrorFrame::new(ErrorCode::InvalidMessage, err.to_string())),
        }
    }
    match state.store.heartbeat(&node.cell, &node.id, &node.conn, &usage, &update).await {
        Ok(NodeReply::NotRegistered) => reply_error(socket, not_registered()),
        Ok(_) => {}
        Err(err) => reply_error(socket, error_frame(&err)),
    }
}

async fn job_result(state: &AppState, socket: &Socket, node: &Registered, result: JobResult) {
    let outcome = if result.success { Outcome::Completed } else { Outcome::Failed };
    let reply = state.store.complete_task(&result.job_id, &node.id, result.attempt_id, outcome).await;
    match reply {
        Ok(
            CompleteReply::Completed(Ended { spec: None, .. })
            | CompleteReply::Failed(Ended { spec: None, .. }),
        ) => {
            // A replay of a call whose reply was lost on a dropped connection: the task ended, but
            // it no longer keeps its spec, so the recipients are not known here; the speaker's gap
            // timer reports the utterance (missing_result).
            Metrics::inc(&state.metrics.undeliverable);
            warn!(job.id = %result.job_id, "Result recorded, but its reply was lost and the task's recipients are gone.");
        }
        Ok(CompleteReply::Completed(Ended { spec: Some(spec), wake: next, unheld, handoff, .. })) => {
            if let Some(reason) = result.empty_reason() {
                debug!(job.id = %result.job_id, reason, "Empty result: silence.");
                state.deliver_silence(&spec, &result.job_id);
            } else {
                state.deliver_result(&spec, &result.job_id, &result);
            }
            wake(state, &result.job_id, handoff, [next, unheld]);
        }
        Ok(CompleteReply::Failed(Ended { spec: Some(spec), wake: next, unheld, handoff, .. })) => {
            let node_code = result.error.as_ref().map(|e| e.code.as_str());
            let code = node_code.and_then(ErrorCode::parse).unwrap_or(ErrorCode::InternalError);
            state.fail_task(&spec, code, node_code, Some(&result.job_id));
            wake(state, &result.job_id, handoff, [next, unheld]);
        }
        Ok(CompleteReply::Stale { state: job_state }) => {
            Metrics::inc(&state.metrics.results_stale);
            debug!(job.id = %result.job_id, ?job_state, "Result dropped: this node and attempt do not hold the job.");
        }
        Ok(CompleteReply::Unknown) => {
            Metrics::inc(&state.metrics.results_unknown);
            debug!(job.id = %result.job_id, "Result dropped: unknown job.");
        }
        Err(err) => {
            // Redis stayed away for the whole job timeout (complete_task retries until then): the
            // job stays assigned and its deadline dispatches it again.
            warn!(%err, job.id = %result.job_id, "Completing a job failed.");
            reply_error(socket, error_frame(&err));
        }
    }
}

/// A slot of the job's cell just freed: send the job of the waiting task it went to, dispatch the
/// queue's head when it is to be woken instead, and the task of the same tenant its cap held.
fn wake(state: &AppState, job_id: &str, handoff: Option<crate::store::Handoff>, tasks: [String; 2]) {
    let Some((cell, _)) = state.store.job_task(job_id) else { return };
    if let Some(handoff) = handoff {
        state.send_handoff(&cell, handoff);
    }
    for task_id in tasks.into_iter().filter(|t| !t.is_empty()) {
        state.spawn_redispatch(&cell, task_id);
    }
}

async fn go_offline(state: &AppState, node: &Registered) {
    state.peers.remove_node(&node.id, &node.conn);
    match state.store.node_offline(&node.cell, &node.id, &node.conn).await {
        Ok(OfflineReply::Offline { released }) => {
            info!(node.id = %node.id, requeued = released.requeued.len(), "Node offline.");
            state.handle_released(&node.cell, released);
        }
        Ok(OfflineReply::Stale) => debug!(node.id = %node.id, "Node already replaced or offline."),
        // Its liveness entry expires and the sweep takes it offline then.
        Err(err) => warn!(%err, node.id = %node.id, "Taking the node offline failed."),
    }
}

fn not_registered() -> ErrorFrame {
    ErrorFrame::new(ErrorCode::NodeNotRegistered, "unknown node; send node_register again")
}

fn is_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}
