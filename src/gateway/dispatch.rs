//! The dispatch path of one task: candidates → node selection → `dispatch_task` → `job_assign`.
//! What happens to its outcome is `outcomes.rs`.
//!
//! A task is dispatched within one cell (docs/scaling.md): it starts in the home cell of its room
//! or session; when that cell has no node for it, it moves to the cell with the most free nodes for
//! its language pair (`task_move` marks it moved in the old cell first).

use tracing::debug;

use super::admission::Admitted;
use super::{AppState, Metrics};
use crate::store::{
    Admission, CellKeys, DispatchReply, DispatchRequest, LoadTaskReply, MoveReply, Payload, Result, TaskRef,
    TaskSpec,
};

/// Nodes tried per candidates read before reading candidates again.
const TRIES_PER_READ: usize = 3;
/// Candidates reads per dispatch before the task waits for a slot.
const READS: usize = 2;

/// How a dispatch call ended for the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Dispatched {
    Assigned {
        node_id: String,
        job_id: String,
    },
    /// No node could take it now; it waits for a free slot (or fails when its wait is over).
    Waiting,
    Failed,
    Duplicate,
    /// Another gateway (or an earlier call) moved the task on.
    Stale,
}

/// Whether a dispatch call creates the task in its cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Creating {
    No,
    New,
    /// Moving in from another cell, with the end of its dispatch wait (ms since the epoch).
    MovedIn(u64),
}

impl Creating {
    fn moved_in(self) -> Option<u64> {
        match self {
            Self::MovedIn(wait_until) => Some(wait_until),
            _ => None,
        }
    }
}

/// A task on its way to a node: what it is, with how many attempts made so far.
#[derive(Clone, Copy)]
struct Offer<'a> {
    spec: &'a TaskSpec,
    payload: &'a Payload,
    attempt: u32,
    /// The node that served the utterance's turn so far (streamed audio).
    affinity: Option<&'a str>,
    /// A new task's terms from the admission policy (`None`: the configuration's).
    admission: Option<&'a Admission>,
}

/// How offering a task to a cell's nodes ended.
enum Tried {
    Done(Dispatched),
    /// No node took it; `exists`: the task is stored in the cell (it was, or a refused offer
    /// created it there, waiting).
    NoNode {
        exists: bool,
    },
}

impl AppState {
    /// A new task: creates it in Redis and assigns it to a node, or leaves it waiting.
    /// `affinity`: the node that served the utterance's turn so far (streamed audio).
    pub async fn submit(
        &self,
        spec: &TaskSpec,
        payload: &Payload,
        affinity: Option<&str>,
    ) -> Result<Dispatched> {
        let home = self.store.home_cell(spec.room_code.as_deref().unwrap_or(&spec.session_id)).clone();
        let admission = match self.admit_task(&home, spec).await? {
            Admitted::On(admission) => admission,
            Admitted::Rejected(reason) => {
                self.expect_outcomes(&home, spec);
                self.reject_task(spec, &reason);
                return Ok(Dispatched::Failed);
            }
        };
        let offer = Offer { spec, payload, attempt: 0, affinity, admission: admission.as_ref() };
        self.assign(&home, offer, Vec::new(), Creating::New).await
    }

    /// Dispatches a waiting task of `cell` again: after its node failed or timed out, when the
    /// sweep finds it due, or when a slot frees. Concurrent calls are safe: `dispatch_task` lets
    /// one win.
    pub async fn redispatch(&self, cell: &CellKeys, task_id: &str) -> Result<Dispatched> {
        match self.store.load_task(cell, task_id).await? {
            LoadTaskReply::Waiting { attempt, tried, spec, payload } => {
                let offer =
                    Offer { spec: &spec, payload: &payload, attempt, affinity: None, admission: None };
                self.assign(cell, offer, tried, Creating::No).await
            }
            _ => Ok(Dispatched::Stale),
        }
    }

    /// Dispatches in `cell`; when no node there can take the task, moves it to the other cell with
    /// the most free nodes for it, before its dispatch wait can end it here; when no cell has one,
    /// it waits in `cell` (whose sweep tries it again).
    async fn assign(
        &self,
        cell: &CellKeys,
        offer: Offer<'_>,
        tried: Vec<String>,
        creating: Creating,
    ) -> Result<Dispatched> {
        let spec = offer.spec;
        let exists = match self.try_nodes(cell, offer, tried, creating).await? {
            Tried::Done(dispatched) => return Ok(dispatched),
            Tried::NoNode { exists } => exists,
        };
        let other = match self.store.cells().len() {
            1 => None,
            _ => self.cell_with_free_node(cell, &spec.pool()).await?,
        };
        let Some(other) = other else {
            return self.wait_for_slot(cell, offer, if exists { Creating::No } else { creating }).await;
        };
        if !exists {
            // A new task is created in its home cell first: a resent utterance finds it there.
            match self.park(cell, offer, creating).await? {
                Dispatched::Waiting => {}
                dispatched => return Ok(dispatched),
            }
        }
        Metrics::inc(&self.metrics.dispatch_script_calls);
        let wait_until = match self.store.task_move(cell, &spec.task_id(), offer.attempt, &other).await? {
            MoveReply::Moved { wait_until } => wait_until,
            MoveReply::Stale => return Ok(Dispatched::Stale),
        };
        debug!(task.id = %spec.task_id(), from = cell.tag(), to = other.tag(), "Task moved to another cell.");
        let moved_in = Creating::MovedIn(wait_until);
        match self.try_nodes(&other, offer, Vec::new(), moved_in).await? {
            Tried::Done(dispatched) => Ok(dispatched),
            Tried::NoNode { exists: true } => Ok(Dispatched::Waiting),
            Tried::NoNode { exists: false } => self.wait_for_slot(&other, offer, moved_in).await,
        }
    }

    /// The cell other than `except` with the most live nodes that have a free slot for `pool`.
    async fn cell_with_free_node(&self, except: &CellKeys, pool: &str) -> Result<Option<CellKeys>> {
        let pools = [pool.to_owned()];
        let others: Vec<&CellKeys> = self.store.cells().iter().filter(|c| c.tag() != except.tag()).collect();
        self.metrics
            .dispatch_script_calls
            .fetch_add(others.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let counts = futures_util::future::try_join_all(
            others.iter().map(|cell| self.store.availability(cell, &pools)),
        )
        .await?;
        let best = others
            .into_iter()
            .zip(counts)
            .map(|(cell, n)| (n.first().copied().unwrap_or(0), cell))
            .max_by_key(|(n, _)| *n);
        Ok(best.filter(|(n, _)| *n > 0).map(|(_, cell)| cell.clone()))
    }

    /// Offers the task to the nodes of `cell` the policy ranks, until one takes it.
    async fn try_nodes(
        &self,
        cell: &CellKeys,
        offer: Offer<'_>,
        tried: Vec<String>,
        creating: Creating,
    ) -> Result<Tried> {
        let Offer { spec, payload, attempt, affinity, admission } = offer;
        let task_id = spec.task_id();
        let pool = spec.pool();
        // Spec and payload go with the first dispatch_task call only: it creates the task.
        let mut create = (creating != Creating::No).then_some((spec, payload));
        let mut excluded = tried;
        // Whether the task went into the fair queue behind its head (and was new then).
        let (mut queued, mut queued_new) = (false, false);
        for _ in 0..READS {
            Metrics::inc(&self.metrics.dispatch_script_calls);
            let candidates = self.store.candidates(cell, &pool, &excluded, affinity).await?;
            let ranked =
                self.policies.select(cell.number(), spec, attempt + 1, &excluded, affinity, &candidates);
            if ranked.is_empty() {
                break;
            }
            for node_id in ranked.into_iter().take(TRIES_PER_READ) {
                let first = create.is_some();
                let class = candidates.iter().find(|c| c.id == node_id).map(|c| c.class.as_str());
                let request = DispatchRequest {
                    cell,
                    task_id: &task_id,
                    pool: &pool,
                    attempt,
                    node_id: Some(&node_id),
                    class,
                    create: create.take(),
                    moved_in: creating.moved_in(),
                    admission: admission.cloned(),
                };
                Metrics::inc(&self.metrics.dispatch_script_calls);
                let reply = self.store.dispatch_task(&request).await?;
                if first && creating == Creating::New {
                    self.announce(cell, spec, &reply);
                }
                match reply {
                    DispatchReply::Assigned { attempt, job_id } => {
                        self.send_job(cell, spec, payload, &node_id, &job_id, attempt);
                        return Ok(Tried::Done(Dispatched::Assigned { node_id, job_id }));
                    }
                    DispatchReply::Refused { reason } => {
                        debug!(node.id = %node_id, %reason, "Node refused the task.");
                        excluded.push(node_id);
                    }
                    DispatchReply::Queued { handoff } => {
                        // Behind the pool's fair queue: the free slot went to the queue's head and
                        // this task waits in the queue. The next node may have a slot for it (or
                        // for the next head): with free slots, arrivals drain the queue.
                        self.send_handoff(cell, handoff);
                        queued_new |= first;
                        queued = true;
                    }
                    DispatchReply::Held { handoff } => {
                        // Its tenant runs as many tasks as its cap: it waits for one of them to
                        // end, and the slot went to the queue's head, if any.
                        if let Some(handoff) = handoff {
                            self.send_handoff(cell, handoff);
                        }
                        if first {
                            self.tell_queued(cell, spec).await;
                        }
                        return Ok(Tried::Done(Dispatched::Waiting));
                    }
                    reply => return Ok(Tried::Done(self.settle(cell, reply))),
                }
            }
            if queued {
                // It waits its turn; its speaker is told when it is new.
                if queued_new {
                    self.tell_queued(cell, spec).await;
                }
                return Ok(Tried::Done(Dispatched::Waiting));
            }
        }
        Ok(Tried::NoNode { exists: create.is_none() })
    }

    /// Leaves the task waiting in `cell` (creating it there unless `Creating::No`), or fails it when
    /// its dispatch wait is over.
    async fn park(&self, cell: &CellKeys, offer: Offer<'_>, creating: Creating) -> Result<Dispatched> {
        let Offer { spec, payload, attempt, admission, .. } = offer;
        let (task_id, pool) = (spec.task_id(), spec.pool());
        let request = DispatchRequest {
            cell,
            task_id: &task_id,
            pool: &pool,
            attempt,
            node_id: None,
            class: None,
            create: (creating != Creating::No).then_some((spec, payload)),
            moved_in: creating.moved_in(),
            admission: admission.cloned(),
        };
        Metrics::inc(&self.metrics.dispatch_script_calls);
        let reply = self.store.dispatch_task(&request).await?;
        if creating == Creating::New {
            self.announce(cell, spec, &reply);
        }
        Ok(self.settle(cell, reply))
    }

    /// `park`, where no cell has a node for the task: a task that starts waiting here is told to
    /// its speaker (`QUEUED`, with its place in the fair queue: one more read, only when it waits).
    async fn wait_for_slot(
        &self,
        cell: &CellKeys,
        offer: Offer<'_>,
        creating: Creating,
    ) -> Result<Dispatched> {
        let dispatched = self.park(cell, offer, creating).await?;
        if dispatched == Dispatched::Waiting && creating != Creating::No {
            self.tell_queued(cell, offer.spec).await;
        }
        Ok(dispatched)
    }

    /// `QUEUED` to the speaker of a task that starts waiting, with its place in the fair queue.
    async fn tell_queued(&self, cell: &CellKeys, spec: &TaskSpec) {
        let position = self.store.queue_position(cell, &spec.pool(), &spec.task_id()).await.unwrap_or(None);
        self.queued(spec, position);
    }

    /// Tells each recipient's gateway that this task's outcome will come, so results of the
    /// speaker's later utterances wait for it (ordering). A duplicate created nothing: see
    /// [`AppState::resent`].
    fn announce(&self, cell: &CellKeys, spec: &TaskSpec, reply: &DispatchReply) {
        if let DispatchReply::Duplicate { state } = reply {
            let task = TaskRef { cell: cell.tag().to_owned(), id: spec.task_id() };
            self.resent(spec, task, state);
            return;
        }
        self.expect_outcomes(cell, spec);
    }

    /// Tells each recipient's gateway that this task's outcome will come (ordering).
    fn expect_outcomes(&self, cell: &CellKeys, spec: &TaskSpec) {
        let task = TaskRef { cell: cell.tag().to_owned(), id: spec.task_id() };
        for recipient in &spec.recipients {
            self.expect_outcome(recipient, &spec.session_id, spec.utterance_index, task.clone());
        }
    }

    /// The replies of `dispatch_task` that end this dispatch call without a node.
    fn settle(&self, cell: &CellKeys, reply: DispatchReply) -> Dispatched {
        match reply {
            DispatchReply::Waiting | DispatchReply::Refused { .. } => Dispatched::Waiting,
            DispatchReply::Queued { .. } | DispatchReply::Held { .. } => {
                unreachable!("queued and held replies are handled by try_nodes")
            }
            DispatchReply::Failed { code, spec, handoff } => {
                if let Some(handoff) = handoff {
                    self.send_handoff(cell, handoff);
                }
                self.fail_task(&spec, code, None, None);
                Dispatched::Failed
            }
            DispatchReply::Duplicate { .. } => {
                Metrics::inc(&self.metrics.tasks_duplicate);
                Dispatched::Duplicate
            }
            DispatchReply::Stale => Dispatched::Stale,
            DispatchReply::Assigned { .. } => unreachable!("assigned replies are handled by assign"),
        }
    }
}
