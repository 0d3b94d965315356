//! Faults with real processes: Redis restarted empty and Redis frozen (`SIGSTOP`) under traffic
//! across two gateways, with a policy swapped all along. After each scenario the invariant checker
//! looks at what the listener got (exactly one outcome per utterance, in order, nothing foreign),
//! at Redis (running counts, jobs, TTLs) and at the gateways (nothing held for departed peers).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::invariants::{Ledger, footprint_problems, redis_problems};
use common::*;
use serde_json::{Value, json};
use switchboard::gateway::AppState;
use switchboard::policy::Role;

/// A node that answers every job, heartbeats while idle, registers again when the gateway no
/// longer knows it (Redis lost its record), until `stop`.
fn resilient_node(url: String, name: &'static str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let register = || node_register(Some(name), &["zh"], &["en"], 8);
        let mut node = Peer::connect(&format!("{url}/ws/node")).await;
        node.send(register()).await;
        while !stop.load(Ordering::Relaxed) {
            match node.try_recv(Duration::from_millis(200)).await {
                Some(m) if m["type"] == "job_assign" => {
                    let text = format!("{name}: {}", m["utterance_index"]);
                    node.answer(&m, &text).await;
                }
                Some(m) if m["type"] == "error" && m["code"] == "NODE_NOT_REGISTERED" => {
                    node.send(register()).await
                }
                Some(_) => {}
                None => {
                    node.send(json!({"type":"node_heartbeat","node_id":name,"resource_usage":{}})).await;
                }
            }
        }
        node.close().await;
    })
}

/// Swaps the node-selection policy of every gateway back and forth until `stop`.
fn policy_swapper(states: Vec<AppState>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u32> {
    tokio::spawn(async move {
        let versions = [component("least-loaded"), component("weighted-random")];
        let mut swaps = 0;
        while !stop.load(Ordering::Relaxed) {
            for state in &states {
                state.policies.load(Role::NodeSelection, &versions[swaps as usize % 2], "swapper").unwrap();
            }
            swaps += 1;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        swaps
    })
}

/// Reads until `(session, index)` has its outcome (or `WAIT` passes); records every outcome.
async fn outcome_of(
    client: &mut Peer,
    ledger: &mut Ledger,
    order: &mut Vec<(String, u64)>,
    session: &str,
    index: u64,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    while ledger.outcomes(session, index).is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = client.try_recv(left).await.unwrap_or_else(|| panic!("no outcome for utterance {index}"));
        if ledger.record(&m) {
            order.push((
                m["session_id"].as_str().or(m["details"]["session_id"].as_str()).unwrap().to_owned(),
                index_of(&m),
            ));
        }
    }
    ledger.outcomes(session, index)[0].clone()
}

fn index_of(m: &Value) -> u64 {
    m["utterance_index"].as_u64().or(m["details"]["utterance_index"].as_u64()).unwrap()
}

async fn node_known(gw: &TestGateway) {
    eventually("the node to be registered", || async {
        gw.state
            .store
            .candidates(gw.state.store.cell(0), "zh>en", &[], None)
            .await
            .is_ok_and(|c| !c.is_empty())
    })
    .await;
}

async fn settle_and_check(
    gateways: &[&TestGateway],
    ledger: &Ledger,
    expected: &[(String, u64)],
    order: &[(String, u64)],
) {
    let mut problems = ledger.check(expected, order);
    // Redis settles once the last completions and sweeps ran.
    let scheduler = &gateways[0].state.store;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut redis = redis_problems(scheduler).await;
    while !redis.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        redis = redis_problems(scheduler).await;
    }
    problems.extend(redis);
    assert!(problems.is_empty(), "invariants broken:\n{}", problems.join("\n"));
}

async fn released(gateways: &[&TestGateway]) {
    eventually("the gateways to let go of departed peers", || async {
        gateways.iter().all(|g| footprint_problems(&g.state).is_empty())
    })
    .await;
}

#[tokio::test]
async fn redis_restarted_empty_nodes_register_again_and_sessions_go_on() {
    let mut redis = redis();
    let g1 = TestGateway::start(&redis, |_| {}).await;
    let g2 = TestGateway::start(&redis, |_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    let node = resilient_node(g1.url.clone(), "n1", stop.clone());
    let swapper = policy_swapper(vec![g1.state.clone(), g2.state.clone()], stop.clone());
    node_known(&g1).await;
    let mut client = g2.client().await;
    let session = client.init_one_way("zh", "en").await;
    let (mut ledger, mut order, mut expected) = (Ledger::default(), Vec::new(), Vec::new());
    for i in 0..3 {
        client.utter(&session, i).await;
        expected.push((session.clone(), i));
    }
    for i in 0..3 {
        let outcome = outcome_of(&mut client, &mut ledger, &mut order, &session, i).await;
        assert_eq!(outcome["type"], "translation_result", "{outcome}");
    }

    redis.restart_empty().unwrap();
    // The session goes on: each utterance ends in exactly one outcome; while the node registers
    // again and the gateways reconnect, that outcome may be an explicit error.
    let (mut results, mut index) = (0, 3);
    while results < 3 {
        assert!(index < 40, "no results after the restart");
        client.utter(&session, index).await;
        expected.push((session.clone(), index));
        let outcome = outcome_of(&mut client, &mut ledger, &mut order, &session, index).await;
        match outcome["type"].as_str() {
            Some("translation_result") => results += 1,
            _ => {
                let code = outcome["code"].as_str().unwrap_or_default();
                assert!(["SCHEDULER_DEPENDENCY_DOWN", "NO_AVAILABLE_NODE"].contains(&code), "{outcome}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        index += 1;
    }
    client.expect_silence(Duration::from_millis(300)).await;
    settle_and_check(&[&g1, &g2], &ledger, &expected, &order).await;

    // The checker is not blind: a task key without a TTL and a node whose running count is off
    // are reported.
    let keys = g1.state.store.cell(0).clone();
    let mut conn = g1.state.store.connection();
    let _: () = redis::cmd("HSET")
        .arg(keys.task("bogus"))
        .arg("state")
        .arg("waiting")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("HINCRBY")
        .arg(keys.node("n1"))
        .arg("running")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let problems = redis_problems(&g1.state.store).await.join("\n");
    assert!(
        problems.contains("task:bogus has no TTL") && problems.contains("running 1, 0 jobs"),
        "{problems}"
    );
    let _: i64 = redis::cmd("DEL").arg(keys.task("bogus")).query_async(&mut conn).await.unwrap();
    let _: i64 = redis::cmd("HINCRBY")
        .arg(keys.node("n1"))
        .arg("running")
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut bad = Ledger::default();
    bad.record(&json!({"type":"translation_result","session_id":"s-x","utterance_index":0}));
    bad.record(&json!({"type":"translation_result","session_id":"s-x","utterance_index":0}));
    assert_eq!(
        bad.check(&[("s-x".into(), 0), ("s-x".into(), 1)], &[]).len(),
        2,
        "a duplicate and a missing outcome"
    );

    stop.store(true, Ordering::Relaxed);
    assert!(swapper.await.unwrap() > 5, "the policy was swapped along");
    node.await.unwrap();
    client.close().await;
    released(&[&g1, &g2]).await;
    g1.stop().await;
    g2.stop().await;
}

#[tokio::test]
async fn redis_frozen_for_three_seconds_delays_tasks_and_loses_none() {
    let redis = redis();
    // Commands wait out the freeze instead of failing.
    let tweak = |c: &mut switchboard::config::Config| c.scheduler.redis_timeout_ms = 10_000;
    let g1 = TestGateway::start(&redis, tweak).await;
    let g2 = TestGateway::start(&redis, tweak).await;
    let stop = Arc::new(AtomicBool::new(false));
    let node = resilient_node(g2.url.clone(), "n1", stop.clone());
    let swapper = policy_swapper(vec![g1.state.clone(), g2.state.clone()], stop.clone());
    node_known(&g2).await;
    let mut client = g1.client().await;
    let session = client.init_one_way("zh", "en").await;
    let ready = format!("{}/readyz", g1.url.replace("ws://", "http://"));
    let status = || async {
        switchboard::admin_client::request("GET", &ready, None, b"").await.map(|(s, _)| s).unwrap_or(0)
    };
    assert_eq!(status().await, 200);

    let (mut ledger, mut order, mut expected) = (Ledger::default(), Vec::new(), Vec::new());
    for i in 0..5 {
        client.utter(&session, i).await;
        expected.push((session.clone(), i));
    }
    redis.pause();
    let frozen = std::time::Instant::now();
    assert_eq!(status().await, 503, "readiness reports the outage");
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(frozen.elapsed())).await;
    redis.resume();
    for i in 0..5 {
        let outcome = outcome_of(&mut client, &mut ledger, &mut order, &session, i).await;
        assert_eq!(outcome["type"], "translation_result", "{outcome}");
    }
    eventually("readiness back", || async { status().await == 200 }).await;
    // Sessions go on.
    for i in 5..8 {
        client.utter(&session, i).await;
        expected.push((session.clone(), i));
        let outcome = outcome_of(&mut client, &mut ledger, &mut order, &session, i).await;
        assert_eq!(outcome["type"], "translation_result", "{outcome}");
    }
    client.expect_silence(Duration::from_millis(300)).await;
    settle_and_check(&[&g1, &g2], &ledger, &expected, &order).await;

    stop.store(true, Ordering::Relaxed);
    swapper.await.unwrap();
    node.await.unwrap();
    client.close().await;
    released(&[&g1, &g2]).await;
    g1.stop().await;
    g2.stop().await;
}

/// The probe answer, `/readyz` on the admin listener.
async fn readyz(gw: &TestGateway) -> u16 {
    let url = format!("{}/readyz", gw.admin_url);
    switchboard::admin_client::request("GET", &url, None, b"").await.map_or(0, |(status, _)| status)
}

/// How long after `since` the probe first answers 200 (polled every 25 ms, at most 30 s).
async fn ready_after(gw: &TestGateway, since: std::time::Instant) -> Duration {
    while readyz(gw).await != 200 {
        assert!(since.elapsed() < Duration::from_secs(30), "/readyz never recovered");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    since.elapsed()
}

/// Readiness recovers by itself: after Redis comes back empty, and after `SCRIPT FLUSH`, the
/// gateway loads its scripts again without any traffic (no probe either, for the flush).
#[tokio::test]
async fn readiness_recovers_after_redis_restarts_empty_and_after_script_flush() {
    let mut redis = redis();
    let gw = TestGateway::start(&redis, |_| {}).await;
    assert_eq!(readyz(&gw).await, 200);

    redis.restart_empty().unwrap(); // returns once the new Redis answers PING
    let answering = std::time::Instant::now();
    let recovered = ready_after(&gw, answering).await;
    println!("ready {recovered:?} after Redis answered again");
    assert!(recovered < Duration::from_secs(1), "ready {recovered:?} after Redis answered");

    let mut conn = gw.state.store.connection();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    let flushed = std::time::Instant::now();
    eventually("the keeper to reload the scripts", || async {
        gw.state.store.ready().await.unwrap_or(false)
    })
    .await;
    println!("scripts reloaded {:?} after SCRIPT FLUSH", flushed.elapsed());
    assert!(flushed.elapsed() < Duration::from_secs(1));
    assert_eq!(readyz(&gw).await, 200);
    gw.stop().await;
}
