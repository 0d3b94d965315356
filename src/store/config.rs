//! The scheduler's settings (`[scheduler]` in the gateway config): what the scripts take as
//! arguments — key prefix, cells, timeouts, bounds — and the fair queue's tables (docs/overload.md).

use serde::{Deserialize, Serialize};

use super::Admission;

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
    /// The fair queue of waiting tasks (docs/overload.md): a free slot goes to the waiting task
    /// of its pool with the lowest band, then the earliest virtual finish time — a new task does
    /// not pass the waiting ones; tenants share slots in proportion to their weight (default 1).
    /// Off: one queue in arrival order for every tenant, and a free slot goes to whichever task
    /// asks first.
    pub fair_queue: bool,
    pub tenant_weights: std::collections::BTreeMap<String, f64>,
    /// Band per tenant, 0 to 9, lower first (default 1).
    pub tenant_bands: std::collections::BTreeMap<String, u32>,
    /// Most tasks of a tenant running at once in a cell (none: no cap); more wait, held, without
    /// blocking other tenants.
    pub tenant_max_running: std::collections::BTreeMap<String, u32>,
    /// Tasks of one tenant that may wait in a cell; past it a new task fails with NODE_OVERLOADED.
    pub max_waiting_per_tenant: u32,
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
            fair_queue: true,
            tenant_weights: Default::default(),
            tenant_bands: Default::default(),
            tenant_max_running: Default::default(),
            max_waiting_per_tenant: 10_000,
        }
    }
}

impl SchedulerConfig {
    pub fn liveness_ms(&self) -> u64 {
        3 * self.heartbeat_interval_ms
    }

    /// How the configuration admits a task of `tenant` (`None`: tasks without a tenant, the
    /// defaults); an admission policy may decide instead (`policy::Policies::admit`).
    pub fn admission(&self, tenant: Option<&str>) -> Admission {
        let tenant = tenant.unwrap_or("");
        Admission {
            weight: self.tenant_weights.get(tenant).copied().filter(|w| *w > 0.0).unwrap_or(1.0),
            band: self.tenant_bands.get(tenant).copied().unwrap_or(1).min(9),
            max_running: self.tenant_max_running.get(tenant).copied(),
        }
    }
}
