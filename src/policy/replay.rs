//! A bounded sample of recent live inputs and the decisions made on them, per role, so a candidate
//! version can be replayed on real traffic before it is pushed (`switchboard policy replay`,
//! `GET /admin/policies/{role}/samples`). One call in `every` is kept, the newest `capacity`;
//! keeping one is a copy of the inputs under a lock no decision waits on.

use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use super::bindings::Mode;
use super::{AdmissionDecision, AdmissionRequest, Availability, RoomView, Route, Terms, Utterance};
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

/// One kept admission decision, in the fixture format of `policy test --fixtures`: the request,
/// and the decision as `expect_admission`.
#[derive(Debug, Clone, Serialize)]
pub struct AdmissionSample {
    pub name: String,
    pub admission: SampleAdmission,
    pub expect_admission: SampleDecision,
}

/// An admission request as fixtures and samples write it (`mode`: `one_way` or `two_way_auto`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleAdmission {
    pub session_id: String,
    pub utterance_index: u64,
    pub src_lang: String,
    pub tgt_lang: String,
    pub mode: String,
    pub tenant_id: Option<String>,
    pub room_code: Option<String>,
    pub recipients: u32,
    pub tenant_waiting: u32,
    pub tenant_running: u32,
    pub pool_waiting: u32,
}

impl Default for SampleAdmission {
    fn default() -> Self {
        Self {
            session_id: "s-fixture".into(),
            utterance_index: 0,
            src_lang: "zh".into(),
            tgt_lang: "en".into(),
            mode: "one_way".into(),
            tenant_id: None,
            room_code: None,
            recipients: 1,
            tenant_waiting: 0,
            tenant_running: 0,
            pool_waiting: 0,
        }
    }
}

impl SampleAdmission {
    pub fn request(&self) -> AdmissionRequest {
        AdmissionRequest {
            session_id: self.session_id.clone(),
            utterance_index: self.utterance_index,
            src_lang: self.src_lang.clone(),
            tgt_lang: self.tgt_lang.clone(),
            mode: if self.mode == "two_way_auto" { Mode::TwoWayAuto } else { Mode::OneWay },
            tenant_id: self.tenant_id.clone(),
            room_code: self.room_code.clone(),
            recipients: self.recipients,
            tenant_waiting: self.tenant_waiting,
            tenant_running: self.tenant_running,
            pool_waiting: self.pool_waiting,
        }
    }
}

impl From<&AdmissionRequest> for SampleAdmission {
    fn from(r: &AdmissionRequest) -> Self {
        Self {
            session_id: r.session_id.clone(),
            utterance_index: r.utterance_index,
            src_lang: r.src_lang.clone(),
            tgt_lang: r.tgt_lang.clone(),
            mode: if r.mode == Mode::TwoWayAuto { "two_way_auto" } else { "one_way" }.into(),
            tenant_id: r.tenant_id.clone(),
            room_code: r.room_code.clone(),
            recipients: r.recipients,
            tenant_waiting: r.tenant_waiting,
            tenant_running: r.tenant_running,
            pool_waiting: r.pool_waiting,
        }
    }
}

/// An admission decision as fixtures and samples write it: `"configured"`,
/// `{"admit": {"band": 0, "weight": 1.0, "max_running": 2}}` or `{"reject": "why"}` (in a fixture,
/// `{"reject": ""}` accepts any reason).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SampleDecision {
    Configured,
    Admit {
        band: u8,
        weight: f64,
        #[serde(default)]
        max_running: Option<u32>,
    },
    Reject(String),
}

impl From<&AdmissionDecision> for SampleDecision {
    fn from(d: &AdmissionDecision) -> Self {
        match d {
            AdmissionDecision::Configured => Self::Configured,
            AdmissionDecision::Admit(Terms { band, weight, max_running }) => {
                Self::Admit { band: *band, weight: *weight, max_running: *max_running }
            }
            AdmissionDecision::Reject(why) => Self::Reject(why.clone()),
        }
    }
}

impl SampleDecision {
    /// Whether `got` is this decision (a fixture's empty rejection reason accepts any reason).
    pub fn matches(&self, got: &SampleDecision) -> bool {
        match (self, got) {
            (Self::Reject(want), Self::Reject(_)) if want.is_empty() => true,
            _ => self == got,
        }
    }
}

impl AdmissionSample {
    pub fn new(request: &AdmissionRequest, decision: &AdmissionDecision) -> Self {
        AdmissionSample {
            name: format!(
                "{} utterance {} to {}",
                request.session_id, request.utterance_index, request.tgt_lang
            ),
            admission: request.into(),
            expect_admission: decision.into(),
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
