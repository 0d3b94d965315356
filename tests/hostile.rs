//! A corpus of malformed and hostile input for both sockets and the admin API, each case with the
//! answer it must get. After every case the socket must still answer (a probe follows each one),
//! and after the corpus the gateway must still serve a real utterance end to end.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

/// What a case must get back before the probe's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// One `error` with this code.
    Error(&'static str),
    /// One `room_error` with this code.
    RoomError(&'static str),
    /// Nothing at all.
    Silent,
}

struct Case {
    what: String,
    frame: Message,
    expect: Expect,
}

fn case(what: impl Into<String>, frame: impl Into<String>, expect: Expect) -> Case {
    Case { what: what.into(), frame: Message::Text(frame.into().into()), expect }
}

use Expect::*;

/// Frames that are not valid messages of either socket, whatever its state.
fn syntax_cases() -> Vec<Case> {
    let invalid = Error("INVALID_MESSAGE");
    let deep_array = "[".repeat(100_000);
    let deep_object = "{\"a\":".repeat(20_000);
    let mut cases = vec![
        case("empty frame", "", invalid),
        case("whitespace", "   \n\t", invalid),
        case("open brace", "{", invalid),
        case("close brace", "}", invalid),
        case("empty array", "[]", invalid),
        case("array of numbers", "[1,2,3]", invalid),
        case("null", "null", invalid),
        case("true", "true", invalid),
        case("number", "42", invalid),
        case("negative number", "-1e999", invalid),
        case("string", "\"utterance\"", invalid),
        case("no type", "{}", invalid),
        case("type cut off", "{\"type\":", invalid),
        case("type number", "{\"type\":5}", invalid),
        case("type null", "{\"type\":null}", invalid),
        case("type array", "{\"type\":[\"utterance\"]}", invalid),
        case("type object", "{\"type\":{}}", invalid),
        case("type empty", "{\"type\":\"\"}", invalid),
        case("type upper case", "{\"type\":\"UTTERANCE\"}", invalid),
        case("type with spaces", "{\"type\":\" utterance \"}", invalid),
        case("unknown type", "{\"type\":\"warp_drive\"}", invalid),
        case("huge unknown type", format!("{{\"type\":\"{}\"}}", "x".repeat(200_000)), invalid),
        case("deeply nested array", deep_array.clone(), invalid),
        case("deeply nested object", deep_object, invalid),
        case(
            "deep value in a known message",
            format!("{{\"type\":\"room_leave\",\"room_code\":{deep_array}"),
            invalid,
        ),
        case("double braces", "{{}}", invalid),
        case("single quotes", "{'type':'client_heartbeat'}", invalid),
        case("comment", "{\"type\":\"client_heartbeat\" /* hi */}", invalid),
        case("trailing garbage", "{\"type\":\"room_leave\",\"room_code\":\"1\"} trailing", invalid),
        case("two objects", "{\"type\":\"x\"}{\"type\":\"y\"}", invalid),
        case("byte order mark", "\u{feff}{\"type\":\"room_leave\"}", invalid),
        case("NaN literal", "{\"type\":\"room_leave\",\"room_code\":NaN}", invalid),
        case("lone surrogate", "{\"type\":\"room_leave\",\"room_code\":\"\\ud800\"}", invalid),
        case("bad escape", "{\"type\":\"room_leave\",\"room_code\":\"\\x41\"}", invalid),
        case("control character", "{\"type\":\"room_leave\",\"room_code\":\"a\u{1}b\"}", invalid),
        case(
            "duplicate type",
            "{\"type\":\"room_leave\",\"type\":\"room_join\",\"room_code\":\"123456\"}",
            invalid,
        ),
        case("NUL bytes", "\0\0\0\0", invalid),
    ];
    cases.push(Case {
        what: "binary frame".into(),
        frame: Message::Binary(vec![0, 159, 146, 150].into()),
        expect: invalid,
    });
    cases.push(Case {
        what: "empty binary frame".into(),
        frame: Message::Binary(Vec::new().into()),
        expect: invalid,
    });
    cases
}

/// Cases for a client socket with an open session `s`.
fn client_cases(s: &str) -> Vec<Case> {
    let invalid = Error("INVALID_MESSAGE");
    let mut cases = syntax_cases();
    // A valid utterance cut short at many places.
    let whole = json!({"type":"utterance","session_id":s,"utterance_index":0,"audio":"AAAA"}).to_string();
    for cut in (1..whole.len()).step_by(6) {
        cases.push(case(format!("utterance cut at {cut}"), &whole[..cut], invalid));
    }
    let utterance = |field: &str, value: Value| {
        let mut m = json!({"type":"utterance","session_id":s,"utterance_index":0,"audio":"AAAA"});
        m[field] = value;
        m.to_string()
    };
    let bad_fields: Vec<(&str, Value, Expect)> = vec![
        ("session_id", json!(5), invalid),
        ("session_id", json!([]), invalid),
        ("session_id", json!({}), invalid),
        ("session_id", json!(null), Error("INVALID_SESSION")),
        ("session_id", json!("s-00000000"), Error("INVALID_SESSION")),
        ("session_id", json!("x".repeat(100_000)), Error("INVALID_SESSION")),
        ("utterance_index", json!(-1), invalid),
        ("utterance_index", json!(1.5), invalid),
        ("utterance_index", json!("0"), invalid),
        ("utterance_index", json!(null), invalid),
        ("utterance_index", json!([0]), invalid),
        ("utterance_index", json!(true), invalid),
        ("audio", json!(5), invalid),
        ("audio", json!([1, 2]), invalid),
        ("audio", json!("***"), invalid),
        ("audio", json!("A"), invalid),
        ("audio", json!("AAA=A"), invalid),
        ("audio", json!("ÄÖÜ="), invalid),
        ("audio", json!("A".repeat(8_192)), Error("PAYLOAD_TOO_LARGE")),
        ("text", json!(5), invalid),
        ("src_lang", json!(5), invalid),
        ("src_lang", json!("e n"), invalid),
        ("src_lang", json!(""), invalid),
        ("src_lang", json!("x".repeat(100)), invalid),
        ("src_lang", json!("<script>"), invalid),
        ("tgt_lang", json!("zh>en"), invalid),
        ("tgt_lang", json!("zh,en"), invalid),
        ("tgt_lang", json!({}), invalid),
        ("sample_rate", json!(-1), invalid),
        ("sample_rate", json!("16000"), invalid),
        ("sample_rate", json!(4_294_967_296u64), invalid),
        ("pipeline", json!("asr"), invalid),
        ("pipeline", json!(5), invalid),
        ("pipeline", json!({"use_asr":"yes"}), invalid),
        ("manual_cut", json!("yes"), invalid),
        ("manual_cut", json!(2), invalid),
        ("dialect", json!(5), invalid),
        ("trace_id", json!([]), invalid),
    ];
    for (field, value, expect) in bad_fields {
        let shown: String = value.to_string().chars().take(24).collect();
        cases.push(case(format!("utterance.{field} = {shown}"), utterance(field, value), expect));
    }
    // Raw numbers serde_json cannot hold.
    let raw =
        format!("{{\"type\":\"utterance\",\"session_id\":\"{s}\",\"audio\":\"AAAA\",\"utterance_index\":");
    for number in ["18446744073709551616", "1e400", "-0.0", "0x10", "01", "+1", "1e2"] {
        cases.push(case(format!("utterance_index {number}"), format!("{raw}{number}}}"), invalid));
    }
    cases.push(case(
        "utterance without audio or text",
        json!({"type":"utterance","session_id":s,"utterance_index":0}).to_string(),
        invalid,
    ));
    cases.push(case(
        "utterance without index",
        json!({"type":"utterance","session_id":s,"audio":"AAAA"}).to_string(),
        invalid,
    ));
    let chunk = |field: &str, value: Value| {
        let mut m = json!({"type":"audio_chunk","session_id":s,"seq":1,"payload":"AAAA"});
        m[field] = value;
        m.to_string()
    };
    for (field, value, expect) in [
        ("seq", json!(-1), invalid),
        ("seq", json!("1"), invalid),
        ("seq", json!(null), invalid),
        ("seq", json!(1.5), invalid),
        ("payload", json!(5), invalid),
        ("payload", json!("***"), invalid),
        ("payload", json!("A".repeat(8_000)), Error("PAYLOAD_TOO_LARGE")),
        ("is_final", json!("yes"), invalid),
        ("session_id", json!("s-FFFFFFFF"), Error("INVALID_SESSION")),
        ("client_timestamp_ms", json!(-5), invalid),
    ] {
        let shown: String = value.to_string().chars().take(24).collect();
        cases.push(case(format!("audio_chunk.{field} = {shown}"), chunk(field, value), expect));
    }
    cases.push(case(
        "audio_chunk without seq",
        json!({"type":"audio_chunk","session_id":s}).to_string(),
        invalid,
    ));

    let room = |m: Value| m.to_string();
    let room_cases: Vec<(&str, Value, Expect)> = vec![
        ("create: display_name number", json!({"type":"room_create","display_name":5}), invalid),
        ("create: preferred_lang number", json!({"type":"room_create","preferred_lang":5}), invalid),
        (
            "create: preferred_lang invalid",
            json!({"type":"room_create","preferred_lang":"e n"}),
            RoomError("INVALID_MESSAGE"),
        ),
        ("join: code number", json!({"type":"room_join","room_code":123456}), invalid),
        ("join: code null", json!({"type":"room_join","room_code":null}), RoomError("INVALID_ROOM_CODE")),
        ("join: no code", json!({"type":"room_join"}), RoomError("INVALID_ROOM_CODE")),
        ("join: 5 digits", json!({"type":"room_join","room_code":"12345"}), RoomError("INVALID_ROOM_CODE")),
        ("join: 7 digits", json!({"type":"room_join","room_code":"1234567"}), RoomError("INVALID_ROOM_CODE")),
        ("join: letters", json!({"type":"room_join","room_code":"abcdef"}), RoomError("INVALID_ROOM_CODE")),
        ("join: empty", json!({"type":"room_join","room_code":""}), RoomError("INVALID_ROOM_CODE")),
        (
            "join: wide digits",
            json!({"type":"room_join","room_code":"１２３４５６"}),
            RoomError("INVALID_ROOM_CODE"),
        ),
        ("join: NUL", json!({"type":"room_join","room_code":"12345\u{0}"}), RoomError("INVALID_ROOM_CODE")),
        (
            "join: huge",
            json!({"type":"room_join","room_code":"1".repeat(100_000)}),
            RoomError("INVALID_ROOM_CODE"),
        ),
        ("join: key pattern", json!({"type":"room_join","room_code":"*"}), RoomError("INVALID_ROOM_CODE")),
        ("join: hash tag", json!({"type":"room_join","room_code":"}:x{"}), RoomError("INVALID_ROOM_CODE")),
        ("join: unknown room", json!({"type":"room_join","room_code":"000000"}), RoomError("ROOM_NOT_FOUND")),
        (
            "join: bad language",
            json!({"type":"room_join","room_code":"000001","preferred_lang":"e n"}),
            RoomError("INVALID_MESSAGE"),
        ),
        ("leave: no code", json!({"type":"room_leave"}), RoomError("ROOM_NOT_FOUND")),
        ("leave: code number", json!({"type":"room_leave","room_code":5}), invalid),
        (
            "leave: not a member",
            json!({"type":"room_leave","room_code":"123456"}),
            RoomError("ROOM_NOT_FOUND"),
        ),
        (
            "set_lang: not a member",
            json!({"type":"room_set_lang","room_code":"123456","preferred_lang":"en"}),
            RoomError("ROOM_NOT_FOUND"),
        ),
        (
            "set_lang: language number",
            json!({"type":"room_set_lang","room_code":"123456","preferred_lang":5}),
            invalid,
        ),
        ("session_init again", json!({"type":"session_init","tgt_lang":"en"}), invalid),
        (
            "session_init resume again",
            json!({"type":"session_init","resume_session_id":s,"resume_token":"x"}),
            invalid,
        ),
        ("session_close reason number", json!({"type":"session_close","reason":5}), invalid),
        ("node message on a client socket", json!({"type":"job_result","job_id":"job-1"}), invalid),
        ("node_register on a client socket", json!({"type":"node_register"}), invalid),
    ];
    for (what, message, expect) in room_cases {
        cases.push(case(what, room(message), expect));
    }
    cases
}

/// Cases for a registered node `n`.
fn node_cases(n: &str) -> Vec<Case> {
    let invalid = Error("INVALID_MESSAGE");
    let mut cases = syntax_cases();
    let list: Vec<(&str, Value, Expect)> = vec![
        (
            "heartbeat: other node",
            json!({"type":"node_heartbeat","node_id":"node-other","resource_usage":{}}),
            Error("NODE_NOT_REGISTERED"),
        ),
        (
            "heartbeat: usage string",
            json!({"type":"node_heartbeat","node_id":n,"resource_usage":"x"}),
            invalid,
        ),
        (
            "heartbeat: cpu string",
            json!({"type":"node_heartbeat","node_id":n,"resource_usage":{"cpu_percent":"x"}}),
            invalid,
        ),
        (
            "heartbeat: capabilities number",
            json!({"type":"node_heartbeat","node_id":n,"resource_usage":{},"capability_by_type":5}),
            invalid,
        ),
        (
            "heartbeat: languages garbage",
            json!({"type":"node_heartbeat","node_id":n,"resource_usage":{},"language_capabilities":{"asr_languages":"zh"}}),
            invalid,
        ),
        (
            "heartbeat: invalid language",
            json!({"type":"node_heartbeat","node_id":n,"resource_usage":{},"language_capabilities":{"asr_languages":["z h"],"semantic_languages":["en"]}}),
            invalid,
        ),
        ("heartbeat: node_id number", json!({"type":"node_heartbeat","node_id":5}), invalid),
        ("ack: job_id number", json!({"type":"job_ack","job_id":5}), invalid),
        ("ack: no job_id", json!({"type":"job_ack"}), invalid),
        ("ack: attempt negative", json!({"type":"job_ack","job_id":"job-1","attempt_id":-1}), invalid),
        ("ack: unknown job", json!({"type":"job_ack","job_id":"job-unknown"}), Silent),
        ("started: unknown job", json!({"type":"job_started","job_id":"job-unknown","attempt_id":1}), Silent),
        (
            "partial: unknown job",
            json!({"type":"asr_partial","job_id":"job-unknown","text":"hi","is_final":false}),
            Silent,
        ),
        ("partial: text number", json!({"type":"asr_partial","job_id":"job-1","text":5}), invalid),
        (
            "partial: is_final string",
            json!({"type":"asr_partial","job_id":"job-1","text":"a","is_final":"no"}),
            invalid,
        ),
        (
            "result: unknown job",
            json!({"type":"job_result","job_id":"job-unknown","success":true,"text_asr":"a","text_translated":"b"}),
            Silent,
        ),
        ("result: success string", json!({"type":"job_result","job_id":"job-1","success":"yes"}), invalid),
        ("result: no job_id", json!({"type":"job_result","success":true}), invalid),
        (
            "result: attempt string",
            json!({"type":"job_result","job_id":"job-1","attempt_id":"1","success":true}),
            invalid,
        ),
        (
            "result: attempt overflow",
            json!({"type":"job_result","job_id":"job-1","attempt_id":4_294_967_296u64,"success":true}),
            invalid,
        ),
        (
            "result: text number",
            json!({"type":"job_result","job_id":"job-1","success":true,"text_translated":5}),
            invalid,
        ),
        (
            "result: huge unknown job id",
            json!({"type":"job_result","job_id":"j".repeat(100_000),"success":true}),
            Silent,
        ),
        ("result: key pattern job id", json!({"type":"job_result","job_id":"*","success":true}), Silent),
        ("result: hash tag job id", json!({"type":"job_result","job_id":"}:node:x{","success":true}), Silent),
        (
            "result: failure of unknown job",
            json!({"type":"job_result","job_id":"job-unknown","success":false,"error":{"code":"X","message":"y"}}),
            Silent,
        ),
        (
            "result: error string",
            json!({"type":"job_result","job_id":"job-1","success":false,"error":"boom"}),
            invalid,
        ),
        ("node_error: code number", json!({"type":"node_error","code":5,"message":"x"}), invalid),
        ("node_error: valid", json!({"type":"node_error","code":"GPU_OOM","message":"x"}), Silent),
        (
            "client message on a node socket",
            json!({"type":"utterance","session_id":"s-1","utterance_index":0}),
            invalid,
        ),
        ("session_init on a node socket", json!({"type":"session_init","tgt_lang":"en"}), invalid),
    ];
    for (what, message, expect) in list {
        cases.push(case(what, message.to_string(), expect));
    }
    cases
}

/// Sends each case followed by `probe(i)`, collects what arrives before the probe's answer and
/// checks it. Returns the failures.
async fn run(
    peer: &mut Peer,
    cases: Vec<Case>,
    probe: impl Fn(usize) -> Value,
    is_answer: impl Fn(&Value, usize) -> bool,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, c) in cases.into_iter().enumerate() {
        peer.send_raw(c.frame).await;
        peer.send(probe(i)).await;
        let mut got = Vec::new();
        loop {
            let m =
                peer.try_recv(WAIT).await.unwrap_or_else(|| panic!("socket closed after case {:?}", c.what));
            if is_answer(&m, i) {
                break;
            }
            if m["type"] != "ui_event" {
                got.push(m);
            }
        }
        let ok = match (c.expect, got.as_slice()) {
            (Silent, []) => true,
            (Error(code), [m]) => m["type"] == "error" && m["code"] == code,
            (RoomError(code), [m]) => m["type"] == "room_error" && m["code"] == code,
            _ => false,
        };
        if !ok {
            let got: Vec<String> = got.iter().map(|m| m.to_string().chars().take(160).collect()).collect();
            failures.push(format!("{}: expected {:?}, got {:?}", c.what, c.expect, got));
        }
    }
    failures
}

async fn hostile_gateway(redis: &switchboard::devredis::RedisServer) -> TestGateway {
    TestGateway::start(redis, |c| {
        c.max_payload_bytes = 4_096;
        c.room_failed_joins_per_minute = 100_000;
        c.max_messages_per_second = 0;
    })
    .await
}

#[tokio::test]
async fn hostile_frames_on_both_sockets_get_their_answers_and_break_nothing() {
    let redis = redis();
    let gw = hostile_gateway(&redis).await;
    let mut node = gw.node().await;
    let node_id = node.register(&["zh"], &["en"], 2).await["node_id"].as_str().unwrap().to_owned();
    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;

    let client_cases = client_cases(&session);
    let node_cases = node_cases(&node_id);
    let total = client_cases.len() + node_cases.len();
    assert!(total >= 200, "the corpus has {total} cases");

    let heartbeat = |_| json!({"type":"client_heartbeat","session_id":""});
    let mut failures =
        run(&mut client, client_cases, heartbeat, |m, _| m["type"] == "server_heartbeat").await;
    let probe = |i: usize| json!({"type": format!("probe-{i}")});
    let is_probe = |m: &Value, i: usize| {
        m["type"] == "error" && m["message"].as_str().is_some_and(|t| t.contains(&format!("`probe-{i}`")))
    };
    failures.extend(run(&mut node, node_cases, probe, is_probe).await);
    assert!(failures.is_empty(), "{} of {total} cases failed:\n{}", failures.len(), failures.join("\n"));

    // The same sockets still do their work.
    client.utter(&session, 0).await;
    let job = node.expect("job_assign").await;
    node.answer(&job, "still here").await;
    assert_eq!(client.expect("translation_result").await["text_translated"], "still here");
    gw.stop().await;
}

#[tokio::test]
async fn frames_that_break_the_websocket_close_only_their_socket() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.max_frame_bytes = 1 << 20).await;
    let mut bystander = gw.client().await;
    let session = bystander.init_one_way("zh", "en").await;

    // A text frame that is not UTF-8.
    let mut bad = gw.client().await;
    let header = FrameHeader { opcode: OpCode::Data(Data::Text), ..FrameHeader::default() };
    bad.send_raw(Message::Frame(Frame::from_payload(header, vec![0xff, 0xfe, 0xfd].into()))).await;
    let code = bad.expect_close().await;
    assert!(code.is_none_or(|code| code == 1007 || code == 1002), "closed with {code:?}");
    // A 10 MB frame over a 1 MB limit.
    let mut big = gw.client().await;
    // The gateway may reset the connection before the client finished writing; when the close
    // frame gets through, it says 1009.
    if big.try_send_raw(Message::Text("x".repeat(10 << 20).into())).await {
        let code = big.expect_close().await;
        assert!(code.is_none_or(|code| code == 1009), "closed with {code:?}");
    }

    bystander.send(json!({"type":"client_heartbeat","session_id":session})).await;
    bystander.expect("server_heartbeat").await;
    gw.stop().await;
}

#[tokio::test]
async fn a_flood_is_rate_limited_and_the_socket_recovers() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.max_messages_per_second = 50).await;
    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;
    let flood = 2_000;
    let started = std::time::Instant::now();
    for _ in 0..flood {
        client.send(json!({"type":"client_heartbeat","session_id":session})).await;
    }
    let (mut answered, mut limited) = (0, 0);
    while let Some(m) = client.try_recv(Duration::from_millis(500)).await {
        match m["type"].as_str() {
            Some("server_heartbeat") => answered += 1,
            Some("error") if m["code"] == "RATE_LIMITED" => limited += 1,
            _ => panic!("unexpected {m}"),
        }
    }
    // A burst of 50, then 50 a second while the flood lasted (however slow this machine is); the
    // session_init took one of the burst, so a flood sent faster than the refill gets 49.
    let seconds = started.elapsed().as_secs_f64();
    let allowed = 50.0 + 50.0 * seconds;
    assert!(
        (49.0..=allowed + 5.0).contains(&(answered as f64)),
        "{answered} of {flood} answered in {seconds:.1} s"
    );
    assert!(
        limited >= 1 && limited as f64 <= seconds + 2.0,
        "{limited} RATE_LIMITED notices in {seconds:.1} s"
    );
    assert_eq!(gw.metric("messages_rate_limited"), flood - answered);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    client.send(json!({"type":"client_heartbeat","session_id":session})).await;
    client.expect("server_heartbeat").await;
    gw.stop().await;
}

#[tokio::test]
async fn connections_per_address_are_limited() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.max_connections_per_address = 3).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(gw.client().await);
    }
    let url = format!("{}/ws/session", gw.url);
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
    assert_eq!(gw.metric("connections_refused"), 1);
    open.pop().unwrap().close().await;
    eventually("a freed place", || async { tokio_tungstenite::connect_async(url.as_str()).await.is_ok() })
        .await;
    gw.stop().await;
}

/// An admin API request: method, path, token, body, expected status.
type AdminCase<'a> = (&'a str, &'a str, Option<&'a str>, &'a [u8], u16);

#[tokio::test]
async fn hostile_admin_requests_get_their_status() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.admin_token = Some("secret-token".into())).await;
    let policy = component("least-loaded");
    let big = vec![0u8; 33 << 20];
    let trap = component("hostile-trap");
    let cases: Vec<AdminCase> = vec![
        ("GET", "/admin/policies", None, b"", 401),
        ("GET", "/admin/policies", Some("secret-token"), b"", 200),
        ("GET", "/metrics", None, b"", 200),
        ("GET", "/livez", None, b"", 200),
        ("GET", "/nope", None, b"", 404),
        ("GET", "/admin/policies/../../etc/passwd", None, b"", 404),
        ("POST", "/admin/policies", Some("secret-token"), b"", 405),
        ("DELETE", "/metrics", None, b"", 405),
        ("PUT", "/admin/policies/node-selection", None, &policy, 401),
        ("PUT", "/admin/policies/node-selection", Some("wrong"), &policy, 401),
        ("PUT", "/admin/policies/node-selection", Some("secret-token-but-longer"), &policy, 401),
        ("PUT", "/admin/policies/node-selection", Some(""), &policy, 401),
        ("PUT", "/admin/policies/warp-drive", Some("secret-token"), &policy, 404),
        ("PUT", "/admin/policies/node-selection", Some("secret-token"), b"", 422),
        ("PUT", "/admin/policies/node-selection", Some("secret-token"), b"not wasm at all", 422),
        ("PUT", "/admin/policies/node-selection", Some("secret-token"), b"\0asm\x01\0\0\0", 422),
        ("PUT", "/admin/policies/node-selection", Some("secret-token"), &trap, 422),
        ("PUT", "/admin/policies/node-selection", Some("secret-token"), &big, 413),
        ("PUT", "/admin/policies/node-selection?mode=sideways", Some("secret-token"), &policy, 400),
        ("POST", "/admin/policies/room-routing/rollback", Some("secret-token"), b"", 409),
        ("POST", "/admin/policies/warp-drive/rollback", Some("secret-token"), b"", 404),
        ("DELETE", "/admin/policies/warp-drive/shadow", Some("secret-token"), b"", 404),
        ("POST", "/admin/policies/node-selection/rollback", None, b"", 401),
        ("PUT", "/admin/policies/node-selection?mode=shadow", Some("secret-token"), &policy, 200),
        ("DELETE", "/admin/policies/node-selection/shadow", Some("secret-token"), b"", 200),
    ];
    let mut failures = Vec::new();
    for (method, path, token, body, status) in &cases {
        let (got, answer) = admin(&gw, method, path, *token, body).await;
        if got != *status {
            failures.push(format!(
                "{method} {path} (token {token:?}, {} bytes): expected {status}, got {got} {answer}",
                body.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Still serving.
    assert_eq!(admin(&gw, "GET", "/admin/policies", Some("secret-token"), b"").await.0, 200);
    gw.stop().await;
}
