//! Chaos under sustained load, with real processes: gateways are `switchboard serve` children,
//! Redis is a real redis-server (or a local 3-primary cluster). Through every scenario, sessions
//! keep two utterances in flight each, nodes answer at once, and every gateway's `/readyz` is
//! polled every 50 ms. Afterwards: every utterance ended in exactly one outcome (a result, or an
//! `error` with a code a client can act on), in order; Redis is consistent; readiness was 503
//! during the outage (when the outage is one a probe can see) and 200 within a bound after.
//!
//! Each test prints a `chaos |` line with its recovery times; docs/reliability.md records them.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::invariants::{Ledger, redis_problems};
use common::*;
use serde_json::{Value, json};
use switchboard::store::{SchedulerConfig, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Utterances each session keeps in flight.
const IN_FLIGHT: usize = 2;
/// The error codes an outage may answer an utterance with: each tells the client to retry later.
/// `NODE_UNAVAILABLE`: a task whose node was lost on every attempt (nodes re-registering after
/// Redis came back empty, or moving off a dead gateway).
const OUTAGE_CODES: [&str; 3] = ["SCHEDULER_DEPENDENCY_DOWN", "NO_AVAILABLE_NODE", "NODE_UNAVAILABLE"];

/// The gateways' admin token (pushing a policy needs one).
const ADMIN: &str = "admin_token = \"chaos-admin-token\"";

/// One scenario at a time: each measures recovery times, which two scenarios sharing two cores
/// would turn into a measure of each other.
/// An async mutex: the guard is held across the whole scenario, awaits included, and a scenario
/// that panicked does not poison it for the next.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

/// The WebSocket URLs of the gateways that are up; peers (re)connect round robin among them.
type Live = Arc<Mutex<Vec<String>>>;

/// What the sessions sent and got.
#[derive(Default)]
struct Tally {
    ledger: Ledger,
    order: Vec<(String, u64)>,
    expected: Vec<(String, u64)>,
    /// When each `translation_result` arrived.
    results: Vec<Instant>,
    /// Every `error` frame.
    errors: Vec<Value>,
    /// What each session sent and got, for a failure's message.
    trace: Vec<String>,
}

type Shared = Arc<Mutex<Tally>>;

fn pick(live: &Live, i: usize) -> String {
    let live = live.lock().unwrap();
    live[i % live.len()].clone()
}

/// A session with its resume token, on a gateway of `live`; after its socket ends it resumes on
/// another one and sends again what has no outcome yet (the gateway drops a duplicate).
async fn speaker(live: Live, first: usize, tally: Shared, stop: CancellationToken) {
    let mut peer = Peer::connect(&format!("{}/ws/session", pick(&live, first))).await;
    peer.send(json!({"type":"session_init","client_version":"chaos","platform":"linux",
        "src_lang":"zh","tgt_lang":"en","mode":"one_way"}))
        .await;
    let ack = peer.expect("session_init_ack").await;
    let session = ack["session_id"].as_str().unwrap().to_owned();
    let token = ack["resume_token"].as_str().unwrap().to_owned();
    let (mut next, mut open) = (0u64, BTreeSet::new());
    let mut attempt = first + 1;
    let mut drained_by = None;
    loop {
        if stop.is_cancelled() {
            let by = *drained_by.get_or_insert_with(|| Instant::now() + Duration::from_secs(30));
            if open.is_empty() || Instant::now() > by {
                break; // what is still open is reported by the ledger as lost
            }
        } else if open.len() < IN_FLIGHT {
            {
                let mut t = tally.lock().unwrap();
                t.expected.push((session.clone(), next));
                t.trace.push(format!("{session} sent {next}"));
            }
            open.insert(next);
            next += 1;
            if peer.try_send(utterance(&session, next - 1)).await {
                continue;
            }
        }
        match peer.next(Duration::from_millis(100)).await {
            Next::Message(m) => {
                let mut t = tally.lock().unwrap();
                let brief = format!("{session} got {} {} {}", m["type"], m["code"], m["utterance_index"]);
                t.trace.push(format!("{brief} {}", m["details"]));
                if m["type"] == "error" {
                    t.errors.push(m.clone());
                }
                if t.ledger.record(&m) {
                    let index = m["utterance_index"].as_u64().or(m["details"]["utterance_index"].as_u64());
                    let index = index.unwrap();
                    t.order.push((session.clone(), index));
                    if m["type"] == "translation_result" {
                        t.results.push(Instant::now());
                    }
                    open.remove(&index);
                }
                continue;
            }
            Next::Quiet => continue,
            Next::Closed => {}
        }
        tally.lock().unwrap().trace.push(format!("{session} resumes"));
        peer = resume(&live, &mut attempt, &session, &token).await;
        for &index in &open {
            peer.try_send(utterance(&session, index)).await;
        }
    }
    peer.close().await;
}

/// `session_init` with the resume token on the next gateway that takes it.
async fn resume(live: &Live, attempt: &mut usize, session: &str, token: &str) -> Peer {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "session {session} found no gateway to resume on");
        *attempt += 1;
        let Some(mut peer) = Peer::try_connect(&format!("{}/ws/session", pick(live, *attempt))).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let init = json!({"type":"session_init","resume_session_id":session,"resume_token":token,
            "client_version":"chaos","platform":"linux"});
        if !peer.try_send(init).await {
            continue;
        }
        loop {
            match peer.next(Duration::from_secs(5)).await {
                Next::Message(m) if m["type"] == "session_init_ack" => return peer,
                Next::Message(m) if m["type"] == "error" => {
                    let code = m["code"].as_str().unwrap_or_default();
                    assert!(OUTAGE_CODES.contains(&code), "resume refused: {m}");
                    break;
                }
                Next::Message(_) => continue,
                Next::Quiet | Next::Closed => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node answering every job at once, heartbeating every second; after its socket ends it
/// connects to another gateway of `live` and registers again under its id with its secret.
async fn node(live: Live, first: usize, name: String, stop: CancellationToken) {
    let mut secret = Value::Null;
    let mut attempt = first;
    while !stop.is_cancelled() {
        let url = format!("{}/ws/node", pick(&live, attempt));
        attempt += 1;
        let Some(mut peer) = Peer::try_connect(&url).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let register = |secret: &Value| {
            let mut r = node_register(Some(&name), &["zh"], &["en"], 4);
            r["node_secret"] = secret.clone();
            r
        };
        if !peer.try_send(register(&secret)).await {
            continue;
        }
        let mut beat = Instant::now();
        loop {
            if stop.is_cancelled() {
                peer.close().await;
                return;
            }
            if beat.elapsed() > Duration::from_secs(1) {
                beat = Instant::now();
                peer.try_send(json!({"type":"node_heartbeat","node_id":name,"resource_usage":{}})).await;
            }
            match peer.next(Duration::from_millis(200)).await {
                Next::Message(m) if m["type"] == "job_assign" => {
                    peer.try_send(job_result(&m, &format!("{name}: {}", m["utterance_index"]))).await;
                }
                Next::Message(m) if m["type"] == "node_register_ack" => {
                    if m["node_secret"].is_string() {
                        secret = m["node_secret"].clone();
                    }
                }
                Next::Message(m) if m["type"] == "error" => {
                    // Redis forgot the node (restarted empty) or refused the registration while
                    // it was down: register again.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    peer.try_send(register(&secret)).await;
                    let _ = m;
                }
                Next::Message(_) | Next::Quiet => {}
                Next::Closed => break,
            }
        }
    }
}

/// One gateway's `/readyz` answers over time (0 when it did not answer).
struct Probe {
    samples: Arc<Mutex<Vec<(Instant, u16)>>>,
    task: JoinHandle<()>,
}

impl Probe {
    fn start(admin_url: &str, stop: CancellationToken) -> Self {
        let url = format!("{admin_url}/readyz");
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let samples = samples.clone();
            async move {
                while !stop.is_cancelled() {
                    let status = tokio::time::timeout(
                        Duration::from_millis(500),
                        switchboard::admin_client::request("GET", &url, None, b""),
                    )
                    .await
                    .map_or(0, |r| r.map_or(0, |(status, _)| status));
                    samples.lock().unwrap().push((Instant::now(), status));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Self { samples, task }
    }

    /// Whether a probe between `from` and `to` saw the gateway not ready.
    fn unready_between(&self, from: Instant, to: Instant) -> bool {
        self.samples.lock().unwrap().iter().any(|(at, s)| *at >= from && *at <= to && *s != 200)
    }

    /// How long after `since` the probe answered 200 and kept answering it (None: never).
    fn ready_after(&self, since: Instant) -> Option<Duration> {
        let samples = self.samples.lock().unwrap();
        let after: Vec<_> = samples.iter().filter(|(at, _)| *at >= since).collect();
        let last_unready = after.iter().rposition(|(_, s)| *s != 200);
        let first_ready = match last_unready {
            Some(i) => after.get(i + 1)?,
            None => after.first()?,
        };
        Some(first_ready.0.saturating_duration_since(since))
    }

    fn never_unready(&self) -> bool {
        self.samples.lock().unwrap().iter().all(|(_, s)| *s == 200)
    }
}

/// Load running against the gateways of `live`.
struct Load {
    live: Live,
    tally: Shared,
    speakers_stop: CancellationToken,
    nodes_stop: CancellationToken,
    speakers: Vec<JoinHandle<()>>,
    nodes: Vec<JoinHandle<()>>,
}

impl Load {
    /// `sessions` sessions and `nodes` nodes, spread round robin over the gateways.
    async fn start(urls: Vec<String>, sessions: usize, nodes: usize) -> Self {
        let live: Live = Arc::new(Mutex::new(urls));
        let tally = Shared::default();
        let (speakers_stop, nodes_stop) = (CancellationToken::new(), CancellationToken::new());
        let nodes = (0..nodes)
            .map(|i| tokio::spawn(node(live.clone(), i, format!("chaos-n{i}"), nodes_stop.clone())))
            .collect();
        // Let the nodes register, so the first utterances find them.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let speakers = (0..sessions)
            .map(|i| tokio::spawn(speaker(live.clone(), i, tally.clone(), speakers_stop.clone())))
            .collect();
        Self { live, tally, speakers_stop, nodes_stop, speakers, nodes }
    }

    fn results(&self) -> usize {
        self.tally.lock().unwrap().results.len()
    }

    /// Waits until `more` results beyond the current count arrived (60 s at most).
    async fn wait_results(&self, more: usize) {
        let target = self.results() + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.results() < target {
            assert!(Instant::now() < deadline, "the load stalled at {} results", self.results());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// When the first result after `since` arrived.
    fn first_result_after(&self, since: Instant) -> Option<Duration> {
        let t = self.tally.lock().unwrap();
        t.results.iter().find(|at| **at > since).map(|at| at.duration_since(since))
    }

    /// Stops sending, lets every session drain its utterances in flight, stops the nodes; checks
    /// exactly one outcome per utterance, in order, and that every error is an outage code. On a
    /// failure it prints what the sessions saw and what the gateways logged.
    async fn finish(self, gateways: &[&ChildGateway]) -> Tally {
        self.speakers_stop.cancel();
        for s in self.speakers {
            s.await.expect("a session task panicked");
        }
        self.nodes_stop.cancel();
        for n in self.nodes {
            n.await.expect("a node task panicked");
        }
        let tally = Arc::try_unwrap(self.tally).ok().expect("no task holds the tally").into_inner().unwrap();
        let mut problems = tally.ledger.check(&tally.expected, &tally.order);
        for e in &tally.errors {
            let code = e["code"].as_str().unwrap_or_default();
            if !OUTAGE_CODES.contains(&code) {
                problems.push(format!("an error a client cannot act on: {e}"));
            }
            if e["message"].as_str().unwrap_or_default().is_empty() {
                problems.push(format!("an error without a message: {e}"));
            }
        }
        if !problems.is_empty() {
            for line in &tally.trace {
                eprintln!("{line}");
            }
            for g in gateways {
                eprintln!("--- {} logged:\n{}", g.url, g.log());
            }
        }
        assert!(problems.is_empty(), "lost, duplicated, out of order or unclear:\n{}", problems.join("\n"));
        tally
    }
}

/// Redis settles: running counts, jobs and TTLs agree once the last completions ran.
async fn settled(redis_url: &str, cells: u32) {
    let config = SchedulerConfig { cells, ..SchedulerConfig::default() };
    let scheduler = Store::connect(redis_url, config).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut problems = redis_problems(&scheduler).await;
    while !problems.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        problems = redis_problems(&scheduler).await;
    }
    assert!(problems.is_empty(), "Redis inconsistent after the scenario:\n{}", problems.join("\n"));
}

/// The scenario's line for docs/reliability.md.
fn report(name: &str, outage: Duration, first_result: Option<Duration>, ready: Option<Duration>, t: &Tally) {
    let ms = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{} ms", d.as_millis()));
    println!(
        "chaos | {name} | outage {} ms | first result {} | ready {} | {} utterances, {} results, {} errors",
        outage.as_millis(),
        ms(first_result),
        ms(ready),
        t.expected.len(),
        t.results.len(),
        t.errors.len(),
    );
}

/// Two gateway processes on `redis_url`, their probes, and load over both.
async fn two_gateways(
    redis_url: &str,
    scheduler_toml: &str,
) -> (Vec<ChildGateway>, Vec<Probe>, CancellationToken) {
    let mut gateways = Vec::new();
    for id in ["gw-a", "gw-b"] {
        gateways.push(
            ChildGateway::launch_at(
                redis_url,
                id,
                ADMIN,
                scheduler_toml,
                std::env::var("CHAOS_DEBUG").is_ok(),
            )
            .await,
        );
    }
    let probes_stop = CancellationToken::new();
    let probes = gateways.iter().map(|g| Probe::start(&g.admin_url, probes_stop.clone())).collect();
    (gateways, probes, probes_stop)
}

async fn stop_probes(probes: Vec<Probe>, stop: CancellationToken) -> Vec<Probe> {
    stop.cancel();
    for p in &probes {
        while !p.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    probes
}

/// A Redis outage of the single Redis both gateways use: `outage` causes it and returns when Redis
/// answers again.
async fn redis_outage(
    name: &str,
    visible: bool,
    ready_bound: Duration,
    outage: impl AsyncFnOnce(&mut switchboard::devredis::RedisServer),
) {
    let mut redis = redis();
    let url = redis.url();
    under_load(name, &url, 1, 4, visible, ready_bound, async || outage(&mut redis).await).await;
}

/// Two gateways with `cells` cells on `redis_url`, load through both, and `outage`, which returns
/// when Redis answers again. Asserts readiness dropped during it (when `visible`) and came back
/// within `ready_bound` after, results within 10 s, and Redis consistent afterwards.
async fn under_load(
    name: &str,
    redis_url: &str,
    cells: u32,
    nodes: usize,
    visible: bool,
    ready_bound: Duration,
    outage: impl AsyncFnOnce(),
) {
    let _alone = one_at_a_time().await;
    let (gateways, probes, probes_stop) = two_gateways(redis_url, &format!("cells = {cells}")).await;
    let load = Load::start(gateways.iter().map(|g| g.url.clone()).collect(), 8, nodes).await;
    load.wait_results(200).await;

    let start = Instant::now();
    outage().await;
    let end = Instant::now();
    load.wait_results(300).await;
    let first_result = load.first_result_after(end);
    let tally = load.finish(&gateways.iter().collect::<Vec<_>>()).await;
    let probes = stop_probes(probes, probes_stop).await;
    let ready = probes.iter().map(|p| p.ready_after(end)).max().flatten();
    report(name, end - start, first_result, ready, &tally);

    if visible {
        for p in &probes {
            assert!(p.unready_between(start, end), "{name}: /readyz said 200 all through the outage");
        }
    }
    let ready = ready.unwrap_or_else(|| panic!("{name}: /readyz never came back"));
    assert!(ready <= ready_bound, "{name}: ready {ready:?} after the outage ended");
    assert!(first_result.is_some_and(|d| d < Duration::from_secs(10)), "{name}: results did not resume");
    settled(redis_url, cells).await;
    drop(gateways);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_started_empty_three_seconds_later() {
    redis_outage("Redis kill -9, restarted empty 3 s later", true, Duration::from_secs(1), async |redis| {
        redis.kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        redis.start_again().unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_for_five_seconds() {
    redis_outage("Redis SIGSTOP 5 s", true, Duration::from_secs(1), async |redis| {
        redis.pause();
        tokio::time::sleep(Duration::from_secs(5)).await;
        redis.resume();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_flushed_under_load() {
    redis_outage("SCRIPT FLUSH", false, Duration::from_secs(1), async |redis| {
        let mut conn =
            redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_redis_connections_killed() {
    redis_outage("CLIENT KILL of every gateway connection", false, Duration::from_secs(1), async |redis| {
        let mut conn =
            redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        for kind in ["normal", "pubsub"] {
            let _: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg(kind)
                .arg("SKIPME")
                .arg("yes")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_primary_killed_and_started_again() {
    let mut cluster = switchboard::devredis::RedisCluster::start(3).expect("a local cluster");
    let url = cluster.url();
    let name = "cluster primary kill -9, started again 2 s later";
    under_load(name, &url, 3, 6, true, Duration::from_secs(2), async || {
        cluster.kill(1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.start_node(1).unwrap(); // returns once every primary says cluster_state:ok
    })
    .await;
}

/// One of two gateways `kill -9` with sessions and nodes on both: its nodes reconnect to the
/// other with their secrets and its sessions resume there; meanwhile a new policy version is
/// pushed, which the killed gateway runs once it is started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_its_peers_move_and_the_policy_changes_meanwhile() {
    let _alone = one_at_a_time().await;
    let name = "one of two gateways kill -9";
    let redis = redis();
    let (mut gateways, probes, probes_stop) = two_gateways(&redis.url(), "").await;
    let load = Load::start(gateways.iter().map(|g| g.url.clone()).collect(), 8, 4).await;
    load.wait_results(200).await;

    let start = Instant::now();
    load.live.lock().unwrap().retain(|url| *url != gateways[0].url);
    gateways[0].kill();
    let policy = component("least-loaded");
    let pushed = switchboard::admin_client::request(
        "PUT",
        &format!("{}/admin/policies/node-selection", gateways[1].admin_url),
        Some("chaos-admin-token"),
        &policy,
    )
    .await
    .unwrap();
    assert_eq!(pushed.0, 200, "{}", pushed.1);
    let sha = switchboard::policy::sha256_hex(&policy);
    load.wait_results(300).await;
    let first_result = load.first_result_after(start);

    // The killed gateway comes back (same id) and runs the version pushed while it was down.
    let launched = Instant::now();
    let again = ChildGateway::launch_at(&redis.url(), "gw-a", ADMIN, "", false).await;
    let (end, ready) = (Instant::now(), launched.elapsed());
    let (status, body) = switchboard::admin_client::request(
        "GET",
        &format!("{}/admin/policies", again.admin_url),
        Some("chaos-admin-token"),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    let active = body["policies"].as_array().unwrap().iter().find(|r| r["role"] == "node-selection").unwrap();
    assert_eq!(active["active"]["sha256"], sha.as_str(), "{body}");
    load.live.lock().unwrap().push(again.url.clone());
    load.wait_results(200).await;
    let tally = load.finish(&[&gateways[0], &gateways[1], &again]).await;
    let probes = stop_probes(probes, probes_stop).await;
    report(name, end - start, first_result, Some(ready), &tally);
    assert!(probes[1].never_unready(), "the surviving gateway left rotation");
    settled(&redis.url(), 1).await;
    drop(again);
}
