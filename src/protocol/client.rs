//! Client ↔ scheduler messages (PROTOCOL.md §2): declarations only (about 40 message types).

use serde::{Deserialize, Serialize};

use super::node::{Pipeline, nullable};
use super::{ErrorFrame, RoomErrorCode};

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
    RoomRawVoicePreference(RawVoicePreference),
    WebrtcOffer(Signal),
    WebrtcAnswer(Signal),
    WebrtcIce(Signal),
    TtsStarted(TtsPlayback),
    TtsPlayEnded(TtsPlayback),
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
        "room_raw_voice_preference",
        "webrtc_offer",
        "webrtc_answer",
        "webrtc_ice",
        "tts_started",
        "tts_play_ended",
    ];
}

/// `room_raw_voice_preference`: whether this member wants to hear `target_session_id`'s original
/// voice (the WebRTC audio between members).
#[derive(Debug, Default, Deserialize)]
pub struct RawVoicePreference {
    #[serde(default, deserialize_with = "nullable")]
    pub room_code: String,
    #[serde(default, deserialize_with = "nullable")]
    pub target_session_id: String,
    #[serde(default = "yes", deserialize_with = "nullable_true")]
    pub receive_raw_voice: bool,
}

fn yes() -> bool {
    true
}

fn nullable_true<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

/// WebRTC signalling between two members of a room (`webrtc_offer`, `webrtc_answer`: `sdp`;
/// `webrtc_ice`: `candidate`). The gateway relays it to the member named in `to`; the payload is
/// opaque to it.
#[derive(Debug, Default, Deserialize)]
pub struct Signal {
    #[serde(default, deserialize_with = "nullable")]
    pub room_code: String,
    #[serde(default, deserialize_with = "nullable")]
    pub to: String,
    #[serde(default)]
    pub sdp: Option<serde_json::Value>,
    #[serde(default)]
    pub candidate: Option<serde_json::Value>,
}

/// A relayed signal as its receiver gets it: `to` names the sender (as the fleet's scheduler sets
/// it, so the receiver answers to `to`); `from` *(ext)* says the same plainly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayedSignal {
    pub room_code: String,
    pub to: String,
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdp: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<serde_json::Value>,
}

/// `tts_started` / `tts_play_ended`: the client started or finished playing a result's speech.
#[derive(Debug, Default, Deserialize)]
pub struct TtsPlayback {
    #[serde(default, deserialize_with = "nullable")]
    pub group_id: String,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub ts_start_ms: Option<u64>,
    #[serde(default)]
    pub ts_end_ms: Option<u64>,
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

/// A member as `room_members` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomMember {
    pub participant_id: String,
    pub session_id: String,
    pub display_name: Option<String>,
    pub preferred_lang: Option<String>,
    /// Whether this member hears another member's original voice (session id → bool; absent means
    /// yes), as `room_raw_voice_preference` set it. The fleet's client reads it from `room_members`.
    #[serde(default)]
    pub raw_voice_preferences: std::collections::BTreeMap<String, bool>,
    pub joined_at: u64,
}

impl RoomMember {
    /// Whether this member takes `speaker`'s original voice (WebRTC audio).
    pub fn hears_raw_voice_of(&self, speaker: &str) -> bool {
        self.raw_voice_preferences.get(speaker).copied().unwrap_or(true)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RoomMembers {
    pub room_code: String,
    pub members: Vec<RoomMember>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RoomError {
    pub code: RoomErrorCode,
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
    WebrtcOffer(RelayedSignal),
    WebrtcAnswer(RelayedSignal),
    WebrtcIce(RelayedSignal),
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
    /// The fleet's client sets it when the user ended the utterance by hand. An `utterance` is
    /// always whole, so it changes nothing here; it is still checked (a non-boolean is refused).
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
    /// The format of this session's streamed audio (`opus` unless `session_init` said `pcm16`),
    /// as the fleet's scheduler states it.
    pub negotiated_codec: String,
    pub negotiated_audio_format: String,
    pub negotiated_sample_rate: u32,
    pub negotiated_channel_count: u32,
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
    /// The utterance group (one speaker turn) this result belongs to, and its place in it; the
    /// fleet's client echoes `group_id` in `tts_started` / `tts_play_ended`.
    pub group_id: String,
    pub part_index: u64,
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
    /// *(ext)* No node has a free slot: the utterance waits in the fair queue, at
    /// `queue_position` (0: next).
    Queued,
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
    /// *(ext)* `QUEUED`: how many waiting tasks go before this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
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
