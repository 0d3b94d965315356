//! Compatibility with the fleet this gateway replaces: its web client's recorded frames
//! (`../shared/fixtures/fleet-web-client/`, copied to `tests/fixtures/`) replayed against a
//! gateway, the fleet node's message shapes, and two browser pages on two gateways doing what the
//! fleet's client does (Opus chunks from WebCodecs, a room, WebRTC through the gateways, raw-voice
//! preference, playback reports).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::*;
use serde_json::{Value, json};

/// The recorded frames of one fixture: (direction, message).
fn fixture(name: &str) -> Vec<(String, Value)> {
    let path = format!("{}/tests/fixtures/fleet-web-client/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            (v["dir"].as_str().unwrap().to_owned(), v["msg"].clone())
        })
        .collect()
}

/// The audio of a recorded chunk: the fixture keeps only its length (`<b64 N chars, …>`), so it is
/// rebuilt as what the client sent, 13 length-prefixed 20 ms Opus packets (SILK wideband, TOC
/// config 9) of the same total size.
fn opus_chunk(elided: &str) -> String {
    if elided.is_empty() {
        return String::new();
    }
    let b64_len: usize = elided.trim_start_matches("<b64 ").split(' ').next().unwrap().parse().unwrap();
    let bytes = b64_len * 3 / 4;
    let per_packet = (bytes / 13).max(4);
    let mut audio = Vec::with_capacity(bytes);
    for _ in 0..13 {
        audio.extend_from_slice(&((per_packet - 2) as u16).to_le_bytes());
        audio.push(9 << 3);
        audio.extend(std::iter::repeat_n(0x5A, per_packet - 3));
    }
    BASE64.encode(audio)
}

/// A client that replays a fixture's `sent` frames, with the live session id, room code and
/// members put in place of the recorded ones.
struct Replay {
    peer: Peer,
    session: String,
    recorded_session: String,
    received: Vec<Value>,
}

impl Replay {
    async fn open(gw: &TestGateway, frames: &[(String, Value)]) -> Self {
        let mut peer = gw.client().await;
        let (_, init) = frames.iter().find(|(d, m)| d == "sent" && m["type"] == "session_init").unwrap();
        peer.send(init.clone()).await;
        let ack = peer.expect("session_init_ack").await;
        assert_eq!(ack["negotiated_codec"], "opus", "the fleet client's audio is Opus: {ack}");
        assert_eq!(ack["negotiated_audio_format"], "opus");
        assert_eq!(ack["negotiated_sample_rate"], 16000);
        let (_, recorded_ack) =
            frames.iter().find(|(d, m)| d == "recv" && m["type"] == "session_init_ack").unwrap();
        Self {
            peer,
            session: ack["session_id"].as_str().unwrap().to_owned(),
            recorded_session: recorded_ack["session_id"].as_str().unwrap().to_owned(),
            received: Vec::new(),
        }
    }

    /// Sends one recorded frame with live ids; `names` maps recorded ids to live ones.
    async fn send(&mut self, recorded: &Value, names: &BTreeMap<String, String>) {
        let mut frame = recorded.clone();
        let obj = frame.as_object_mut().unwrap();
        for field in ["session_id", "to", "target_session_id", "room_code"] {
            if let Some(old) = obj.get(field).and_then(Value::as_str)
                && let Some(new) = names.get(old).or((old == self.recorded_session).then_some(&self.session))
            {
                obj.insert(field.into(), Value::String(new.clone()));
            }
        }
        if obj["type"] == "audio_chunk" {
            let payload = opus_chunk(obj["payload"].as_str().unwrap_or(""));
            obj.insert("payload".into(), Value::String(payload));
        }
        self.peer.send(frame).await;
    }

    /// Reads what arrives within `wait`, keeping it; panics on an `error` frame.
    async fn drain(&mut self, wait: Duration) {
        while let Some(m) = self.peer.try_recv(wait).await {
            assert_ne!(m["type"], "error", "the fleet's client shows every error frame as an alert: {m}");
            self.received.push(m);
        }
    }

    async fn until(&mut self, what: &str, done: impl Fn(&[Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done(&self.received) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.received
            );
            if let Some(m) = self.peer.try_recv(Duration::from_millis(200)).await {
                assert_ne!(m["type"], "error", "the fleet's client shows every error frame as an alert: {m}");
                self.received.push(m);
            }
        }
    }

    fn of(&self, kind: &str) -> Vec<&Value> {
        self.received.iter().filter(|m| m["type"] == kind).collect()
    }
}

/// A node in the fleet node's shapes (`installed_models`, `capability_schema_version`, heartbeats
/// with metrics, `job_ack`/`job_started`, `asr_partial`, group fields in results) that answers
/// every job and records the `job_assign`s. It also sends the messages a fleet node may send
/// unprompted (`node_error`, `error`, `node_control`), none of which may be refused.
async fn fleet_node(gw: &TestGateway, languages: &[&str]) -> tokio::task::JoinHandle<Vec<Value>> {
    let mut node = gw.node().await;
    node.send(json!({
        "type":"node_register","node_id":null,"version":"2.1.0","capability_schema_version":"2.0",
        "platform":"windows","hardware":{"cpu_cores":16,"memory_gb":64,"gpus":[{"name":"RTX 4090","memory_gb":24}]},
        "installed_models":[{"model_id":"whisper-large-v3","kind":"asr","src_lang":null,"tgt_lang":null,"dialect":null,"version":"1"}],
        "installed_services":[{"service_id":"faster-whisper-vad","type":"asr","device":"gpu","status":"running","version":"1.0"},
                              {"service_id":"nmt-m2m100","type":"nmt","device":"gpu","status":"running"},
                              {"service_id":"piper-tts","type":"tts","device":"gpu","status":"running"}],
        "capability_by_type":[{"type":"asr","ready":true,"ready_impl_ids":["faster-whisper-vad"]},
                              {"type":"nmt","ready":true},{"type":"tts","ready":true},
                              {"type":"semantic","ready":false,"reason":"not installed"}],
        "features_supported":{"emotion_detection":false,"speaker_identification":false,"speech_rate_detection":true},
        "advanced_features":["streaming_asr"],"accept_public_jobs":true,
        "language_capabilities":{"asr_languages":languages,"tts_languages":languages,"semantic_languages":languages,"semantic_core_ready":true},
        "max_concurrent_jobs":8
    }))
    .await;
    let ack = node.expect("node_register_ack").await;
    let node_id = ack["node_id"].as_str().unwrap().to_owned();
    tokio::spawn(async move {
        let mut jobs = Vec::new();
        let mut idle = Duration::ZERO;
        node.send(json!({"type":"node_error","node_id":node_id,"code":"GPU_WARM","message":"warming up","details":{"gpu":0}})).await;
        node.send(json!({"type":"error","code":"INVALID_MESSAGE","message":"unexpected frame"})).await;
        node.send(json!({"type":"node_control","command":"reload_config","reason":"echo"})).await;
        while idle < Duration::from_secs(6) {
            match node.try_recv(Duration::from_millis(250)).await {
                Some(job) if job["type"] == "job_assign" => {
                    idle = Duration::ZERO;
                    let ids = json!({"job_id":job["job_id"],"attempt_id":job["attempt_id"],"node_id":node_id,
                        "session_id":job["session_id"],"trace_id":job["trace_id"]});
                    let mut ack = ids.clone();
                    ack["type"] = "job_ack".into();
                    node.send(ack).await;
                    let mut started = ids.clone();
                    started["type"] = "job_started".into();
                    node.send(started).await;
                    node.send(json!({"type":"asr_partial","job_id":job["job_id"],"node_id":node_id,
                        "session_id":job["session_id"],"utterance_index":job["utterance_index"],
                        "text":"…","is_final":false,"trace_id":job["trace_id"]}))
                        .await;
                    let mut result = job_result(&job, &format!("tr:{}", job["utterance_index"]));
                    result["node_id"] = node_id.clone().into();
                    result["group_id"] = "node-side-group".into();
                    result["part_index"] = 0.into();
                    result["asr_quality_level"] = "good".into();
                    node.send(result).await;
                    jobs.push(job);
                }
                Some(m) => assert_ne!(m["type"], "error", "a fleet node's message was refused: {m}"),
                None => {
                    idle += Duration::from_millis(250);
                    node.send(json!({"type":"node_heartbeat","node_id":node_id,"timestamp":protocol_now(),
                        "resource_usage":{"cpu_percent":12.5,"gpu_percent":40.0,"gpu_mem_percent":55.0,"mem_percent":30.0,"running_jobs":0},
                        "installed_models":[],"installed_services":[],"capability_by_type":[
                            {"type":"asr","ready":true},{"type":"nmt","ready":true},{"type":"tts","ready":true}],
                        "rerun_metrics":{"totalReruns":0},"asr_metrics":{"avg_latency_ms":120},
                        "processing_metrics":{"serviceEfficiencies":{"faster-whisper-vad":1.2}},
                        "language_capabilities":{"asr_languages":["zh","en"],"tts_languages":["zh","en"],"semantic_languages":["zh","en"]}}))
                        .await;
                }
            }
        }
        jobs
    })
}

fn protocol_now() -> u64 {
    switchboard::protocol::now_ms()
}

/// Replays the fixture's frames from `session_init` on (the init itself was sent by `open`).
async fn replay_all(client: &mut Replay, frames: &[(String, Value)], names: &BTreeMap<String, String>) {
    for (dir, msg) in frames {
        if dir == "sent" && msg["type"] != "session_init" {
            client.send(msg, names).await;
        }
    }
}

#[tokio::test]
async fn fixture_sessions_replay_with_opus_labelled_and_no_error_frame() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |_| {}).await;
    let node = fleet_node(&gw, &["zh", "en"]).await;

    // Speech, then the Send button (is_final with an empty payload), in a two_way_auto session.
    let frames = fixture("two-way-session");
    let mut two_way = Replay::open(&gw, &frames).await;
    replay_all(&mut two_way, &frames, &BTreeMap::new()).await;
    let sent_finals = frames.iter().filter(|(d, m)| d == "sent" && m["is_final"] == true).count();
    two_way
        .until("a result per turn", |r| {
            r.iter().filter(|m| m["type"] == "translation_result").count() >= sent_finals
        })
        .await;

    // 81 s of continuous speech: cut every 10 s (max_duration_ms) by the audio's own duration,
    // the rest when the stream pauses.
    let frames = fixture("long-speech-81s");
    let mut long = Replay::open(&gw, &frames).await;
    replay_all(&mut long, &frames, &BTreeMap::new()).await;
    long.until("the 81 s speech's results", |r| {
        r.iter().filter(|m| m["type"] == "translation_result").count() >= 9
    })
    .await;
    long.drain(Duration::from_millis(500)).await;
    let results = long.of("translation_result");
    assert_eq!(results.len(), 9, "8 cuts at 10 s and the remainder at the pause");
    let groups: Vec<&str> = results.iter().map(|r| r["group_id"].as_str().unwrap()).collect();
    assert!(groups.iter().all(|g| *g == groups[0]), "one turn, one group: {groups:?}");
    let parts: Vec<u64> = results.iter().map(|r| r["part_index"].as_u64().unwrap()).collect();
    assert_eq!(parts, (0..9).collect::<Vec<_>>());

    // The client reports its playback of a result; neither report is refused.
    let (group, trace) = (results[0]["group_id"].clone(), results[0]["trace_id"].clone());
    long.peer.send(json!({"type":"tts_started","session_id":long.session,"trace_id":trace,"group_id":group,"ts_start_ms":protocol_now()})).await;
    long.peer.send(json!({"type":"tts_play_ended","session_id":long.session,"trace_id":trace,"group_id":group,"ts_end_ms":protocol_now()})).await;
    long.peer
        .send(json!({"type":"client_heartbeat","session_id":long.session,"timestamp":protocol_now()}))
        .await;
    long.until("the heartbeat's answer", |r| r.last().is_some_and(|m| m["type"] == "server_heartbeat")).await;

    let jobs = node.await.unwrap();
    two_way.drain(Duration::from_millis(300)).await;
    let per_session = |id: &str| jobs.iter().filter(|j| j["session_id"] == id).count();
    assert_eq!(
        per_session(&two_way.session),
        two_way.of("translation_result").len(),
        "every utterance answered"
    );
    assert_eq!(per_session(&long.session), 9);
    assert!(
        jobs.iter().all(|j| j["audio_format"] == "opus" && j["sample_rate"] == 16000),
        "audio labelled as sent"
    );
    assert_eq!(gw.metric("invalid_messages"), 0);
    gw.stop().await;
}

#[tokio::test]
async fn fixture_room_replays_across_two_gateways_with_signalling_relayed() {
    let redis = redis();
    let (gw_a, gw_b) = (TestGateway::start(&redis, |_| {}).await, TestGateway::start(&redis, |_| {}).await);
    let node = fleet_node(&gw_a, &["zh", "en"]).await;
    let creator_frames = fixture("room-creator");
    let joiner_frames = fixture("room-joiner");
    let mut creator = Replay::open(&gw_a, &creator_frames).await;
    let mut joiner = Replay::open(&gw_b, &joiner_frames).await;
    let mut names = BTreeMap::new();
    names.insert(joiner.recorded_session.clone(), joiner.session.clone());
    names.insert(creator.recorded_session.clone(), creator.session.clone());

    let create = creator_frames.iter().find(|(_, m)| m["type"] == "room_create").unwrap().1.clone();
    creator.send(&create, &names).await;
    creator.until("room_create_ack", |r| r.iter().any(|m| m["type"] == "room_create_ack")).await;
    let code = creator.of("room_create_ack")[0]["room_code"].as_str().unwrap().to_owned();
    let recorded_code = create_ack_code(&creator_frames);
    names.insert(recorded_code, code.clone());

    let join = joiner_frames.iter().find(|(_, m)| m["type"] == "room_join").unwrap().1.clone();
    joiner.send(&join, &names).await;
    creator
        .until("two members", |r| {
            r.iter().any(|m| m["type"] == "room_members" && m["members"].as_array().unwrap().len() == 2)
        })
        .await;

    // The offer and ICE candidates the creator sent reach the joiner on the other gateway, `to`
    // naming the sender, payloads intact.
    let signals: Vec<Value> = creator_frames
        .iter()
        .filter(|(_, m)| m["type"].as_str().unwrap().starts_with("webrtc_"))
        .map(|(_, m)| m.clone())
        .collect();
    for s in &signals {
        creator.send(s, &names).await;
    }
    joiner
        .until("the relayed signals", |r| {
            r.iter().filter(|m| m["type"].as_str().unwrap().starts_with("webrtc_")).count() == signals.len()
        })
        .await;
    let relayed: Vec<&Value> =
        joiner.received.iter().filter(|m| m["type"].as_str().unwrap().starts_with("webrtc_")).collect();
    for (sent, got) in signals.iter().zip(&relayed) {
        assert_eq!(got["type"], sent["type"]);
        assert_eq!(got["to"], creator.session.as_str(), "`to` names the sender for the receiver");
        assert_eq!(got["from"], creator.session.as_str());
        assert_eq!(got["room_code"], code.as_str());
        assert_eq!(
            (&got["sdp"], &got["candidate"]),
            (sent.get("sdp").unwrap_or(&Value::Null), sent.get("candidate").unwrap_or(&Value::Null))
        );
    }
    // The joiner answers.
    joiner.peer.send(json!({"type":"webrtc_answer","room_code":code,"to":creator.session,"sdp":{"type":"answer","sdp":"v=0\r\n"}})).await;
    creator.until("the answer", |r| r.iter().any(|m| m["type"] == "webrtc_answer")).await;

    // The raw-voice checkbox: stored on the creator's record, shown to every member.
    let pref =
        creator_frames.iter().find(|(_, m)| m["type"] == "room_raw_voice_preference").unwrap().1.clone();
    creator.send(&pref, &names).await;
    let joiner_id = joiner.session.clone();
    joiner
        .until("members with the preference", |r| {
            // The creator's record, wherever it stands: two members that joined in the same
            // millisecond come in either order.
            r.iter().filter(|m| m["type"] == "room_members").any(|m| {
                m["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|member| member["raw_voice_preferences"].get(&joiner_id).is_some())
            })
        })
        .await;
    // The creator turned the joiner's voice off: the joiner's signals to it are withheld.
    let dropped = gw_b.metric("signals_dropped");
    joiner.peer.send(json!({"type":"webrtc_ice","room_code":code,"to":creator.session,"candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}})).await;
    eventually("the withheld signal", || async { gw_b.metric("signals_dropped") > dropped }).await;

    // Both speak (the rest of each fixture); each hears the other in its language.
    for (dir, msg) in
        creator_frames.iter().filter(|(_, m)| m["type"] == "audio_chunk" || m["type"] == "client_heartbeat")
    {
        if dir == "sent" {
            creator.send(msg, &names).await;
        }
    }
    for (dir, msg) in
        joiner_frames.iter().filter(|(_, m)| m["type"] == "audio_chunk" || m["type"] == "client_heartbeat")
    {
        if dir == "sent" {
            joiner.send(msg, &names).await;
        }
    }
    creator.until("the joiner's result", |r| r.iter().any(|m| m["type"] == "translation_result")).await;
    joiner.until("the creator's result", |r| r.iter().any(|m| m["type"] == "translation_result")).await;
    creator.drain(Duration::from_millis(300)).await;
    joiner.drain(Duration::from_millis(300)).await;
    let heard = joiner.of("translation_result")[0];
    assert_eq!(
        (heard["speaker_session_id"].as_str(), heard["tgt_lang"].as_str()),
        (Some(creator.session.as_str()), Some("en"))
    );
    assert!(!heard["group_id"].as_str().unwrap().is_empty());

    drop(node);
    gw_a.stop().await;
    gw_b.stop().await;
}

fn create_ack_code(frames: &[(String, Value)]) -> String {
    frames.iter().find(|(_, m)| m["type"] == "room_create_ack").unwrap().1["room_code"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn signalling_is_only_between_members_of_one_room_and_bounded() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.room_signals_per_second = 5).await;
    let mut a = gw.client().await;
    let a_id = a.init_one_way("zh", "en").await;
    let mut b = gw.client().await;
    let b_id = b.init_one_way("en", "zh").await;
    let mut outsider = gw.client().await;
    let outsider_id = outsider.init_one_way("en", "zh").await;
    a.send(json!({"type":"room_create","client_ts":1,"preferred_lang":"zh"})).await;
    let code = a.expect("room_create_ack").await["room_code"].as_str().unwrap().to_owned();
    a.expect("room_members").await;
    b.send(json!({"type":"room_join","room_code":code,"preferred_lang":"en"})).await;
    b.expect("room_create_ack").await;
    b.expect("room_members").await;
    a.expect("room_members").await;

    // Not a member: refused with room_error (never an `error` frame), nothing relayed.
    outsider
        .send(json!({"type":"webrtc_offer","room_code":code,"to":a_id,"sdp":{"type":"offer","sdp":"x"}}))
        .await;
    assert_eq!(outsider.expect("room_error").await["code"], "ROOM_NOT_FOUND");
    // To someone outside the room.
    a.send(json!({"type":"webrtc_offer","room_code":code,"to":outsider_id,"sdp":{"type":"offer","sdp":"x"}}))
        .await;
    assert_eq!(a.expect("room_error").await["code"], "MEMBER_NOT_FOUND");
    // Missing payload, oversized payload.
    a.send(json!({"type":"webrtc_ice","room_code":code,"to":b_id})).await;
    assert_eq!(a.expect("room_error").await["code"], "INVALID_MESSAGE");
    a.send(json!({"type":"webrtc_offer","room_code":code,"to":b_id,"sdp":{"sdp":"v".repeat(20_000)}})).await;
    assert_eq!(a.expect("room_error").await["code"], "INVALID_MESSAGE");
    // A forged sender is ignored: `from` is who sent it.
    a.send(json!({"type":"webrtc_offer","room_code":code,"to":b_id,"from":outsider_id,"sdp":{"type":"offer","sdp":"v=0"}})).await;
    let got = b.expect("webrtc_offer").await;
    assert_eq!((got["from"].as_str(), got["to"].as_str()), (Some(a_id.as_str()), Some(a_id.as_str())));
    // Offers that cross (both members offer at once, as the fleet's client does): the first wins,
    // the crossing one is withheld; once answered, either side may offer again.
    b.send(json!({"type":"webrtc_offer","room_code":code,"to":a_id,"sdp":{"type":"offer","sdp":"crossing"}}))
        .await;
    b.send(json!({"type":"webrtc_answer","room_code":code,"to":a_id,"sdp":{"type":"answer","sdp":"v=0"}}))
        .await;
    assert_eq!(a.expect("webrtc_answer").await["from"], b_id.as_str(), "the crossing offer never reached a");
    b.send(
        json!({"type":"webrtc_offer","room_code":code,"to":a_id,"sdp":{"type":"offer","sdp":"renegotiate"}}),
    )
    .await;
    assert_eq!(a.expect("webrtc_offer").await["sdp"]["sdp"], "renegotiate");
    // Over the rate: dropped, told once.
    for _ in 0..20 {
        a.send(json!({"type":"webrtc_ice","room_code":code,"to":b_id,"candidate":{"candidate":"c"}})).await;
    }
    assert_eq!(a.expect("room_error").await["code"], "RATE_LIMITED");
    let mut relayed = 0;
    while let Some(m) = b.try_recv(Duration::from_millis(300)).await {
        relayed += (m["type"] == "webrtc_ice") as u32;
    }
    assert!(relayed < 20, "the rate limit held ({relayed} of 20 relayed)");
    outsider.expect_silence(Duration::from_millis(200)).await;
    gw.stop().await;
}

/// What the browser pages reported, in order.
#[derive(Clone, Default)]
struct Reports {
    events: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    room: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Reports {
    fn of(&self, role: &str, event: &str) -> Vec<Value> {
        let events = self.events.lock().unwrap();
        events.iter().filter(|e| e["role"] == role && e["event"] == event).cloned().collect()
    }
}

/// Serves the page and takes its reports.
async fn page_server() -> (String, Reports) {
    use axum::routing::{get, post};
    let reports = Reports::default();
    let (r1, r2) = (reports.clone(), reports.clone());
    let app = axum::Router::new()
        .route(
            "/page.html",
            get(|| async { axum::response::Html(include_str!("browser/fleet-client.html")) }),
        )
        .route(
            "/report",
            post(move |body: String| async move {
                let event: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                if event["event"] == "room" {
                    *r1.room.lock().unwrap() = event["code"].as_str().unwrap_or("").to_owned();
                }
                r1.events.lock().unwrap().push(event);
            }),
        )
        .route("/room", get(move || async move { r2.room.lock().unwrap().clone() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, reports)
}

/// Headless Chromium on `url` with a fake microphone, killed on drop.
struct Browser {
    child: std::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(browser: &str, url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(browser)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                "--allow-loopback-in-peer-connection",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--autoplay-policy=no-user-gesture-required",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromium starts");
        Self { child, _profile: profile }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two browser pages on two gateways do what the fleet's client does: a room, WebRTC connected
/// through the gateways' relay, Opus speech each way, the raw-voice checkbox, playback reports;
/// no error frame and no alert on either page.
#[tokio::test]
async fn two_browser_pages_on_two_gateways_connect_webrtc_and_hear_each_other() {
    let Some(browser) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "CI must have Chromium (.ci/run installs it)");
        eprintln!("skipped: no Chromium on this machine (apt-get install chromium)");
        return;
    };
    let redis = redis();
    let (gw_a, gw_b) = (TestGateway::start(&redis, |_| {}).await, TestGateway::start(&redis, |_| {}).await);
    let node = fleet_node(&gw_a, &["zh", "en"]).await;
    let (base, reports) = page_server().await;
    let page = |role: &str, gw: &TestGateway| {
        let ws = format!("{}/ws/session", gw.url);
        format!("{base}/page.html?role={role}&ws={}", ws.replace(':', "%3A").replace('/', "%2F"))
    };
    let _creator = Browser::open(browser, &page("creator", &gw_a));
    let _joiner = Browser::open(browser, &page("joiner", &gw_b));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let failures: Vec<Value> = ["creator", "joiner"]
            .iter()
            .flat_map(|r| [reports.of(r, "failure"), reports.of(r, "alert")].concat())
            .collect();
        assert!(failures.is_empty(), "the pages failed: {failures:?}");
        if !reports.of("creator", "done").is_empty() && !reports.of("joiner", "done").is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let events = reports.events.lock().unwrap().clone();
            panic!("the pages did not finish; they reported: {events:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for role in ["creator", "joiner"] {
        assert!(
            reports.of(role, "rtc").iter().any(|e| e["state"] == "connected"),
            "{role}: WebRTC connected"
        );
        assert_eq!(reports.of(role, "session")[0]["codec"], "opus");
        let result = &reports.of(role, "result")[0];
        assert!(!result["group_id"].as_str().unwrap_or("").is_empty(), "{role}: group_id on results");
    }
    assert_eq!(reports.of("joiner", "result")[0]["tgt_lang"], "en");
    assert_eq!(reports.of("creator", "result")[0]["tgt_lang"], "zh");
    assert!(
        gw_a.metric("signals_relayed") > 0 && gw_b.metric("signals_relayed") > 0,
        "both directions relayed"
    );

    drop((_creator, _joiner));
    let jobs = node.await.unwrap();
    assert!(jobs.len() >= 2);
    for job in &jobs {
        assert_eq!(job["audio_format"], "opus");
        let audio = BASE64.decode(job["audio"].as_str().unwrap()).unwrap();
        // Real Opus from the browser's encoder, framed as the fleet's client frames it.
        let mut rest = &audio[..];
        let mut packets = 0;
        while rest.len() >= 2 {
            let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
            assert!(len > 0 && len + 2 <= rest.len(), "length-prefixed packets");
            rest = &rest[2 + len..];
            packets += 1;
        }
        assert!(rest.is_empty() && packets >= 100, "3 s of 20 ms packets, got {packets}");
    }
    gw_a.stop().await;
    gw_b.stop().await;
}
