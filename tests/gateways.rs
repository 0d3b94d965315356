//! Several gateways on one Redis, real WebSockets: rooms whose members and node sit on different
//! gateways, result ordering, streamed audio, resume after a gateway is killed, and a gateway
//! killed (`kill -9` of a `switchboard serve` process) with jobs in flight.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{Value, json};

async fn member(client: Peer, tgt: &str) -> (Peer, String) {
    let mut client = client;
    let session = client.init_one_way("en", tgt).await;
    (client, session)
}

async fn expect_members(peer: &mut Peer, count: usize) {
    let m = peer.expect("room_members").await;
    assert_eq!(m["members"].as_array().unwrap().len(), count, "{m}");
}

/// The next `n` job assignments of a node.
async fn jobs(node: &mut Peer, n: usize) -> Vec<Value> {
    let mut jobs = Vec::new();
    while jobs.len() < n {
        let m = node.recv().await;
        if m["type"] == "job_assign" {
            jobs.push(m);
        }
    }
    jobs
}

fn answer_text(job: &Value) -> String {
    format!("{}#{}", job["tgt_lang"].as_str().unwrap(), job["utterance_index"])
}

/// `n` translation results (skipping UI events), as (utterance_index, text).
async fn results(peer: &mut Peer, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = peer.expect("translation_result").await;
        out.push((r["utterance_index"].as_u64().unwrap(), r["text_translated"].as_str().unwrap().to_owned()));
    }
    out
}

#[tokio::test]
async fn a_room_across_three_gateways_delivers_each_result_once_in_order() {
    let redis = redis();
    let g1 = TestGateway::start(&redis, |_| {}).await;
    let g2 = TestGateway::start(&redis, |_| {}).await;
    let g3 = TestGateway::start(&redis, |_| {}).await;
    let mut node = g3.node().await;
    node.register(&["en", "zh", "ja"], &["en", "zh", "ja"], 16).await;

    let (mut a, a_id) = member(g1.client().await, "en").await;
    a.send(json!({"type":"room_create","client_ts":1,"preferred_lang":"en"})).await;
    let code = a.expect("room_create_ack").await["room_code"].as_str().unwrap().to_owned();
    expect_members(&mut a, 1).await;
    let (mut b, b_id) = member(g2.client().await, "zh").await;
    b.send(json!({"type":"room_join","room_code":code,"preferred_lang":"zh"})).await;
    b.expect("room_create_ack").await;
    expect_members(&mut b, 2).await;
    expect_members(&mut a, 2).await; // from another gateway, through g1's inbox
    let (mut c, c_id) = member(g1.client().await, "ja").await;
    c.send(json!({"type":"room_join","room_code":code,"preferred_lang":"ja"})).await;
    c.expect("room_create_ack").await;
    expect_members(&mut c, 3).await;
    expect_members(&mut a, 3).await;
    expect_members(&mut b, 3).await;

    // a speaks three times; the node (on g3) completes the six jobs in reverse order.
    for i in 0..3 {
        a.utter(&a_id, i).await;
    }
    let mut assigned = jobs(&mut node, 6).await;
    assigned.sort_by_key(|j| std::cmp::Reverse(j["utterance_index"].as_u64()));
    for job in &assigned {
        node.answer(job, &answer_text(job)).await;
    }
    let in_order = |lang: &str| (0..3).map(|i| (i, format!("{lang}#{i}"))).collect::<Vec<_>>();
    assert_eq!(results(&mut b, 3).await, in_order("zh"));
    assert_eq!(results(&mut c, 3).await, in_order("ja"));
    a.expect_silence(Duration::from_millis(300)).await;

    // b (on g2) speaks: a and c hear it in their languages.
    b.utter(&b_id, 0).await;
    for job in jobs(&mut node, 2).await {
        assert_eq!(job["session_id"], b_id.as_str());
        node.answer(&job, &answer_text(&job)).await;
    }
    assert_eq!(results(&mut a, 1).await, [(0, "en#0".to_owned())]);
    assert_eq!(results(&mut c, 1).await, [(0, "ja#0".to_owned())]);
    b.expect_silence(Duration::from_millis(200)).await;

    // b leaves while c's utterance is being translated: the task created while b was a member
    // still reaches b, once; c's next utterance is not translated for b any more.
    c.utter(&c_id, 0).await;
    let in_flight = jobs(&mut node, 2).await;
    b.send(json!({"type":"room_leave","room_code":code})).await;
    expect_members(&mut b, 2).await;
    expect_members(&mut a, 2).await;
    expect_members(&mut c, 2).await;
    for job in &in_flight {
        node.answer(job, &answer_text(job)).await;
    }
    assert_eq!(results(&mut a, 1).await, [(0, "en#0".to_owned())]);
    assert_eq!(results(&mut b, 1).await, [(0, "zh#0".to_owned())]);
    c.utter(&c_id, 1).await;
    let next = jobs(&mut node, 1).await;
    assert_eq!(next[0]["tgt_lang"], "en");
    node.answer(&next[0], "en#1").await;
    assert_eq!(results(&mut a, 1).await, [(1, "en#1".to_owned())]);
    node.expect_silence(Duration::from_millis(200)).await;
    b.expect_silence(Duration::from_millis(200)).await;
    assert!(g1.metric("frames_received") > 0 && g3.metric("frames_forwarded") > 0);
    for gw in [g1, g2, g3] {
        gw.stop().await;
    }
}

#[tokio::test]
async fn a_gap_is_skipped_after_the_timeout() {
    let redis = redis();
    let g1 = TestGateway::start(&redis, |c| c.sessions.result_gap_timeout_ms = 300).await;
    let g2 = TestGateway::start(&redis, |_| {}).await;
    let mut node = g2.node().await;
    node.register(&["zh"], &["en"], 4).await;
    let mut client = g1.client().await;
    let session = client.init_one_way("zh", "en").await;
    client.utter(&session, 0).await;
    client.utter(&session, 1).await;
    let assigned = jobs(&mut node, 2).await;
    let (first, second) = if assigned[0]["utterance_index"] == 0 {
        (&assigned[0], &assigned[1])
    } else {
        (&assigned[1], &assigned[0])
    };
    let held = Instant::now();
    node.answer(second, "one").await;
    let missing = client.expect("missing_result").await;
    assert!(held.elapsed() >= Duration::from_millis(300), "released before the gap timeout");
    assert_eq!(
        (missing["reason"].as_str(), missing["utterance_index"].as_u64()),
        (Some("gap_timeout"), Some(0))
    );
    assert_eq!(results(&mut client, 1).await, [(1, "one".to_owned())]);
    // The late result of the skipped utterance is dropped: the listener's order holds.
    node.answer(first, "zero").await;
    client.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(g1.metric("results_late"), 1);
    g1.stop().await;
    g2.stop().await;
}

#[tokio::test]
async fn streamed_audio_is_cut_by_is_final_pause_and_max_duration() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| {
        c.audio.pause_ms = 300;
        c.audio.max_duration_ms = 100; // pcm16 at 16 kHz: 3,200 bytes
    })
    .await;
    let mut x = gw.node().await;
    x.register(&["zh"], &["en"], 4).await;
    let mut y = gw.node().await;
    y.register(&["zh"], &["en"], 4).await;
    let mut client = gw.client().await;
    client
        .send(json!({"type":"session_init","client_version":"t","platform":"linux","src_lang":"zh",
            "tgt_lang":"en","mode":"one_way","audio_format":"pcm16","sample_rate":16000}))
        .await;
    let ack = client.expect("session_init_ack").await;
    assert_eq!(ack["negotiated_codec"], "pcm16");
    let session = ack["session_id"].as_str().unwrap().to_owned();
    let chunk = |seq: u64, bytes: usize, is_final: bool| {
        let payload = base64::engine::general_purpose::STANDARD.encode(vec![7u8; bytes]);
        json!({"type":"audio_chunk","session_id":session,"seq":seq,"is_final":is_final,"payload":payload})
    };
    let audio_len = |job: &Value| {
        base64::engine::general_purpose::STANDARD.decode(job["audio"].as_str().unwrap()).unwrap().len()
    };
    // Either node may take a job: the one that did answers next.
    async fn next_job(x: &mut Peer, y: &mut Peer) -> (Value, bool) {
        tokio::select! {
            j = x.expect("job_assign") => (j, true),
            j = y.expect("job_assign") => (j, false),
        }
    }

    // is_final cuts at once.
    client.send(chunk(0, 1_000, false)).await;
    client.send(chunk(1, 1_000, true)).await;
    let (first, first_on_x) = next_job(&mut x, &mut y).await;
    assert_eq!((first["utterance_index"].as_u64(), audio_len(&first)), (Some(0), 2_000));
    if first_on_x {
        x.answer(&first, "t0").await
    } else {
        y.answer(&first, "t0").await
    }

    // A pause cuts what is buffered; the next cut starts a new turn.
    let sent = Instant::now();
    client.send(chunk(2, 640, false)).await;
    let (paused, paused_on_x) = next_job(&mut x, &mut y).await;
    assert!(sent.elapsed() >= Duration::from_millis(300), "cut before the pause");
    assert_eq!((paused["utterance_index"].as_u64(), audio_len(&paused)), (Some(1), 640));
    assert_ne!(paused["turn_id"], first["turn_id"]);
    if paused_on_x {
        x.answer(&paused, "t1").await
    } else {
        y.answer(&paused, "t1").await
    }
    assert_eq!(client.expect("translation_result").await["utterance_index"], 0);
    assert_eq!(client.expect("translation_result").await["utterance_index"], 1);

    // Max duration cuts keep the turn and its node, although the other node is idle and this
    // one is busy with the turn's first cut.
    client.send(chunk(3, 3_200, false)).await;
    let (long1, on_x) = next_job(&mut x, &mut y).await;
    client.send(chunk(4, 3_200, false)).await;
    let (long2, again_on_x) = next_job(&mut x, &mut y).await;
    assert_eq!((long1["utterance_index"].as_u64(), long2["utterance_index"].as_u64()), (Some(2), Some(3)));
    assert_eq!(long1["turn_id"], long2["turn_id"]);
    assert_ne!(long1["turn_id"], paused["turn_id"]);
    assert_eq!(on_x, again_on_x, "the turn's second cut went to another node");
    // A repeated chunk is ignored.
    client.send(chunk(4, 3_200, false)).await;
    x.expect_silence(Duration::from_millis(100)).await;
    gw.stop().await;
}

/// `session_init` resuming `session_id` with `token`; returns the ack.
async fn resume(client: &mut Peer, session_id: &str, token: &str) -> Value {
    client
        .send(json!({"type":"session_init","resume_session_id":session_id,"resume_token":token,
            "client_version":"t","platform":"linux"}))
        .await;
    client.expect("session_init_ack").await
}

#[tokio::test]
async fn a_session_resumes_on_another_gateway_after_its_gateway_is_killed() {
    let redis = redis();
    let g2 = TestGateway::start(&redis, |_| {}).await;
    let mut doomed = ChildGateway::start(&redis, "gw-doomed", "").await;
    let mut node = g2.node().await;
    node.register(&["en", "zh"], &["en", "zh"], 8).await;

    let mut a = doomed.client().await;
    a.send(json!({"type":"session_init","client_version":"t","platform":"linux","src_lang":"en",
        "tgt_lang":"en","mode":"one_way"}))
        .await;
    let ack = a.expect("session_init_ack").await;
    let a_id = ack["session_id"].as_str().unwrap().to_owned();
    let token = ack["resume_token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 32);
    a.send(json!({"type":"room_create","client_ts":1,"preferred_lang":"en"})).await;
    let code = a.expect("room_create_ack").await["room_code"].as_str().unwrap().to_owned();
    let (mut b, b_id) = member(g2.client().await, "zh").await;
    b.send(json!({"type":"room_join","room_code":code,"preferred_lang":"zh"})).await;
    b.expect("room_create_ack").await;
    expect_members(&mut b, 2).await;
    expect_members(&mut a, 1).await;
    expect_members(&mut a, 2).await;

    // b speaks; a's gateway dies before the result comes back.
    b.utter(&b_id, 0).await;
    let job = jobs(&mut node, 1).await.remove(0);
    doomed.kill();
    node.answer(&job, "en#0").await;

    // A wrong token resumes nothing.
    let mut intruder = g2.client().await;
    intruder
        .send(json!({"type":"session_init","resume_session_id":a_id,"resume_token":"0".repeat(32)}))
        .await;
    assert_eq!(intruder.expect("error").await["code"], "INVALID_SESSION");

    // a reconnects to g2: same session, the result produced meanwhile, still in the room.
    let mut a2 = g2.client().await;
    let ack = resume(&mut a2, &a_id, &token).await;
    assert_eq!(ack["session_id"], a_id.as_str());
    assert_eq!(results(&mut a2, 1).await, [(0, "en#0".to_owned())]);
    b.utter(&b_id, 1).await;
    let job = jobs(&mut node, 1).await.remove(0);
    node.answer(&job, "en#1").await;
    assert_eq!(results(&mut a2, 1).await, [(1, "en#1".to_owned())]);
    a2.expect_silence(Duration::from_millis(300)).await;
    g2.stop().await;
}

#[tokio::test]
async fn a_gateway_killed_with_jobs_in_flight_loses_none() {
    let redis = redis();
    let g2 = TestGateway::start(&redis, |c| c.scheduler.heartbeat_interval_ms = 300).await;
    let mut doomed = ChildGateway::start(&redis, "gw-doomed", "heartbeat_interval_ms = 300").await;
    let mut client = g2.client().await;
    let session = client.init_one_way("zh", "en").await;

    // n1 on the doomed gateway takes utterances 0 and 1 and never answers.
    let mut n1 = doomed.node().await;
    n1.register(&["zh"], &["en"], 2).await;
    client.utter(&session, 0).await;
    client.utter(&session, 1).await;
    let held = jobs(&mut n1, 2).await; // assigned by g2, delivered through the doomed gateway's inbox
    assert_eq!(held.len(), 2);
    // n2 on g2 answers everything, including 2 and 3 at once: they wait for 0 and 1.
    let mut n2 = g2.node().await;
    n2.register(&["zh"], &["en"], 4).await;
    let n2 = auto_answer(n2, "n2");
    client.utter(&session, 2).await;
    client.utter(&session, 3).await;
    client.expect_silence(Duration::from_millis(300)).await;

    doomed.kill();
    // n1's heartbeats stop with its gateway: the sweep takes it offline and 0 and 1 go to n2.
    let got = results(&mut client, 4).await;
    assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert!(got.iter().all(|(_, text)| text.starts_with("n2:")), "{got:?}");
    client.expect_silence(Duration::from_millis(500)).await;
    eventually("Redis to be consistent", || async {
        common::invariants::redis_problems(&g2.state.store).await.is_empty()
    })
    .await;
    drop(n1);
    n2.abort();
    g2.stop().await;
}

/// The nodes of a killed gateway reconnect to another one with their node secret; the jobs they
/// held go back to their tasks and are served by another node (a retry never returns to the node
/// that had it), once each, while policies are swapped; the reconnected node takes new work.
#[tokio::test]
async fn a_node_of_a_killed_gateway_reconnects_to_another_and_serves_again() {
    use switchboard::policy::Role;
    let redis = redis();
    let g2 = TestGateway::start(&redis, |_| {}).await;
    let mut doomed = ChildGateway::start(&redis, "gw-doomed", "").await;
    let mut client = g2.client().await;
    let session = client.init_one_way("zh", "en").await;
    let mut n1 = doomed.node().await;
    let ack = n1.register(&["zh"], &["en"], 2).await;
    let (node_id, secret) = (ack["node_id"].clone(), ack["node_secret"].clone());
    client.utter(&session, 0).await;
    client.utter(&session, 1).await;
    jobs(&mut n1, 2).await;
    let mut n2 = g2.node().await;
    n2.register(&["zh"], &["en"], 2).await;

    let swapping = tokio::spawn({
        let state = g2.state.clone();
        async move {
            let versions = [component("weighted-random"), component("least-loaded")];
            for i in 0..40 {
                state.policies.load(Role::NodeSelection, &versions[i % 2], "test").unwrap();
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    });
    doomed.kill();
    assert!(n1.try_recv(Duration::from_secs(2)).await.is_none(), "the killed gateway's socket ends");
    // The node reconnects to g2 under its id, proving it with its secret: the jobs its old
    // connection held go back to their tasks, which n2 serves.
    let mut again = g2.node().await;
    let mut register = node_register(node_id.as_str(), &["zh"], &["en"], 2);
    register["node_secret"] = secret;
    again.send(register).await;
    assert_eq!(again.expect("node_register_ack").await["node_id"], node_id);
    for job in jobs(&mut n2, 2).await {
        n2.answer(&job, &format!("n2: {}", job["utterance_index"])).await;
    }
    assert_eq!(results(&mut client, 2).await, [(0, "n2: 0".to_owned()), (1, "n2: 1".to_owned())]);
    // With n2 gone, new work goes to the reconnected node.
    n2.close().await;
    client.utter(&session, 2).await;
    let job = jobs(&mut again, 1).await.remove(0);
    again.answer(&job, "again").await;
    assert_eq!(results(&mut client, 1).await, [(2, "again".to_owned())]);
    client.expect_silence(Duration::from_millis(300)).await;
    swapping.await.unwrap();
    g2.assert_consistent().await;
    g2.stop().await;
}

/// A gateway the others took for dead (an outage longer than its presence window) attaches its
/// still-open sessions again when it is back, so frames from other gateways reach them.
#[tokio::test]
async fn a_gateway_taken_for_dead_attaches_its_sessions_again() {
    use switchboard::store::{Fence, RegistryKeys};
    let redis = redis();
    let g1 = TestGateway::start(&redis, |_| {}).await;
    let g2 = TestGateway::start(&redis, |_| {}).await;
    let mut node = g2.node().await;
    node.register(&["zh"], &["en"], 4).await;
    let mut client = g1.client().await;
    let session = client.init_one_way("zh", "en").await;

    // What g2 does when it finds g1 dead: g1 leaves the registry, its sessions are detached.
    let scheduler = &g2.state.store;
    let mut conn = scheduler.connection();
    let g1_id = g1.state.gateway_id.to_string();
    let _: i64 = redis::cmd("ZREM")
        .arg(RegistryKeys::new("sb").gateways)
        .arg(&g1_id)
        .query_async(&mut conn)
        .await
        .unwrap();
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let detached =
        scheduler.session_detach(&session, Fence::Gateway(&g1_id, now_ms + 1), 60_000).await.unwrap();
    assert!(detached.is_some());
    let state_of = |s: &str| switchboard::store::SessionKeys::new("sb", s).session;
    eventually("g1 to attach its session again", || async {
        direct::hget(scheduler, &state_of(&session), "state").await.as_deref() == Some("attached")
    })
    .await;
    client.utter(&session, 0).await;
    let job = jobs(&mut node, 1).await.remove(0);
    node.answer(&job, "back").await; // completed on g2, delivered through g1's inbox
    assert_eq!(results(&mut client, 1).await, [(0, "back".to_owned())]);
    g1.stop().await;
    g2.stop().await;
}

/// A cut that cannot be dispatched is reported and the stream goes on: the next cut is served.
#[tokio::test]
async fn a_cut_that_fails_to_dispatch_does_not_wedge_the_stream() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.scheduler.dispatch_wait_ms = 200).await;
    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;
    let chunk = |seq: u64| json!({"type":"audio_chunk","session_id":session,"seq":seq,"is_final":true,"payload":"AAAA"});
    client.send(chunk(0)).await;
    let error = client.expect("error").await;
    assert_eq!(
        (error["code"].as_str(), error["details"]["utterance_index"].as_u64()),
        (Some("NO_AVAILABLE_NODE"), Some(0))
    );
    let mut node = gw.node().await;
    node.register(&["zh"], &["en"], 1).await;
    client.send(chunk(1)).await;
    let job = node.expect("job_assign").await;
    assert_eq!(job["utterance_index"], 1);
    node.answer(&job, "next").await;
    assert_eq!(results(&mut client, 1).await, [(1, "next".to_owned())]);
    gw.stop().await;
}
