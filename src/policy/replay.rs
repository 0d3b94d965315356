//! A bounded sample of recent live node-selection inputs and the active version's decisions, so a
//! candidate version can be replayed on real traffic before it is pushed (`switchboard policy
//! replay`, `GET /admin/policies/node-selection/samples`). One call in `every` is kept, the
//! newest `capacity`; keeping one is a clone of the inputs under a lock no decision waits on.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::scheduler::{Candidate, TaskSpec};

/// One kept decision, in the fixture format of `policy test --fixtures`: the inputs, and the
/// active version's ranking as `expect_first`.
#[derive(Debug, Clone, Serialize)]
pub struct SelectionSample {
    pub name: String,
    pub task: SampleTask,
    pub candidates: Vec<SampleNode>,
    pub expect_first: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleTask {
    pub src_lang: String,
    pub tgt_lang: String,
    pub attempt: u32,
    pub affinity: Option<String>,
    pub excluded: Vec<String>,
    pub tenant_id: Option<String>,
    pub room_code: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleNode {
    pub id: String,
    pub running: u32,
    pub capacity: u32,
    pub cpu: f64,
    pub gpu: f64,
    pub gpu_mem: f64,
    pub mem: f64,
    pub gpu_queue: u32,
    pub ready: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub pairs: Vec<String>,
    pub heartbeat_age_ms: i64,
}

pub struct Samples {
    every: u64,
    capacity: usize,
    seen: AtomicU64,
    kept: Mutex<VecDeque<SelectionSample>>,
}

impl Samples {
    /// Keeps one call in `every` (0: none), the newest `capacity`.
    pub fn new(every: u64, capacity: usize) -> Self {
        Self { every, capacity, seen: AtomicU64::new(0), kept: Mutex::new(VecDeque::new()) }
    }

    pub fn offer(
        &self,
        spec: &TaskSpec,
        attempt: u32,
        excluded: &[String],
        affinity: Option<&str>,
        candidates: &[Candidate],
        ranked: &[String],
    ) {
        if self.every == 0
            || self.capacity == 0
            || !self.seen.fetch_add(1, Relaxed).is_multiple_of(self.every)
        {
            return;
        }
        let sample = SelectionSample {
            name: format!("{} attempt {attempt}", spec.task_id()),
            task: SampleTask {
                src_lang: spec.src_lang.clone(),
                tgt_lang: spec.tgt_lang.clone(),
                attempt,
                affinity: affinity.map(str::to_owned),
                excluded: excluded.to_vec(),
                tenant_id: spec.tenant_id.clone(),
                room_code: spec.room_code.clone(),
            },
            candidates: candidates
                .iter()
                .map(|c| SampleNode {
                    id: c.id.clone(),
                    running: c.running,
                    capacity: c.capacity,
                    cpu: c.cpu,
                    gpu: c.gpu,
                    gpu_mem: c.gpu_mem,
                    mem: c.mem,
                    gpu_queue: c.gpu_queue,
                    ready: c.ready.clone(),
                    labels: c.labels.clone(),
                    pairs: c.pairs.to_vec(),
                    heartbeat_age_ms: c.heartbeat_age_ms,
                })
                .collect(),
            expect_first: ranked.to_vec(),
        };
        let mut kept = self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.push_back(sample);
        while kept.len() > self.capacity {
            kept.pop_front();
        }
    }

    /// The kept samples, oldest first.
    pub fn list(&self) -> Vec<SelectionSample> {
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect()
    }
}
