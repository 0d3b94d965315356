//! Policies: WebAssembly components that rank nodes for a task (node selection), decide who
//! hears which language in a room (room routing) and where a new task waits under load
//! (admission). See docs/policies.md.
//!
//! Each role has an active version (the embedded default until a custom one is loaded) and may have
//! a shadow version that runs beside it without being enforced, and a canary that decides a share
//! of the calls. A custom version that fails a call (trap, deadline, invalid output) falls back to
//! the default for that call, and the fallback is counted on that version; the breaker
//! (`breaker.rs`) stops calling one that keeps failing. Loading versions: `versions.rs`; the
//! fleet-wide canary verdict: `canary.rs`; what operators see: `status.rs`; the wasmtime host:
//! `host.rs`.

mod admission;
pub mod artifacts;
mod bindings;
mod breaker;
mod call_state;
pub mod canary;
pub mod convert;
mod host;
pub mod replay;
mod stats;
mod status;
mod sync;
mod validate;
mod versions;
pub mod watch;

pub use sync::run as sync_stored;

pub use bindings::{
    AdmissionDecision, AdmissionRequest, Availability, Member, Mode, Route, Task, Terms, Utterance,
};
pub use breaker::Breaker;
pub use canary::{CanaryLimits, CanaryVerdict};
pub use convert::samples;
pub use host::{
    CallError, Candidates, Compiled, Limits, LoadError, MAX_MEMORY_BYTES, NodeExtras, PolicyHost, Role,
    RoomView, sha256_hex,
};
pub use stats::Stats;
pub use status::{RoleStatus, VersionStatus};
pub use versions::{Loaded, Rejected, Rejection};

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::store::{Candidate, TaskSpec};

struct Slot {
    default: Arc<Loaded>,
    active: ArcSwap<Loaded>,
    shadow: ArcSwapOption<Loaded>,
    /// A version deciding `canary_share` percent of the calls (chosen by a stable hash of the task),
    /// watched by `canary_verdict`.
    canary: ArcSwapOption<Loaded>,
    canary_share: std::sync::atomic::AtomicU32,
    /// Canaries this gateway rolled back, and promoted, on its own.
    canary_rollbacks: std::sync::atomic::AtomicU64,
    canary_promotions: std::sync::atomic::AtomicU64,
    last_rejection: ArcSwapOption<Rejection>,
}

impl Slot {
    fn new(default: Loaded) -> Self {
        let default = Arc::new(default);
        Self {
            active: ArcSwap::new(default.clone()),
            default,
            shadow: ArcSwapOption::empty(),
            canary: ArcSwapOption::empty(),
            canary_share: Default::default(),
            canary_rollbacks: Default::default(),
            canary_promotions: Default::default(),
            last_rejection: ArcSwapOption::empty(),
        }
    }
}

/// How a task ended, for the version that placed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEnd {
    /// A result (or silence) came back, this long after the utterance.
    Delivered {
        result_ms: u64,
    },
    TimedOut,
    Failed,
}

/// A version whose last call took this long runs its next call off the async worker
/// (`off_worker_if_slow`): normal calls take 5–50 µs.
const SLOW_CALL_US: u64 = 500;

/// The policies of one gateway.
pub struct Policies {
    canary_limits: CanaryLimits,
    host: PolicyHost,
    breaker: Breaker,
    /// Recent inputs and decisions, for `policy replay`.
    selection_samples: replay::Samples<replay::SelectionSample>,
    routing_samples: replay::Samples<replay::RoutingSample>,
    admission_samples: replay::Samples<replay::AdmissionSample>,
    node_selection: Slot,
    room_routing: Slot,
    admission: Slot,
    /// sha256s allowed to load (`policy.pinned_sha256`); empty = any version that passes checks.
    pinned: std::collections::BTreeSet<String>,
}

impl Policies {
    /// The embedded defaults, active.
    pub fn new(host: PolicyHost) -> Self {
        let embedded = |role, bytes| {
            let compiled = host.compile(role, bytes).expect("the embedded default policies load");
            Loaded::new(compiled, "embedded")
        };
        Self {
            node_selection: Slot::new(embedded(Role::NodeSelection, artifacts::LEAST_LOADED)),
            room_routing: Slot::new(embedded(Role::RoomRouting, artifacts::BY_LANGUAGE)),
            admission: Slot::new(embedded(Role::Admission, artifacts::CONFIGURED)),
            host,
            breaker: Breaker::default(),
            canary_limits: CanaryLimits::default(),
            selection_samples: replay::Samples::new(16, 256),
            routing_samples: replay::Samples::new(16, 256),
            admission_samples: replay::Samples::new(16, 256),
            pinned: Default::default(),
        }
    }

    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.breaker = breaker;
        self
    }

    pub fn with_canary_limits(mut self, limits: CanaryLimits) -> Self {
        self.canary_limits = limits;
        self
    }

    /// Keeps one decision in `every` of each role for replay, the newest `capacity`.
    pub fn sampling(mut self, every: u64, capacity: usize) -> Self {
        self.selection_samples = replay::Samples::new(every, capacity);
        self.routing_samples = replay::Samples::new(every, capacity);
        self.admission_samples = replay::Samples::new(every, capacity);
        self
    }

    /// The kept node-selection decisions (`policy replay`).
    pub fn selection_samples(&self) -> Vec<replay::SelectionSample> {
        self.selection_samples.list()
    }

    /// The kept room-routing decisions (`policy replay`).
    pub fn routing_samples(&self) -> Vec<replay::RoutingSample> {
        self.routing_samples.list()
    }

    /// Accepts only versions whose sha256 is in `pinned` (when it is not empty); the embedded
    /// defaults are part of the binary and always allowed.
    pub fn pinned(mut self, pinned: impl IntoIterator<Item = String>) -> Self {
        self.pinned = pinned.into_iter().map(|sha| sha.to_ascii_lowercase()).collect();
        self
    }

    pub fn host(&self) -> &PolicyHost {
        &self.host
    }

    fn slot(&self, role: Role) -> &Slot {
        match role {
            Role::NodeSelection => &self.node_selection,
            Role::RoomRouting => &self.room_routing,
            Role::Admission => &self.admission,
        }
    }

    /// Ranks the candidates of one dispatch attempt in cell number `cell`: node ids, best first.
    pub fn select(
        &self,
        cell: u32,
        spec: &TaskSpec,
        attempt: u32,
        excluded: &[String],
        affinity: Option<&str>,
        candidates: &[Candidate],
    ) -> Vec<String> {
        let task = convert::task(spec, attempt, excluded, affinity);
        let nodes = convert::candidates(candidates, cell);
        let slot = &self.node_selection;
        let run = |l: &Loaded| {
            let (out, us) =
                host::timed(|| off_worker_if_slow(l, || self.host.select(&l.compiled, &task, &nodes)));
            l.stats.record(us);
            out
        };
        let deciding = canary_or_active(slot, &spec.task_id());
        let ranked = self.with_fallback(slot, &deciding, run).unwrap_or_else(|| {
            // Even the default failed (an overloaded host can miss a deadline): the candidates
            // come least loaded first from Redis.
            candidates.iter().map(|c| c.id.clone()).collect()
        });
        if let Some(shadow) = slot.shadow.load_full()
            && let Some(theirs) = self.guarded(&shadow, &run)
        {
            let agree = theirs.as_ref().is_ok_and(|t| t.first() == ranked.first());
            count_agreement(&shadow, agree);
        }
        self.selection_samples
            .offer(|| replay::SelectionSample::new(spec, attempt, excluded, affinity, candidates, &ranked));
        ranked
    }

    /// The routes of one room utterance; empty means single-session mode.
    pub fn route(
        &self,
        utterance: &Utterance,
        members: &RoomView,
        availability: &[Availability],
    ) -> Vec<Route> {
        let slot = &self.room_routing;
        let run = |l: &Loaded| {
            let (out, us) = host::timed(|| {
                off_worker_if_slow(l, || self.host.route(&l.compiled, utterance, members, availability))
            });
            l.stats.record(us);
            out
        };
        let key = format!("{}:{}", utterance.session_id, utterance.utterance_index);
        let deciding = canary_or_active(slot, &key);
        let routes = self.with_fallback(slot, &deciding, run).unwrap_or_default();
        if let Some(shadow) = slot.shadow.load_full()
            && let Some(theirs) = self.guarded(&shadow, &run)
        {
            let agree = theirs.is_ok_and(|theirs| same_routes(&theirs, &routes));
            count_agreement(&shadow, agree);
        }
        self.routing_samples.offer(|| replay::RoutingSample::new(utterance, members, availability, &routes));
        routes
    }

    /// Runs the active version (unless its breaker holds it suspended); on failure, counts it and
    /// runs the default instead. The embedded default has no breaker: nothing would replace it.
    fn with_fallback<T>(
        &self,
        slot: &Slot,
        active: &Arc<Loaded>,
        run: impl Fn(&Loaded) -> Result<T, CallError>,
    ) -> Option<T> {
        if Arc::ptr_eq(active, &slot.default) {
            return run(active)
                .inspect_err(|err| {
                    active.stats.fallbacks.fetch_add(1, Relaxed);
                    tracing::warn!(%err, "The default policy failed a call.");
                })
                .ok();
        }
        match self.guarded(active, &run) {
            Some(Ok(out)) => return Some(out),
            Some(Err(err)) => {
                active.stats.fallbacks.fetch_add(1, Relaxed);
                tracing::warn!(policy.sha256 = %short(&active.compiled.sha256), %err, "Policy call failed; using the default.");
            }
            None => {
                active.stats.fallbacks.fetch_add(1, Relaxed);
            }
        }
        run(&slot.default).ok()
    }

    /// Counts a canary this gateway ended on its own.
    pub fn count_canary_end(&self, role: Role, promoted: bool) {
        let slot = self.slot(role);
        let counter = if promoted { &slot.canary_promotions } else { &slot.canary_rollbacks };
        counter.fetch_add(1, Relaxed);
    }

    /// Canaries this gateway ended on its own: (rolled back, promoted).
    pub fn canary_ends(&self, role: Role) -> (u64, u64) {
        let slot = self.slot(role);
        (slot.canary_rollbacks.load(Relaxed), slot.canary_promotions.load(Relaxed))
    }

    pub fn canary(&self, role: Role) -> Option<Arc<Loaded>> {
        self.slot(role).canary.load_full()
    }

    /// Counts how a task ended on the node-selection version that placed it: the canary for the
    /// tasks in its share (the same stable hash that chose it), else the active version. A task
    /// placed before a canary started or after it ended may be counted on the other one; over a
    /// window of `min_calls` tasks that is noise.
    pub fn record_outcome(&self, task_id: &str, end: TaskEnd) {
        let placed = canary_or_active(&self.node_selection, task_id);
        let s = &placed.stats;
        match end {
            TaskEnd::Delivered { result_ms } => {
                s.tasks_ok.fetch_add(1, Relaxed);
                s.result_ms.record(result_ms);
            }
            TaskEnd::TimedOut => {
                s.tasks_timed_out.fetch_add(1, Relaxed);
            }
            TaskEnd::Failed => {
                s.tasks_failed.fetch_add(1, Relaxed);
            }
        }
    }

    /// The role's canary and its active version, whose counts are judged together (`canary`).
    pub fn canary_and_active(&self, role: Role) -> Option<(Arc<Loaded>, Arc<Loaded>)> {
        let slot = self.slot(role);
        Some((slot.canary.load_full()?, slot.active.load_full()))
    }

    pub fn canary_limits(&self) -> &CanaryLimits {
        &self.canary_limits
    }

    pub fn active(&self, role: Role) -> Arc<Loaded> {
        self.slot(role).active.load_full()
    }

    pub fn shadow(&self, role: Role) -> Option<Arc<Loaded>> {
        self.slot(role).shadow.load_full()
    }
}

fn count_agreement(shadow: &Loaded, agree: bool) {
    let counter = if agree { &shadow.stats.agreements } else { &shadow.stats.disagreements };
    counter.fetch_add(1, Relaxed);
}

fn same_routes(a: &[Route], b: &[Route]) -> bool {
    let key = |r: &[Route]| {
        let mut v: Vec<(String, Vec<String>)> = r
            .iter()
            .map(|r| {
                let mut to = r.recipients.clone();
                to.sort();
                (r.tgt_lang.clone(), to)
            })
            .collect();
        v.sort();
        v
    };
    key(a) == key(b)
}

pub fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}

/// Runs a call of version `l` on this thread, off the async worker when its last call was slow
/// (`tokio::task::block_in_place` hands the worker's other sockets to another thread meanwhile):
/// a policy that spins to its deadline must not stall every socket scheduled on its worker. Fast
/// versions pay nothing. The call stays on this thread, so its warm instance is found.
fn off_worker_if_slow<T>(l: &Loaded, call: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if l.stats.last_us.load(Relaxed) < SLOW_CALL_US {
        return call();
    }
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            l.stats.offloaded.fetch_add(1, Relaxed);
            tokio::task::block_in_place(call)
        }
        _ => call(),
    }
}

/// The version that decides the call keyed `key`: the canary for its share of keys (a stable hash,
/// so a task's retries and every gateway agree), else the active one.
fn canary_or_active(slot: &Slot, key: &str) -> Arc<Loaded> {
    if let Some(canary) = slot.canary.load_full() {
        let share = slot.canary_share.load(Relaxed) as u64;
        if crate::store::stable_hash(key) % 100 < share {
            return canary;
        }
    }
    slot.active.load_full()
}
