//! Client ↔ scheduler messages (PROTOCOL.md §2).

use serde::{Deserialize, Serialize};

use super::ErrorFrame;
use super::node::{Pipeline, nullable};

/// Messages a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromClient {
    SessionInit(SessionInit),
    Utterance(Utterance),
    AudioChunk(AudioChunk),
    ClientHeartbeat {},
    SessionClose(SessionClose),
    RoomCreate(RoomCreate),
    RoomJoin(RoomJoin),
    RoomLeave(RoomLeave),
    RoomSetLang(RoomSetLang),
}

impl FromClient {
    pub const TYPES: &'static [&'static str] = &[
        "session_init",
        "utterance",
        "audio_chunk",
        "client_heartbeat",
        "session_close",
        "room_create",
        "room_join",
        "room_leave",
        "room_set_lang",
    ];
}

/// Streaming audio: the gateway buffers chunks and cuts utterances itself.
#[derive(Debug, Deserialize)]
pub struct AudioChunk {
    #[serde(default, deserialize_with = "nullable")]
    pub session_id: String,
    pub seq: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub is_final: bool,
    /// Base64 audio in the session's format (pcm16 at its sample rate unless it said otherwise).
    #[serde(default)]
    pub payload: Option<String>,
    #[serde(default)]
    pub client_timestamp_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RoomCreate {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub preferred_lang: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RoomJoin {
    #[serde(default, deserialize_with = "nullable")]
    pub room_code: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub preferred_lang: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RoomLeave {
    #[serde(default, deserialize_with = "nullable")]
    pub room_code: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct RoomSetLang {
    #[serde(default, deserialize_with = "nullable")]
    pub room_code: String,
    #[serde(default)]
    pub preferred_lang: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RoomCreateAck {
    pub room_code: String,
    pub room_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RoomMembers {
    pub room_code: String,
    pub members: Vec<crate::scheduler::RoomMember>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RoomError {
    pub code: String,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomExpired {
    pub room_code: String,
    pub message: String,
}

/// Messages the scheduler sends to a client.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToClient {
    SessionInitAck(SessionInitAck),
    TranslationResult(TranslationResult),
    MissingResult(MissingResult),
    AsrPartial(ClientAsrPartial),
    UiEvent(UiEvent),
    ServerHeartbeat(ServerHeartbeat),
    SessionCloseAck(SessionCloseAck),
    RoomCreateAck(RoomCreateAck),
    RoomMembers(RoomMembers),
    RoomError(RoomError),
    RoomExpired(RoomExpired),
    Error(ErrorFrame),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    OneWay,
    TwoWayAuto,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::OneWay => "one_way",
            Mode::TwoWayAuto => "two_way_auto",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct SessionInit {
    #[serde(default, deserialize_with = "nullable")]
    pub client_version: String,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub src_lang: Option<String>,
    #[serde(default)]
    pub tgt_lang: Option<String>,
    #[serde(default)]
    pub dialect: Option<String>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub mode: Mode,
    #[serde(default)]
    pub lang_a: Option<String>,
    #[serde(default)]
    pub lang_b: Option<String>,
    #[serde(default)]
    pub trace_id: Option<String>,
    /// *(ext)* re-attach to this session after a reconnect, with its `resume_token`.
    #[serde(default)]
    pub resume_session_id: Option<String>,
    #[serde(default)]
    pub resume_token: Option<String>,
    /// Format of streamed audio (`audio_chunk`); default pcm16 at 16 kHz.
    #[serde(default)]
    pub audio_format: Option<String>,
    #[serde(default)]
    pub sample_rate: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct Utterance {
    #[serde(default, deserialize_with = "nullable")]
    pub session_id: String,
    pub utterance_index: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub manual_cut: bool,
    #[serde(default)]
    pub src_lang: Option<String>,
    #[serde(default)]
    pub tgt_lang: Option<String>,
    #[serde(default)]
    pub dialect: Option<String>,
    #[serde(default)]
    pub audio: Option<String>,
    /// *(ext)* text-only utterance.
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub audio_format: Option<String>,
    #[serde(default)]
    pub sample_rate: Option<u32>,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub pipeline: Option<Pipeline>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SessionClose {
    #[serde(default, deserialize_with = "nullable")]
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SessionInitAck {
    pub session_id: String,
    pub assigned_node_id: Option<String>,
    pub message: String,
    pub trace_id: String,
    pub protocol_version: String,
    pub use_binary_frame: bool,
    /// *(ext)* present with `session_id` in a later `session_init` to resume this session.
    pub resume_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranslationResult {
    pub session_id: String,
    pub utterance_index: u64,
    pub job_id: String,
    pub text_asr: String,
    pub text_translated: String,
    pub tts_audio: String,
    pub tts_format: String,
    pub extra: Option<serde_json::Value>,
    pub trace_id: String,
    pub service_timings: Option<serde_json::Value>,
    pub src_lang: String,
    pub tgt_lang: String,
    pub speaker_session_id: String,
    pub room_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MissingResult {
    pub session_id: String,
    pub utterance_index: u64,
    pub reason: String,
    pub created_at_ms: u64,
    pub trace_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientAsrPartial {
    pub session_id: String,
    pub utterance_index: u64,
    pub job_id: String,
    pub text: String,
    pub is_final: bool,
    pub trace_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UiEventKind {
    Dispatched,
    NodeAccepted,
    AsrFinal,
    NmtDone,
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UiEvent {
    pub trace_id: String,
    pub session_id: String,
    pub job_id: String,
    pub utterance_index: u64,
    pub event: UiEventKind,
    pub elapsed_ms: Option<u64>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ServerHeartbeat {
    pub session_id: String,
    pub timestamp: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SessionCloseAck {
    pub session_id: String,
}
