//! `/ws/session`: a client's socket. `session_init` opens the session; utterances become tasks;
//! results, partials, UI events and errors come back on the same socket.

use axum::extract::State;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::response::Response;
use base64::Engine;
use tracing::{Instrument, info, info_span, warn};

use super::capabilities::is_language_code;
use super::rooms::Membership;
use super::socket::{Incoming, Socket};
use super::{AppState, Dispatched, Metrics, error_frame};
use crate::protocol::{
    DecodeError, ErrorCode, ErrorFrame, FromClient, Mode, ServerHeartbeat, SessionCloseAck, SessionInit,
    SessionInitAck, ToClient, UNSERVED_CLIENT_TYPES, Utterance, decode, now_ms,
};
use crate::scheduler::{Payload, SchedulerError, TaskSpec, new_id};

pub async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let limit = state.config.max_frame_bytes;
    super::socket::configure(ws, limit).on_upgrade(move |ws| {
        let tasks = state.tasks.clone();
        let span = info_span!("session", session.id = tracing::field::Empty);
        tasks.track_future(serve(state, ws).instrument(span))
    })
}

/// A session opened by `session_init`: the defaults of its utterances.
struct Session {
    id: String,
    mode: Mode,
    src_lang: String,
    tgt_lang: String,
    lang_a: Option<String>,
    lang_b: Option<String>,
    dialect: Option<String>,
    tenant_id: Option<String>,
    trace_id: String,
}

async fn serve(state: AppState, ws: WebSocket) {
    let (mut socket, writer) = Socket::new(ws, state.config.outbox_capacity, state.shutdown.clone());
    let session_loop = async {
        let mut session: Option<Session> = None;
        let mut membership = Membership::default();
        while let Some(incoming) = socket.next().await {
            let text = match incoming {
                Incoming::Text(text) => text,
                Incoming::Binary => {
                    invalid(&state, &socket, DecodeError::Binary.to_string());
                    continue;
                }
            };
            let message = match decode::<FromClient>(&text, FromClient::TYPES) {
                Ok(message) => message,
                Err(DecodeError::UnknownType(kind)) if UNSERVED_CLIENT_TYPES.contains(&kind.as_str()) => {
                    let message = format!("`{kind}` is not served by this gateway yet");
                    reply(&socket, ErrorFrame::new(ErrorCode::UnsupportedFeature, message));
                    continue;
                }
                Err(err) => {
                    invalid(&state, &socket, err.to_string());
                    continue;
                }
            };
            match (message, &session) {
                (FromClient::SessionInit(init), None) => match open(init) {
                    Ok(opened) => {
                        state.peers.add_session(&opened.id, socket.outbox.clone());
                        tracing::Span::current().record("session.id", opened.id.as_str());
                        info!(session.id = %opened.id, mode = opened.mode.as_str(), "Session opened.");
                        socket.outbox.send(&ToClient::SessionInitAck(SessionInitAck {
                            session_id: opened.id.clone(),
                            assigned_node_id: None,
                            message: "session created".into(),
                            trace_id: opened.trace_id.clone(),
                            protocol_version: "1.0".into(),
                            use_binary_frame: false,
                        }));
                        session = Some(opened);
                    }
                    Err(reason) => invalid(&state, &socket, reason),
                },
                (FromClient::SessionInit(_), Some(_)) => {
                    invalid(&state, &socket, "the session is already initialized".into())
                }
                (_, None) => {
                    reply(&socket, ErrorFrame::new(ErrorCode::InvalidSession, "send session_init first"))
                }
                (FromClient::Utterance(utterance), Some(session)) => {
                    utter(&state, &socket, session, &mut membership, utterance).await
                }
                (FromClient::RoomCreate(msg), Some(session)) => {
                    state.room_create(&socket.outbox, &session.id, &mut membership, msg).await
                }
                (FromClient::RoomJoin(msg), Some(session)) => {
                    state.room_join(&socket.outbox, &session.id, &mut membership, msg).await
                }
                (FromClient::RoomLeave(msg), Some(session)) => {
                    let code = Some(msg.room_code.as_str());
                    state.room_leave(Some(&socket.outbox), &session.id, &mut membership, code).await
                }
                (FromClient::RoomSetLang(msg), Some(_)) => {
                    state
                        .room_set_lang(&socket.outbox, &mut membership, &msg.room_code, msg.preferred_lang)
                        .await
                }
                (FromClient::ClientHeartbeat {}, Some(session)) => {
                    socket.outbox.send(&ToClient::ServerHeartbeat(ServerHeartbeat {
                        session_id: session.id.clone(),
                        timestamp: now_ms(),
                    }));
                }
                (FromClient::SessionClose(close), Some(session)) => {
                    info!(session.id = %session.id, reason = %close.reason, "Session closed by client.");
                    socket
                        .outbox
                        .send(&ToClient::SessionCloseAck(SessionCloseAck { session_id: session.id.clone() }));
                    socket.outbox.close(1000, "session closed");
                    break;
                }
            }
        }
        if let Some(session) = session {
            // A closed or dropped session leaves its room (resume, which would keep it, is not
            // served yet).
            state.room_leave(None, &session.id, &mut membership, None).await;
            state.peers.remove_session(&session.id);
        }
        socket.outbox.closed().cancel();
    };
    tokio::join!(writer, session_loop);
}

fn reply(socket: &Socket, frame: ErrorFrame) {
    socket.outbox.send(&ToClient::Error(frame));
}

fn invalid(state: &AppState, socket: &Socket, reason: String) {
    Metrics::inc(&state.metrics.invalid_messages);
    reply(socket, ErrorFrame::new(ErrorCode::InvalidMessage, reason));
}

/// Validates a `session_init` into a session with a fresh id.
fn open(init: SessionInit) -> Result<Session, String> {
    let src_lang = init.src_lang.unwrap_or_else(|| "auto".into());
    let (tgt_lang, lang_a, lang_b) = match init.mode {
        Mode::OneWay => {
            let tgt = init.tgt_lang.ok_or("tgt_lang is required in one_way mode")?;
            (tgt, init.lang_a, init.lang_b)
        }
        Mode::TwoWayAuto => {
            let (Some(a), Some(b)) = (init.lang_a, init.lang_b) else {
                return Err("lang_a and lang_b are required in two_way_auto mode".into());
            };
            (init.tgt_lang.unwrap_or_else(|| b.clone()), Some(a), Some(b))
        }
    };
    for code in [Some(&src_lang), Some(&tgt_lang), lang_a.as_ref(), lang_b.as_ref()].into_iter().flatten() {
        if !is_language_code(code) {
            return Err(format!("invalid language code {:?}", code.chars().take(32).collect::<String>()));
        }
    }
    let id = new_id("s-", 8);
    Ok(Session {
        trace_id: init.trace_id.unwrap_or_else(|| new_id("trace-", 16)),
        id,
        mode: init.mode,
        src_lang,
        tgt_lang,
        lang_a,
        lang_b,
        dialect: init.dialect,
        tenant_id: init.tenant_id,
    })
}

async fn utter(
    state: &AppState,
    socket: &Socket,
    session: &Session,
    membership: &mut Membership,
    u: Utterance,
) {
    let received = std::time::Instant::now();
    if u.session_id != session.id {
        let frame = ErrorFrame::new(ErrorCode::InvalidSession, "session_id does not match this session");
        return reply(socket, frame);
    }
    let (spec, payload) = match task_of(state, session, u) {
        Ok(task) => task,
        Err(frame) => {
            if frame.code == ErrorCode::InvalidMessage {
                Metrics::inc(&state.metrics.invalid_messages);
            }
            return reply(socket, frame);
        }
    };
    let fail = |err: SchedulerError| {
        warn!(%err, utterance = spec.utterance_index, "Submitting a task failed.");
        let details = serde_json::json!({ "utterance_index": spec.utterance_index });
        reply(socket, error_frame(&err).with_details(details));
    };
    // In a room, one task per route of the room-routing policy; alone (or with nobody to route
    // to), the single-session task.
    let mut tasks = match state.room_tasks(membership, &spec).await {
        Ok(tasks) => tasks,
        Err(err) => return fail(err),
    };
    if tasks.is_empty() {
        tasks.push(spec.clone());
    }
    for task in &tasks {
        match state.submit(task, &payload).await {
            Ok(Dispatched::Assigned { .. }) => {
                state.metrics.dispatch_latency.record(received.elapsed().as_micros() as u64)
            }
            Ok(_) => {}
            Err(err) => return fail(err),
        }
    }
}

/// The task of one utterance in single-session mode: the speaker is its only recipient.
fn task_of(state: &AppState, session: &Session, u: Utterance) -> Result<(TaskSpec, Payload), ErrorFrame> {
    let bad = |m: String| ErrorFrame::new(ErrorCode::InvalidMessage, m);
    let size = u.audio.as_ref().map_or(0, String::len) + u.text.as_ref().map_or(0, String::len);
    if size > state.config.max_payload_bytes {
        let limit = state.config.max_payload_bytes;
        return Err(ErrorFrame::new(
            ErrorCode::PayloadTooLarge,
            format!("utterance payload exceeds {limit} bytes"),
        ));
    }
    match (&u.audio, &u.text) {
        (None, None) => return Err(bad("utterance needs `audio` (base64) or `text`".into())),
        (Some(audio), _) if base64::engine::general_purpose::STANDARD.decode(audio).is_err() => {
            return Err(bad("audio is not valid base64".into()));
        }
        _ => {}
    }
    let src_lang = u.src_lang.unwrap_or_else(|| session.src_lang.clone());
    let tgt_lang = u.tgt_lang.unwrap_or_else(|| session.tgt_lang.clone());
    if !is_language_code(&src_lang) || !is_language_code(&tgt_lang) {
        return Err(bad("invalid src_lang or tgt_lang".into()));
    }
    let spec = TaskSpec {
        session_id: session.id.clone(),
        utterance_index: u.utterance_index,
        src_lang,
        tgt_lang,
        dialect: u.dialect.or_else(|| session.dialect.clone()),
        mode: session.mode,
        lang_a: session.lang_a.clone(),
        lang_b: session.lang_b.clone(),
        pipeline: u.pipeline.unwrap_or_default(),
        audio_format: u.audio_format.unwrap_or_else(|| "pcm16".into()),
        sample_rate: u.sample_rate.unwrap_or(16_000),
        trace_id: u.trace_id.unwrap_or_else(|| session.trace_id.clone()),
        turn_id: None,
        room_code: None,
        tenant_id: session.tenant_id.clone(),
        recipients: vec![session.id.clone()],
        created_ms: now_ms(),
    };
    Ok((spec, Payload { audio: u.audio, text: u.text }))
}
