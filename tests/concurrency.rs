//! Many tasks dispatched at once, from two gateways on one Redis, never over-fill a node (and the
//! fair queue's gate still fills every slot).

mod common;

use common::direct::{self, register};
use common::*;
use switchboard::gateway::AppState;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_dispatch_never_overfills_a_node() {
    let redis = redis();
    let long = |c: &mut switchboard::config::Config| {
        c.scheduler.heartbeat_interval_ms = 60_000;
        c.scheduler.dispatch_wait_ms = 60_000;
        c.scheduler.retry_ms = 60_000;
    };
    let a = TestGateway::start(&redis, long).await;
    let b = TestGateway::start(&redis, long).await;
    let s = &a.state.store;
    for (i, cap) in [3, 1, 2, 5, 4].into_iter().enumerate() {
        register(s, &direct::node(&format!("n{i}"), &["zh>en"], cap)).await;
    }
    let slots = 3 + 1 + 2 + 5 + 4;

    let mut handles = Vec::new();
    for i in 0..200u64 {
        let state: AppState = if i % 2 == 0 { a.state.clone() } else { b.state.clone() };
        handles.push(tokio::spawn(async move {
            let spec = direct::spec(&format!("s-{}", i % 7), i);
            state.submit(&spec, &direct::payload(), None).await.unwrap()
        }));
    }
    let mut assigned = 0;
    for h in handles {
        if matches!(h.await.unwrap(), switchboard::gateway::Dispatched::Assigned { .. }) {
            assigned += 1;
        }
    }
    // A task that found tasks ahead of it in the fair queue waits, and the slot it saw goes to the
    // queue's head in the same script (the handoff): every slot ends up taken, none twice.
    assert!(assigned <= slots, "{assigned} of {slots} slots");
    let mut conn = s.connection();
    let store = s.clone();
    eventually("every slot taken", || {
        let store = store.clone();
        async move {
            let mut taken = 0;
            for i in 0..5 {
                taken += direct::node_jobs(&store, &format!("n{i}")).await.len();
            }
            taken == slots as usize
        }
    })
    .await;
    for (i, cap) in [3u32, 1, 2, 5, 4].into_iter().enumerate() {
        let key = s.cell(0).node(&format!("n{i}"));
        let running: u32 = redis::cmd("HGET").arg(&key).arg("running").query_async(&mut conn).await.unwrap();
        let jobs = direct::node_jobs(s, &format!("n{i}")).await.len() as u32;
        assert_eq!((running, jobs), (cap, cap), "n{i}");
    }
    let waiting: u32 = redis::cmd("ZCARD").arg(s.cell(0).waiting()).query_async(&mut conn).await.unwrap();
    assert_eq!(waiting, 200 - slots);
    a.stop().await;
    b.stop().await;
}
