//! A task's outcome to its recipients: a node's result (or silence), or a failure — the speaker gets
//! the `error`, the other listeners a `missing_result`, each in its place in the speaker's order
//! (`ordering.rs`); UI events to the speaker. Each outcome is also counted on the policy version
//! that placed the task (the canary's verdict uses it).

use super::{AppState, Metrics};
use crate::policy::TaskEnd;
use crate::protocol::{
    ErrorCode, ErrorFrame, JobResult, MissingResult, ToClient, TranslationResult, UiEvent, UiEventKind,
    now_ms,
};
use crate::store::TaskSpec;

impl AppState {
    /// Tells every recipient that the task failed with `code`: the speaker gets the `error`, the
    /// other listeners a `missing_result{reason:"task_failed"}`, each in its place in the order.
    /// `node_code` is the node's own code when a node reported the failure (it may be one the
    /// protocol does not name; `code` is then `INTERNAL_ERROR`).
    pub fn fail_task(&self, spec: &TaskSpec, code: ErrorCode, node_code: Option<&str>, job_id: Option<&str>) {
        let end = if code == ErrorCode::JobTimeout { TaskEnd::TimedOut } else { TaskEnd::Failed };
        self.policies.record_outcome(&spec.task_id(), end);
        let message = match code {
            ErrorCode::JobTimeout => "the translation timed out on every attempt",
            ErrorCode::NoAvailableNode => "no node is available for this language pair",
            ErrorCode::NodeUnavailable => "the node serving this utterance went away",
            ErrorCode::NodeOverloaded => {
                "too many of this tenant's utterances are waiting for a node; retry shortly"
            }
            _ => "the node failed to process this utterance",
        };
        self.task_failed(spec, code, message, node_code, job_id);
    }

    /// A new task the admission policy turned away: `NODE_OVERLOADED` with the policy's reason.
    pub fn reject_task(&self, spec: &TaskSpec, reason: &str) {
        Metrics::inc(&self.metrics.tasks_rejected);
        let message = format!("not admitted: {}", crate::protocol::clip(reason, 200));
        self.task_failed(spec, ErrorCode::NodeOverloaded, &message, None, None);
    }

    /// The failure of a task to its recipients: an `error` to the speaker, `missing_result` to the
    /// others, each in the speaker's order; a `ui_event` `ERROR` to the speaker.
    fn task_failed(
        &self,
        spec: &TaskSpec,
        code: ErrorCode,
        message: &str,
        node_code: Option<&str>,
        job_id: Option<&str>,
    ) {
        Metrics::inc(&self.metrics.tasks_failed);
        self.metrics.failed(code.as_str());
        let node_code = node_code.unwrap_or(code.as_str());
        let frame = ErrorFrame::new(code, message).with_details(serde_json::json!({
            "session_id": spec.session_id,
            "utterance_index": spec.utterance_index,
            "tgt_lang": spec.tgt_lang,
            "job_id": job_id,
            "node_code": node_code,
            "trace_id": spec.trace_id,
        }));
        let error = ToClient::Error(frame);
        let missing = self.missing(spec, "task_failed");
        for recipient in &spec.recipients {
            let message = if *recipient == spec.session_id { &error } else { &missing };
            self.outcome_to(recipient, &spec.session_id, spec.utterance_index, message);
        }
        let mut event = self.event(spec, job_id.unwrap_or(""), UiEventKind::Error);
        event.status = "error".into();
        event.error_code = Some(node_code.to_owned());
        self.to_session(&spec.session_id, &ToClient::UiEvent(event));
    }

    /// Sends a node's result to every recipient of the task.
    pub fn deliver_result(&self, spec: &TaskSpec, job_id: &str, result: &JobResult) {
        self.delivered(spec);
        self.ui_event(spec, job_id, UiEventKind::NmtDone, None);
        let message = ToClient::TranslationResult(TranslationResult {
            session_id: spec.session_id.clone(),
            utterance_index: spec.utterance_index,
            job_id: job_id.to_owned(),
            text_asr: result.text_asr.clone(),
            text_translated: result.text_translated.clone(),
            tts_audio: result.tts_audio.clone(),
            tts_format: result.tts_format.clone(),
            extra: result.extra.clone(),
            trace_id: spec.trace_id.clone(),
            service_timings: result.service_timings(),
            src_lang: spec.src_lang.clone(),
            tgt_lang: spec.tgt_lang.clone(),
            speaker_session_id: spec.session_id.clone(),
            room_code: spec.room_code.clone(),
            group_id: spec.group_id(),
            part_index: spec.part_index,
        });
        self.outcome_to_recipients(spec, &message);
    }

    /// A node found nothing to translate (silence): `missing_result{reason:"silence_detected"}`.
    pub fn deliver_silence(&self, spec: &TaskSpec, job_id: &str) {
        self.delivered(spec);
        self.ui_event(spec, job_id, UiEventKind::NmtDone, Some("silence".into()));
        self.outcome_to_recipients(spec, &self.missing(spec, "silence_detected"));
    }

    /// Counts a task whose node answered (a result or silence), here and on the policy version
    /// that placed it.
    fn delivered(&self, spec: &TaskSpec) {
        Metrics::inc(&self.metrics.tasks_completed);
        let result_ms = now_ms().saturating_sub(spec.created_ms);
        self.metrics.result_latency.record(result_ms * 1000);
        self.policies.record_outcome(&spec.task_id(), TaskEnd::Delivered { result_ms });
    }

    fn missing(&self, spec: &TaskSpec, reason: &str) -> ToClient {
        ToClient::MissingResult(MissingResult {
            session_id: spec.session_id.clone(),
            utterance_index: spec.utterance_index,
            reason: reason.into(),
            created_at_ms: now_ms(),
            trace_id: Some(spec.trace_id.clone()),
        })
    }

    fn outcome_to_recipients(&self, spec: &TaskSpec, message: &ToClient) {
        for recipient in &spec.recipients {
            self.outcome_to(recipient, &spec.session_id, spec.utterance_index, message);
        }
    }

    /// A frame to every recipient as it comes (partials).
    pub fn to_recipients(&self, spec: &TaskSpec, message: &ToClient) {
        for session_id in &spec.recipients {
            self.to_session(session_id, message);
        }
    }

    /// A `ui_event` to the speaker.
    pub fn ui_event(&self, spec: &TaskSpec, job_id: &str, kind: UiEventKind, hint: Option<String>) {
        let mut event = self.event(spec, job_id, kind);
        event.hint = hint;
        self.to_session(&spec.session_id, &ToClient::UiEvent(event));
    }

    /// Tells the speaker its utterance waits for a slot, and how many waiting tasks go first.
    pub fn queued(&self, spec: &TaskSpec, position: Option<u64>) {
        let mut event = self.event(spec, "", UiEventKind::Queued);
        event.queue_position = position;
        self.to_session(&spec.session_id, &ToClient::UiEvent(event));
    }

    fn event(&self, spec: &TaskSpec, job_id: &str, kind: UiEventKind) -> UiEvent {
        UiEvent {
            trace_id: spec.trace_id.clone(),
            session_id: spec.session_id.clone(),
            job_id: job_id.to_owned(),
            utterance_index: spec.utterance_index,
            event: kind,
            elapsed_ms: Some(now_ms().saturating_sub(spec.created_ms)),
            status: "ok".into(),
            error_code: None,
            hint: None,
            queue_position: None,
        }
    }
}
