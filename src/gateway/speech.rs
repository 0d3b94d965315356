//! What a session says becomes tasks: a whole `utterance`, or streamed `audio_chunk`s cut into
//! utterances (`audio.rs`); one task per target language, or per route in a room (`rooms.rs`),
//! each dispatched (`dispatch.rs`).

use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tracing::warn;

use super::audio::{Cut, Pushed};
use super::rooms::Membership;
use super::session_socket::{Session, invalid, reply};
use super::socket::Socket;
use super::{AppState, Dispatched, Metrics, error_frame};
use crate::protocol::{AudioChunk, ErrorCode, ErrorFrame, ToClient, Utterance, is_language_code, now_ms};
use crate::store::{Payload, StoreError, TaskSpec};

pub(super) async fn utter(
    state: &AppState,
    socket: &Socket,
    session: &Session,
    membership: &mut Membership,
    u: Utterance,
) {
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
    speak(state, membership, spec, payload, None).await;
}

pub(super) async fn stream(
    state: &AppState,
    socket: &Socket,
    session: &mut Session,
    membership: &mut Membership,
    c: AudioChunk,
) {
    if c.session_id != session.id {
        let frame = ErrorFrame::new(ErrorCode::InvalidSession, "session_id does not match this session");
        return reply(socket, frame);
    }
    let audio = match c.payload.as_deref().map(|p| BASE64.decode(p)) {
        None => Vec::new(),
        Some(Ok(audio)) => audio,
        Some(Err(_)) => return invalid(state, socket, "payload is not valid base64".into()),
    };
    if audio.len() > state.config.max_payload_bytes {
        return reply(
            socket,
            ErrorFrame::new(ErrorCode::PayloadTooLarge, "audio chunk exceeds the payload limit"),
        );
    }
    match session.audio.push(c.seq, &audio, c.is_final, Instant::now()) {
        (Pushed::Duplicate, _) => tracing::debug!(seq = c.seq, "Repeated audio chunk ignored."),
        (Pushed::Buffered, Some(cut)) => speak_cut(state, session, membership, cut).await,
        (Pushed::Buffered, None) => {}
    }
}

/// Dispatches one utterance cut from streamed audio. A cut that fails to dispatch is reported and
/// dropped; the stream goes on with the next one.
pub(super) async fn speak_cut(
    state: &AppState,
    session: &mut Session,
    membership: &mut Membership,
    cut: Cut,
) {
    let s = &session.settings;
    let spec = TaskSpec {
        turn_id: Some(cut.turn_id.clone()),
        part_index: cut.part,
        ..base_spec(session, cut.index, s.src_lang.clone(), s.tgt_lang.clone())
    };
    tracing::debug!(
        index = cut.index,
        reason = cut.reason,
        bytes = cut.audio.len(),
        ms = cut.duration_us / 1000,
        "Audio cut."
    );
    let payload = Payload { audio: Some(BASE64.encode(&cut.audio)), text: None };
    if let Some(node_id) = speak(state, membership, spec, payload, cut.affinity.as_deref()).await {
        session.audio.assigned(&cut.turn_id, &node_id);
    }
}

/// Turns an utterance into its tasks (one per room route, or the single-session one) and
/// dispatches them; returns the node the first task went to.
async fn speak(
    state: &AppState,
    membership: &mut Membership,
    spec: TaskSpec,
    payload: Payload,
    affinity: Option<&str>,
) -> Option<String> {
    let received = Instant::now();
    // The failure is the utterance's outcome: it goes through the speaker's ordering, after the
    // outcomes of its earlier utterances still in flight.
    let fail = |err: StoreError| {
        warn!(%err, utterance = spec.utterance_index, "Submitting a task failed.");
        let details =
            serde_json::json!({ "session_id": spec.session_id, "utterance_index": spec.utterance_index });
        let frame = ToClient::Error(error_frame(&err).with_details(details));
        state.failure_to_speaker(&spec.session_id, spec.utterance_index, &frame);
    };
    // In a room, one task per route of the room-routing policy; alone (or with nobody to route
    // to), the single-session task.
    let mut tasks = match state.room_tasks(membership, &spec).await {
        Ok(tasks) => tasks,
        Err(err) => {
            fail(err);
            return None;
        }
    };
    if tasks.is_empty() {
        tasks.push(spec.clone());
    }
    let mut first_node = None;
    for task in &tasks {
        match state.submit(task, &payload, affinity).await {
            Ok(Dispatched::Assigned { node_id, .. }) => {
                state.metrics.dispatch_latency.record(received.elapsed().as_micros() as u64);
                first_node.get_or_insert(node_id);
            }
            Ok(_) => {}
            Err(err) => {
                fail(err);
                return first_node;
            }
        }
    }
    first_node
}

fn base_spec(session: &Session, index: u64, src_lang: String, tgt_lang: String) -> TaskSpec {
    let s = &session.settings;
    TaskSpec {
        session_id: session.id.clone(),
        utterance_index: index,
        src_lang,
        tgt_lang,
        dialect: s.dialect.clone(),
        mode: s.mode,
        lang_a: s.lang_a.clone(),
        lang_b: s.lang_b.clone(),
        pipeline: Default::default(),
        audio_format: s.audio_format.clone(),
        sample_rate: s.sample_rate,
        trace_id: s.trace_id.clone(),
        turn_id: None,
        part_index: 0,
        room_code: None,
        tenant_id: s.tenant_id.clone(),
        recipients: vec![session.id.clone()],
        created_ms: now_ms(),
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
        (Some(audio), _) if BASE64.decode(audio).is_err() => {
            return Err(bad("audio is not valid base64".into()));
        }
        _ => {}
    }
    let s = &session.settings;
    let src_lang = u.src_lang.unwrap_or_else(|| s.src_lang.clone());
    let tgt_lang = u.tgt_lang.unwrap_or_else(|| s.tgt_lang.clone());
    if !is_language_code(&src_lang) || !is_language_code(&tgt_lang) {
        return Err(bad("invalid src_lang or tgt_lang".into()));
    }
    let spec = TaskSpec {
        dialect: u.dialect.or_else(|| s.dialect.clone()),
        pipeline: u.pipeline.unwrap_or_default(),
        audio_format: u.audio_format.unwrap_or_else(|| s.audio_format.clone()),
        sample_rate: u.sample_rate.unwrap_or(s.sample_rate),
        trace_id: u.trace_id.unwrap_or_else(|| s.trace_id.clone()),
        ..base_spec(session, u.utterance_index, src_lang, tgt_lang)
    };
    Ok((spec, Payload { audio: u.audio, text: u.text }))
}
