//! Model-based property test: random register / heartbeat / dispatch / complete / offline / drain /
//! sweep sequences against the real scripts on a real redis-server, checked step by step against a
//! small in-memory model. Invariants: running ≤ capacity and equal to the node's in-flight jobs,
//! the load index mirrors each node, a free slot goes to the head of the fair queue (one tenant:
//! the order tasks started waiting in), and every task ends exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::direct::{self, node as registration};
use proptest::prelude::*;
use switchboard::store::*;

const NODES: u8 = 3;
const TASKS: u8 = 8;
const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Register { node: u8, cap: u32, secret_ok: bool },
    Heartbeat { node: u8 },
    Submit { task: u8, node: Option<u8> },
    Retry { task: u8, node: Option<u8> },
    Complete { task: u8, ok: bool },
    LateResult { task: u8 },
    Offline { node: u8 },
    Drain { node: u8 },
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..NODES;
    let task = 0..TASKS;
    prop_oneof![
        1 => (node.clone(), 1u32..4, prop::bool::weighted(0.8))
            .prop_map(|(node, cap, secret_ok)| Op::Register { node, cap, secret_ok }),
        1 => node.clone().prop_map(|node| Op::Heartbeat { node }),
        3 => (task.clone(), prop::option::weighted(0.8, node.clone()))
            .prop_map(|(task, node)| Op::Submit { task, node }),
        2 => (task.clone(), prop::option::weighted(0.8, node.clone()))
            .prop_map(|(task, node)| Op::Retry { task, node }),
        3 => (task.clone(), prop::bool::weighted(0.8)).prop_map(|(task, ok)| Op::Complete { task, ok }),
        1 => task.prop_map(|task| Op::LateResult { task }),
        1 => node.clone().prop_map(|node| Op::Offline { node }),
        1 => node.prop_map(|node| Op::Drain { node }),
        1 => Just(Op::Sweep),
    ]
}

#[derive(Debug, Default)]
struct NodeModel {
    online: bool,
    draining: bool,
    capacity: u32,
    conn: String,
    secret: String,
    /// In the order they were assigned (a release requeues them in that order).
    jobs: Vec<String>,
}

#[derive(Debug, Clone)]
enum TaskModel {
    Waiting { attempt: u32, tried: Vec<String> },
    Assigned { job: String, node: String, attempt: u32, tried: Vec<String> },
    Ended,
}

#[derive(Default)]
struct Model {
    nodes: BTreeMap<String, NodeModel>,
    tasks: BTreeMap<String, TaskModel>,
    /// Outcomes seen per task (a result, or a failure).
    outcomes: BTreeMap<String, u32>,
    /// Jobs that no longer hold their task.
    old_jobs: Vec<(String, String, u32, String)>,
    conns: u32,
    /// The fair queue: waiting tasks in the order they started waiting (one tenant, one band).
    queue: Vec<String>,
}

fn node_id(n: u8) -> String {
    format!("n{n}")
}

fn spec(task: &str) -> TaskSpec {
    let index = task.strip_prefix("t").unwrap().parse().unwrap();
    direct::spec("s-model", index)
}

impl Model {
    /// What dispatch_task should answer for a waiting task tried on `node`.
    fn expect_dispatch(&self, node: Option<&str>, tried: &[String]) -> Option<&'static str> {
        let node = node?;
        let Some(n) = self.nodes.get(node).filter(|n| n.online) else { return Some("offline") };
        if n.draining {
            return Some("draining");
        }
        if n.jobs.len() as u32 >= n.capacity {
            return Some("full");
        }
        if tried.iter().any(|t| t == node) {
            return Some("already_tried");
        }
        None
    }

    /// Applies a release of all of a node's jobs; returns (requeued, failed) task ids.
    fn release_node(&mut self, node: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let jobs = std::mem::take(&mut self.nodes.get_mut(node).unwrap().jobs);
        let (mut requeued, mut failed) = (BTreeSet::new(), BTreeSet::new());
        for released in jobs {
            let Some((tid, task)) = self
                .tasks
                .iter_mut()
                .find(|(_, t)| matches!(t, TaskModel::Assigned { job, .. } if *job == released))
            else {
                continue;
            };
            let TaskModel::Assigned { job, node: n, attempt, tried } = task.clone() else { unreachable!() };
            self.old_jobs.push((job, n, attempt, tid.clone()));
            if attempt >= MAX_ATTEMPTS {
                *task = TaskModel::Ended;
                *self.outcomes.entry(tid.clone()).or_default() += 1;
                failed.insert(tid.clone());
            } else {
                *task = TaskModel::Waiting { attempt, tried };
                requeued.insert(tid.clone());
                self.queue.push(tid.clone());
            }
        }
        (requeued, failed)
    }

    /// Task `tid` waits: it joins the queue's end, unless it is queued already.
    fn wait(&mut self, tid: &str) {
        if !self.queue.iter().any(|t| t == tid) {
            self.queue.push(tid.to_owned());
        }
    }

    /// Task `tid` takes a slot of `node` as job `job`.
    fn assign(&mut self, tid: &str, node: &str, job: String, attempt: u32) {
        let TaskModel::Waiting { tried, .. } = self.tasks[tid].clone() else { unreachable!() };
        self.queue.retain(|t| t != tid);
        self.nodes.get_mut(node).unwrap().jobs.push(job.clone());
        let mut tried = tried;
        tried.push(node.to_owned());
        self.tasks.insert(tid.into(), TaskModel::Assigned { job, node: node.to_owned(), attempt, tried });
    }
}

async fn apply(s: &Store, m: &mut Model, op: &Op) {
    match op.clone() {
        Op::Register { node, cap, secret_ok } => {
            let id = node_id(node);
            m.conns += 1;
            let mut reg = registration(&id, &["zh>en"], cap);
            reg.conn = format!("c{}", m.conns);
            reg.secret = format!("secret{}", m.conns);
            let current = m.nodes.entry(id.clone()).or_default();
            let live = current.online;
            reg.presented_secret = Some(if secret_ok { current.secret.clone() } else { "wrong".into() });
            let reply = s.register_node(s.cell(0), &reg).await.unwrap();
            if live && !secret_ok {
                assert!(matches!(reply, RegisterReply::NodeIdConflict), "{reply:?}");
                return;
            }
            let RegisterReply::Registered { released } = reply else { panic!("{reply:?}") };
            let (requeued, failed) = if live { m.release_node(&id) } else { Default::default() };
            check_released(&released, &requeued, &failed);
            let n = m.nodes.get_mut(&id).unwrap();
            *n = NodeModel {
                online: true,
                capacity: cap,
                conn: reg.conn,
                secret: reg.secret,
                ..NodeModel::default()
            };
        }
        Op::Heartbeat { node } => {
            let id = node_id(node);
            let (online, conn) =
                m.nodes.get(&id).map_or((false, "none".into()), |n| (n.online, n.conn.clone()));
            let reply = s
                .heartbeat(s.cell(0), &id, &conn, &Usage::default(), &CapabilityUpdate::default())
                .await
                .unwrap();
            assert_eq!(matches!(reply, NodeReply::Ok), online, "{reply:?}");
        }
        Op::Submit { task, node } => {
            let tid = spec(&format!("t{task}")).task_id();
            let node = node.map(node_id);
            let reply = direct::create(s, &spec(&format!("t{task}")), node.as_deref()).await;
            if m.tasks.contains_key(&tid) {
                assert!(matches!(reply, DispatchReply::Duplicate { .. }), "{reply:?}");
                return;
            }
            m.tasks.insert(tid.clone(), TaskModel::Waiting { attempt: 0, tried: vec![] });
            dispatch_outcome(m, &tid, node, reply);
        }
        Op::Retry { task, node } => {
            let tid = spec(&format!("t{task}")).task_id();
            let node = node.map(node_id);
            let attempt = match m.tasks.get(&tid) {
                Some(TaskModel::Waiting { attempt, .. }) => *attempt,
                Some(TaskModel::Assigned { attempt, .. }) => *attempt,
                _ => 0,
            };
            let reply = direct::retry(s, &spec(&format!("t{task}")), attempt, node.as_deref()).await;
            match m.tasks.get(&tid) {
                Some(TaskModel::Waiting { .. }) => dispatch_outcome(m, &tid, node, reply),
                _ => assert_eq!(reply, DispatchReply::Stale),
            }
        }
        Op::Complete { task, ok } => {
            let tid = spec(&format!("t{task}")).task_id();
            let Some(TaskModel::Assigned { job, node, attempt, .. }) = m.tasks.get(&tid).cloned() else {
                return;
            };
            let outcome = if ok { Outcome::Completed } else { Outcome::Failed };
            let reply = s.complete_task(&job, &node, Some(attempt), outcome).await.unwrap();
            let handoff = match (reply, ok) {
                (CompleteReply::Completed(e), true) | (CompleteReply::Failed(e), false) => {
                    assert_eq!(e.task_id, tid);
                    assert_eq!(e.attempt, attempt);
                    e.handoff
                }
                (reply, _) => panic!("{reply:?}"),
            };
            m.nodes.get_mut(&node).unwrap().jobs.retain(|j| *j != job);
            m.tasks.insert(tid.clone(), TaskModel::Ended);
            *m.outcomes.entry(tid.clone()).or_default() += 1;
            m.old_jobs.push((job, node.clone(), attempt, tid));
            // The freed slot goes to the queue's head, when the node takes tasks and the head did
            // not lose a job there before.
            let n = &m.nodes[&node];
            let head = m.queue.first().filter(|h| {
                n.online
                    && !n.draining
                    && matches!(&m.tasks[*h], TaskModel::Waiting { tried, .. } if !tried.contains(&node))
            });
            match (head.cloned(), handoff) {
                (Some(head), Some(h)) => {
                    assert_eq!(h.task_id, head);
                    m.assign(&head, &node, h.job_id, h.attempt);
                }
                (None, None) => {}
                (head, handoff) => panic!("expected the slot to go to {head:?}, got {handoff:?}"),
            }
        }
        Op::LateResult { task } => {
            let Some((job, node, attempt, _)) =
                m.old_jobs.get(task as usize % m.old_jobs.len().max(1)).cloned()
            else {
                return;
            };
            let reply = s.complete_task(&job, &node, Some(attempt), Outcome::Completed).await.unwrap();
            assert!(matches!(reply, CompleteReply::Stale { .. }), "{reply:?}");
        }
        Op::Offline { node } => {
            let id = node_id(node);
            let (online, conn) =
                m.nodes.get(&id).map_or((false, "none".into()), |n| (n.online, n.conn.clone()));
            let reply = s.node_offline(s.cell(0), &id, &conn).await.unwrap();
            if !online {
                assert!(matches!(reply, OfflineReply::Stale), "{reply:?}");
                return;
            }
            let OfflineReply::Offline { released } = reply else { panic!("{reply:?}") };
            let (requeued, failed) = m.release_node(&id);
            check_released(&released, &requeued, &failed);
            let n = m.nodes.get_mut(&id).unwrap();
            n.online = false;
            n.draining = false;
        }
        Op::Drain { node } => {
            let id = node_id(node);
            let (online, conn) =
                m.nodes.get(&id).map_or((false, "none".into()), |n| (n.online, n.conn.clone()));
            let reply = s.drain_node(s.cell(0), &id, &conn).await.unwrap();
            assert_eq!(matches!(reply, NodeReply::Draining), online);
            if online {
                m.nodes.get_mut(&id).unwrap().draining = true;
            }
        }
        Op::Sweep => match s.sweep(s.cell(0), "gw").await.unwrap() {
            SweepReply::Busy => {}
            SweepReply::Swept { offline, released, due } => {
                assert!(offline.is_empty() && released.requeued.is_empty() && released.failed.is_empty());
                let waiting: BTreeSet<String> = m
                    .tasks
                    .iter()
                    .filter(|(_, t)| matches!(t, TaskModel::Waiting { .. }))
                    .map(|(id, _)| id.clone())
                    .collect();
                assert_eq!(due.into_iter().collect::<BTreeSet<_>>(), waiting);
            }
        },
    }
}

fn dispatch_outcome(m: &mut Model, tid: &str, node: Option<String>, reply: DispatchReply) {
    let TaskModel::Waiting { attempt, tried } = m.tasks[tid].clone() else { unreachable!() };
    let Some(node) = node else {
        assert_eq!(reply, DispatchReply::Waiting);
        m.wait(tid);
        return;
    };
    if let Some(reason) = m.expect_dispatch(Some(&node), &tried) {
        assert_eq!(reply, DispatchReply::Refused { reason: reason.into() });
        m.wait(tid);
        return;
    }
    // A free slot: the queue's head takes it, unless this task is the head, or the head already
    // tried this node (then this task does).
    let head = m.queue.first().filter(|h| *h != tid).cloned();
    let head_tried = |h: &String| match &m.tasks[h] {
        TaskModel::Waiting { tried, .. } => tried.contains(&node),
        other => panic!("{h} is queued but {other:?}"),
    };
    match head.filter(|h| !head_tried(h)) {
        Some(head) => {
            let DispatchReply::Queued { handoff } = reply else { panic!("{reply:?}, head {head}") };
            let TaskModel::Waiting { attempt: head_attempt, .. } = m.tasks[&head] else { unreachable!() };
            assert_eq!((handoff.task_id.as_str(), handoff.attempt), (head.as_str(), head_attempt + 1));
            m.wait(tid);
            m.assign(&head, &node, handoff.job_id, handoff.attempt);
        }
        None => {
            let DispatchReply::Assigned { attempt: a, job_id } = reply else { panic!("{reply:?}") };
            assert_eq!(a, attempt + 1);
            m.assign(tid, &node, job_id, a);
        }
    }
}

fn check_released(released: &Released, requeued: &BTreeSet<String>, failed: &BTreeSet<String>) {
    let got: BTreeSet<String> = released.requeued.iter().cloned().collect();
    assert_eq!(&got, requeued);
    let got: BTreeSet<String> = released.failed.iter().map(|f| f.task_id.clone()).collect();
    assert_eq!(&got, failed);
}

/// Redis agrees with the model on every node's load.
async fn check_nodes(s: &Store, m: &Model) {
    let mut conn = s.connection();
    for (id, n) in &m.nodes {
        let key = s.cell(0).node(id);
        let running: Option<u32> =
            redis::cmd("HGET").arg(&key).arg("running").query_async(&mut conn).await.unwrap();
        let jobs = direct::node_jobs(s, id).await.len() as u32;
        assert_eq!(running.unwrap_or(0), n.jobs.len() as u32, "running of {id}");
        assert_eq!(jobs, n.jobs.len() as u32, "jobs of {id}");
        assert!(n.jobs.len() as u32 <= n.capacity.max(1) || !n.online);
        let score = direct::index_score(s, id).await;
        if n.online && !n.draining {
            assert_eq!(score, Some(n.jobs.len() as f64 / n.capacity as f64), "index of {id}");
        } else {
            assert_eq!(score, None, "{id} is not indexed");
        }
    }
}

/// Ends every task: a fresh node takes what waits, then everything assigned completes.
async fn finish(s: &Store, m: &mut Model) {
    let mut reg = registration("final", &["zh>en"], 64);
    reg.conn = "final".into();
    direct::register(s, &reg).await;
    m.nodes.insert(
        "final".into(),
        NodeModel { online: true, capacity: 64, conn: "final".into(), ..Default::default() },
    );
    // Each try gives the slot to the task or to the queue's head: try until nothing waits.
    while let Some(tid) =
        m.tasks.iter().find(|(_, t)| matches!(t, TaskModel::Waiting { .. })).map(|(k, _)| k.clone())
    {
        let TaskModel::Waiting { attempt, .. } = m.tasks[&tid] else { unreachable!() };
        let task = format!("t{}", tid.split(':').nth(1).unwrap());
        let reply = direct::retry(s, &spec(&task), attempt, Some("final")).await;
        dispatch_outcome(m, &tid, Some("final".into()), reply);
    }
    let tasks: Vec<String> = m.tasks.keys().cloned().collect();
    for tid in tasks {
        let task = tid.split(':').nth(1).unwrap().parse().unwrap();
        apply(s, m, &Op::Complete { task, ok: true }).await;
    }
    for (tid, task) in &m.tasks {
        assert!(matches!(task, TaskModel::Ended), "{tid} did not end: {task:?}");
        assert_eq!(m.outcomes.get(tid), Some(&1), "{tid} ended {:?} times", m.outcomes.get(tid));
    }
    check_nodes(s, m).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn scripts_agree_with_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let redis = shared_redis();
        rt.block_on(async {
            let config = SchedulerConfig {
                heartbeat_interval_ms: 3_600_000,
                job_timeout_ms: 3_600_000,
                dispatch_wait_ms: 3_600_000,
                max_attempts: MAX_ATTEMPTS,
                retry_ms: 0,
                sweep_interval_ms: 1,
                ..SchedulerConfig::default()
            };
            let s = Store::connect(&redis.url(), config).await.unwrap();
            let mut conn = s.connection();
            let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
            let mut m = Model::default();
            for op in &ops {
                apply(&s, &mut m, op).await;
                check_nodes(&s, &m).await;
            }
            finish(&s, &mut m).await;
        });
    }
}

fn shared_redis() -> &'static switchboard::devredis::RedisServer {
    static REDIS: std::sync::OnceLock<switchboard::devredis::RedisServer> = std::sync::OnceLock::new();
    REDIS.get_or_init(common::redis)
}
