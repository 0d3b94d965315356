//! `/ws/session`: a client's socket. `session_init` opens a session (or resumes one after a
//! reconnect, on any gateway); utterances and streamed audio become tasks (`speech.rs`); results,
//! partials, UI events and errors come back on the same socket, results in each speaker's order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::{Instrument, info, info_span, warn};

use super::audio::{AudioStream, Codec};
use super::connections::{Frame, SessionPeer};
use super::ordering::Sequencer;
use super::rooms::Membership;
use super::signalling::SignalKind;
use super::socket::{Incoming, Socket};
use super::speech::{speak_cut, stream, utter};
use super::{AppState, Metrics, error_frame};
use crate::protocol::{
    DecodeError, ErrorCode, ErrorFrame, FromClient, Mode, ServerHeartbeat, SessionCloseAck, SessionInit,
    SessionInitAck, ToClient, decode, now_ms,
};
use crate::protocol::{clip, is_language_code};
use crate::store::{AttachReply, Fence, SessionEnd, StoreError, new_id};

pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(slot) = state.admit(addr) else { return super::limits::refused() };
    let limit = state.config.max_frame_bytes;
    super::socket::configure(ws, limit).on_upgrade(move |ws| {
        let tasks = state.tasks.clone();
        let span = info_span!("session", session.id = tracing::field::Empty);
        tasks.track_future(
            async move {
                serve(state, ws).await;
                drop(slot);
            }
            .instrument(span),
        )
    })
}

/// What `session_init` set: the defaults of the session's utterances. Stored with the session's
/// record, so a resume on another gateway restores them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Settings {
    pub(super) mode: Mode,
    pub(super) src_lang: String,
    pub(super) tgt_lang: String,
    pub(super) lang_a: Option<String>,
    pub(super) lang_b: Option<String>,
    pub(super) dialect: Option<String>,
    pub(super) tenant_id: Option<String>,
    pub(super) trace_id: String,
    /// Format of streamed audio: `opus` (what the fleet's clients send) or `pcm16`.
    pub(super) audio_format: String,
    pub(super) sample_rate: u32,
}

/// An attached session: its id, this socket's connection id (the fence of its detach and end),
/// and its settings.
pub(super) struct Session {
    pub(super) id: String,
    pub(super) conn: String,
    pub(super) settings: Settings,
    pub(super) audio: AudioStream,
}

async fn serve(state: AppState, ws: WebSocket) {
    let (mut socket, writer) = Socket::new(ws, &state);
    let session_loop = async {
        let mut session: Option<Session> = None;
        let mut membership = Membership::default();
        let mut closed_by_client = false;
        loop {
            let pause = session.as_ref().and_then(|s| s.audio.pause_deadline());
            let incoming = tokio::select! {
                incoming = socket.next() => match incoming {
                    Some(incoming) => incoming,
                    None => break,
                },
                _ = sleep_until(pause), if pause.is_some() => {
                    let session = session.as_mut().expect("a pause needs a session");
                    if let Some(cut) = session.audio.pause() {
                        speak_cut(&state, session, &mut membership, cut).await;
                    }
                    continue;
                }
            };
            let text = match incoming {
                Incoming::Text(text) => text,
                Incoming::Binary => {
                    invalid(&state, &socket, DecodeError::Binary.to_string());
                    continue;
                }
            };
            let message = match decode::<FromClient>(&text, FromClient::TYPES) {
                Ok(message) => message,
                Err(err) => {
                    invalid(&state, &socket, err.to_string());
                    continue;
                }
            };
            let Some(open) = session.as_mut() else {
                match message {
                    FromClient::SessionInit(init) => match attach(&state, &socket, init).await {
                        Ok((opened, restored)) => {
                            tracing::Span::current().record("session.id", opened.id.as_str());
                            membership = restored;
                            session = Some(opened);
                        }
                        Err(frame) => reply(&socket, frame),
                    },
                    _ => {
                        reply(&socket, ErrorFrame::new(ErrorCode::InvalidSession, "send session_init first"))
                    }
                }
                continue;
            };
            match message {
                FromClient::SessionInit(_) => {
                    invalid(&state, &socket, "the session is already initialized".into())
                }
                FromClient::Utterance(utterance) => {
                    utter(&state, &socket, open, &mut membership, utterance).await
                }
                FromClient::AudioChunk(chunk) => stream(&state, &socket, open, &mut membership, chunk).await,
                FromClient::RoomCreate(msg) => {
                    state.room_create(&socket.outbox, &open.id, &mut membership, msg).await
                }
                FromClient::RoomJoin(msg) => {
                    state.room_join(&socket.outbox, &open.id, &mut membership, msg).await
                }
                FromClient::RoomLeave(msg) => {
                    let code = Some(msg.room_code.as_str());
                    state.room_leave(Some(&socket.outbox), &open.id, &mut membership, code).await
                }
                FromClient::RoomSetLang(msg) => {
                    state
                        .room_set_lang(&socket.outbox, &mut membership, &msg.room_code, msg.preferred_lang)
                        .await
                }
                FromClient::RoomRawVoicePreference(msg) => {
                    state.room_raw_voice(&socket.outbox, &open.id, &mut membership, msg).await
                }
                FromClient::WebrtcOffer(signal) => {
                    state
                        .relay_signal(&socket.outbox, &open.id, &mut membership, SignalKind::Offer, signal)
                        .await
                }
                FromClient::WebrtcAnswer(signal) => {
                    state
                        .relay_signal(&socket.outbox, &open.id, &mut membership, SignalKind::Answer, signal)
                        .await
                }
                FromClient::WebrtcIce(signal) => {
                    state
                        .relay_signal(&socket.outbox, &open.id, &mut membership, SignalKind::Ice, signal)
                        .await
                }
                FromClient::TtsStarted(playback) => {
                    tracing::debug!(group.id = %clip(&playback.group_id, 128), "Client playing speech.");
                    open.audio.playback_started(Instant::now());
                }
                FromClient::TtsPlayEnded(playback) => {
                    tracing::debug!(group.id = %clip(&playback.group_id, 128), "Client done playing speech.");
                    open.audio.playback_ended(Instant::now());
                }
                FromClient::ClientHeartbeat {} => {
                    socket.outbox.send(&ToClient::ServerHeartbeat(ServerHeartbeat {
                        session_id: open.id.clone(),
                        timestamp: now_ms(),
                    }));
                }
                FromClient::SessionClose(close) => {
                    info!(session.id = %open.id, reason = %close.reason, "Session closed by client.");
                    // Results held for ordering go out before the close.
                    if let Some(peer) = state.peers.session(&open.id) {
                        for frame in peer.sequencer.lock().flush() {
                            socket.outbox.send_frame(Frame::Text(frame));
                        }
                    }
                    socket
                        .outbox
                        .send(&ToClient::SessionCloseAck(SessionCloseAck { session_id: open.id.clone() }));
                    socket.outbox.close(1000, "session closed");
                    closed_by_client = true;
                    break;
                }
            }
        }
        if let Some(session) = session {
            state.peers.remove_session(&session.id, &session.conn);
            if closed_by_client {
                end(&state, &session, &mut membership).await;
            } else {
                detach(&state, &session).await;
            }
        }
        socket.outbox.closed().cancel();
    };
    tokio::join!(writer, session_loop);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

pub(super) fn reply(socket: &Socket, frame: ErrorFrame) {
    socket.outbox.send(&ToClient::Error(frame));
}

pub(super) fn invalid(state: &AppState, socket: &Socket, reason: String) {
    Metrics::inc(&state.metrics.invalid_messages);
    reply(socket, ErrorFrame::new(ErrorCode::InvalidMessage, reason));
}

/// Opens a new session or resumes one; registers this socket for it and sends the ack (and, on a
/// resume, the frames kept while it was away).
async fn attach(
    state: &AppState,
    socket: &Socket,
    init: SessionInit,
) -> Result<(Session, Membership), ErrorFrame> {
    let conn = new_id(&format!("{}/", state.gateway_id), 12);
    let store_error = |err: StoreError| {
        warn!(%err, "Attaching a session failed.");
        error_frame(&err)
    };
    let resumed = init.resume_session_id.is_some();
    let (id, token, settings, room, backlog, message) = match init.resume_session_id.clone() {
        Some(id) => {
            let token = init.resume_token.clone().unwrap_or_default();
            let reply = state
                .store
                .session_resume(&id, &state.gateway_id, &conn, &token_sha(&token))
                .await
                .map_err(store_error)?;
            let AttachReply::Attached { settings, room, backlog, .. } = reply else {
                return Err(ErrorFrame::new(
                    ErrorCode::InvalidSession,
                    "no resumable session with this id and resume_token",
                ));
            };
            let settings: Settings = serde_json::from_str(&settings)
                .map_err(|_| ErrorFrame::new(ErrorCode::InternalError, "stored session is unreadable"))?;
            (id, token, settings, room, backlog, "session resumed")
        }
        None => {
            let settings = settings_of(init).map_err(|m| ErrorFrame::new(ErrorCode::InvalidMessage, m))?;
            let token = new_id("", 32);
            let stored = serde_json::to_string(&settings).expect("settings serialize");
            let mut id = new_id("s-", 8);
            loop {
                let reply = state
                    .store
                    .session_open(&id, &state.gateway_id, &conn, &token_sha(&token), &stored)
                    .await
                    .map_err(store_error)?;
                match reply {
                    AttachReply::Exists => id = new_id("s-", 8),
                    _ => break,
                }
            }
            (id, token, settings, String::new(), Vec::new(), "session created")
        }
    };
    let room = match room.as_str() {
        "" => None,
        code => match state.store.room_member(code, &id).await.map_err(store_error)? {
            Some(member) => Some((code.to_owned(), member)),
            None => {
                let _ = state.store.session_room(&id, None).await;
                None
            }
        },
    };
    let shared_room = Arc::new(Mutex::new(None));
    let membership = Membership::new(shared_room.clone(), room, state.config.room_signals_per_second);
    let gap = Duration::from_millis(state.config.sessions.result_gap_timeout_ms);
    let stored = serde_json::to_string(&settings).expect("settings serialize");
    let peer = SessionPeer {
        conn: conn.clone(),
        record: Arc::new((token_sha(&token), stored)),
        outbox: socket.outbox.clone(),
        sequencer: Arc::new(Mutex::new(if resumed { Sequencer::resumed(gap) } else { Sequencer::new(gap) })),
        room: shared_room,
    };
    if let Some(previous) = state.peers.add_session(&id, peer.clone()) {
        previous.outbox.close(1000, "session resumed on another connection");
    }
    info!(session.id = %id, mode = settings.mode.as_str(), kept = backlog.len(), "{message}.");
    socket.outbox.send(&ToClient::SessionInitAck(SessionInitAck {
        session_id: id.clone(),
        assigned_node_id: None,
        message: message.into(),
        trace_id: settings.trace_id.clone(),
        protocol_version: "1.0".into(),
        use_binary_frame: false,
        resume_token: token,
        negotiated_codec: settings.audio_format.clone(),
        negotiated_audio_format: settings.audio_format.clone(),
        negotiated_sample_rate: settings.sample_rate,
        negotiated_channel_count: 1,
    }));
    state.deliver_kept(&id, &peer, backlog);
    let max_audio = state.config.max_payload_bytes / 4 * 3;
    // Settings were validated when the session opened; one stored by an older gateway with a
    // format it accepted then is measured as Opus, the fleet's format.
    let codec = Codec::parse(&settings.audio_format).unwrap_or(Codec::Opus);
    let audio = AudioStream::new(&state.config.audio, codec, settings.sample_rate, max_audio);
    Ok((Session { id, conn, settings, audio }, membership))
}

/// The socket dropped without `session_close`: the session stays resumable for the grace period.
async fn detach(state: &AppState, session: &Session) {
    match state.store.session_detach(&session.id, Fence::Conn(&session.conn), state.detached_ttl_ms()).await {
        Ok(Some(conn)) => state.end_after_grace(session.id.clone(), conn),
        Ok(None) => {} // resumed on another socket already
        Err(err) => {
            warn!(%err, session.id = %session.id, "Detaching the session failed; its gateway's takeover or ttl ends it.")
        }
    }
}

/// `session_close`: leaves the room and forgets the session now.
async fn end(state: &AppState, session: &Session, membership: &mut Membership) {
    state.room_leave(None, &session.id, membership, None).await;
    match state.store.session_end(&session.id, &session.conn, false).await {
        Ok(SessionEnd::Ended { room }) if !room.is_empty() => {
            // A room the record still named though this socket had left its own (a resume race).
            state.depart_room(&session.id, &room).await;
        }
        Ok(_) => {}
        Err(err) => warn!(%err, session.id = %session.id, "Ending the session failed; its record expires."),
    }
    let _ = state.store.unindex_session(&state.gateway_id, &session.id).await;
}

/// Hex sha256 of a resume token: only the hash is stored.
fn token_sha(token: &str) -> String {
    crate::policy::sha256_hex(token.as_bytes())
}

/// Validates a `session_init` into the session's settings.
fn settings_of(init: SessionInit) -> Result<Settings, String> {
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
            return Err(format!("invalid language code {:?}", clip(code, 32)));
        }
    }
    // The fleet's clients stream Opus without saying so; the old scheduler assumed it too.
    let audio_format = init.audio_format.unwrap_or_else(|| "opus".into());
    if Codec::parse(&audio_format).is_none() {
        return Err("audio_format must be \"opus\" or \"pcm16\"".into());
    }
    Ok(Settings {
        trace_id: init.trace_id.unwrap_or_else(|| new_id("trace-", 16)),
        mode: init.mode,
        src_lang,
        tgt_lang,
        lang_a,
        lang_b,
        dialect: init.dialect,
        tenant_id: init.tenant_id,
        audio_format,
        sample_rate: init.sample_rate.unwrap_or(16_000).clamp(1_000, 192_000),
    })
}
