//! Policies: WebAssembly components that rank nodes for a task (node selection) and decide who
//! hears which language in a room (room routing). See docs/policies.md.
//!
//! Each role has an active version (the embedded default until a custom one is loaded) and may have
//! a shadow version that runs beside it without being enforced. A custom version that fails a call
//! (trap, deadline, invalid output) falls back to the default for that call, and the fallback is
//! counted on that version. A breaker stops calling a version that failed `failures` calls in a
//! row: it is suspended for a cool-down (the default decides, without paying its deadline each
//! time); after it, one more failure suspends it again, one good call closes the breaker.

pub mod artifacts;
mod bindings;
pub mod canary;
pub mod convert;
mod host;
pub mod replay;
mod stats;
mod sync;
pub mod watch;

pub use sync::run as sync_stored;

pub use bindings::{Availability, Member, Route, Task, Utterance};
pub use canary::{CanaryLimits, CanaryVerdict};
pub use convert::samples;
pub use host::{
    CallError, Candidates, Compiled, Limits, LoadError, MAX_MEMORY_BYTES, NodeExtras, PolicyHost, Role,
    RoomView, sha256_hex,
};
pub use stats::Stats;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Serialize;

use crate::protocol::now_ms;
use crate::store::{Candidate, TaskSpec};

const SMOKE_DEADLINE: std::time::Duration = std::time::Duration::from_millis(50);

/// One loaded version of a policy.
pub struct Loaded {
    pub compiled: Compiled,
    /// Where it came from: `embedded`, `file:<path>`, `admin`.
    pub source: String,
    pub loaded_at_ms: u64,
    pub stats: Stats,
}

impl Loaded {
    pub fn new(compiled: Compiled, source: &str) -> Self {
        Self { compiled, source: source.to_owned(), loaded_at_ms: now_ms(), stats: Stats::default() }
    }
}

/// Why a version was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("failed its smoke test: {0}")]
    Smoke(CallError),
    #[error("sha256 {0} is not in policy.pinned_sha256")]
    NotPinned(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub sha256: String,
    pub source: String,
    pub reason: String,
    pub at_ms: u64,
}

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

/// When a misbehaving version stops being called (`policy.breaker_*`).
#[derive(Debug, Clone, Copy)]
pub struct Breaker {
    /// Failed calls in a row that suspend a version; 0 turns the breaker off.
    pub failures: u64,
    pub cooldown_ms: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Self { failures: 5, cooldown_ms: 30_000 }
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
    node_selection: Slot,
    room_routing: Slot,
    /// sha256s allowed to load (`policy.pinned_sha256`); empty = any version that passes checks.
    pinned: std::collections::BTreeSet<String>,
}

/// A role's state, for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct RoleStatus {
    pub role: Role,
    pub active: VersionStatus,
    pub shadow: Option<VersionStatus>,
    /// The canary and the percent of calls it decides.
    pub canary: Option<VersionStatus>,
    pub canary_share: u32,
    pub last_rejection: Option<Rejection>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionStatus {
    pub sha256: String,
    pub source: String,
    pub loaded_at_ms: u64,
    pub calls: u64,
    pub fallbacks: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Shadow versions: how often their decision matched the active one's.
    pub agreement: Option<f64>,
    /// Set while the breaker holds it suspended: until when (ms since the epoch).
    pub suspended_until_ms: Option<u64>,
    /// Times the breaker suspended it, and calls it did not get meanwhile.
    pub suspensions: u64,
    pub skipped: u64,
    /// Calls run off the async worker because the version's previous call was slow.
    pub offloaded: u64,
    /// Node selection: how the tasks it placed ended, and their result latency p99 (ms).
    pub tasks_ok: u64,
    pub tasks_failed: u64,
    pub tasks_timed_out: u64,
    pub result_p99_ms: u64,
}

impl VersionStatus {
    fn of(l: &Loaded) -> Self {
        let agree = l.stats.agreements.load(Relaxed);
        let disagree = l.stats.disagreements.load(Relaxed);
        Self {
            sha256: l.compiled.sha256.clone(),
            source: l.source.clone(),
            loaded_at_ms: l.loaded_at_ms,
            calls: l.stats.calls.load(Relaxed),
            fallbacks: l.stats.fallbacks.load(Relaxed),
            p50_us: l.stats.quantile(0.5),
            p99_us: l.stats.quantile(0.99),
            agreement: (agree + disagree > 0).then(|| agree as f64 / (agree + disagree) as f64),
            suspended_until_ms: l
                .stats
                .suspended_at(now_ms())
                .then(|| l.stats.suspended_until_ms.load(Relaxed)),
            suspensions: l.stats.suspensions.load(Relaxed),
            skipped: l.stats.skipped.load(Relaxed),
            offloaded: l.stats.offloaded.load(Relaxed),
            tasks_ok: l.stats.tasks_ok.load(Relaxed),
            tasks_failed: l.stats.tasks_failed.load(Relaxed),
            tasks_timed_out: l.stats.tasks_timed_out.load(Relaxed),
            result_p99_ms: l.stats.result_ms.quantile(0.99),
        }
    }
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
            host,
            breaker: Breaker::default(),
            canary_limits: CanaryLimits::default(),
            selection_samples: replay::Samples::new(16, 256),
            routing_samples: replay::Samples::new(16, 256),
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

    /// Calls version `l` unless the breaker holds it suspended (`None` then), and keeps its breaker:
    /// `breaker.failures` failed calls in a row suspend it for `breaker.cooldown_ms`.
    fn guarded<T>(
        &self,
        l: &Loaded,
        run: &impl Fn(&Loaded) -> Result<T, CallError>,
    ) -> Option<Result<T, CallError>> {
        let now = now_ms();
        if l.stats.suspended_at(now) {
            l.stats.skipped.fetch_add(1, Relaxed);
            return None;
        }
        let out = run(l);
        if out.is_ok() {
            l.stats.failures_in_a_row.store(0, Relaxed);
        } else {
            let in_a_row = l.stats.failures_in_a_row.fetch_add(1, Relaxed) + 1;
            // Past a cool-down the count is still at the threshold: one more failure suspends again.
            if self.breaker.failures > 0 && in_a_row >= self.breaker.failures {
                l.stats.suspended_until_ms.store(now + self.breaker.cooldown_ms, Relaxed);
                l.stats.suspensions.fetch_add(1, Relaxed);
                tracing::warn!(
                    policy.sha256 = %short(&l.compiled.sha256),
                    failures = in_a_row,
                    cooldown_ms = self.breaker.cooldown_ms,
                    "Policy suspended after failed calls in a row; the default decides until the cool-down ends."
                );
            }
        }
        Some(out)
    }

    /// Compiles, type-checks and smoke-tests a version. CPU-heavy (compilation): call it off the
    /// async runtime.
    pub fn prepare(&self, role: Role, bytes: &[u8], source: &str) -> Result<Arc<Loaded>, Rejected> {
        if !self.pinned.is_empty() {
            let sha = sha256_hex(bytes);
            if !self.pinned.contains(&sha) {
                return Err(Rejected::NotPinned(sha));
            }
        }
        let compiled = self.host.compile(role, bytes)?;
        self.smoke(&compiled).map_err(Rejected::Smoke)?;
        Ok(Arc::new(Loaded::new(compiled, source)))
    }

    /// Runs a new version on sample inputs. Its deadline is ten times the live one (at least 50 ms):
    /// the smoke test checks behaviour, and a busy machine must not reject a sound version; a
    /// version that never returns still fails it.
    fn smoke(&self, compiled: &Compiled) -> Result<(), CallError> {
        let host = self.host.with_deadline((self.host.limits().deadline * 10).max(SMOKE_DEADLINE));
        match compiled.role {
            Role::NodeSelection => {
                host.select(compiled, &samples::task(), &samples::nodes(3))?;
                host.select(compiled, &samples::task(), &Candidates::default())?;
            }
            Role::RoomRouting => {
                let members = samples::members();
                host.route(compiled, &samples::utterance(), &members, &samples::availability())?;
                let alone = RoomView::from(members.members[..1].to_vec());
                host.route(compiled, &samples::utterance(), &alone, &[])?;
            }
        }
        Ok(())
    }

    /// Loads `bytes` as the active version of `role`, or records why not and keeps the old one.
    pub fn load(&self, role: Role, bytes: &[u8], source: &str) -> Result<Arc<Loaded>, Rejected> {
        match self.prepare(role, bytes, source) {
            Ok(loaded) => {
                self.activate(role, loaded.clone());
                Ok(loaded)
            }
            Err(rejected) => {
                self.reject(role, bytes, source, &rejected);
                Err(rejected)
            }
        }
    }

    pub fn activate(&self, role: Role, loaded: Arc<Loaded>) {
        let slot = self.slot(role);
        tracing::info!(role = role.as_str(), policy.sha256 = %short(&loaded.compiled.sha256), source = %loaded.source, "Policy active.");
        slot.active.store(loaded);
    }

    pub fn reject(&self, role: Role, bytes: &[u8], source: &str, why: &Rejected) {
        let rejection = Rejection {
            sha256: sha256_hex(bytes),
            source: source.to_owned(),
            reason: why.to_string(),
            at_ms: now_ms(),
        };
        tracing::warn!(role = role.as_str(), source, reason = %rejection.reason, "Policy rejected; the active one stays.");
        self.slot(role).last_rejection.store(Some(Arc::new(rejection)));
    }

    /// Makes the embedded default active again.
    pub fn reset(&self, role: Role) {
        let slot = self.slot(role);
        self.activate(role, slot.default.clone());
    }

    pub fn set_shadow(&self, role: Role, shadow: Option<Arc<Loaded>>) {
        self.slot(role).shadow.store(shadow);
    }

    /// Gives `canary` `share` percent of the role's calls (none: no canary).
    pub fn set_canary(&self, role: Role, canary: Option<Arc<Loaded>>, share: u32) {
        let slot = self.slot(role);
        slot.canary_share.store(share.min(100), Relaxed);
        if let Some(c) = &canary {
            tracing::info!(role = role.as_str(), policy.sha256 = %short(&c.compiled.sha256), share, "Policy canary.");
        }
        slot.canary.store(canary);
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

    pub fn status(&self) -> Vec<RoleStatus> {
        Role::ALL
            .into_iter()
            .map(|role| {
                let slot = self.slot(role);
                RoleStatus {
                    role,
                    active: VersionStatus::of(&slot.active.load()),
                    shadow: slot.shadow.load().as_deref().map(VersionStatus::of),
                    canary: slot.canary.load().as_deref().map(VersionStatus::of),
                    canary_share: slot.canary_share.load(Relaxed),
                    last_rejection: slot.last_rejection.load().as_deref().cloned(),
                }
            })
            .collect()
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
