//! Tasks and jobs in the store, in the order of a task's life: candidates for a dispatch, the
//! dispatch itself, a node's acknowledgement and partial results, its result, the sweep of what
//! overran, and a task's move to another cell. Each is one script of `lua/`.

use std::time::Duration;

use serde::Deserialize;

use super::{
    Admission, Candidate, CandidatesReply, CellKeys, CompleteReply, DispatchReply, JobReply, LoadTaskReply,
    MoveReply, Payload, Result, Store, StoreError, SweepReply, TaskSpec, TenantLoad, new_id, parse,
    transient, types,
};

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
    /// How the task is admitted (first call only); `None`: as the configuration says for its
    /// tenant.
    pub admission: Option<Admission>,
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

impl Store {
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
        // The task's place in the fair queue and its cap (read on its first call only: the task
        // keeps them). Without the fair queue every task is one flow in arrival order.
        let tenant = req.create.and_then(|(spec, _)| spec.tenant_id.as_deref());
        let admission = req.admission.clone().unwrap_or_else(|| c.admission(tenant));
        let (weight, band) = if c.fair_queue { (admission.weight, admission.band) } else { (1.0, 1) };
        inv.arg(tenant.unwrap_or("")).arg(weight).arg(band).arg(c.max_waiting_per_tenant);
        inv.arg(if c.fair_queue { "1" } else { "0" });
        inv.arg(admission.max_running.map(|n| n.to_string()).unwrap_or_default());
        self.call("dispatch_task", &inv).await
    }

    /// The tenant's and the pool's counts in cell `k`, for the admission policy.
    pub async fn tenant_load(&self, k: &CellKeys, tenant: Option<&str>, pool: &str) -> Result<TenantLoad> {
        let mut inv = self.scripts.admission_state.prepare_invoke();
        inv.key(k.fair()).arg(tenant.unwrap_or("")).arg(pool);
        self.call("admission_state", &inv).await
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
            .arg(new_id("", 16))
            .arg(if self.config.fair_queue { "1" } else { "0" })
            .arg(new_id(&format!("job-{}-", k.tag()), 16))
            .arg(self.config.job_timeout_ms);
        // A node's result is not dropped because Redis was away for a moment (frozen, restarting,
        // failing over): the call is sent again — with the same call id, so one that did run is
        // answered again, not run twice — until Redis answers, or until the job's own timeout
        // would have dispatched it again anyway.
        let give_up = std::time::Instant::now() + Duration::from_millis(self.config.job_timeout_ms);
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.call_on(&self.completions, "complete_task", &inv).await {
                Err(StoreError::Redis(e))
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

    /// How many waiting tasks of `pool` in `cell` go before `task_id` in its fair queue (`None`:
    /// it is not queued, e.g. dispatched meanwhile).
    pub async fn queue_position(&self, k: &CellKeys, pool: &str, task_id: &str) -> Result<Option<u64>> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("ZRANK").arg(k.queue(pool)).arg(task_id).query_async(&mut conn).await?)
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
}
