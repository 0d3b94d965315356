//! Bad input gets a clear error and loses nothing; the socket stays open unless the protocol says
//! it closes (oversized frames, a wrong node token).

mod common;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

async fn expect_error(peer: &mut Peer, code: &str) -> serde_json::Value {
    let error = peer.expect("error").await;
    assert_eq!(error["code"], code, "{error}");
    error
}

#[tokio::test]
async fn malformed_frames_get_invalid_message_and_the_socket_stays_open() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |_| {}).await;
    for path in ["/ws/node", "/ws/session"] {
        let mut peer = Peer::connect(&format!("{}{path}", gw.url)).await;
        for frame in [
            "{not json",
            "[1,2,3]",
            "\"just a string\"",
            "{\"no_type\":1}",
            "{\"type\":42}",
            "{\"type\":\"launch_missiles\"}",
            "{\"type\":\"node_register\",\"max_concurrent_jobs\":-4}",
            "{\"type\":\"utterance\",\"utterance_index\":\"seven\"}",
            "{\"type\":\"node_register\",\"labels\":[1,2]}",
            "{\"type\":\"utterance\",\"session_id\":\"s\",\"utterance_index\":99999999999999999999999}",
        ] {
            peer.send_raw(Message::Text(frame.into())).await;
            let error = expect_error(&mut peer, "INVALID_MESSAGE").await;
            assert!(!error["message"].as_str().unwrap().is_empty());
        }
        peer.send_raw(Message::Binary(vec![0u8, 1, 2].into())).await;
        expect_error(&mut peer, "INVALID_MESSAGE").await;
    }
    // Still open and working after all that.
    let mut node = gw.node().await;
    node.send_raw(Message::Text("{oops".into())).await;
    expect_error(&mut node, "INVALID_MESSAGE").await;
    node.register(&["zh"], &["en"], 1).await;
    assert!(gw.metric("invalid_messages") >= 22);
    gw.stop().await;
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| {
        c.max_frame_bytes = 64 * 1024;
        c.max_payload_bytes = 32 * 1024;
    })
    .await;
    let mut client = gw.client().await;
    client.send_raw(Message::Text("x".repeat(100 * 1024).into())).await;
    assert_eq!(client.expect_close().await, Some(1009));
    let mut node = gw.node().await;
    node.send_raw(Message::Text("x".repeat(100 * 1024).into())).await;
    assert_eq!(node.expect_close().await, Some(1009));
    gw.stop().await;
}

#[tokio::test]
async fn utterance_errors() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.max_payload_bytes = 1024).await;
    let mut client = gw.client().await;
    client.utter("s-00000000", 0).await;
    expect_error(&mut client, "INVALID_SESSION").await;
    client.send(json!({"type":"session_init","mode":"one_way"})).await;
    expect_error(&mut client, "INVALID_MESSAGE").await; // tgt_lang missing
    client.send(json!({"type":"session_init","mode":"two_way_auto","lang_a":"en"})).await;
    expect_error(&mut client, "INVALID_MESSAGE").await; // lang_b missing
    client.send(json!({"type":"session_init","mode":"sideways","tgt_lang":"en"})).await;
    expect_error(&mut client, "INVALID_MESSAGE").await;
    client.send(json!({"type":"session_init","tgt_lang":"e n"})).await;
    expect_error(&mut client, "INVALID_MESSAGE").await;

    let session = client.init_one_way("zh", "en").await;
    client.utter("s-FFFFFFFF", 0).await;
    expect_error(&mut client, "INVALID_SESSION").await;
    client.send(json!({"type":"utterance","session_id":session,"utterance_index":0,"audio":"***"})).await;
    expect_error(&mut client, "INVALID_MESSAGE").await;
    client.send(json!({"type":"utterance","session_id":session,"utterance_index":0})).await;
    expect_error(&mut client, "INVALID_MESSAGE").await;
    let big = "A".repeat(2048);
    client.send(json!({"type":"utterance","session_id":session,"utterance_index":0,"audio":big})).await;
    expect_error(&mut client, "PAYLOAD_TOO_LARGE").await;
    client.send(json!({"type":"audio_chunk","session_id":session,"seq":0,"payload":"***"})).await;
    expect_error(&mut client, "INVALID_MESSAGE").await;
    client.send(json!({"type":"audio_chunk","session_id":"s-FFFFFFFF","seq":0,"payload":"AAAA"})).await;
    expect_error(&mut client, "INVALID_SESSION").await;
    client.send(json!({"type":"audio_chunk","session_id":session,"seq":"one"})).await;
    expect_error(&mut client, "INVALID_MESSAGE").await;
    client.send(json!({"type":"session_init","tgt_lang":"en"})).await;
    expect_error(&mut client, "INVALID_MESSAGE").await; // already initialized

    // None of it created a task: a node that joins now gets utterance 0 only when it is sent.
    let mut node = gw.node().await;
    node.register(&["zh"], &["en"], 1).await;
    node.expect_silence(std::time::Duration::from_millis(300)).await;
    client.utter(&session, 0).await;
    assert_eq!(node.expect("job_assign").await["utterance_index"], 0);
    gw.stop().await;
}

#[tokio::test]
async fn node_protocol_errors() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |_| {}).await;
    let mut node = gw.node().await;
    node.send(json!({"type":"node_heartbeat","node_id":"node-1","resource_usage":{}})).await;
    expect_error(&mut node, "NODE_NOT_REGISTERED").await;
    node.send(json!({"type":"job_result","job_id":"job-1","success":true})).await;
    expect_error(&mut node, "NODE_NOT_REGISTERED").await;
    node.send(node_register(Some("bad id with spaces"), &["zh"], &["en"], 1)).await;
    expect_error(&mut node, "INVALID_MESSAGE").await;
    node.send(node_register(None, &["z}h"], &["en"], 1)).await;
    expect_error(&mut node, "INVALID_MESSAGE").await;

    let ack = node.register(&["zh"], &["en"], 1).await;
    // A result for a job this node does not hold is dropped and counted, nothing else.
    node.send(json!({"type":"job_result","job_id":"job-NOPE","attempt_id":1,"success":true})).await;
    eventually("unknown result counted", || async { gw.metric("results_unknown") == 1 }).await;
    node.send(json!({"type":"node_heartbeat","node_id":"node-someone-else","resource_usage":{}})).await;
    expect_error(&mut node, "NODE_NOT_REGISTERED").await;
    node.send(json!({"type":"node_error","node_id":ack["node_id"],"code":"GPU_OOM","message":"oom"})).await;
    eventually("node error counted", || async { gw.metric("node_errors") == 1 }).await;
    gw.stop().await;
}

#[tokio::test]
async fn node_id_conflict_and_takeover_with_the_secret() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |_| {}).await;
    let mut first = gw.node().await;
    let ack = first.register(&["zh"], &["en"], 1).await;
    let id = ack["node_id"].as_str().unwrap();
    let secret = ack["node_secret"].as_str().unwrap();

    let mut thief = gw.node().await;
    thief.send(node_register(Some(id), &["zh"], &["en"], 1)).await;
    expect_error(&mut thief, "NODE_ID_CONFLICT").await;
    let mut wrong = node_register(Some(id), &["zh"], &["en"], 1);
    wrong["node_secret"] = json!("guess");
    thief.send(wrong).await;
    expect_error(&mut thief, "NODE_ID_CONFLICT").await;

    // The owner reconnects (a restart) with its secret: the new connection takes the id over.
    let mut owner = gw.node().await;
    let mut again = node_register(Some(id), &["zh"], &["en"], 1);
    again["node_secret"] = json!(secret);
    owner.send(again).await;
    let ack2 = owner.expect("node_register_ack").await;
    assert_eq!(ack2["node_id"], id);
    assert_ne!(ack2["node_secret"], secret, "each registration issues a new secret");

    // The old connection's heartbeats are refused; jobs go to the new connection.
    first.send(json!({"type":"node_heartbeat","node_id":id,"resource_usage":{}})).await;
    expect_error(&mut first, "NODE_NOT_REGISTERED").await;
    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;
    client.utter(&session, 0).await;
    let job = owner.expect("job_assign").await;
    // The old socket closing later does not take the node offline.
    first.close().await;
    owner.answer(&job, "ok").await;
    client.expect("translation_result").await;
    client.utter(&session, 1).await;
    owner.expect("job_assign").await;
    gw.stop().await;
}

#[tokio::test]
async fn node_token_is_required_when_configured() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.node_token = Some("s3cret".into())).await;
    let mut node = gw.node().await;
    node.send(node_register(None, &["zh"], &["en"], 1)).await;
    expect_error(&mut node, "UNAUTHORIZED").await;
    assert_eq!(node.expect_close().await, Some(1008));

    let mut with_field = gw.node().await;
    let mut register = node_register(None, &["zh"], &["en"], 1);
    register["token"] = json!("s3cret");
    with_field.send(register).await;
    with_field.expect("node_register_ack").await;

    let mut with_header = Peer::connect_with_bearer(&format!("{}/ws/node", gw.url), "s3cret").await;
    with_header.register(&["zh"], &["en"], 1).await;
    gw.stop().await;
}

#[tokio::test]
async fn drained_node_gets_no_new_jobs() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.scheduler.dispatch_wait_ms = 300).await;
    let (mut node, mut client, session) = gw.node_and_client(4).await;
    client.utter(&session, 0).await;
    let job = node.expect("job_assign").await;
    node.send(json!({"type":"node_drain"})).await;
    eventually("drain applied", || async {
        let candidates = gw.state.store.candidates(gw.state.store.cell(0), "zh>en", &[], None).await.unwrap();
        candidates.is_empty()
    })
    .await;
    client.utter(&session, 1).await;
    // The in-flight job still finishes normally; utterance 1 fails, after 0 (results keep the
    // utterance order).
    node.answer(&job, "finished").await;
    assert_eq!(client.expect("translation_result").await["utterance_index"], 0);
    let error = client.expect("error").await;
    assert_eq!(
        (error["code"].as_str(), error["details"]["utterance_index"].as_u64()),
        (Some("NO_AVAILABLE_NODE"), Some(1))
    );
    gw.stop().await;
}
