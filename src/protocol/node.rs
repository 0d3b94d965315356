//! Node ↔ scheduler messages (PROTOCOL.md §1).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::ErrorFrame;

/// Messages a worker node sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromNode {
    NodeRegister(NodeRegister),
    NodeHeartbeat(NodeHeartbeat),
    JobAck(JobAck),
    JobStarted(JobAck),
    AsrPartial(NodeAsrPartial),
    JobResult(JobResult),
    NodeError(NodeError),
    NodeDrain {},
    /// A scheduler → node message in the fleet's protocol; a node that echoes one is heard, not
    /// refused (nothing to act on).
    NodeControl(NodeControl),
    /// An `error` frame from a node (the fleet's node answers a frame it cannot use with one):
    /// logged and counted like `node_error`.
    Error(NodeError),
}

impl FromNode {
    pub const TYPES: &'static [&'static str] = &[
        "node_register",
        "node_heartbeat",
        "job_ack",
        "job_started",
        "asr_partial",
        "job_result",
        "node_error",
        "node_drain",
        "node_control",
        "error",
    ];
}

/// Messages the scheduler sends to a node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToNode {
    NodeRegisterAck(NodeRegisterAck),
    JobAssign(JobAssign),
    JobCancel(JobCancel),
    Error(ErrorFrame),
}

/// Accepts an absent field and `null` alike, as the fleet's peers send both.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
pub struct NodeRegister {
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub version: String,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub hardware: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub installed_services: Vec<InstalledService>,
    #[serde(default, deserialize_with = "nullable")]
    pub capability_by_type: Vec<CapabilityByType>,
    #[serde(default, deserialize_with = "nullable")]
    pub language_capabilities: LanguageCapabilities,
    #[serde(default)]
    pub features_supported: Option<serde_json::Value>,
    #[serde(default)]
    pub accept_public_jobs: Option<bool>,
    #[serde(default)]
    pub language_pairs: Option<Vec<LanguagePair>>,
    #[serde(default)]
    pub max_concurrent_jobs: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub node_secret: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InstalledService {
    #[serde(default, deserialize_with = "nullable")]
    pub service_id: String,
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub device: String,
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub model_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CapabilityByType {
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub ready: bool,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub ready_impl_ids: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LanguageCapabilities {
    #[serde(default, deserialize_with = "nullable")]
    pub asr_languages: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub tts_languages: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub semantic_languages: Vec<String>,
    #[serde(default)]
    pub semantic_core_ready: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LanguagePair {
    pub src: String,
    pub tgt: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct NodeHeartbeat {
    #[serde(default, deserialize_with = "nullable")]
    pub node_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub resource_usage: ResourceUsage,
    #[serde(default)]
    pub installed_services: Option<Vec<InstalledService>>,
    #[serde(default)]
    pub capability_by_type: Option<Vec<CapabilityByType>>,
    #[serde(default)]
    pub language_capabilities: Option<LanguageCapabilities>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ResourceUsage {
    #[serde(default, deserialize_with = "nullable")]
    pub cpu_percent: f64,
    #[serde(default, deserialize_with = "nullable")]
    pub gpu_percent: f64,
    #[serde(default, deserialize_with = "nullable")]
    pub gpu_mem_percent: f64,
    #[serde(default, deserialize_with = "nullable")]
    pub mem_percent: f64,
    #[serde(default, deserialize_with = "nullable")]
    pub running_jobs: u32,
    #[serde(default, deserialize_with = "nullable")]
    pub gpu_queue_length: u32,
}

/// `job_ack` and `job_started` share their fields.
#[derive(Debug, Deserialize)]
pub struct JobAck {
    pub job_id: String,
    #[serde(default)]
    pub attempt_id: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct NodeAsrPartial {
    pub job_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub text: String,
    #[serde(default, deserialize_with = "nullable")]
    pub is_final: bool,
}

#[derive(Debug, Deserialize)]
pub struct JobResult {
    pub job_id: String,
    #[serde(default)]
    pub attempt_id: Option<u32>,
    pub success: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub text_asr: String,
    #[serde(default, deserialize_with = "nullable")]
    pub text_translated: String,
    #[serde(default, deserialize_with = "nullable")]
    pub tts_audio: String,
    #[serde(default, deserialize_with = "nullable")]
    pub tts_format: String,
    #[serde(default)]
    pub extra: Option<serde_json::Value>,
    #[serde(default)]
    pub processing_time_ms: Option<u64>,
    #[serde(default)]
    pub error: Option<NodeJobError>,
}

impl JobResult {
    /// An empty acknowledgement completes the job without a `translation_result`.
    pub fn empty_reason(&self) -> Option<&str> {
        let reason = self.extra.as_ref()?.get("reason")?.as_str()?;
        let empty =
            self.success && self.text_asr.is_empty() && matches!(reason, "NO_TEXT_ASSIGNED" | "ASR_EMPTY");
        empty.then_some(reason)
    }

    pub fn service_timings(&self) -> Option<serde_json::Value> {
        self.extra.as_ref()?.get("service_timings").cloned()
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct NodeJobError {
    #[serde(default, deserialize_with = "nullable")]
    pub code: String,
    #[serde(default, deserialize_with = "nullable")]
    pub message: String,
    #[serde(default)]
    pub details: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct NodeError {
    #[serde(default, deserialize_with = "nullable")]
    pub code: String,
    #[serde(default, deserialize_with = "nullable")]
    pub message: String,
}

/// `node_control`: `command` is `shutdown`, `reload_config`, or another the node knows.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NodeControl {
    #[serde(default, deserialize_with = "nullable")]
    pub command: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NodeRegisterAck {
    pub node_id: String,
    pub message: String,
    pub status: String,
    pub heartbeat_interval_ms: u64,
    pub node_secret: String,
}

/// Which stages a node runs for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pipeline {
    pub use_asr: bool,
    pub use_nmt: bool,
    pub use_tts: bool,
    pub use_semantic: bool,
    pub use_tone: bool,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self { use_asr: true, use_nmt: true, use_tts: true, use_semantic: false, use_tone: false }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobAssign {
    pub job_id: String,
    pub attempt_id: u32,
    pub session_id: String,
    pub utterance_index: u64,
    pub src_lang: String,
    pub tgt_lang: String,
    pub dialect: Option<String>,
    pub pipeline: Pipeline,
    pub audio: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub audio_format: String,
    pub sample_rate: u32,
    pub mode: String,
    pub lang_a: Option<String>,
    pub lang_b: Option<String>,
    pub trace_id: String,
    pub turn_id: Option<String>,
    pub room_code: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JobCancel {
    pub job_id: String,
    pub trace_id: Option<String>,
    pub reason: String,
}
