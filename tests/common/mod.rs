//! Test harness: a real redis-server per test, an in-process gateway on a free port, and WebSocket
//! peers (fake nodes and clients) that speak PROTOCOL.md.
#![allow(dead_code)]

pub mod invariants;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::config::Config;
use switchboard::devredis::RedisServer;
use switchboard::gateway::{AppState, Gateway};
use switchboard::store::{SchedulerConfig, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn redis() -> RedisServer {
    RedisServer::start().expect("redis-server starts")
}

/// Scheduler settings that make timeouts observable in a test's lifetime. Nodes stay live for 30 s
/// without a heartbeat (a slow CI machine must not expire a test's silent nodes); tests of expiry
/// shorten it.
pub fn fast_scheduler() -> SchedulerConfig {
    SchedulerConfig {
        heartbeat_interval_ms: 10_000,
        job_timeout_ms: 10_000,
        dispatch_wait_ms: 2_000,
        retry_ms: 100,
        sweep_interval_ms: 50,
        ..SchedulerConfig::default()
    }
}

/// Where a test's gateways keep their state: one redis-server, or a local 3-primary Redis Cluster
/// on which the gateways run 3 cells.
pub enum Backend {
    Single(RedisServer),
    Cluster(switchboard::devredis::RedisCluster),
}

impl Backend {
    pub fn single() -> Self {
        Self::Single(redis())
    }

    pub fn cluster() -> Self {
        Self::Cluster(
            switchboard::devredis::RedisCluster::start(3).expect("a local 3-primary cluster starts"),
        )
    }

    pub fn url(&self) -> String {
        match self {
            Self::Single(r) => r.url(),
            Self::Cluster(c) => c.url(),
        }
    }

    pub fn cells(&self) -> u32 {
        match self {
            Self::Single(_) => 1,
            Self::Cluster(_) => 3,
        }
    }
}

pub async fn scheduler(redis: &RedisServer, config: SchedulerConfig) -> Store {
    Store::connect(&redis.url(), config).await.expect("scheduler connects")
}

pub struct TestGateway {
    pub url: String,
    pub admin_url: String,
    pub state: AppState,
    shutdown: CancellationToken,
    serving: tokio::task::JoinHandle<()>,
}

impl TestGateway {
    pub async fn start(redis: &RedisServer, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_at(redis.url(), tweak).await
    }

    /// A gateway on `backend`, with its number of cells.
    pub async fn on(backend: &Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let cells = backend.cells();
        Self::start_at(backend.url(), |c| {
            c.scheduler.cells = cells;
            tweak(c);
        })
        .await
    }

    /// A gateway on the Redis (or Redis Cluster) that `redis_url` names.
    pub async fn start_at(redis_url: String, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            redis_url: Some(redis_url),
            scheduler: fast_scheduler(),
            shutdown_grace_ms: 1_000,
            ..Config::default()
        };
        config.gateways.heartbeat_interval_ms = 200;
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_url = format!("http://{}", admin.local_addr().unwrap());
        let gateway =
            Gateway::bind(listener, config, shutdown.clone()).await.expect("gateway binds").with_admin(admin);
        let url = format!("ws://{}", gateway.local_addr().unwrap());
        let state = gateway.state.clone();
        let serving = tokio::spawn(async move { gateway.serve().await.expect("gateway serves") });
        Self { url, admin_url, state, shutdown, serving }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.serving.await;
    }

    /// The invariant checker's Redis part (running counts, in-flight jobs, TTLs) holds, once the
    /// last transitions have run.
    pub async fn assert_consistent(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let problems = invariants::redis_problems(&self.state.store).await;
            if problems.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Redis is inconsistent:\n{}",
                problems.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn metric(&self, name: &str) -> u64 {
        self.state.metrics.get(name)
    }

    pub async fn node(&self) -> Peer {
        Peer::connect(&format!("{}/ws/node", self.url)).await
    }

    pub async fn client(&self) -> Peer {
        Peer::connect(&format!("{}/ws/session", self.url)).await
    }

    /// A zh→en node with `slots` and a zh→en one_way client: (node, client, session id).
    pub async fn node_and_client(&self, slots: u32) -> (Peer, Peer, String) {
        let mut node = self.node().await;
        node.register(&["zh"], &["en"], slots).await;
        let mut client = self.client().await;
        let session = client.init_one_way("zh", "en").await;
        (node, client, session)
    }
}

/// A gateway in its own process (`switchboard serve`), so a test can `kill -9` it.
pub struct ChildGateway {
    pub url: String,
    pub admin_url: String,
    pub id: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl ChildGateway {
    /// Starts `switchboard serve` on free ports with the test timings plus `extra` TOML lines
    /// (top-level keys only), and waits until it is ready.
    pub async fn start(redis: &RedisServer, id: &str, scheduler_toml: &str) -> Self {
        Self::launch(redis, id, "", scheduler_toml, false).await
    }

    /// Like `start`, with `top_toml` lines at the top level of the config and, with `debug_log`,
    /// every log line at debug level written to [`ChildGateway::log`].
    pub async fn launch(
        redis: &RedisServer,
        id: &str,
        top_toml: &str,
        scheduler_toml: &str,
        debug_log: bool,
    ) -> Self {
        Self::launch_at(&redis.url(), id, top_toml, scheduler_toml, debug_log).await
    }

    /// `launch` on the Redis (or Redis Cluster) that `redis_url` names.
    pub async fn launch_at(
        redis_url: &str,
        id: &str,
        top_toml: &str,
        scheduler_toml: &str,
        debug_log: bool,
    ) -> Self {
        let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (listen, admin) = (port(), port());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        let config = format!(
            "listen = \"127.0.0.1:{listen}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nredis_url = \"{}\"\n\
             gateway_id = \"{id}\"\nshutdown_grace_ms = 1000\n{top_toml}\n[gateways]\nheartbeat_interval_ms = 200\n\
             [scheduler]\nsweep_interval_ms = 50\nretry_ms = 100\ndispatch_wait_ms = 2000\n{scheduler_toml}\n",
            redis_url
        );
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", if debug_log { "info,switchboard=trace" } else { "warn" })
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("switchboard serve starts");
        let url = format!("ws://127.0.0.1:{listen}");
        let ready = format!("http://127.0.0.1:{listen}/readyz");
        eventually("the child gateway to be ready", || async {
            matches!(switchboard::admin_client::request("GET", &ready, None, b"").await, Ok((200, _)))
        })
        .await;
        let admin_url = format!("http://127.0.0.1:{admin}");
        Self { url, admin_url, id: id.to_owned(), child, _dir: dir }
    }

    /// Everything the gateway logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// `kill -9`: no socket is closed cleanly, no state is cleaned up.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    pub async fn node(&self) -> Peer {
        Peer::connect(&format!("{}/ws/node", self.url)).await
    }

    pub async fn client(&self) -> Peer {
        Peer::connect(&format!("{}/ws/session", self.url)).await
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a peer got within a wait.
pub enum Next {
    Message(Value),
    Quiet,
    Closed,
}

/// One WebSocket peer.
pub struct Peer {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Peer {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = connect_async_with_config(url, None, true).await.expect("websocket connects");
        Self { ws }
    }

    /// A connection, or `None` when nothing listens there (a killed gateway).
    pub async fn try_connect(url: &str) -> Option<Self> {
        connect_async_with_config(url, None, true).await.ok().map(|(ws, _)| Self { ws })
    }

    /// Sends; false once the socket is gone.
    pub async fn try_send(&mut self, message: Value) -> bool {
        self.ws.send(Message::Text(message.to_string().into())).await.is_ok()
    }

    /// The next JSON message within `wait`, telling a quiet socket from a closed one.
    pub async fn next(&mut self, wait: Duration) -> Next {
        loop {
            match tokio::time::timeout(wait, self.ws.next()).await {
                Err(_) => return Next::Quiet,
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Next::Message(serde_json::from_str(&text).expect("JSON"));
                }
                Ok(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => return Next::Closed,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    pub async fn connect_with_bearer(url: &str, token: &str) -> Self {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = connect_async_with_config(request, None, true).await.expect("websocket connects");
        Self { ws }
    }

    pub async fn send(&mut self, message: Value) {
        self.ws.send(Message::Text(message.to_string().into())).await.expect("send");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Sends without insisting: the gateway may close the socket while a big frame is on its way.
    pub async fn try_send_raw(&mut self, message: Message) -> bool {
        self.ws.send(message).await.is_ok()
    }

    /// The next JSON message; panics after `WAIT`.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(WAIT).await.expect("a message within the wait")
    }

    /// The next JSON message within `wait`, or `None` (timeout or closed).
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(wait, self.ws.next()).await.ok()??.ok()?;
            match message {
                Message::Text(text) => return Some(serde_json::from_str(&text).expect("JSON")),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// The next message of type `kind`, skipping `ui_event`s and `server_heartbeat`s; panics on
    /// any other type.
    pub async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let message = self.recv().await;
            let t = message["type"].as_str().unwrap_or_default();
            if t == kind {
                return message;
            }
            assert!(matches!(t, "ui_event" | "server_heartbeat"), "expected {kind}, got {message}");
        }
    }

    /// Asserts nothing but `ui_event`s arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.try_recv(left).await {
                None => return,
                Some(m) if m["type"] == "ui_event" => continue,
                Some(m) => panic!("expected silence, got {m}"),
            }
        }
    }

    /// The close frame's code, after skipping other messages.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("close within the wait") {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Registers as a node serving `src → tgt` pairs (asr × semantic); returns the ack.
    pub async fn register(&mut self, asr: &[&str], semantic: &[&str], slots: u32) -> Value {
        self.send(node_register(None, asr, semantic, slots)).await;
        self.expect("node_register_ack").await
    }

    /// Opens a one_way session; returns its id.
    pub async fn init_one_way(&mut self, src: &str, tgt: &str) -> String {
        self.send(json!({"type":"session_init","client_version":"t","platform":"linux",
            "src_lang":src,"tgt_lang":tgt,"mode":"one_way"}))
            .await;
        let ack = self.expect("session_init_ack").await;
        ack["session_id"].as_str().unwrap().to_owned()
    }

    pub async fn utter(&mut self, session_id: &str, index: u64) {
        self.send(utterance(session_id, index)).await;
    }

    /// Answers a `job_assign` with a successful result.
    pub async fn answer(&mut self, job: &Value, translated: &str) {
        self.send(job_result(job, translated)).await;
    }
}

pub fn node_register(node_id: Option<&str>, asr: &[&str], semantic: &[&str], slots: u32) -> Value {
    json!({
        "type":"node_register","node_id":node_id,"version":"1.4.0","platform":"linux",
        "hardware":{"cpu_cores":8,"memory_gb":32,"gpus":[{"name":"L4","memory_gb":24}]},
        "installed_services":[{"service_id":"whisper","type":"asr","device":"gpu","status":"running"}],
        "capability_by_type":[{"type":"asr","ready":true},{"type":"nmt","ready":true},{"type":"tts","ready":true}],
        "language_capabilities":{"asr_languages":asr,"tts_languages":semantic,"semantic_languages":semantic},
        "features_supported":{"emotion_detection":false},
        "accept_public_jobs":true,"max_concurrent_jobs":slots
    })
}

pub fn utterance(session_id: &str, index: u64) -> Value {
    json!({"type":"utterance","session_id":session_id,"utterance_index":index,"manual_cut":true,
        "audio":"AAAA","audio_format":"opus","sample_rate":16000})
}

pub fn job_result(job: &Value, translated: &str) -> Value {
    json!({"type":"job_result","job_id":job["job_id"],"attempt_id":job["attempt_id"],
        "node_id":null,"session_id":job["session_id"],"utterance_index":job["utterance_index"],
        "success":true,"text_asr":"你好世界","text_translated":translated,"tts_audio":"AAAA",
        "tts_format":"opus","extra":{"service_timings":{"total_ms":620}},"processing_time_ms":640,
        "trace_id":job["trace_id"]})
}

/// Polls `check` until it holds or `WAIT` passes.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Direct script calls, for the scheduler tests.
pub mod direct {
    use std::collections::BTreeMap;

    use switchboard::store::*;

    pub fn node(id: &str, pairs: &[&str], capacity: u32) -> NodeRegistration {
        NodeRegistration {
            id: id.into(),
            presented_secret: None,
            secret: format!("secret-{id}"),
            conn: format!("conn-{id}"),
            gateway: "gw-test".into(),
            capacity,
            pairs: pairs.iter().map(|p| p.to_string()).collect(),
            ready: vec!["asr".into(), "nmt".into(), "tts".into()],
            labels: BTreeMap::from([("region".into(), "eu".into())]),
            info: serde_json::json!({"version":"1"}),
        }
    }

    pub fn spec(session: &str, index: u64) -> TaskSpec {
        switchboard::sim::task_spec(session, index)
    }

    pub fn payload() -> Payload {
        Payload { audio: Some("AAAA".into()), text: None }
    }

    pub async fn register(s: &Store, n: &NodeRegistration) {
        match s.register_node(s.cell(0), n).await.unwrap() {
            RegisterReply::Registered { .. } => {}
            other => panic!("register {}: {other:?}", n.id),
        }
    }

    /// Creates the task and tries `node`.
    pub async fn create(s: &Store, spec: &TaskSpec, node: Option<&str>) -> DispatchReply {
        let payload = payload();
        let task_id = spec.task_id();
        let pool = spec.pool();
        let request = DispatchRequest {
            cell: s.cell(0),
            task_id: &task_id,
            pool: &pool,
            attempt: 0,
            node_id: node,
            class: None,
            create: Some((spec, &payload)),
            moved_in: None,
            admission: None,
        };
        s.dispatch_task(&request).await.unwrap()
    }

    pub async fn retry(s: &Store, spec: &TaskSpec, attempt: u32, node: Option<&str>) -> DispatchReply {
        let task_id = spec.task_id();
        let pool = spec.pool();
        let request = DispatchRequest {
            cell: s.cell(0),
            task_id: &task_id,
            pool: &pool,
            attempt,
            node_id: node,
            class: None,
            create: None,
            moved_in: None,
            admission: None,
        };
        s.dispatch_task(&request).await.unwrap()
    }

    pub fn job_id(reply: &DispatchReply) -> String {
        match reply {
            DispatchReply::Assigned { job_id, .. } => job_id.clone(),
            other => panic!("expected assigned, got {other:?}"),
        }
    }

    /// `HGET` of one field, for checks on the stored state.
    pub async fn hget(s: &Store, key: &str, field: &str) -> Option<String> {
        let mut conn = s.connection();
        redis::cmd("HGET").arg(key).arg(field).query_async(&mut conn).await.unwrap()
    }

    /// A node's score in the load index of its capability class (cell 0), if it is indexed.
    pub async fn index_score(s: &Store, node: &str) -> Option<f64> {
        let k = s.cell(0);
        let class = hget(s, &k.node(node), "class").await?;
        let mut conn = s.connection();
        redis::cmd("ZSCORE").arg(k.class(&class)).arg(node).query_async(&mut conn).await.unwrap()
    }

    /// A node's jobs in flight (cell 0): the `jobs` list of its hash.
    pub async fn node_jobs(s: &Store, node: &str) -> Vec<String> {
        hget(s, &s.cell(0).node(node), "jobs")
            .await
            .filter(|j| j != "{}")
            .map(|j| serde_json::from_str(&j).unwrap())
            .unwrap_or_default()
    }

    /// A field of a stored task's state (cell `k`), as text.
    pub async fn task_field(s: &Store, k: &CellKeys, task_id: &str, field: &str) -> Option<String> {
        let state = super::invariants::task_state(&mut s.connection(), &k.task(task_id)).await?;
        state.get(field).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    }

    /// The capability classes serving `pair` in cell 0.
    pub async fn pool_classes(s: &Store, pair: &str) -> Vec<String> {
        let mut conn = s.connection();
        redis::cmd("SMEMBERS").arg(s.cell(0).pool(pair)).query_async(&mut conn).await.unwrap()
    }
}

/// A policy component the build made from `policies/<name>`.
pub fn component(name: &str) -> Vec<u8> {
    std::fs::read(switchboard::policy::artifacts::path(name)).expect("the build wrote the component")
}

/// An admin API call: (status, JSON body).
pub async fn admin(
    gw: &TestGateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let url = format!("{}{path}", gw.admin_url);
    let (status, text) =
        switchboard::admin_client::request(method, &url, token, body).await.expect("admin answers");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A node that answers every job with "<node name>: <utterance index>" and heartbeats while idle,
/// until its socket ends or it is idle for 30 s.
pub fn auto_answer(mut node: Peer, name: &'static str) -> tokio::task::JoinHandle<Peer> {
    tokio::spawn(async move {
        let mut idle = Duration::ZERO;
        while idle < Duration::from_secs(30) {
            match node.try_recv(Duration::from_millis(250)).await {
                Some(job) if job["type"] == "job_assign" => {
                    idle = Duration::ZERO;
                    let text = format!("{name}: {}", job["utterance_index"]);
                    node.answer(&job, &text).await;
                }
                Some(_) => {}
                None => {
                    idle += Duration::from_millis(250);
                    node.send(json!({"type":"node_heartbeat","node_id":"","resource_usage":{}})).await;
                }
            }
        }
        node
    })
}

/// A headless-capable Chromium; installed from Debian's packages when missing and allowed (root),
/// like redis-server.
pub fn chromium() -> Option<&'static str> {
    let find = || {
        ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|b| {
            std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success())
        })
    };
    find().or_else(|| {
        let root =
            std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
        if root {
            let _ = std::process::Command::new("apt-get")
                .args(["install", "-y", "-q", "chromium"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
        }
        find()
    })
}

/// One test function per name, run on one redis-server and on the 3-primary cluster.
#[allow(unused_macros)]
macro_rules! on_single_redis_and_cluster {
    ($($name:ident),* $(,)?) => {
        mod single_redis {
            use super::*;
            $(#[tokio::test] async fn $name() { super::$name(Backend::single()).await })*
        }
        mod redis_cluster {
            use super::*;
            $(#[tokio::test] async fn $name() { super::$name(Backend::cluster()).await })*
        }
    };
}
