//! A bounded sample of recent live inputs and the decisions made on them, per role, so a candidate
//! version can be replayed on real traffic before it is pushed (`switchboard policy replay`,
//! `GET /admin/policies/{role}/samples`). One call in `every` is kept, the newest `capacity`;
//! keeping one is a copy of the inputs under a lock no decision waits on.

use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use super::{Availability, RoomView, Route, Utterance};
use crate::store::{Candidate, TaskSpec};

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

/// One kept room-routing decision, in the fixture format of `policy test --fixtures`: the inputs,
/// and the routes decided as `expect_routes`.
#[derive(Debug, Clone, Serialize)]
pub struct RoutingSample {
    pub name: String,
    pub utterance: SampleUtterance,
    pub members: Vec<SampleMember>,
    pub availability: BTreeMap<String, u32>,
    pub expect_routes: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleUtterance {
    pub session_id: String,
    pub src_lang: String,
    pub tgt_lang: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleMember {
    pub session_id: String,
    pub preferred_lang: Option<String>,
    pub display_name: Option<String>,
    pub voice_off: Vec<String>,
}

impl SelectionSample {
    pub fn new(
        spec: &TaskSpec,
        attempt: u32,
        excluded: &[String],
        affinity: Option<&str>,
        candidates: &[Candidate],
        ranked: &[String],
    ) -> Self {
        SelectionSample {
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
        }
    }
}

impl RoutingSample {
    pub fn new(
        utterance: &Utterance,
        room: &RoomView,
        availability: &[Availability],
        routes: &[Route],
    ) -> Self {
        let voice_off = |member: &str| {
            room.voices_off.iter().find(|(m, _)| m == member).map(|(_, off)| off.clone()).unwrap_or_default()
        };
        RoutingSample {
            name: format!("{} utterance {}", utterance.session_id, utterance.utterance_index),
            utterance: SampleUtterance {
                session_id: utterance.session_id.clone(),
                src_lang: utterance.src_lang.clone(),
                tgt_lang: utterance.tgt_lang.clone(),
            },
            members: room
                .members
                .iter()
                .map(|m| SampleMember {
                    session_id: m.session_id.clone(),
                    preferred_lang: m.preferred_lang.clone(),
                    display_name: m.display_name.clone(),
                    voice_off: voice_off(&m.session_id),
                })
                .collect(),
            availability: availability.iter().map(|a| (a.tgt_lang.clone(), a.free_slots)).collect(),
            expect_routes: routes.iter().map(|r| (r.tgt_lang.clone(), r.recipients.clone())).collect(),
        }
    }
}

pub struct Samples<T> {
    every: u64,
    capacity: usize,
    seen: AtomicU64,
    kept: Mutex<VecDeque<T>>,
}

impl<T: Clone> Samples<T> {
    /// Keeps one call in `every` (0: none), the newest `capacity`.
    pub fn new(every: u64, capacity: usize) -> Self {
        Self { every, capacity, seen: AtomicU64::new(0), kept: Mutex::new(VecDeque::new()) }
    }

    /// Keeps the sample `make` builds when this call is one to keep.
    pub fn offer(&self, make: impl FnOnce() -> T) {
        if self.every == 0
            || self.capacity == 0
            || !self.seen.fetch_add(1, Relaxed).is_multiple_of(self.every)
        {
            return;
        }
        let sample = make();
        let mut kept = self.kept.lock();
        kept.push_back(sample);
        while kept.len() > self.capacity {
            kept.pop_front();
        }
    }

    /// The kept samples, oldest first.
    pub fn list(&self) -> Vec<T> {
        self.kept.lock().iter().cloned().collect()
    }
}
