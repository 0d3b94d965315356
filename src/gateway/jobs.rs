//! Jobs to their nodes: `job_assign` for a task a dispatch placed or a slot was handed to, and
//! what the gateway does with jobs a transition ended early (new attempts, failures, cancels).

use tracing::{info_span, warn};

use super::{AppState, Metrics};
use crate::protocol::{JobAssign, JobCancel, ToNode, UiEventKind};
use crate::store::{CellKeys, FailedTask, Handoff, Payload, Released, TaskSpec};

impl AppState {
    pub(super) fn send_job(
        &self,
        cell: &CellKeys,
        spec: &TaskSpec,
        payload: &Payload,
        node_id: &str,
        job_id: &str,
        attempt: u32,
    ) {
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
        // A node whose socket just closed is taken offline by its handler, which releases this job
        // for another attempt; the job deadline covers every other loss.
        self.to_node(cell, node_id, &ToNode::JobAssign(assign));
        self.ui_event(spec, job_id, UiEventKind::Dispatched, None);
    }

    /// Acts on jobs a transition in `cell` ended early: new attempts, failures, cancels.
    pub fn handle_released(&self, cell: &CellKeys, released: Released) {
        for task_id in released.requeued {
            self.spawn_redispatch(cell, task_id);
        }
        for failed in released.failed {
            let FailedTask { spec, code, job_id, .. } = failed;
            self.fail_task(&spec, code, None, job_id.as_deref());
        }
        for cancel in released.cancel {
            let message = ToNode::JobCancel(JobCancel {
                job_id: cancel.job_id,
                trace_id: None,
                reason: "JOB_TIMEOUT".into(),
            });
            self.to_node(cell, &cancel.node_id, &message);
        }
    }

    /// Sends the job of a waiting task `dispatch_task` gave the slot another task could not take.
    pub(super) fn send_handoff(&self, cell: &CellKeys, handoff: Handoff) {
        let Handoff { node_id, attempt, job_id, spec, payload, .. } = handoff;
        self.send_job(cell, &spec, &payload, &node_id, &job_id, attempt);
    }

    pub fn spawn_redispatch(&self, cell: &CellKeys, task_id: String) {
        let state = self.clone();
        let cell = cell.clone();
        let span = info_span!("redispatch", task.id = %task_id);
        self.spawn(span, async move {
            if let Err(err) = state.redispatch(&cell, &task_id).await {
                // The task stays waiting in Redis; the next sweep tries it again.
                warn!(%err, "Re-dispatch failed.");
            }
        });
    }
}
