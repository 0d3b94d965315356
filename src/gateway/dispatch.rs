//! The dispatch path of one task: candidates → node selection → `dispatch_task` → `job_assign`,
//! and what happens to a task's outcome: results and errors to its recipients.

use tracing::{debug, info_span, warn};

use super::{AppState, Metrics};
use crate::protocol::{
    ErrorCode, ErrorFrame, JobAssign, JobCancel, ToClient, ToNode, TranslationResult, UiEvent, UiEventKind,
    now_ms,
};
use crate::scheduler::{
    DispatchReply, DispatchRequest, FailedTask, LoadTaskReply, Payload, Released, Result, TaskSpec,
};

/// Nodes tried per candidates read before reading candidates again.
const TRIES_PER_READ: usize = 3;
/// Candidates reads per dispatch before the task waits for a slot.
const READS: usize = 2;

/// How a dispatch call ended for the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Dispatched {
    Assigned {
        node_id: String,
        job_id: String,
    },
    /// No node could take it now; it waits for a free slot (or fails when its wait is over).
    Waiting,
    Failed,
    Duplicate,
    /// Another gateway (or an earlier call) moved the task on.
    Stale,
}

impl AppState {
    /// A new task: creates it in Redis and assigns it to a node, or leaves it waiting.
    pub async fn submit(&self, spec: &TaskSpec, payload: &Payload) -> Result<Dispatched> {
        self.assign(spec, payload, 0, Vec::new(), true).await
    }

    /// Dispatches a waiting task again: after its node failed or timed out, when the sweep finds
    /// it due, or when a slot frees. Concurrent calls are safe: `dispatch_task` lets one win.
    pub async fn redispatch(&self, task_id: &str) -> Result<Dispatched> {
        match self.scheduler.load_task(task_id).await? {
            LoadTaskReply::Waiting { attempt, tried, spec, payload } => {
                self.assign(&spec, &payload, attempt, tried, false).await
            }
            _ => Ok(Dispatched::Stale),
        }
    }

    async fn assign(
        &self,
        spec: &TaskSpec,
        payload: &Payload,
        attempt: u32,
        tried: Vec<String>,
        create: bool,
    ) -> Result<Dispatched> {
        let task_id = spec.task_id();
        let pool = spec.pool();
        let mut create = create.then_some((spec, payload));
        let mut excluded = tried;
        for _ in 0..READS {
            Metrics::inc(&self.metrics.dispatch_script_calls);
            let candidates = self.scheduler.candidates(&pool, &excluded, None).await?;
            let ranked = self.policies.select(spec, attempt + 1, &excluded, None, &candidates);
            if ranked.is_empty() {
                break;
            }
            for node_id in ranked.into_iter().take(TRIES_PER_READ) {
                let request = DispatchRequest {
                    task_id: &task_id,
                    pool: &pool,
                    attempt,
                    node_id: Some(&node_id),
                    create: create.take(),
                };
                Metrics::inc(&self.metrics.dispatch_script_calls);
                match self.scheduler.dispatch_task(&request).await? {
                    DispatchReply::Assigned { attempt, job_id } => {
                        self.send_job(spec, payload, &node_id, &job_id, attempt);
                        return Ok(Dispatched::Assigned { node_id, job_id });
                    }
                    DispatchReply::Refused { reason } => {
                        debug!(node.id = %node_id, %reason, "Node refused the task.");
                        excluded.push(node_id);
                    }
                    reply => return Ok(self.settle(reply)),
                }
            }
        }
        let request = DispatchRequest { task_id: &task_id, pool: &pool, attempt, node_id: None, create };
        let reply = self.scheduler.dispatch_task(&request).await?;
        Ok(self.settle(reply))
    }

    /// The replies of `dispatch_task` that end this dispatch call without a node.
    fn settle(&self, reply: DispatchReply) -> Dispatched {
        match reply {
            DispatchReply::Waiting | DispatchReply::Refused { .. } => Dispatched::Waiting,
            DispatchReply::Failed { code, spec } => {
                self.fail_task(&spec, &code, None);
                Dispatched::Failed
            }
            DispatchReply::Duplicate => {
                Metrics::inc(&self.metrics.tasks_duplicate);
                Dispatched::Duplicate
            }
            DispatchReply::Stale => Dispatched::Stale,
            DispatchReply::Assigned { .. } => unreachable!("assigned replies are handled by assign"),
        }
    }

    fn send_job(&self, spec: &TaskSpec, payload: &Payload, node_id: &str, job_id: &str, attempt: u32) {
        Metrics::inc(&self.metrics.jobs_assigned);
        if attempt > 1 {
            Metrics::inc(&self.metrics.jobs_reassigned);
        }
        let assign = JobAssign {
            job_id: job_id.to_owned(),
            attempt_id: attempt,
            session_id: spec.session_id.clone(),
            utterance_index: spec.utterance_index,
            src_lang: spec.src_lang.clone(),
            tgt_lang: spec.tgt_lang.clone(),
            dialect: spec.dialect.clone(),
            pipeline: spec.pipeline.clone(),
            audio: payload.audio.clone(),
            text: payload.text.clone(),
            audio_format: spec.audio_format.clone(),
            sample_rate: spec.sample_rate,
            mode: spec.mode.as_str().to_owned(),
            lang_a: spec.lang_a.clone(),
            lang_b: spec.lang_b.clone(),
            trace_id: spec.trace_id.clone(),
            turn_id: spec.turn_id.clone(),
            room_code: spec.room_code.clone(),
        };
        match self.peers.node(node_id) {
            // A node whose socket just closed is taken offline by its handler, which releases
            // this job for another attempt; the job deadline covers every other loss.
            Some(outbox) => {
                outbox.send(&ToNode::JobAssign(assign));
            }
            None => {
                Metrics::inc(&self.metrics.undeliverable);
                warn!(node.id = %node_id, job.id = %job_id, "Assigned node is not connected here.");
            }
        }
        self.ui_event(spec, job_id, UiEventKind::Dispatched, None);
    }

    /// Acts on jobs a transition ended early: new attempts, failures, cancels.
    pub fn handle_released(&self, released: Released) {
        for task_id in released.requeued {
            self.spawn_redispatch(task_id);
        }
        for failed in released.failed {
            let FailedTask { spec, code, job_id, .. } = failed;
            self.fail_task(&spec, &code, job_id.as_deref());
        }
        for cancel in released.cancel {
            if let Some(outbox) = self.peers.node(&cancel.node_id) {
                outbox.send(&ToNode::JobCancel(JobCancel {
                    job_id: cancel.job_id,
                    trace_id: None,
                    reason: "JOB_TIMEOUT".into(),
                }));
            }
        }
    }

    pub fn spawn_redispatch(&self, task_id: String) {
        let state = self.clone();
        let span = info_span!("redispatch", task.id = %task_id);
        self.spawn(span, async move {
            if let Err(err) = state.redispatch(&task_id).await {
                // The task stays waiting in Redis; the next sweep tries it again.
                warn!(%err, "Re-dispatch failed.");
            }
        });
    }

    /// Tells every recipient that the task failed with `code`.
    pub fn fail_task(&self, spec: &TaskSpec, code: &str, job_id: Option<&str>) {
        Metrics::inc(&self.metrics.tasks_failed);
        let error_code = error_code(code);
        let message = match error_code {
            ErrorCode::JobTimeout => "the translation timed out on every attempt",
            ErrorCode::NoAvailableNode => "no node is available for this language pair",
            ErrorCode::NodeUnavailable => "the node serving this utterance went away",
            _ => "the node failed to process this utterance",
        };
        let frame = ErrorFrame::new(error_code, message).with_details(serde_json::json!({
            "session_id": spec.session_id,
            "utterance_index": spec.utterance_index,
            "tgt_lang": spec.tgt_lang,
            "job_id": job_id,
            "node_code": code,
            "trace_id": spec.trace_id,
        }));
        self.to_recipients(spec, &ToClient::Error(frame));
        let mut event = self.event(spec, job_id.unwrap_or(""), UiEventKind::Error);
        event.status = "error".into();
        event.error_code = Some(code.to_owned());
        self.to_session(&spec.session_id, &ToClient::UiEvent(event));
    }

    /// Sends a node's result to every recipient of the task.
    pub fn deliver_result(&self, spec: &TaskSpec, job_id: &str, result: &crate::protocol::JobResult) {
        Metrics::inc(&self.metrics.tasks_completed);
        self.metrics.result_latency.record(now_ms().saturating_sub(spec.created_ms) * 1000);
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
        });
        self.to_recipients(spec, &message);
    }

    pub fn to_recipients(&self, spec: &TaskSpec, message: &ToClient) {
        for session_id in &spec.recipients {
            self.to_session(session_id, message);
        }
    }

    pub fn to_session(&self, session_id: &str, message: &ToClient) {
        match self.peers.session(session_id) {
            Some(outbox) => {
                outbox.send(message);
            }
            None => {
                Metrics::inc(&self.metrics.undeliverable);
                debug!(session.id = %session_id, "Recipient is not connected here.");
            }
        }
    }

    /// A `ui_event` to the speaker.
    pub fn ui_event(&self, spec: &TaskSpec, job_id: &str, kind: UiEventKind, hint: Option<String>) {
        let mut event = self.event(spec, job_id, kind);
        event.hint = hint;
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
        }
    }
}

/// The protocol code of a failure reason stored in Redis or sent by a node.
fn error_code(code: &str) -> ErrorCode {
    serde_json::from_value(serde_json::Value::String(code.to_owned())).unwrap_or(ErrorCode::InternalError)
}
