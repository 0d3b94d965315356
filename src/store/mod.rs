//! `Store`: the typed Rust face of the scheduling scripts in `lua/`.
//!
//! Every method is one EVALSHA of one script; all scheduling state lives in Redis. The service is a
//! `Clone` handle (multiplexed connections and the compiled scripts). Its one cache holds the pairs
//! of each capability class it has seen, which cannot go stale: a class id is a hash of its pairs.
//! Node, task and job state is split into cells (DESIGN.md §4, docs/scaling.md); the methods on it
//! take the cell they act in.

mod config;
mod connection;
mod inbox;
mod inspect;
mod keys;
mod nodes;
mod policy_store;
mod rooms;
mod scripts;
mod sessions;
mod tasks;
mod types;

pub use config::SchedulerConfig;
pub use connection::{Batch, RedisConn, Target};
pub use inbox::{Inbox, InboxEntry};
pub use inspect::{CellQueues, Record};
pub use keys::{
    CellKeys, GatewayKeys, PolicyKeys, RegistryKeys, RoomKeys, SessionKeys, cell_tag, is_cell_tag, key_slot,
    slot,
};
pub use policy_store::{CanaryEnd, PolicyEvent, PolicySlot, PolicyState, RollbackReply, SetPolicyReply};
pub use rooms::{RoomReply, SignalReply};
pub use scripts::Scripts;
pub use sessions::{AttachReply, Fence, NodeRoute, ReapReply, SessionEnd, SessionRoute};
pub use tasks::{DispatchRequest, Outcome};
pub use types::*;

use std::sync::Arc;
use std::time::Duration;

use redis::ScriptInvocation;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from {script}: {source}")]
    Reply { script: &'static str, source: serde_json::Error },
    /// A script failed in Redis (a bug, or data it did not expect): the message names the file
    /// and line (`scripts::readable_error`).
    #[error("script {script} failed: {message}")]
    Script { script: &'static str, message: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// A later try may succeed: a timeout, a dropped or refused connection, a cluster moving
    /// slots — not a script's own error nor a reply it could not parse.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Redis(e) if transient(e))
    }
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
pub struct Store {
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

impl Store {
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
                StoreError::Script { script: name, message: scripts::readable_error(name, &message) }
            } else {
                StoreError::Redis(e)
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
    serde_json::from_str(raw).map_err(|source| StoreError::Reply { script, source })
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
