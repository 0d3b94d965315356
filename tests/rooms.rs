//! Multi-language rooms: membership, fan-out through the room-routing policy, errors.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use switchboard::policy::Role;

/// A node serving every pair of en, zh, ja that answers each job with its target language.
fn polyglot(mut node: Peer) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(job) = node.try_recv(Duration::from_secs(20)).await {
            if job["type"] == "job_assign" {
                let tgt = job["tgt_lang"].as_str().unwrap().to_owned();
                node.answer(&job, &tgt).await;
            }
        }
    })
}

async fn member(gw: &TestGateway, tgt: &str) -> (Peer, String) {
    let mut client = gw.client().await;
    let session = client.init_one_way("en", tgt).await;
    (client, session)
}

async fn expect_members(peer: &mut Peer, count: usize) -> Value {
    let m = peer.expect("room_members").await;
    assert_eq!(m["members"].as_array().unwrap().len(), count, "{m}");
    m
}

async fn room_of_three(gw: &TestGateway) -> (Peer, String, Peer, Peer, String) {
    let (mut a, a_id) = member(gw, "en").await;
    a.send(json!({"type":"room_create","client_ts":1,"display_name":"Ann","preferred_lang":"en"})).await;
    let ack = a.expect("room_create_ack").await;
    let code = ack["room_code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 6);
    assert!(ack["room_id"].as_str().unwrap().starts_with("room-"));
    expect_members(&mut a, 1).await;
    let (mut b, _) = member(gw, "zh").await;
    b.send(json!({"type":"room_join","room_code":code,"display_name":"Bo","preferred_lang":"zh"})).await;
    b.expect("room_create_ack").await;
    expect_members(&mut b, 2).await;
    expect_members(&mut a, 2).await;
    let (mut c, _) = member(gw, "ja").await;
    c.send(json!({"type":"room_join","room_code":code,"preferred_lang":"ja"})).await;
    c.expect("room_create_ack").await;
    let members = expect_members(&mut c, 3).await;
    assert_eq!(members["members"][0]["display_name"], "Ann");
    expect_members(&mut a, 3).await;
    expect_members(&mut b, 3).await;
    (a, a_id, b, c, code)
}

#[tokio::test]
async fn a_room_utterance_reaches_each_listener_in_their_language() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |_| {}).await;
    let mut node = gw.node().await;
    node.register(&["en", "zh", "ja"], &["en", "zh", "ja"], 8).await;
    let _node = polyglot(node);
    let (mut a, a_id, mut b, mut c, code) = room_of_three(&gw).await;

    a.utter(&a_id, 0).await;
    let to_b = b.expect("translation_result").await;
    assert_eq!((to_b["text_translated"].as_str(), to_b["tgt_lang"].as_str()), (Some("zh"), Some("zh")));
    assert_eq!(to_b["speaker_session_id"], a_id.as_str());
    assert_eq!(to_b["room_code"], code.as_str());
    let to_c = c.expect("translation_result").await;
    assert_eq!(to_c["text_translated"], "ja");
    a.expect_silence(Duration::from_millis(300)).await;
    b.expect_silence(Duration::from_millis(100)).await;
    c.expect_silence(Duration::from_millis(100)).await;

    // The routing policy decides the fan-out: include-speaker adds a transcript for the speaker.
    gw.state.policies.load(Role::RoomRouting, &component("include-speaker"), "test").unwrap();
    a.utter(&a_id, 1).await;
    assert_eq!(a.expect("translation_result").await["text_translated"], "en");
    assert_eq!(b.expect("translation_result").await["text_translated"], "zh");
    assert_eq!(c.expect("translation_result").await["text_translated"], "ja");
    gw.stop().await;
}

#[tokio::test]
async fn leaving_updates_the_others_and_a_lone_speaker_falls_back_to_single_session() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.sessions.resume_grace_ms = 300).await;
    let mut node = gw.node().await;
    node.register(&["en", "zh", "ja"], &["en", "zh", "ja"], 8).await;
    let _node = polyglot(node);
    let (mut a, a_id, mut b, c, code) = room_of_three(&gw).await;
    b.send(json!({"type":"room_leave","room_code":code})).await;
    expect_members(&mut b, 2).await;
    expect_members(&mut a, 2).await;
    // A dropped session stays a member for the resume grace, then leaves.
    let dropped = std::time::Instant::now();
    drop(c);
    expect_members(&mut a, 1).await;
    assert!(dropped.elapsed() >= Duration::from_millis(300), "left before the grace was over");
    // Nobody else with a preferred language: the speaker's own target, to the speaker.
    a.utter(&a_id, 0).await;
    let result = a.expect("translation_result").await;
    assert_eq!(result["tgt_lang"], "en");
    assert!(result["room_code"].is_null(), "a single-session task: {result}");
    b.expect_silence(Duration::from_millis(200)).await;
    gw.stop().await;
}

#[tokio::test]
async fn room_errors() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| {
        c.room_max_members = 2;
        c.room_failed_joins_per_minute = 3;
    })
    .await;
    let (mut a, _) = member(&gw, "en").await;
    a.send(json!({"type":"room_create","client_ts":1,"preferred_lang":"en"})).await;
    let code = a.expect("room_create_ack").await["room_code"].as_str().unwrap().to_owned();
    expect_members(&mut a, 1).await;
    a.send(json!({"type":"room_create","client_ts":2})).await;
    assert_eq!(a.expect("room_error").await["code"], "ALREADY_IN_ROOM");
    a.send(json!({"type":"room_set_lang","room_code":"000000","preferred_lang":"zh"})).await;
    assert_eq!(a.expect("room_error").await["code"], "ROOM_NOT_FOUND");
    a.send(json!({"type":"room_set_lang","room_code":code,"preferred_lang":"zh"})).await;
    let members = expect_members(&mut a, 1).await;
    assert_eq!(members["members"][0]["preferred_lang"], "zh");

    let (mut b, _) = member(&gw, "zh").await;
    b.send(json!({"type":"room_join","room_code":code})).await;
    b.expect("room_create_ack").await;
    expect_members(&mut b, 2).await;
    let (mut c, _) = member(&gw, "ja").await;
    c.send(json!({"type":"room_join","room_code":code})).await;
    assert_eq!(c.expect("room_error").await["code"], "ROOM_FULL");
    c.send(json!({"type":"room_join","room_code":"12ab"})).await;
    assert_eq!(c.expect("room_error").await["code"], "INVALID_ROOM_CODE");
    let unused = if code == "999999" { "999998" } else { "999999" };
    for _ in 0..2 {
        c.send(json!({"type":"room_join","room_code":unused})).await;
        assert_eq!(c.expect("room_error").await["code"], "ROOM_NOT_FOUND");
    }
    // Three failures this minute: even a valid code is refused now.
    c.send(json!({"type":"room_join","room_code":code})).await;
    assert_eq!(c.expect("room_error").await["code"], "RATE_LIMITED");
    c.send(json!({"type":"room_leave","room_code":code})).await;
    assert_eq!(c.expect("room_error").await["code"], "ROOM_NOT_FOUND");
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_room_expires_and_its_members_are_told() {
    let redis = redis();
    let g1 = TestGateway::start(&redis, |c| c.room_idle_ttl_ms = 500).await;
    let g2 = TestGateway::start(&redis, |c| c.room_idle_ttl_ms = 500).await;
    let mut node = g1.node().await;
    node.register(&["en", "zh"], &["en", "zh"], 8).await;
    let _node = polyglot(node);
    let (mut a, a_id) = member(&g1, "en").await;
    a.send(json!({"type":"room_create","client_ts":1,"preferred_lang":"en"})).await;
    let code = a.expect("room_create_ack").await["room_code"].as_str().unwrap().to_owned();
    expect_members(&mut a, 1).await;
    let (mut b, _) = member(&g2, "zh").await;
    b.send(json!({"type":"room_join","room_code":code,"preferred_lang":"zh"})).await;
    b.expect("room_create_ack").await;
    expect_members(&mut b, 2).await;
    expect_members(&mut a, 2).await;

    // Nobody speaks: both members, on two gateways, hear that the room closed.
    for peer in [&mut a, &mut b] {
        let expired = peer.expect("room_expired").await;
        assert_eq!(expired["room_code"], code.as_str());
    }
    b.send(json!({"type":"room_join","room_code":code})).await;
    assert_eq!(b.expect("room_error").await["code"], "ROOM_NOT_FOUND");
    // The membership is over: a's next utterance is a single-session one, and a can open a room.
    a.utter(&a_id, 0).await;
    let result = a.expect("translation_result").await;
    assert!(result["room_code"].is_null(), "{result}");
    a.send(json!({"type":"room_create","client_ts":2,"preferred_lang":"en"})).await;
    a.expect("room_create_ack").await;
    g1.stop().await;
    g2.stop().await;
}
