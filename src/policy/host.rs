//! The wasmtime host: one `Engine` for the process with epoch interruption, one compiled
//! `InstancePre` per loaded policy version, and a deadline and a memory cap on every call. A call
//! that traps, overruns or returns something invalid is an error. Over 400 lines: the engine,
//! compilation, warm instances and the three worlds' calls share private state; what a policy may
//! call back is `call_state.rs`, the checks on its answers `validate.rs`.
//!
//! Instances are kept warm between calls, one per version per thread: a fresh instance per call
//! spends ~40 µs in the kernel (page faults on new linear memory, madvise/mprotect on teardown),
//! more than the decision itself. An instance whose call trapped or overran is dropped, so the next
//! call starts from a clean one; a policy must not count on state between calls either way.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use wasmtime::component::types::{ComponentExtern, ComponentItem};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimitsBuilder, Trap};

use super::bindings::admission::{Admission as AdmissionWorld, AdmissionPre};
use super::bindings::node_selection::{NodeSelection, NodeSelectionPre};
use super::bindings::room_routing::{RoomRouting, RoomRoutingPre};
use super::bindings::{
    AdmissionDecision, AdmissionRequest, Availability, Member, Node, Route, Task, Utterance,
};
use super::call_state::CallState;
use super::validate::{validate_admission, validate_ranking, validate_routes};
use crate::protocol::clip;

/// How often the epoch advances: the resolution of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// The least time an instantiation gets (see `with_instance`).
const INSTANTIATE_MIN: Duration = Duration::from_millis(50);
/// Warm instances one thread keeps (see `with_instance`).
const WARM_PER_THREAD: usize = 8;
/// The largest memory cap a gateway may configure (`policy.memory_mib`).
pub const MAX_MEMORY_BYTES: usize = 64 << 20;
/// Log lines one call may write; more are dropped.
const LOGS_PER_CALL: u32 = 8;
pub(super) const LOG_LINE_CHARS: usize = 512;
/// The only interface a policy may import.
const HOST_INTERFACE: &str = "switchboard:policy/host@0.1.2";
/// Versions of the WIT package a policy may be built against: 0.1.x only adds host functions,
/// types and worlds, and wasmtime links a `@0.1.0` import to the `@0.1.2` host (semver-compatible
/// lookup).
const PACKAGE_VERSIONS: &[&str] = &["0.1.0", "0.1.1", "0.1.2"];

/// Whether a component may import `name`: the host or types interface of a known version.
fn allowed_import(name: &str) -> bool {
    let Some((interface, version)) = name.split_once('@') else { return false };
    matches!(interface, "switchboard:policy/host" | "switchboard:policy/types")
        && PACKAGE_VERSIONS.contains(&version)
}

/// A policy's role: which WIT world it implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    NodeSelection,
    RoomRouting,
    Admission,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::NodeSelection, Role::RoomRouting, Role::Admission];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::NodeSelection => "node-selection",
            Role::RoomRouting => "room-routing",
            Role::Admission => "admission",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Per-call limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub deadline: Duration,
    pub memory_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid component: {0}")]
    Invalid(String),
    #[error("imports `{0}`, which is outside the host interface ({HOST_INTERFACE})")]
    ForeignImport(String),
    #[error("does not implement the {world} world: {reason}")]
    WrongWorld { world: &'static str, reason: String },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("exceeded its {0:?} deadline")]
    Deadline(Duration),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned an error: {0}")]
    Returned(String),
    #[error("returned invalid output: {0}")]
    InvalidOutput(String),
}

/// A policy version compiled and type-checked against its world, ready to instantiate.
#[derive(Clone)]
pub struct Compiled {
    pub role: Role,
    pub sha256: String,
    /// Unique per compilation in this process: names its warm instances.
    id: u64,
    pre: Pre,
}

#[derive(Clone)]
enum Pre {
    NodeSelection(NodeSelectionPre<CallState>),
    RoomRouting(RoomRoutingPre<CallState>),
    Admission(AdmissionPre<CallState>),
}

/// The candidates of a node-selection call: the records the policy gets, and what it may ask the
/// host for (labels, language pairs).
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    pub nodes: Vec<Node>,
    pub extras: Arc<Vec<NodeExtras>>,
}

/// The members of a room-routing call: the records the policy gets, and what it may ask the host
/// for (the voices each member turned off).
#[derive(Debug, Clone, Default)]
pub struct RoomView {
    pub members: Vec<Member>,
    /// Member session id → session ids of members whose original voice it turned off.
    pub voices_off: Arc<Vec<(String, Vec<String>)>>,
}

impl From<Vec<Member>> for RoomView {
    fn from(members: Vec<Member>) -> Self {
        Self { members, voices_off: Arc::default() }
    }
}

#[derive(Debug, Clone, Default)]
pub struct NodeExtras {
    pub id: String,
    pub labels: Vec<(String, String)>,
    /// `src>tgt`, shared by the candidates of one class; turned into records only when asked.
    pub pairs: Arc<Vec<String>>,
}

/// Versions compiled in this process, by role and content: a version seen before (a rollback, a
/// swap back, every gateway of a test process) is not compiled again. Compiling takes milliseconds
/// to seconds; the lock is held only to look up or insert. Bounded by the versions an operator
/// loads over the process's life.
fn compiled_cache() -> &'static Mutex<HashMap<(Role, String), Compiled>> {
    static CACHE: OnceLock<Mutex<HashMap<(Role, String), Compiled>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// Compiles and runs policies with one set of limits and operator parameters.
#[derive(Clone)]
pub struct PolicyHost {
    /// Tells this host's warm instances from other hosts' (their config or limits differ).
    id: u64,
    limits: Limits,
    config: Arc<Vec<(String, String)>>,
}

/// An instantiated policy and its store, kept between calls on one thread.
struct Warm {
    store: Store<CallState>,
    bindings: Bindings,
}

enum Bindings {
    NodeSelection(NodeSelection),
    RoomRouting(RoomRouting),
    Admission(AdmissionWorld),
}

/// (host id, compiled version id).
type WarmKey = (u64, u64);

thread_local! {
    static WARM: std::cell::RefCell<HashMap<WarmKey, Warm>> = std::cell::RefCell::new(HashMap::new());
}

fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The process's one engine (with a thread that advances its epoch every tick) and one linker
/// per world: none of them depends on a gateway's settings.
struct Runtime {
    engine: Engine,
    node_selection: Linker<CallState>,
    room_routing: Linker<CallState>,
    admission: Linker<CallState>,
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("the wasmtime engine configuration is valid");
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("the epoch thread starts");
        let mut node_selection = Linker::new(&engine);
        NodeSelection::add_to_linker::<_, HasSelf<_>>(&mut node_selection, |s| s)
            .expect("host functions link");
        let mut room_routing = Linker::new(&engine);
        RoomRouting::add_to_linker::<_, HasSelf<_>>(&mut room_routing, |s| s).expect("host functions link");
        let mut admission = Linker::new(&engine);
        AdmissionWorld::add_to_linker::<_, HasSelf<_>>(&mut admission, |s| s).expect("host functions link");
        Runtime { engine, node_selection, room_routing, admission }
    })
}

impl PolicyHost {
    pub fn new(limits: Limits, config: Vec<(String, String)>) -> Self {
        Self { id: next_id(), limits, config: Arc::new(config) }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The same host with another call deadline.
    pub fn with_deadline(&self, deadline: Duration) -> Self {
        Self {
            id: next_id(),
            limits: Limits { deadline, ..self.limits.clone() },
            config: self.config.clone(),
        }
    }

    /// Compiles `bytes` and checks it against `role`'s world: only the host interface may be
    /// imported, and the export must have the world's exact signature.
    pub fn compile(&self, role: Role, bytes: &[u8]) -> Result<Compiled, LoadError> {
        let sha256 = sha256_hex(bytes);
        let key = (role, sha256.clone());
        if let Some(compiled) = compiled_cache().lock().get(&key) {
            return Ok(compiled.clone());
        }
        let compiled = self.compile_uncached(role, bytes, sha256)?;
        compiled_cache().lock().insert(key, compiled.clone());
        Ok(compiled)
    }

    fn compile_uncached(&self, role: Role, bytes: &[u8], sha256: String) -> Result<Compiled, LoadError> {
        let rt = runtime();
        let component =
            Component::new(&rt.engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        for (name, _) in component.component_type().imports(&rt.engine) {
            if !allowed_import(name) {
                return Err(LoadError::ForeignImport(name.to_owned()));
            }
        }
        let wrong =
            |e: wasmtime::Error| LoadError::WrongWorld { world: role.as_str(), reason: format!("{e:#}") };
        let pre = match role {
            Role::NodeSelection => {
                let pre = rt.node_selection.instantiate_pre(&component).map_err(wrong)?;
                Pre::NodeSelection(NodeSelectionPre::new(pre).map_err(wrong)?)
            }
            Role::RoomRouting => {
                let pre = rt.room_routing.instantiate_pre(&component).map_err(wrong)?;
                Pre::RoomRouting(RoomRoutingPre::new(pre).map_err(wrong)?)
            }
            Role::Admission => {
                let pre = rt.admission.instantiate_pre(&component).map_err(wrong)?;
                Pre::Admission(AdmissionPre::new(pre).map_err(wrong)?)
            }
        };
        Ok(Compiled { role, sha256, id: next_id(), pre })
    }

    /// Imports and exports of a component, for `switchboard policy check`.
    pub fn describe(&self, bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), LoadError> {
        let engine = &runtime().engine;
        let component = Component::new(engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let ty = component.component_type();
        let name = |(n, item): (&str, ComponentExtern<'_>)| match item.ty {
            ComponentItem::ComponentInstance(_) => format!("instance {n}"),
            ComponentItem::ComponentFunc(_) => format!("func {n}"),
            _ => format!("item {n}"),
        };
        Ok((ty.imports(engine).map(name).collect(), ty.exports(engine).map(name).collect()))
    }

    fn store(&self, compiled: &Compiled) -> Store<CallState> {
        let state = CallState {
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .trap_on_grow_failure(true)
                .instances(16)
                .memories(4)
                .tables(16)
                .build(),
            extras: Arc::default(),
            voices_off: Arc::default(),
            config: self.config.clone(),
            sha256: compiled.sha256.as_str().into(),
            logs_left: LOGS_PER_CALL,
            peak_memory: 0,
        };
        let mut store = Store::new(&runtime().engine, state);
        store.limiter(|s| s);
        store.epoch_deadline_trap();
        store
    }

    /// Runs `call` on this thread's warm instance of `compiled` (instantiating one when there is
    /// none) under the call deadline; drops the instance when the call trapped or overran.
    /// Returns the call's result and the instance's linear memory size in bytes.
    fn with_instance<T>(
        &self,
        compiled: &Compiled,
        call: impl FnOnce(&mut Store<CallState>, &Bindings) -> Result<T, CallError>,
    ) -> (Result<T, CallError>, usize) {
        let key = (self.id, compiled.id);
        let warm = WARM.with_borrow_mut(|m| m.remove(&key));
        let mut warm = match warm {
            Some(warm) => warm,
            None => {
                let mut store = self.store(compiled);
                // Instantiating (once per version per thread) is not the call: it gets ten times
                // the call's deadline, at least 50 ms, so a cold instance on a busy machine does
                // not fail a sound version's call; a start function that never returns still fails.
                let instantiate = (self.ticks() * 10)
                    .max(INSTANTIATE_MIN.as_millis() as u64 / EPOCH_TICK.as_millis() as u64);
                store.set_epoch_deadline(instantiate);
                let bindings = match &compiled.pre {
                    Pre::NodeSelection(pre) => pre.instantiate(&mut store).map(Bindings::NodeSelection),
                    Pre::RoomRouting(pre) => pre.instantiate(&mut store).map(Bindings::RoomRouting),
                    Pre::Admission(pre) => pre.instantiate(&mut store).map(Bindings::Admission),
                };
                match bindings {
                    Ok(bindings) => Warm { store, bindings },
                    Err(e) => return (Err(self.trap(e)), store.data().peak_memory),
                }
            }
        };
        warm.store.set_epoch_deadline(self.ticks());
        warm.store.data_mut().logs_left = LOGS_PER_CALL;
        let result = call(&mut warm.store, &warm.bindings);
        let memory = warm.store.data().peak_memory;
        if !matches!(result, Err(CallError::Trap(_) | CallError::Deadline(_))) {
            WARM.with_borrow_mut(|m| {
                if m.len() >= WARM_PER_THREAD {
                    m.clear();
                }
                m.insert(key, warm);
            });
        }
        (result, memory)
    }

    fn ticks(&self) -> u64 {
        self.limits.deadline.as_micros().div_ceil(EPOCH_TICK.as_micros()).max(1) as u64
    }

    fn trap(&self, err: wasmtime::Error) -> CallError {
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Deadline(self.limits.deadline),
            _ => CallError::Trap(clip(&format!("{err:#}"), LOG_LINE_CHARS)),
        }
    }

    /// Ranks `candidates` for `task`. The ids are validated: each is a candidate, at most once.
    pub fn select(
        &self,
        compiled: &Compiled,
        task: &Task,
        candidates: &Candidates,
    ) -> Result<Vec<String>, CallError> {
        self.select_measured(compiled, task, candidates).0
    }

    /// `select`, and the peak linear memory of the call in bytes.
    pub fn select_measured(
        &self,
        compiled: &Compiled,
        task: &Task,
        candidates: &Candidates,
    ) -> (Result<Vec<String>, CallError>, usize) {
        assert_eq!(compiled.role, Role::NodeSelection, "not a node-selection policy");
        self.with_instance(compiled, |store, bindings| {
            let Bindings::NodeSelection(instance) = bindings else { unreachable!("role checked") };
            store.data_mut().extras = candidates.extras.clone();
            let ranked = instance
                .call_select(&mut *store, task, &candidates.nodes)
                .map_err(|e| self.trap(e))?
                .map_err(|e| CallError::Returned(clip(&e, LOG_LINE_CHARS)))?;
            validate_ranking(&ranked, &candidates.nodes)?;
            Ok(ranked)
        })
    }

    /// Routes one room utterance. Recipients must be members; target languages distinct.
    pub fn route(
        &self,
        compiled: &Compiled,
        utterance: &Utterance,
        room: &RoomView,
        availability: &[Availability],
    ) -> Result<Vec<Route>, CallError> {
        assert_eq!(compiled.role, Role::RoomRouting, "not a room-routing policy");
        let members = &room.members;
        self.with_instance(compiled, |store, bindings| {
            let Bindings::RoomRouting(instance) = bindings else { unreachable!("role checked") };
            store.data_mut().voices_off = room.voices_off.clone();
            let routes = instance
                .call_route(&mut *store, utterance, members, availability)
                .map_err(|e| self.trap(e))?
                .map_err(|e| CallError::Returned(clip(&e, LOG_LINE_CHARS)))?;
            validate_routes(&routes, members)?;
            Ok(routes)
        })
        .0
    }
}

impl PolicyHost {
    /// Decides how a new task is admitted. The answer is validated: band 0 to 9, weight in
    /// (0, 1000], a cap of at least 1, a rejection with a reason.
    pub fn admit(
        &self,
        compiled: &Compiled,
        request: &AdmissionRequest,
    ) -> Result<AdmissionDecision, CallError> {
        assert_eq!(compiled.role, Role::Admission, "not an admission policy");
        self.with_instance(compiled, |store, bindings| {
            let Bindings::Admission(instance) = bindings else { unreachable!("role checked") };
            let decision = instance
                .call_admit(&mut *store, request)
                .map_err(|e| self.trap(e))?
                .map_err(|e| CallError::Returned(clip(&e, LOG_LINE_CHARS)))?;
            validate_admission(&decision)?;
            Ok(decision)
        })
        .0
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Times a closure, in microseconds.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_micros() as u64)
}
