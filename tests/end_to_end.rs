//! Nodes and clients over real WebSockets against a gateway on a real redis-server — and, for every
//! scenario that does not count one server's commands or rely on one cell's wake-up, again on a
//! local 3-primary Redis Cluster with 3 cells (`single_redis::*`, `redis_cluster::*`).

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

async fn one_way_utterance_round_trip(backend: Backend) {
    let gw = TestGateway::on(&backend, |_| {}).await;
    let mut node = gw.node().await;
    let ack = node.register(&["zh"], &["en"], 2).await;
    let node_id = ack["node_id"].as_str().unwrap();
    assert!(node_id.starts_with("node-") && node_id.len() == 13, "{ack}");
    assert_eq!(ack["status"], "ready");
    assert_eq!(ack["heartbeat_interval_ms"], 10_000);
    assert!(ack["node_secret"].as_str().unwrap().len() >= 16);

    node.send(json!({"type":"node_heartbeat","node_id":node_id,"timestamp":1,
        "resource_usage":{"cpu_percent":12.5,"mem_percent":40.0,"running_jobs":0}}))
        .await;

    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;
    assert!(session.starts_with("s-") && session.len() == 10);
    client.utter(&session, 0).await;

    let job = node.expect("job_assign").await;
    assert_eq!(job["attempt_id"], 1);
    assert_eq!(job["session_id"], session);
    assert_eq!(job["utterance_index"], 0);
    assert_eq!(job["src_lang"], "zh");
    assert_eq!(job["tgt_lang"], "en");
    assert_eq!(job["audio"], "AAAA");
    assert_eq!(job["mode"], "one_way");
    assert_eq!(job["pipeline"]["use_asr"], true);
    assert!(job["job_id"].as_str().unwrap().starts_with("job-"));

    let dispatched = client.recv().await;
    assert_eq!(dispatched["type"], "ui_event");
    assert_eq!(dispatched["event"], "DISPATCHED");

    node.send(json!({"type":"job_ack","job_id":job["job_id"],"attempt_id":1,"node_id":node_id})).await;
    node.send(json!({"type":"asr_partial","job_id":job["job_id"],"node_id":node_id,
        "session_id":session,"utterance_index":0,"text":"你好","is_final":false,"trace_id":"t"}))
        .await;
    let partial = client.expect("asr_partial").await;
    assert_eq!(partial["text"], "你好");
    assert_eq!(partial["job_id"], job["job_id"]);

    node.answer(&job, "Hello world").await;
    let result = client.expect("translation_result").await;
    assert_eq!(result["session_id"], session);
    assert_eq!(result["utterance_index"], 0);
    assert_eq!(result["text_translated"], "Hello world");
    assert_eq!(result["text_asr"], "你好世界");
    assert_eq!(result["job_id"], job["job_id"]);
    assert_eq!(result["src_lang"], "zh");
    assert_eq!(result["tgt_lang"], "en");
    assert_eq!(result["speaker_session_id"], session);
    assert_eq!(result["service_timings"]["total_ms"], 620);

    client.send(json!({"type":"client_heartbeat","session_id":session,"timestamp":5})).await;
    assert_eq!(client.expect("server_heartbeat").await["session_id"], session);
    client.send(json!({"type":"session_close","session_id":session,"reason":"done"})).await;
    assert_eq!(client.expect("session_close_ack").await["session_id"], session);
    gw.stop().await;
}

async fn two_way_auto_uses_the_lang_a_lang_b_pool(backend: Backend) {
    let gw = TestGateway::on(&backend, |_| {}).await;
    // This node only serves ja↔en; the other serves zh↔en. The two-way session is en/ja.
    let mut other = gw.node().await;
    other.register(&["zh", "en"], &["zh", "en"], 4).await;
    let mut node = gw.node().await;
    node.register(&["ja", "en"], &["ja", "en"], 4).await;

    let mut client = gw.client().await;
    client
        .send(json!({"type":"session_init","client_version":"t","platform":"web","src_lang":"auto",
            "tgt_lang":null,"mode":"two_way_auto","lang_a":"en","lang_b":"ja"}))
        .await;
    let session = client.expect("session_init_ack").await["session_id"].as_str().unwrap().to_owned();
    client.utter(&session, 7).await;

    let job = node.expect("job_assign").await;
    assert_eq!(job["mode"], "two_way_auto");
    assert_eq!(job["lang_a"], "en");
    assert_eq!(job["lang_b"], "ja");
    assert_eq!(job["utterance_index"], 7);
    node.answer(&job, "こんにちは").await;
    let result = client.expect("translation_result").await;
    assert_eq!(result["text_translated"], "こんにちは");
    other.expect_silence(Duration::from_millis(200)).await;
    gw.stop().await;
}

async fn repeated_utterance_index_makes_one_task(backend: Backend) {
    let gw = TestGateway::on(&backend, |_| {}).await;
    let (mut node, mut client, session) = gw.node_and_client(4).await;
    client.utter(&session, 3).await;
    client.utter(&session, 3).await;
    let job = node.expect("job_assign").await;
    node.expect_silence(Duration::from_millis(300)).await;
    node.answer(&job, "once").await;
    client.expect("translation_result").await;
    client.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(gw.metric("tasks_duplicate"), 1);
    gw.stop().await;
}

async fn node_killed_mid_job_gives_exactly_one_result(backend: Backend) {
    let gw = TestGateway::on(&backend, |_| {}).await;
    let mut first = gw.node().await;
    first.register(&["zh"], &["en"], 1).await;
    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;
    client.utter(&session, 0).await;
    let job1 = first.expect("job_assign").await;

    let mut second = gw.node().await;
    second.register(&["zh"], &["en"], 1).await;
    drop(first); // abrupt drop: no close frame

    let job2 = second.expect("job_assign").await;
    assert_eq!(job2["attempt_id"], 2);
    assert_ne!(job2["job_id"], job1["job_id"], "a retry is a new job_id");
    second.answer(&job2, "from the second node").await;
    let result = client.expect("translation_result").await;
    assert_eq!(result["text_translated"], "from the second node");
    client.expect_silence(Duration::from_millis(300)).await;
    gw.assert_consistent().await;
    gw.stop().await;
}

async fn late_result_from_a_superseded_attempt_is_dropped(backend: Backend) {
    let gw = TestGateway::on(&backend, |c| c.scheduler.job_timeout_ms = 300).await;
    let mut slow = gw.node().await;
    slow.register(&["zh"], &["en"], 1).await;
    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;
    client.utter(&session, 0).await;
    let job1 = slow.expect("job_assign").await;

    let mut fast = gw.node().await;
    fast.register(&["zh"], &["en"], 1).await;
    // The deadline passes: the slow node is told to cancel, the fast one gets attempt 2.
    let cancel = slow.expect("job_cancel").await;
    assert_eq!(cancel["job_id"], job1["job_id"]);
    let job2 = fast.expect("job_assign").await;
    assert_eq!(job2["attempt_id"], 2);

    slow.answer(&job1, "late").await;
    fast.answer(&job2, "on time").await;
    let result = client.expect("translation_result").await;
    assert_eq!(result["text_translated"], "on time");
    client.expect_silence(Duration::from_millis(300)).await;
    eventually("the late result counted", || async { gw.metric("results_stale") == 1 }).await;
    // A second result for the same job is a no-op too.
    fast.answer(&job2, "again").await;
    eventually("the duplicate counted", || async { gw.metric("results_stale") == 2 }).await;
    client.expect_silence(Duration::from_millis(200)).await;
    gw.assert_consistent().await;
    gw.stop().await;
}

async fn job_timeout_on_every_attempt_reaches_the_client_as_job_timeout(backend: Backend) {
    let gw = TestGateway::on(&backend, |c| {
        c.scheduler.job_timeout_ms = 200;
        c.scheduler.max_attempts = 2;
    })
    .await;
    let mut a = gw.node().await;
    a.register(&["zh"], &["en"], 1).await;
    let mut b = gw.node().await;
    b.register(&["zh"], &["en"], 1).await;
    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;
    client.utter(&session, 0).await;
    let error = client.expect("error").await;
    assert_eq!(error["code"], "JOB_TIMEOUT");
    assert_eq!(error["details"]["utterance_index"], 0);
    gw.assert_consistent().await;
    gw.stop().await;
}

async fn no_node_waits_then_fails_with_no_available_node(backend: Backend) {
    let gw = TestGateway::on(&backend, |c| c.scheduler.dispatch_wait_ms = 300).await;
    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;
    client.utter(&session, 0).await;
    let error = client.expect("error").await;
    assert_eq!(error["code"], "NO_AVAILABLE_NODE");
    gw.assert_consistent().await;
    gw.stop().await;
}

/// Single Redis only: a freed slot wakes the oldest task waiting in its own cell; on several cells
/// a task may wait in another one, which its cell's sweep retries (docs/scaling.md).
#[tokio::test]
async fn a_waiting_task_takes_the_slot_that_frees() {
    let redis = redis();
    // Sweeps are rare here, so the second task can only start through the freed slot's wake-up.
    let gw = TestGateway::start(&redis, |c| {
        c.scheduler.retry_ms = 60_000;
        c.scheduler.dispatch_wait_ms = 60_000;
    })
    .await;
    let (mut node, mut client, session) = gw.node_and_client(1).await;
    client.utter(&session, 0).await;
    client.utter(&session, 1).await;
    let job0 = node.expect("job_assign").await;
    node.expect_silence(Duration::from_millis(200)).await;
    node.answer(&job0, "zero").await;
    let job1 = node.expect("job_assign").await;
    assert_eq!(job1["utterance_index"], 1);
    node.answer(&job1, "one").await;
    assert_eq!(client.expect("translation_result").await["text_translated"], "zero");
    assert_eq!(client.expect("translation_result").await["text_translated"], "one");
    gw.stop().await;
}

async fn silent_node_goes_offline_and_its_job_moves(backend: Backend) {
    let gw = TestGateway::on(&backend, |c| c.scheduler.heartbeat_interval_ms = 1_000).await;
    let mut silent = gw.node().await;
    silent.register(&["zh"], &["en"], 1).await;
    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;
    client.utter(&session, 0).await;
    silent.expect("job_assign").await;

    let mut alive = gw.node().await;
    let ack = alive.register(&["zh"], &["en"], 1).await;
    let alive_id = ack["node_id"].as_str().unwrap().to_owned();
    // Keep one node heartbeating while the other keeps its socket but stays silent (3 × 1 s).
    let job = loop {
        alive
            .send(json!({"type":"node_heartbeat","node_id":alive_id,"timestamp":1,
                "resource_usage":{"cpu_percent":1.0,"mem_percent":1.0,"running_jobs":0}}))
            .await;
        if let Some(m) = alive.try_recv(Duration::from_millis(500)).await {
            assert_eq!(m["type"], "job_assign", "{m}");
            break m;
        }
    };
    assert_eq!(job["attempt_id"], 2);
    alive.answer(&job, "moved").await;
    assert_eq!(client.expect("translation_result").await["text_translated"], "moved");

    // The silent node's next heartbeat is refused: it must register again.
    silent.send(json!({"type":"node_heartbeat","node_id":"x","resource_usage":{}})).await;
    assert_eq!(silent.expect("error").await["code"], "NODE_NOT_REGISTERED");
    gw.assert_consistent().await;
    gw.stop().await;
}

async fn failed_result_reaches_the_client_as_error(backend: Backend) {
    let gw = TestGateway::on(&backend, |_| {}).await;
    let (mut node, mut client, session) = gw.node_and_client(1).await;
    client.utter(&session, 0).await;
    let job = node.expect("job_assign").await;
    node.send(json!({"type":"job_result","job_id":job["job_id"],"attempt_id":1,"success":false,
        "error":{"code":"MODEL_NOT_AVAILABLE","message":"no model"}}))
        .await;
    let error = client.expect("error").await;
    assert_eq!(error["code"], "MODEL_NOT_AVAILABLE");
    gw.assert_consistent().await;
    gw.stop().await;
}

async fn empty_result_is_reported_as_silence(backend: Backend) {
    let gw = TestGateway::on(&backend, |_| {}).await;
    let (mut node, mut client, session) = gw.node_and_client(1).await;
    client.utter(&session, 0).await;
    let job = node.expect("job_assign").await;
    node.send(json!({"type":"job_result","job_id":job["job_id"],"attempt_id":1,"success":true,
        "text_asr":"","text_translated":"","extra":{"reason":"ASR_EMPTY"}}))
        .await;
    let missing = client.expect("missing_result").await;
    assert_eq!(
        (missing["reason"].as_str(), missing["utterance_index"].as_u64()),
        (Some("silence_detected"), Some(0))
    );
    assert_eq!(missing["session_id"], session.as_str());
    client.expect_silence(Duration::from_millis(300)).await;
    // The slot is free again: the next utterance goes to the same single-slot node.
    client.utter(&session, 1).await;
    assert_eq!(node.expect("job_assign").await["utterance_index"], 1);
    gw.stop().await;
}

/// The dispatch path costs two script calls (candidates, dispatch_task), the result one.
#[tokio::test]
async fn one_task_costs_three_script_calls() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.scheduler.sweep_interval_ms = 600_000).await;
    let (mut node, mut client, session) = gw.node_and_client(1).await;
    let mut conn = gw.state.store.connection();
    let calls = |info: String| -> u64 {
        info.lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
            .sum()
    };
    let before: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
    client.utter(&session, 0).await;
    let job = node.expect("job_assign").await;
    let dispatched: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
    node.answer(&job, "hi").await;
    client.expect("translation_result").await;
    let after: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
    assert_eq!(calls(dispatched.clone()) - calls(before), 2, "dispatch path");
    assert_eq!(calls(after) - calls(dispatched), 1, "completion");
    gw.stop().await;
}

async fn metrics_count_tasks_and_time_dispatches(backend: Backend) {
    let gw = TestGateway::on(&backend, |_| {}).await;
    let (mut node, mut client, session) = gw.node_and_client(1).await;
    client.utter(&session, 0).await;
    let job = node.expect("job_assign").await;
    node.answer(&job, "hi").await;
    client.expect("translation_result").await;
    let (status, text) =
        switchboard::admin_client::request("GET", &format!("{}/metrics", gw.admin_url), None, b"")
            .await
            .unwrap();
    assert_eq!(status, 200);
    // candidates + dispatch_task; on 3 cells, when the session's home cell is not the node's, also
    // creating it at home, `availability` of the 2 other cells, `task_move`, and the 2 calls there.
    let home = gw.state.store.home_cell(&session).tag().to_owned();
    let node_cell = gw.state.store.list_nodes(1).await.unwrap().0[0]["cell"].clone();
    let calls = if home == node_cell { 2 } else { 1 + 1 + 2 + 1 + 2 };
    let calls = format!("switchboard_dispatch_script_calls_total {calls}");
    for line in [
        "switchboard_jobs_assigned_total 1",
        "switchboard_tasks_completed_total 1",
        calls.as_str(),
        "switchboard_dispatch_seconds_count{} 1",
        "switchboard_connected_nodes 1",
        "switchboard_connected_sessions 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(
        text.contains("switchboard_policy_calls_total{role=\"node-selection\",slot=\"active\""),
        "{text}"
    );
    gw.stop().await;
}

// Each scenario as two tests: on one redis-server, and on a 3-primary cluster with 3 cells.
on_single_redis_and_cluster!(
    one_way_utterance_round_trip,
    two_way_auto_uses_the_lang_a_lang_b_pool,
    repeated_utterance_index_makes_one_task,
    node_killed_mid_job_gives_exactly_one_result,
    late_result_from_a_superseded_attempt_is_dropped,
    job_timeout_on_every_attempt_reaches_the_client_as_job_timeout,
    no_node_waits_then_fails_with_no_available_node,
    silent_node_goes_offline_and_its_job_moves,
    failed_result_reaches_the_client_as_error,
    empty_result_is_reported_as_silence,
    metrics_count_tasks_and_time_dispatches,
);
