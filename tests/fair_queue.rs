//! The fair queue of waiting tasks (docs/overload.md): a freed slot goes to the waiting task of the
//! lowest band with the earliest virtual finish time, so tenants share slots in proportion to their
//! weights; a tenant past its bound of waiting tasks gets NODE_OVERLOADED. On a real redis-server
//! and on a 3-primary Redis Cluster.

#[macro_use]
mod common;

use common::direct::*;
use common::invariants::redis_problems;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use switchboard::protocol::ErrorCode;
use switchboard::sim::task_spec;
use switchboard::store::*;

fn config() -> SchedulerConfig {
    SchedulerConfig {
        heartbeat_interval_ms: 1_000,
        job_timeout_ms: 10_000,
        dispatch_wait_ms: 60_000,
        tenant_weights: [("a".to_owned(), 3.0), ("b".to_owned(), 1.0)].into(),
        tenant_bands: [("vip".to_owned(), 0)].into(),
        max_waiting_per_tenant: 4,
        ..fast_scheduler()
    }
}

fn spec(tenant: &str, index: u64) -> TaskSpec {
    TaskSpec { tenant_id: Some(tenant.into()), ..task_spec(&format!("s-{tenant}"), index) }
}

/// The queued task ids, first to be woken first.
async fn queue(s: &Store) -> Vec<String> {
    let mut conn = s.connection();
    redis::cmd("ZRANGE").arg(s.cell(0).queue("zh>en")).arg(0).arg(-1).query_async(&mut conn).await.unwrap()
}

fn tenant_of(task_id: &str) -> &str {
    task_id.trim_start_matches("s-").split(':').next().unwrap()
}

async fn fair_queue_orders_by_weight_band_and_bound(backend: Backend) {
    let s = Store::connect(&backend.url(), config()).await.unwrap();
    // No node: every task waits. Tenant a (weight 3) queues 4, then b (weight 1) 4.
    for i in 0..4 {
        assert_eq!(create(&s, &spec("a", i), None).await, DispatchReply::Waiting);
    }
    for i in 0..4 {
        assert_eq!(create(&s, &spec("b", i), None).await, DispatchReply::Waiting);
    }
    let order: Vec<String> = queue(&s).await.iter().map(|t| tenant_of(t).to_owned()).collect();
    // Finish times: a 1/3, 2/3, 1, 4/3; b 1, 2, 3, 4 — a gets three slots to b's one.
    assert_eq!(order, ["a", "a", "a", "b", "a", "b", "b", "b"], "{:?}", queue(&s).await);

    // The bound: a fifth waiting task of a tenant is refused, not queued; other tenants go on.
    match create(&s, &spec("a", 4), None).await {
        DispatchReply::Failed { code, spec, handoff } => {
            assert_eq!(code, ErrorCode::NodeOverloaded);
            assert_eq!(handoff, None, "no node offered, no slot to give");
            assert_eq!(spec.tenant_id.as_deref(), Some("a"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(queue(&s).await.len(), 8);

    // A higher band goes first, whenever it comes.
    assert_eq!(create(&s, &spec("vip", 0), None).await, DispatchReply::Waiting);
    assert_eq!(tenant_of(&queue(&s).await[0]), "vip");

    // A freed slot goes to the head of the queue in the same call (the handoff); a dispatched
    // task leaves the queue and moves the clock.
    register(&s, &node("n1", &["zh>en"], 1)).await;
    let vip = spec("vip", 0);
    let job = job_id(&retry(&s, &vip, 0, Some("n1")).await);
    assert_eq!(tenant_of(&queue(&s).await[0]), "a");
    let a0 = spec("a", 0);
    // n1 is full now: a refused try leaves a0 queued where it was.
    assert!(matches!(retry(&s, &a0, 0, Some("n1")).await, DispatchReply::Refused { .. }));
    assert_eq!(queue(&s).await[0], a0.task_id());
    let job = match s.complete_task(&job, "n1", None, Outcome::Completed).await.unwrap() {
        CompleteReply::Completed(ended) => {
            let handoff = ended.handoff.expect("the slot goes to the head");
            assert_eq!(handoff.task_id, a0.task_id(), "the head of the queue");
            handoff.job_id
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(queue(&s).await.len(), 7, "vip and a0 left the queue");
    // a went from 4 waiting to 3: one more of its tasks fits again.
    assert_eq!(create(&s, &spec("a", 5), None).await, DispatchReply::Waiting);
    // The clock is the latest finish time dispatched: 1 (vip's). A tenant idle until now starts
    // there, not with credit: c's first task finishes at 2, a's new one at 4/3 + 1/3 (a is behind
    // its own queued tasks), so the order is a 2/3, a 1, b 1, a 4/3, a 5/3, b 2, c 2, b 3, b 4
    // (ties by task id).
    assert_eq!(create(&s, &spec("c", 0), None).await, DispatchReply::Waiting);
    let order: Vec<String> = queue(&s).await.iter().map(|t| tenant_of(t).to_owned()).collect();
    assert_eq!(order, ["a", "a", "b", "a", "a", "b", "c", "b", "b"], "{:?}", queue(&s).await);
    s.complete_task(&job, "n1", None, Outcome::Completed).await.unwrap();
    let problems = redis_problems(&s).await;
    assert!(problems.is_empty(), "{problems:?}");
}

/// A task that finds a free slot while a task of its pool that the queue puts first waits does not
/// take it: the script assigns the slot to the queue's head (the handoff) and this task waits.
async fn a_free_slot_goes_to_the_head_of_the_queue(backend: Backend) {
    let s = Store::connect(&backend.url(), config()).await.unwrap();
    // a (weight 3) waits with finish time 1/3; b's new task would finish at 1: it is behind.
    let (a0, b0) = (spec("a", 0), spec("b", 0));
    assert_eq!(create(&s, &a0, None).await, DispatchReply::Waiting);
    register(&s, &node("n1", &["zh>en"], 1)).await;
    let handoff = match create(&s, &b0, Some("n1")).await {
        DispatchReply::Queued { handoff } => handoff,
        other => panic!("{other:?}"),
    };
    assert_eq!((handoff.task_id.as_str(), handoff.attempt), (a0.task_id().as_str(), 1));
    assert!(handoff.job_id.ends_with(&format!(":{}", a0.task_id())), "{}", handoff.job_id);
    assert_eq!(handoff.spec.tenant_id.as_deref(), Some("a"), "the head's own spec");
    assert_eq!(handoff.payload, payload());
    assert_eq!(node_jobs(&s, "n1").await, std::slice::from_ref(&handoff.job_id));
    assert_eq!(queue(&s).await, [b0.task_id()], "the new task waits");
    let problems = redis_problems(&s).await;
    assert!(problems.is_empty(), "{problems:?}");
    // The head's job is a job like any other: its result hands the slot to the next head.
    match s.complete_task(&handoff.job_id, "n1", Some(1), Outcome::Completed).await.unwrap() {
        CompleteReply::Completed(ended) => {
            assert_eq!(ended.handoff.map(|h| h.task_id), Some(b0.task_id()));
            assert_eq!(ended.wake, "");
        }
        other => panic!("{other:?}"),
    }
    // A task that fails its tenant's bound (4 waiting) still gives the slot it found to the head.
    register(&s, &node("n2", &["zh>en"], 1)).await;
    for i in 1..5 {
        assert_eq!(create(&s, &spec("b", i), None).await, DispatchReply::Waiting);
    }
    match create(&s, &spec("b", 5), Some("n2")).await {
        DispatchReply::Failed { code, handoff: Some(handoff), .. } => {
            assert_eq!(code, ErrorCode::NodeOverloaded);
            assert_eq!((handoff.task_id, handoff.node_id), (spec("b", 1).task_id(), "n2".to_owned()));
        }
        other => panic!("{other:?}"),
    }
    let problems = redis_problems(&s).await;
    assert!(problems.is_empty(), "{problems:?}");
}

/// A tenant's cap on running tasks: past it, its tasks wait held — out of the pool's queue, so the
/// other tenants' tasks pass them — until one of its tasks ends.
async fn a_tenant_cap_holds_its_tasks_without_blocking_the_pool(backend: Backend) {
    let mut config = SchedulerConfig { tenant_max_running: [("t".to_owned(), 1)].into(), ..config() };
    config.tenant_weights.insert("u".into(), 0.25);
    let s = Store::connect(&backend.url(), config).await.unwrap();
    register(&s, &node("n1", &["zh>en"], 4)).await;
    let (t0, t1, t2, u0, u1) = (spec("t", 0), spec("t", 1), spec("t", 2), spec("u", 0), spec("u", 1));
    let t0_job = job_id(&create(&s, &t0, Some("n1")).await);
    // t runs one task: the next one is held, though n1 has three free slots.
    assert_eq!(create(&s, &t1, Some("n1")).await, DispatchReply::Held { handoff: None });
    job_id(&create(&s, &u0, Some("n1")).await);
    // t2 waits in the pool's queue (no node offered; finish time 2) ahead of u1 (weight 1/4:
    // finish time 4); when u1 finds the free slot, t2 is at its cap: it is held on the way, and u1
    // takes the slot.
    assert_eq!(create(&s, &t2, None).await, DispatchReply::Waiting);
    assert_eq!(queue(&s).await, [t2.task_id()]);
    job_id(&create(&s, &u1, Some("n1")).await);
    assert!(queue(&s).await.is_empty());
    let mut conn = s.connection();
    let held: Vec<String> =
        redis::cmd("ZRANGE").arg(s.cell(0).held("t")).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    assert_eq!(held, [t1.task_id(), t2.task_id()], "held in their order");
    let problems = redis_problems(&s).await;
    assert!(problems.is_empty(), "{problems:?}");
    // t0 ends: t's first held task goes back to the queue, and takes the freed slot at once.
    match s.complete_task(&t0_job, "n1", None, Outcome::Completed).await.unwrap() {
        CompleteReply::Completed(ended) => {
            assert_eq!(ended.handoff.map(|h| h.task_id), Some(t1.task_id()));
            assert_eq!(ended.unheld, "", "dispatched already");
        }
        other => panic!("{other:?}"),
    }
    assert!(queue(&s).await.is_empty());
    // A task that would be held past its dispatch wait fails with NODE_OVERLOADED.
    let no_wait = SchedulerConfig { dispatch_wait_ms: 0, ..s.config().clone() };
    let s2 = Store::connect(&backend.url(), no_wait).await.unwrap();
    match create(&s2, &spec("t", 3), Some("n1")).await {
        DispatchReply::Failed { code, .. } => assert_eq!(code, ErrorCode::NodeOverloaded),
        other => panic!("{other:?}"),
    }
    let problems = redis_problems(&s).await;
    assert!(problems.is_empty(), "{problems:?}");
}

on_single_redis_and_cluster!(
    fair_queue_orders_by_weight_band_and_bound,
    a_free_slot_goes_to_the_head_of_the_queue,
    a_tenant_cap_holds_its_tasks_without_blocking_the_pool,
);

/// One tenant bursts 20 utterances at a node with one slot; another tenant, on another gateway,
/// then sends one. With the fair queue its task is among the next few the node gets (and its
/// speaker is told where it waits); in arrival order it would be the last.
async fn a_burst_and_a_steady_tenant(fair_queue: bool) -> (usize, Value) {
    let redis = redis();
    let tweak = |c: &mut switchboard::config::Config| {
        c.scheduler.fair_queue = fair_queue;
        // Wakes alone decide who gets a freed slot here (the sweep's retries are a fallback).
        c.scheduler.retry_ms = 60_000;
        c.scheduler.dispatch_wait_ms = 60_000;
    };
    let a = TestGateway::start(&redis, tweak).await;
    let b = TestGateway::start(&redis, tweak).await;
    let mut node = a.node().await;
    node.register(&["zh"], &["en"], 1).await;
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let jobs = seen.clone();
    let _node = tokio::spawn(async move {
        while let Some(job) = node.try_recv(Duration::from_secs(30)).await {
            if job["type"] == "job_assign" {
                jobs.lock().push(job["session_id"].as_str().unwrap().to_owned());
                tokio::time::sleep(Duration::from_millis(30)).await;
                node.answer(&job, "ok").await;
            }
        }
    });
    let init = |tenant: &str| {
        json!({"type":"session_init","client_version":"t","platform":"linux","src_lang":"zh",
            "tgt_lang":"en","mode":"one_way","tenant_id":tenant})
    };
    let mut burst = a.client().await;
    burst.send(init("burst")).await;
    let burst_session = burst.expect("session_init_ack").await["session_id"].as_str().unwrap().to_owned();
    for i in 0..20 {
        burst.utter(&burst_session, i).await;
    }
    eventually("the burst queued", || async { !seen.lock().is_empty() }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut steady = b.client().await;
    steady.send(init("steady")).await;
    let steady_session = steady.expect("session_init_ack").await["session_id"].as_str().unwrap().to_owned();
    let before = seen.lock().len();
    steady.utter(&steady_session, 0).await;
    let queued = loop {
        let m = steady.recv().await;
        if m["type"] == "ui_event" && m["event"] == "QUEUED" {
            break m;
        }
    };
    // Operators see who waits, from any gateway.
    let (_, queues) = admin(&b, "GET", "/admin/queues", None, b"").await;
    assert!(queues["waiting"][0]["tenants"]["burst"].as_u64().is_some_and(|n| n > 0), "{queues}");
    let (_, metrics) = admin(&b, "GET", "/metrics", None, b"").await;
    assert!(metrics.as_str().unwrap().contains("switchboard_waiting_tasks{cell="), "{metrics}");
    assert!(queues["waiting"][0]["pools"]["zh>en"].as_u64().is_some_and(|n| n > 0), "{queues}");
    let running = &queues["waiting"][0]["running"];
    assert!(running.is_object() && running["burst"].as_u64().unwrap_or(0) <= 1, "one slot: {queues}");
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("switchboard_waiting_tasks_by_pool{cell=") && metrics.contains("pool=\"zh>en\"}")
    );
    assert!(metrics.contains("# TYPE switchboard_running_tasks gauge"), "{metrics}");
    steady.expect("translation_result").await;
    // Jobs the node got after the steady tenant's task came, before it.
    let place = seen.lock().iter().position(|s| *s == steady_session).unwrap() - before;
    for _ in 0..20 {
        burst.expect("translation_result").await;
    }
    a.stop().await;
    b.stop().await;
    (place, queued)
}

#[tokio::test]
async fn a_burst_does_not_starve_a_steady_tenant_on_another_gateway() {
    let (place, queued) = a_burst_and_a_steady_tenant(true).await;
    assert!(place <= 2, "{place} burst jobs went before the steady tenant's task");
    assert!(queued["queue_position"].as_u64().unwrap() <= 1, "{queued}");

    let (place, queued) = a_burst_and_a_steady_tenant(false).await;
    assert!(place >= 10, "in arrival order it waits behind the burst: {place} jobs went first");
    assert!(queued["queue_position"].as_u64().unwrap() >= 10, "{queued}");
}
