//! `MinimalSchedulerService`: the typed Rust face of the scheduling scripts in `lua/`.
//!
//! Every method is one EVALSHA of one script; all scheduling state lives in Redis. The service is a
//! `Clone` handle (multiplexed connections and the compiled scripts). Its one cache holds the pairs
//! of each capability class it has seen, which cannot go stale: a class id is a hash of its pairs.
//! Node, task and job state is split into cells (DESIGN.md §4, docs/scaling.md); the methods on it
//! take the cell they act in.

mod connection;
mod inbox;
mod inspect;
mod keys;
mod policy_store;
mod rooms;
mod scripts;
mod sessions;
mod types;

pub use connection::{Batch, RedisConn, Target};
pub use inbox::{Inbox, InboxEntry};
pub use inspect::Record;
pub use keys::{
    CellKeys, GatewayKeys, PolicyKeys, RegistryKeys, RoomKeys, SessionKeys, cell_tag, is_cell_tag, key_slot,
    slot,
};
pub use policy_store::{CanaryEnd, PolicyEvent, PolicySlot, PolicyState, RollbackReply, SetPolicyReply};
pub use rooms::{RoomReply, SignalReply};
pub use scripts::Scripts;
pub use sessions::{AttachReply, Fence, NodeRoute, ReapReply, SessionEnd, SessionRoute};
pub use types::*;

use std::sync::Arc;
use std::time::Duration;

use redis::ScriptInvocation;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Timeouts and bounds of the task lifecycle (DESIGN.md §5). Part of the gateway config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Key prefix of every Redis key.
    pub prefix: String,
    /// Number of cells (docs/scaling.md): one per Redis by default; on a Redis Cluster, one or more
    /// per primary. Adding cells renames none of the existing ones.
    pub cells: u32,
    /// The node label that picks a node's cell (e.g. `region`: nodes with the same value share a
    /// cell); empty, or a node without the label: by a hash of the node id.
    pub cell_label: String,
    /// Expected node heartbeat interval; a node is offline after 3 missed heartbeats.
    pub heartbeat_interval_ms: u64,
    /// A job not completed within this time is re-dispatched as a new attempt.
    pub job_timeout_ms: u64,
    /// Attempts per task before it fails.
    pub max_attempts: u32,
    /// How long a task waits for a free slot before it fails with NO_AVAILABLE_NODE.
    pub dispatch_wait_ms: u64,
    /// How often a waiting task is tried again by the sweep (a freed slot also wakes it at once).
    pub retry_ms: u64,
    /// Lifetime of task, job and payload keys.
    pub task_ttl_ms: u64,
    /// How long an offline node's record (id and secret) is kept.
    pub node_retention_ms: u64,
    /// Sweep interval (expired nodes, job deadlines, waiting tasks).
    pub sweep_interval_ms: u64,
    /// Upper bound of items of each kind one sweep call handles.
    pub sweep_limit: u32,
    /// Candidates read per dispatch (the K of top-K).
    pub candidates: u32,
    /// Capability classes read per dispatch: a pool served by more node shapes than this is read
    /// from a random sample of them (docs/redis.md, "Load index").
    pub candidate_classes: u32,
    /// Timeout of one Redis command.
    pub redis_timeout_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            prefix: "sb".into(),
            cells: 1,
            cell_label: String::new(),
            heartbeat_interval_ms: 5_000,
            job_timeout_ms: 30_000,
            max_attempts: 3,
            dispatch_wait_ms: 10_000,
            retry_ms: 500,
            task_ttl_ms: 600_000,
            node_retention_ms: 86_400_000,
            sweep_interval_ms: 200,
            sweep_limit: 100,
            candidates: 8,
            candidate_classes: 32,
            redis_timeout_ms: 3_000,
        }
    }
}

impl SchedulerConfig {
    pub fn liveness_ms(&self) -> u64 {
        3 * self.heartbeat_interval_ms
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from {script}: {source}")]
    Reply { script: &'static str, source: serde_json::Error },
    /// A script failed in Redis (a bug, or data it did not expect): the message names the file
    /// and line (`scripts::readable_error`).
    #[error("script {script} failed: {message}")]
    Script { script: &'static str, message: String },
}

pub type Result<T> = std::result::Result<T, SchedulerError>;

impl SchedulerError {
    /// A later try may succeed: a timeout, a dropped or refused connection, a cluster moving
    /// slots — not a script's own error nor a reply it could not parse.
    pub fn is_transient(&self) -> bool {
        matches!(self, SchedulerError::Redis(e) if transient(e))
    }
}

/// A new job attempt for a task; see `dispatch_task.lua`.
#[derive(Debug)]
pub struct DispatchRequest<'a> {
    pub cell: &'a CellKeys,
    pub task_id: &'a str,
    pub pool: &'a str,
    /// Attempts made so far (0 for a new task).
    pub attempt: u32,
    /// The node to try, or `None` when no candidate was found.
    pub node_id: Option<&'a str>,
    /// The capability class the node was a candidate in (`Candidate::class`); `None` makes the
    /// script check the node's class against the pool itself.
    pub class: Option<&'a str>,
    /// Spec and payload on the first call only: they create the task.
    pub create: Option<(&'a TaskSpec, &'a Payload)>,
    /// For a task moving in from another cell: when its dispatch wait ends (ms since the epoch).
    pub moved_in: Option<u64>,
}

/// `availability.lua`: per pool, live nodes with a free slot.
#[derive(Deserialize)]
struct AvailabilityReply {
    #[serde(deserialize_with = "types::lua_list")]
    free: Vec<u32>,
}

/// Which way a job ended on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
}

/// Round-trip latency per script name.
#[derive(Debug, Default)]
pub struct ScriptLatency {
    by_script: std::collections::BTreeMap<&'static str, crate::histogram::Histogram>,
}

impl ScriptLatency {
    fn new(scripts: &Scripts) -> Self {
        Self { by_script: scripts.all().into_iter().map(|(name, _)| (name, Default::default())).collect() }
    }

    fn record(&self, name: &'static str, elapsed: Duration) {
        if let Some(h) = self.by_script.get(name) {
            h.record(elapsed.as_micros() as u64);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &crate::histogram::Histogram)> {
        self.by_script.iter().map(|(name, h)| (*name, h))
    }
}

#[derive(Clone)]
pub struct MinimalSchedulerService {
    target: Target,
    script_latency: Arc<ScriptLatency>,
    conn: RedisConn,
    /// For `complete_task` only: a reply may take up to a job timeout, so a call sent while Redis
    /// is frozen gets its own reply when Redis is back instead of timing out and being sent again
    /// (a replay is answered without the task's spec, which an ended task no longer keeps).
    completions: RedisConn,
    /// The pairs of the capability classes `candidates` has named (content-addressed, never stale).
    class_pairs: Arc<ClassPairs>,
    scripts: Arc<Scripts>,
    cells: Arc<Vec<CellKeys>>,
    policy_keys: PolicyKeys,
    config: Arc<SchedulerConfig>,
}

impl MinimalSchedulerService {
    pub async fn connect(redis_url: &str, config: SchedulerConfig) -> Result<Self> {
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let target = Target::discover(redis_url, timeout).await?;
        let conn = target.connect(timeout).await?;
        let completions =
            target.connect_blocking(timeout, Duration::from_millis(config.job_timeout_ms)).await?;
        let scripts = Scripts::new();
        let service = Self {
            target,
            script_latency: Arc::new(ScriptLatency::new(&scripts)),
            conn,
            completions,
            class_pairs: Arc::default(),
            scripts: Arc::new(scripts),
            cells: Arc::new((0..config.cells.max(1)).map(|c| CellKeys::new(&config.prefix, c)).collect()),
            policy_keys: PolicyKeys::new(&config.prefix),
            config: Arc::new(config),
        };
        service.load_scripts().await?;
        Ok(service)
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Whether Redis is a cluster.
    pub fn is_cluster(&self) -> bool {
        self.target.is_cluster()
    }

    /// The configured cells, by number.
    pub fn cells(&self) -> &[CellKeys] {
        &self.cells
    }

    pub fn cell(&self, cell: usize) -> &CellKeys {
        &self.cells[cell]
    }

    /// The cell a node belongs to: by its `cell_label` value when it has one, else by its id.
    /// Stable: the same node lands in the same cell on every gateway and every reconnect.
    pub fn node_cell(&self, node_id: &str, labels: &std::collections::BTreeMap<String, String>) -> &CellKeys {
        self.home_cell(labels.get(&self.config.cell_label).map_or(node_id, String::as_str))
    }

    /// The cell `key` (a room code, session id, label value or node id) hashes to: where a room's
    /// or session's tasks are created (docs/scaling.md), and where a node lives.
    pub fn home_cell(&self, key: &str) -> &CellKeys {
        &self.cells[stable_hash(key) as usize % self.cells.len()]
    }

    /// The cell and the task a job id names (`job-<tag>-<hex>:<task id>`), if it names them.
    pub fn job_task(&self, job_id: &str) -> Option<(CellKeys, String)> {
        let (job, task_id) = job_id.split_once(':')?;
        let (tag, _) = job.strip_prefix("job-")?.rsplit_once('-')?;
        (is_cell_tag(tag) && !task_id.is_empty())
            .then(|| (CellKeys::from_tag(&self.config.prefix, tag), task_id.to_owned()))
    }

    /// Loads every script (SCRIPT LOAD; on a cluster, on every primary), so the first EVALSHA of
    /// each finds it.
    pub async fn load_scripts(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        for (_, script) in self.scripts.all() {
            script.prepare_invoke().load_async(&mut conn).await?;
        }
        Ok(())
    }

    /// Redis answers and holds every script (on a cluster: every primary that owns slots does —
    /// asked one by one, so a primary that is down makes the gateway not ready).
    pub async fn ready(&self) -> Result<bool> {
        let hashes: Vec<&str> = self.scripts.all().iter().map(|(_, s)| s.get_hash()).collect();
        for server in self.conn.slot_owners(true).await? {
            let mut exists = redis::cmd("SCRIPT");
            exists.arg("EXISTS").arg(&hashes);
            let loaded: Vec<bool> = self.conn.query_on(server.as_ref(), exists).await?;
            if !loaded.iter().all(|l| *l) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether every cell still holds `gateway`'s mark since the last call, i.e. Redis kept its
    /// data; a missing mark (Redis restarted empty, a primary lost its data) is set again. The
    /// first call after a gateway starts answers false.
    pub async fn data_intact(&self, gateway: &str) -> Result<bool> {
        const MARK_TTL_MS: u64 = 24 * 3_600_000;
        let mut conn = self.conn.clone();
        let mut intact = true;
        for cell in self.cells.iter() {
            let key = cell.intact_mark(gateway);
            let kept: i64 = redis::cmd("PEXPIRE").arg(&key).arg(MARK_TTL_MS).query_async(&mut conn).await?;
            if kept == 0 {
                intact = false;
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("PX")
                    .arg(MARK_TTL_MS)
                    .query_async(&mut conn)
                    .await?;
            }
        }
        Ok(intact)
    }

    /// Like [`ready`](Self::ready), but loads the scripts again first when Redis lost any (a
    /// restart, a failover, `SCRIPT FLUSH`).
    pub async fn ensure_scripts(&self) -> Result<bool> {
        if self.ready().await? {
            return Ok(true);
        }
        self.load_scripts().await?;
        self.ready().await
    }

    pub async fn register_node(&self, k: &CellKeys, node: &NodeRegistration) -> Result<RegisterReply> {
        let mut inv = self.scripts.register_node.prepare_invoke();
        inv.key(k.node(&node.id)).key(k.alive()).key(k.nodes());
        inv.arg(&node.id)
            .arg(node.presented_secret.as_deref().unwrap_or(""))
            .arg(&node.secret)
            .arg(&node.conn)
            .arg(&node.gateway)
            .arg(node.capacity)
            .arg(node.pairs.join(","))
            .arg(self.config.liveness_ms())
            .arg(node.ready.join(","))
            .arg(serde_json::to_string(&node.labels).expect("labels serialize"))
            .arg(node.info.to_string());
        self.call("register_node", &inv).await
    }

    pub async fn heartbeat(
        &self,
        k: &CellKeys,
        node_id: &str,
        conn_id: &str,
        usage: &Usage,
        update: &CapabilityUpdate,
    ) -> Result<NodeReply> {
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.key(k.node(node_id)).key(k.alive());
        inv.arg(node_id)
            .arg(conn_id)
            .arg(self.config.liveness_ms())
            .arg(usage.cpu)
            .arg(usage.gpu)
            .arg(usage.gpu_mem)
            .arg(usage.mem)
            .arg(usage.gpu_queue)
            .arg(update.pairs.as_ref().map_or("-".into(), |p| p.join(",")))
            .arg(update.ready.as_ref().map_or("-".into(), |r| r.join(",")));
        self.call("heartbeat", &inv).await
    }

    pub async fn drain_node(&self, k: &CellKeys, node_id: &str, conn_id: &str) -> Result<NodeReply> {
        let mut inv = self.scripts.drain_node.prepare_invoke();
        inv.key(k.node(node_id)).arg(node_id).arg(conn_id);
        self.call("drain_node", &inv).await
    }

    /// The least-loaded live nodes of `pool` with a free slot, without `excluded`, plus `affinity`.
    pub async fn candidates(
        &self,
        k: &CellKeys,
        pool: &str,
        excluded: &[String],
        affinity: Option<&str>,
    ) -> Result<Vec<Candidate>> {
        let mut inv = self.scripts.candidates.prepare_invoke();
        inv.key(k.pool(pool));
        inv.arg(self.config.candidates)
            .arg(excluded.join(","))
            .arg(affinity.unwrap_or(""))
            .arg(self.config.liveness_ms())
            .arg(self.config.candidate_classes)
            .arg(crate::protocol::now_ms())
            .arg(self.known_classes());
        let raw: String = self.invoke("candidates", &inv).await?;
        let reply: CandidatesReply = parse("candidates", &raw)?;
        Ok(reply.into_candidates(&self.class_pairs))
    }

    /// `cid1,cid2,…`: the classes whose pairs this gateway has.
    fn known_classes(&self) -> String {
        let known = self.class_pairs.lock();
        known.keys().map(String::as_str).collect::<Vec<_>>().join(",")
    }

    /// Per pool (`src>tgt`), the live nodes of cell `k` with a free slot (at most 64 counted per
    /// pool).
    pub async fn availability(&self, k: &CellKeys, pools: &[String]) -> Result<Vec<u32>> {
        if pools.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.availability.prepare_invoke();
        for pool in pools {
            inv.key(k.pool(pool));
        }
        inv.arg(self.config.liveness_ms());
        let reply: AvailabilityReply = self.call("availability", &inv).await?;
        Ok(reply.free)
    }

    /// Per pool, the live nodes with a free slot summed over every cell.
    pub async fn availability_everywhere(&self, pools: &[String]) -> Result<Vec<u32>> {
        let per_cell = futures_util::future::try_join_all(
            self.cells().iter().map(|cell| self.availability(cell, pools)),
        )
        .await?;
        Ok((0..pools.len()).map(|i| per_cell.iter().filter_map(|counts| counts.get(i)).sum()).collect())
    }

    pub async fn dispatch_task(&self, req: &DispatchRequest<'_>) -> Result<DispatchReply> {
        let k = req.cell;
        let c = &self.config;
        let node_key = req.node_id.map_or_else(|| k.no_node(), |id| k.node(id));
        let (spec, payload) = match req.create {
            Some((spec, payload)) => (
                serde_json::to_string(spec).expect("spec serializes"),
                serde_json::to_string(payload).expect("payload serializes"),
            ),
            None => (String::new(), String::new()),
        };
        let mut inv = self.scripts.dispatch_task.prepare_invoke();
        inv.key(k.task(req.task_id)).key(k.waiting()).key(k.deadlines()).key(node_key);
        inv.arg(req.task_id)
            .arg(req.attempt)
            .arg(req.node_id.unwrap_or(""))
            .arg(format!("{}:{}", new_id(&format!("job-{}-", k.tag()), 16), req.task_id))
            .arg(c.job_timeout_ms)
            .arg(spec)
            .arg(payload)
            .arg(c.task_ttl_ms)
            .arg(c.max_attempts)
            .arg(c.dispatch_wait_ms)
            .arg(c.retry_ms)
            .arg(req.moved_in.map(|at| at.to_string()).unwrap_or_default())
            .arg(req.class.unwrap_or(""))
            .arg(c.liveness_ms())
            .arg(req.pool);
        self.call("dispatch_task", &inv).await
    }

    /// Stamps `job_ack` (or `job_started` when `started`) on a job the node holds.
    pub async fn ack_job(
        &self,
        job_id: &str,
        node_id: &str,
        attempt: Option<u32>,
        started: bool,
    ) -> Result<JobReply> {
        let Some((k, task_id)) = self.job_task(job_id) else { return Ok(JobReply::Stale) };
        let mut inv = self.scripts.ack_job.prepare_invoke();
        inv.key(k.task(&task_id));
        inv.arg(node_id)
            .arg(attempt.map(|a| a.to_string()).unwrap_or_default())
            .arg(if started { "started_ms" } else { "acked_ms" })
            .arg(job_id);
        self.call("ack_job", &inv).await
    }

    pub async fn job_route(&self, job_id: &str, node_id: &str) -> Result<JobReply> {
        let Some((k, task_id)) = self.job_task(job_id) else { return Ok(JobReply::Stale) };
        let mut inv = self.scripts.job_route.prepare_invoke();
        inv.key(k.task(&task_id)).arg(node_id).arg(job_id);
        self.call("job_route", &inv).await
    }

    pub async fn complete_task(
        &self,
        job_id: &str,
        node_id: &str,
        attempt: Option<u32>,
        outcome: Outcome,
    ) -> Result<CompleteReply> {
        let Some((k, _)) = self.job_task(job_id) else { return Ok(CompleteReply::Unknown) };
        let mut inv = self.scripts.complete_task.prepare_invoke();
        inv.key(k.node(node_id)).key(k.waiting()).key(k.deadlines());
        inv.arg(job_id)
            .arg(node_id)
            .arg(attempt.map(|a| a.to_string()).unwrap_or_default())
            .arg(match outcome {
                Outcome::Completed => "completed",
                Outcome::Failed => "failed",
            })
            .arg(new_id("", 16));
        // A node's result is not dropped because Redis was away for a moment (frozen, restarting,
        // failing over): the call is sent again — with the same call id, so one that did run is
        // answered again, not run twice — until Redis answers, or until the job's own timeout
        // would have dispatched it again anyway.
        let give_up = std::time::Instant::now() + Duration::from_millis(self.config.job_timeout_ms);
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.call_on(&self.completions, "complete_task", &inv).await {
                Err(SchedulerError::Redis(e))
                    if transient(&e) && std::time::Instant::now() + backoff < give_up =>
                {
                    tracing::debug!(%e, job.id = job_id, "complete_task again after a Redis error.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                reply => return reply,
            }
        }
    }

    pub async fn node_offline(&self, k: &CellKeys, node_id: &str, conn_id: &str) -> Result<OfflineReply> {
        let mut inv = self.scripts.node_offline.prepare_invoke();
        inv.key(k.node(node_id));
        inv.arg(node_id).arg(conn_id).arg(self.config.node_retention_ms);
        self.call("node_offline", &inv).await
    }

    pub async fn sweep(&self, k: &CellKeys, gateway_id: &str) -> Result<SweepReply> {
        let c = &self.config;
        let mut inv = self.scripts.sweep.prepare_invoke();
        inv.key(k.sweep_lock()).key(k.alive()).key(k.deadlines()).key(k.waiting());
        inv.arg(gateway_id)
            .arg(c.sweep_interval_ms.max(1))
            .arg(c.sweep_limit)
            .arg(c.node_retention_ms)
            .arg(c.retry_ms);
        self.call("sweep", &inv).await
    }

    pub async fn load_task(&self, k: &CellKeys, task_id: &str) -> Result<LoadTaskReply> {
        let mut inv = self.scripts.load_task.prepare_invoke();
        inv.key(k.task(task_id));
        self.call("load_task", &inv).await
    }

    /// Moves a waiting task out of cell `from` to the cell tagged `to`: marks it `moved` there
    /// first, so no gateway dispatches it in `from` again and no late result of an attempt made
    /// there can be delivered; the caller then creates it in `to` (`DispatchRequest::moved_in`).
    pub async fn task_move(
        &self,
        from: &CellKeys,
        task_id: &str,
        attempt: u32,
        to: &CellKeys,
    ) -> Result<MoveReply> {
        let mut inv = self.scripts.task_move.prepare_invoke();
        inv.key(from.task(task_id)).key(from.waiting());
        inv.arg(task_id).arg(attempt).arg(to.tag());
        self.call("task_move", &inv).await
    }

    pub(crate) async fn invoke(&self, name: &'static str, inv: &ScriptInvocation<'_>) -> Result<String> {
        self.invoke_value(name, inv).await
    }

    /// One EVALSHA, timed per script (`switchboard_script_seconds`).
    pub(crate) async fn invoke_value<T: redis::FromRedisValue>(
        &self,
        name: &'static str,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T> {
        self.invoke_on(&self.conn, name, inv).await
    }

    async fn invoke_on<T: redis::FromRedisValue>(
        &self,
        conn: &RedisConn,
        name: &'static str,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = conn.clone();
        let start = std::time::Instant::now();
        let reply = inv.invoke_async(&mut conn).await;
        self.script_latency.record(name, start.elapsed());
        reply.map_err(|e| {
            let message = e.to_string();
            if message.contains("user_script:") {
                SchedulerError::Script { script: name, message: scripts::readable_error(name, &message) }
            } else {
                SchedulerError::Redis(e)
            }
        })
    }

    /// Round-trip latency of each script, as this gateway saw it.
    pub fn script_latency(&self) -> &ScriptLatency {
        &self.script_latency
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        name: &'static str,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T> {
        self.call_on(&self.conn, name, inv).await
    }

    async fn call_on<T: DeserializeOwned>(
        &self,
        conn: &RedisConn,
        name: &'static str,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T> {
        let raw: String = self.invoke_on(conn, name, inv).await?;
        parse(name, &raw)
    }

    /// The scripts, for tests and the benchmark that call them directly.
    pub fn scripts(&self) -> &Scripts {
        &self.scripts
    }

    /// A connection handle, for tests and tools that inspect keys.
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }
}

/// An error a later try may not get: a timeout, a dropped or refused connection, a cluster
/// moving slots — not a script's own error.
fn transient(e: &redis::RedisError) -> bool {
    !matches!(e.retry_method(), redis::RetryMethod::NoRetry)
}

/// FNV-1a: a hash that is the same in every process (std's is seeded per process).
pub fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn parse<T: DeserializeOwned>(script: &'static str, raw: &str) -> Result<T> {
    serde_json::from_str(raw).map_err(|source| SchedulerError::Reply { script, source })
}

/// `<prefix><n upper-case hex digits>`, e.g. `node-3F9A1C2B`.
pub fn new_id(prefix: &str, hex_digits: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let digits: String = (0..hex_digits)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap().to_ascii_uppercase())
        .collect();
    format!("{prefix}{digits}")
}
