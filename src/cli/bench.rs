//! `switchboard bench`: throughput, latency, Redis cost per task, gateway CPU and memory, policy
//! cost, and the Redis-only ceiling, against gateways it starts (or one given with --url).
//! Simulated nodes and clients speak the protocol over real WebSockets (`switchboard::sim`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use switchboard::admin_client;
use switchboard::devredis::{RedisCluster, RedisServer};
use switchboard::histogram::Histogram;
use switchboard::sim::client::{Load, Session, Tally};
use switchboard::sim::node::{self, NodeSpec};
use switchboard::store::{NodeRegistration, Payload, SchedulerConfig, Store};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A running scheduler's WebSocket base URL (ws://host:port) instead of starting a gateway:
    /// any scheduler that speaks the fleet protocol (Switchboard, or the fleet's old scheduler).
    /// The bench first waits (up to 60 s) until a node registered there is given work.
    #[arg(long)]
    url: Option<String>,
    /// That gateway's admin URL (http://host:port), for its dispatch and policy metrics; without
    /// it those columns are empty. Give `--redis-url` too for the Redis columns.
    #[arg(long, requires = "url")]
    admin_url: Option<String>,
    /// Redis the started gateways use (a private redis-server when absent).
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    redis_url: Option<String>,
    /// Seconds per measured load.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Smaller scenarios (up to 1,000 nodes and 500 sessions), for a quick look.
    #[arg(long)]
    quick: bool,
    /// Time from job_assign to job_result at the simulated nodes.
    #[arg(long, default_value_t = 0)]
    answer_delay_ms: u64,
    /// Base64 audio bytes per utterance.
    #[arg(long, default_value_t = 1024)]
    audio_bytes: usize,
    #[arg(long, default_value = "target/bench/bench.json")]
    json: PathBuf,
    /// Regenerate this Markdown report (docs/benchmarks.md) from the run.
    #[arg(long)]
    write_docs: Option<PathBuf>,
    /// Instead of the scenarios: a steady load with churn for this many minutes, sampling the
    /// gateway's RSS, descriptors and tasks and Redis's memory and keys (docs/reliability.md).
    #[arg(long, value_name = "MINUTES", conflicts_with_all = ["url", "write_docs", "quick"])]
    soak: Option<f64>,
    /// Utterances per second of the soak.
    #[arg(long, default_value_t = 200.0)]
    soak_rate: f64,
}

/// A gateway child process.
pub(super) struct GatewayProc {
    child: Option<Child>,
    pub(super) ws: String,
    /// Its admin URL; None for a scheduler given with `--url` alone.
    pub(super) admin: Option<String>,
}

impl GatewayProc {
    async fn start(redis_url: &str) -> anyhow::Result<Self> {
        Self::start_with(redis_url, 1, None).await
    }

    async fn start_with_cells(redis_url: &str, cells: u32) -> anyhow::Result<Self> {
        Self::start_with(redis_url, cells, None).await
    }

    /// A gateway on `redis_url` with `cells` cells, and the settings of `config` if given.
    pub(super) async fn start_with(
        redis_url: &str,
        cells: u32,
        config: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let (port, admin_port) = (free_port()?, free_port()?);
        let mut command = Command::new(std::env::current_exe()?);
        if let Some(config) = config {
            command.arg("serve").arg("--config").arg(config);
        } else {
            command.arg("serve");
        }
        let child = command
            .args(["--listen", &format!("127.0.0.1:{port}"), "--cells", &cells.to_string()])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}"), "--redis-url", redis_url])
            // Every simulated peer comes from 127.0.0.1 and may send as fast as it can.
            .args(["--max-connections-per-address", "0", "--max-messages-per-second", "0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a gateway")?;
        let gw = Self {
            child: Some(child),
            ws: format!("ws://127.0.0.1:{port}"),
            admin: Some(format!("http://127.0.0.1:{admin_port}")),
        };
        let start = Instant::now();
        let readyz = format!("http://127.0.0.1:{admin_port}/readyz");
        loop {
            if let Ok((200, _)) = admin_client::request("GET", &readyz, None, b"").await {
                return Ok(gw);
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("the gateway did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// CPU time (user + system) of a process, in µs.
fn cpu_micros(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    ticks * 10_000 // USER_HZ is 100 on Linux
}

pub(super) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Redis counters summed over the servers (one, or each cluster primary): (commands, server µs,
/// EVALSHA calls).
async fn redis_counters(servers: &mut [redis::aio::ConnectionManager]) -> (u64, u64, u64) {
    let (mut calls, mut usec, mut evalsha) = (0, 0, 0);
    for conn in servers {
        let (c, u, e) = server_counters(conn).await;
        calls += c;
        usec += u;
        evalsha += e;
    }
    (calls, usec, evalsha)
}

/// Redis `used_memory`, summed over the servers.
async fn redis_memory(servers: &mut [redis::aio::ConnectionManager]) -> u64 {
    let mut total = 0;
    for conn in servers {
        let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await.unwrap_or_default();
        total += info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

async fn server_counters(conn: &mut redis::aio::ConnectionManager) -> (u64, u64, u64) {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.unwrap_or_default();
    let (mut calls, mut usec, mut evalsha) = (0, 0, 0);
    for line in info.lines().filter(|l| l.starts_with("cmdstat_")) {
        let field = |name: &str| -> u64 {
            line.split(&format!("{name}="))
                .nth(1)
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        calls += field("calls");
        usec += field("usec");
        if line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:") {
            evalsha += field("calls");
        }
    }
    (calls, usec, evalsha)
}

/// The gateway's histograms and counters from `/metrics`.
#[derive(Debug, Default, Clone)]
struct Scrape {
    dispatch: Vec<(f64, u64)>,
    /// Round trips of the dispatch path's two scripts, as the gateway saw them.
    candidates_rt: Vec<(f64, u64)>,
    dispatch_task_rt: Vec<(f64, u64)>,
    policy_sum: f64,
    policy_count: f64,
    script_calls: f64,
    assigned: f64,
}

async fn scrape(admin: Option<&str>) -> Scrape {
    let Some(admin) = admin else { return Scrape::default() };
    let Ok((200, text)) = admin_client::request("GET", &format!("{admin}/metrics"), None, b"").await else {
        return Scrape::default();
    };
    let mut s = Scrape::default();
    for line in text.lines() {
        let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let bucket = |rest: &str| {
            let le = rest.split('"').next().unwrap_or("");
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(0.0) };
            (le, value(line) as u64)
        };
        if let Some(rest) = line.strip_prefix("switchboard_dispatch_seconds_bucket{le=\"") {
            s.dispatch.push(bucket(rest));
        } else if let Some(rest) =
            line.strip_prefix("switchboard_script_seconds_bucket{script=\"candidates\",le=\"")
        {
            s.candidates_rt.push(bucket(rest));
        } else if let Some(rest) =
            line.strip_prefix("switchboard_script_seconds_bucket{script=\"dispatch_task\",le=\"")
        {
            s.dispatch_task_rt.push(bucket(rest));
        } else if line.starts_with("switchboard_dispatch_script_calls_total ") {
            s.script_calls = value(line);
        } else if line.starts_with("switchboard_jobs_assigned_total ") {
            s.assigned = value(line);
        } else if line.starts_with("switchboard_policy_seconds_sum{role=\"node-selection\",slot=\"active\"") {
            s.policy_sum += value(line);
        } else if line.starts_with("switchboard_policy_seconds_count{role=\"node-selection\",slot=\"active\"")
        {
            s.policy_count += value(line);
        }
    }
    s
}

/// Quantile (µs, a bucket's upper bound) of a histogram between two scrapes.
fn quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> f64 {
    let count_at =
        |h: &[(f64, u64)], le: f64| h.iter().filter(|(l, _)| *l <= le).map(|(_, c)| *c).max().unwrap_or(0);
    let total = count_at(after, f64::INFINITY).saturating_sub(count_at(before, f64::INFINITY));
    if total == 0 {
        return 0.0;
    }
    let rank = (total as f64 * q).ceil() as u64;
    for (le, _) in after.iter().filter(|(l, _)| l.is_finite()) {
        if count_at(after, *le).saturating_sub(count_at(before, *le)) >= rank {
            return le * 1e6;
        }
    }
    f64::INFINITY
}

#[derive(Debug, Clone, Serialize)]
struct ScenarioResult {
    name: String,
    nodes: usize,
    sessions: usize,
    load: String,
    seconds: f64,
    completed: u64,
    errors: u64,
    tasks_per_s: f64,
    e2e_ms: [f64; 4],
    dispatch_us: [f64; 2],
    /// p50 and p99 round trip (µs) of `candidates` and of `dispatch_task`, as the gateway saw them.
    candidates_rt_us: [f64; 2],
    dispatch_task_rt_us: [f64; 2],
    redis_us_per_task: f64,
    redis_cmds_per_task: f64,
    /// Growth of Redis `used_memory` per completed task over the run: what a task leaves behind
    /// for its ttl (tasks in flight at the end count too, a few of thousands).
    redis_bytes_per_task: f64,
    evalsha_per_task: f64,
    /// Script calls of the dispatch path per assigned job, counted by the gateway.
    dispatch_round_trips: f64,
    gateway_cpu_us_per_task: Option<f64>,
    policy_us_per_decision: f64,
}

struct Bench {
    args: BenchArgs,
    /// The Redis servers whose counters are read: the one, or each cluster primary.
    redis: Vec<redis::aio::ConnectionManager>,
    /// The gateway the sessions use (dispatch latency is scraped there).
    gateway: GatewayProc,
    /// Another gateway whose CPU counts too (the two-gateway scenario).
    other_pid: Option<u32>,
    audio: Arc<str>,
    progress: ProgressBar,
}

impl Bench {
    fn node_spec(&self, capacity: u32, heartbeat: Duration) -> NodeSpec {
        NodeSpec {
            heartbeat,
            answer_delay: Duration::from_millis(self.args.answer_delay_ms),
            answer_delay_max: Duration::from_millis(self.args.answer_delay_ms),
            ..NodeSpec::new(&["zh"], &["en"], capacity)
        }
    }

    /// Connects `n` nodes (64 at a time); they run until `stop`.
    async fn nodes(&self, n: usize, spec: NodeSpec, stop: &CancellationToken) -> anyhow::Result<()> {
        let url = format!("{}/ws/node", self.gateway.ws);
        let answered = Arc::new(AtomicU64::new(0));
        let mut started = 0;
        while started < n {
            let batch = (n - started).min(64);
            let mut joins = Vec::new();
            for _ in 0..batch {
                let (url, spec, answered, stop) = (url.clone(), spec.clone(), answered.clone(), stop.clone());
                joins.push(tokio::spawn(async move { node::start(&url, spec, answered, stop).await }));
            }
            for join in joins {
                let (_, serve) = join.await??;
                tokio::spawn(serve);
            }
            started += batch;
        }
        Ok(())
    }

    /// A node spec of the fleet's `shape` with `capacity` slots.
    fn shaped(&self, shape: &Shape, capacity: u32) -> NodeSpec {
        let mut spec = self.node_spec(capacity, Duration::from_secs(5));
        spec.asr_languages = shape.asr.clone();
        spec.semantic_languages = shape.semantic.clone();
        spec
    }

    async fn sessions(&self, n: usize) -> anyhow::Result<Vec<Session>> {
        self.sessions_over(n, &[("zh".into(), "en".into())]).await
    }

    /// `n` one-way sessions, their language pairs taken round robin from `pairs`.
    async fn sessions_over(&self, n: usize, pairs: &[(String, String)]) -> anyhow::Result<Vec<Session>> {
        let url = format!("{}/ws/session", self.gateway.ws);
        let mut sessions = Vec::with_capacity(n);
        while sessions.len() < n {
            let batch = (n - sessions.len()).min(64);
            let mut joins = Vec::new();
            for i in 0..batch {
                let (src, tgt) = pairs[(sessions.len() + i) % pairs.len()].clone();
                let (url, audio) = (url.clone(), self.audio.clone());
                joins.push(tokio::spawn(async move { Session::open(&url, &src, &tgt, audio).await }));
            }
            for join in joins {
                sessions.push(join.await??);
            }
        }
        Ok(sessions)
    }

    /// Runs `load` on `sessions` for the configured time and measures it.
    /// Rooms: the first session of every `size` speaks (open loop), the others listen.
    async fn measure_rooms(
        &mut self,
        name: &str,
        nodes: usize,
        sessions: Vec<Session>,
        size: usize,
        interval: Duration,
    ) -> ScenarioResult {
        let loads = (0..sessions.len())
            .map(|i| if i % size == 0 { Load::Open { interval } } else { Load::Idle })
            .collect();
        let mut result = self.measure_each(name, nodes, sessions, loads).await;
        result.e2e_ms = [f64::NAN; 4]; // listeners did not send what they hear
        result.load =
            format!("open, 1 speaker per room, {:.1} utterances/s each", 1.0 / interval.as_secs_f64());
        result
    }

    /// Runs `load` on `sessions` for the configured time and measures it.
    async fn measure(
        &mut self,
        name: &str,
        nodes: usize,
        sessions: Vec<Session>,
        load: Load,
    ) -> ScenarioResult {
        let loads = vec![load; sessions.len()];
        self.measure_each(name, nodes, sessions, loads).await
    }

    /// Runs each session's load for the configured time and measures it.
    async fn measure_each(
        &mut self,
        name: &str,
        nodes: usize,
        sessions: Vec<Session>,
        loads: Vec<Load>,
    ) -> ScenarioResult {
        let load = loads.first().copied().unwrap_or(Load::Idle);
        self.progress.set_message(name.to_owned());
        let count = sessions.len();
        let latency = Arc::new(Histogram::default());
        let stop = CancellationToken::new();
        // Redis work that goes on without load (heartbeats, sweeps), per second, to take out of
        // the per-task figures: over one heartbeat period when there are many nodes.
        let idle_window = Duration::from_secs(if nodes > 100 { 5 } else { 1 });
        let idle_before = redis_counters(&mut self.redis).await;
        tokio::time::sleep(idle_window).await;
        let idle_after = redis_counters(&mut self.redis).await;
        let per_second = |f: fn(&(u64, u64, u64)) -> u64| {
            f(&idle_after).saturating_sub(f(&idle_before)) as f64 / idle_window.as_secs_f64()
        };
        let idle = (per_second(|c| c.0), per_second(|c| c.1), per_second(|c| c.2));
        let (redis_before, scrape_before) =
            (redis_counters(&mut self.redis).await, scrape(self.gateway.admin.as_deref()).await);
        let memory_before = redis_memory(&mut self.redis).await;
        let cpu_now =
            |pid: Option<u32>, other: Option<u32>| pid.map(|p| cpu_micros(p) + other.map_or(0, cpu_micros));
        let cpu_before = cpu_now(self.gateway.pid(), self.other_pid);
        let start = Instant::now();
        let runs: Vec<_> = sessions
            .into_iter()
            .zip(loads)
            .map(|(s, load)| tokio::spawn(s.run(load, latency.clone(), stop.clone(), Duration::from_secs(5))))
            .collect();
        tokio::time::sleep(Duration::from_secs(self.args.seconds)).await;
        stop.cancel();
        let mut tally = Tally::default();
        for run in runs {
            let t = run.await.unwrap_or_default();
            tally.sent += t.sent;
            tally.results += t.results;
            tally.errors += t.errors;
        }
        let seconds = start.elapsed().as_secs_f64();
        let (redis_after, scrape_after) =
            (redis_counters(&mut self.redis).await, scrape(self.gateway.admin.as_deref()).await);
        let memory_after = redis_memory(&mut self.redis).await;
        let cpu =
            cpu_now(self.gateway.pid(), self.other_pid).zip(cpu_before).map(|(a, b)| a.saturating_sub(b));
        let done = tally.results.max(1) as f64;
        self.progress.inc(1);
        ScenarioResult {
            name: name.to_owned(),
            nodes,
            sessions: count,
            load: match load {
                Load::Closed { in_flight } => format!("closed, {in_flight} in flight per session"),
                Load::Open { interval } => format!("open, {:.0}/s", count as f64 / interval.as_secs_f64()),
                Load::Idle => "idle".into(),
            },
            seconds,
            completed: tally.results,
            errors: tally.errors,
            tasks_per_s: tally.results as f64 / seconds,
            e2e_ms: [0.5, 0.95, 0.99, 0.999].map(|q| latency.quantile(q) as f64 / 1000.0),
            dispatch_us: [0.5, 0.99].map(|q| quantile(&scrape_before.dispatch, &scrape_after.dispatch, q)),
            candidates_rt_us: [0.5, 0.99]
                .map(|q| quantile(&scrape_before.candidates_rt, &scrape_after.candidates_rt, q)),
            dispatch_task_rt_us: [0.5, 0.99]
                .map(|q| quantile(&scrape_before.dispatch_task_rt, &scrape_after.dispatch_task_rt, q)),
            redis_us_per_task: ((redis_after.1 - redis_before.1) as f64 - idle.1 * seconds).max(0.0) / done,
            redis_cmds_per_task: ((redis_after.0 - redis_before.0) as f64 - idle.0 * seconds).max(0.0) / done,
            redis_bytes_per_task: memory_after.saturating_sub(memory_before) as f64 / done,
            evalsha_per_task: ((redis_after.2 - redis_before.2) as f64 - idle.2 * seconds).max(0.0) / done,
            dispatch_round_trips: (scrape_after.script_calls - scrape_before.script_calls)
                / (scrape_after.assigned - scrape_before.assigned).max(1.0),
            gateway_cpu_us_per_task: cpu.map(|c| c as f64 / done),
            policy_us_per_decision: (scrape_after.policy_sum - scrape_before.policy_sum) * 1e6
                / (scrape_after.policy_count - scrape_before.policy_count).max(1.0),
        }
    }
}

/// Waits until the scheduler at `ws` gives a node work: a node registers, a session sends
/// utterances, and one result comes back (the fleet's old scheduler takes up to ~15 s after a
/// node registers before it assigns it anything). 60 s at most.
async fn wait_serving(ws: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let stop = CancellationToken::new();
    let _stop_node = stop.clone().drop_guard();
    let spec = NodeSpec::new(&["zh"], &["en"], 4);
    let answered = Arc::new(AtomicU64::new(0));
    let (_, serve) = node::start(&format!("{ws}/ws/node"), spec, answered, stop.clone())
        .await
        .with_context(|| format!("registering a node at {ws}/ws/node"))?;
    tokio::spawn(serve);
    while Instant::now() < deadline {
        let session = Session::open(&format!("{ws}/ws/session"), "zh", "en", "AAAA".into())
            .await
            .with_context(|| format!("opening a session at {ws}/ws/session"))?;
        let try_stop = CancellationToken::new();
        let run = tokio::spawn(session.run(
            Load::Closed { in_flight: 1 },
            Arc::new(Histogram::default()),
            try_stop.clone(),
            Duration::from_secs(1),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        try_stop.cancel();
        if run.await.is_ok_and(|t| t.results > 0) {
            return Ok(());
        }
    }
    bail!("{ws} gave no node work within 60 s")
}

/// The rate at which Redis alone runs the dispatch path's scripts — candidates, dispatch_task,
/// complete_task, the same scripts and keys as the gateway — pipelined: 8 connections, each with a
/// pipeline of 32 tasks (96 EVALSHA) in flight. Nodes are taken round robin, so no call waits for
/// another's reply.
async fn ceiling(redis_url: &str, seconds: u64, shape: &Shape) -> anyhow::Result<f64> {
    const NODES: usize = 10;
    const BATCH: usize = 32;
    let prefix = format!("bench-ceiling-{}", shape.pairs());
    let config = SchedulerConfig { prefix, ..SchedulerConfig::default() };
    let service = Store::connect(redis_url, config.clone()).await?;
    for i in 0..NODES {
        let node = NodeRegistration {
            id: format!("ceiling-{i}"),
            presented_secret: None,
            secret: "s".into(),
            conn: format!("c{i}"),
            gateway: "bench".into(),
            capacity: 1_000_000,
            pairs: shape.pair_list(),
            ready: vec!["asr".into(), "nmt".into(), "tts".into()],
            labels: Default::default(),
            info: serde_json::json!({}),
        };
        service.register_node(service.cell(0), &node).await?;
    }
    let client = redis::Client::open(redis_url)?;
    // Every ceiling node has the same shape, so one class, read once (the gateway has it from
    // `candidates`).
    let class: String = redis::cmd("HGET")
        .arg(service.cell(0).node("ceiling-0"))
        .arg("class")
        .query_async(&mut client.get_multiplexed_async_connection().await?)
        .await?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for w in 0..8usize {
        let conn = client.get_multiplexed_async_connection().await?;
        let (service, done, stop, class) = (service.clone(), done.clone(), stop.clone(), class.clone());
        workers.push(tokio::spawn(async move {
            let (k, scripts, cfg) = (service.cell(0).clone(), service.scripts(), service.config().clone());
            let payload =
                serde_json::to_string(&Payload { audio: Some("A".repeat(1024)), text: None }).unwrap();
            let mut conn = conn;
            let mut i = 0u64;
            while !stop.is_cancelled() {
                let mut pipe = redis::pipe();
                let mut jobs = Vec::with_capacity(BATCH);
                for _ in 0..BATCH {
                    let spec = switchboard::sim::task_spec(&format!("ceiling-{w}"), i);
                    let node = format!("ceiling-{}", i as usize % NODES);
                    let (task, pool) = (spec.task_id(), spec.pool());
                    let job = format!("job-{}-{w}x{i}:{task}", k.tag());
                    i += 1;
                    pipe.cmd("EVALSHA")
                        .arg(scripts.candidates.get_hash())
                        .arg(1)
                        .arg(k.pool(&pool))
                        .arg(cfg.candidates)
                        .arg("")
                        .arg("")
                        .arg(cfg.liveness_ms())
                        .arg(cfg.candidate_classes)
                        .arg(switchboard::protocol::now_ms())
                        .arg(&class);
                    pipe.cmd("EVALSHA")
                        .arg(scripts.dispatch_task.get_hash())
                        .arg(4)
                        .arg(k.task(&task))
                        .arg(k.waiting())
                        .arg(k.deadlines())
                        .arg(k.node(&node))
                        .arg(&task)
                        .arg(0)
                        .arg(&node)
                        .arg(&job)
                        .arg(cfg.job_timeout_ms)
                        .arg(serde_json::to_string(&spec).unwrap())
                        .arg(&payload)
                        .arg(cfg.task_ttl_ms)
                        .arg(cfg.max_attempts)
                        .arg(cfg.dispatch_wait_ms)
                        .arg(cfg.retry_ms)
                        .arg("")
                        .arg(&class)
                        .arg(cfg.liveness_ms())
                        .arg(&pool);
                    jobs.push((job, node));
                }
                for (job, node) in &jobs {
                    pipe.cmd("EVALSHA")
                        .arg(scripts.complete_task.get_hash())
                        .arg(3)
                        .arg(k.node(node))
                        .arg(k.waiting())
                        .arg(k.deadlines())
                        .arg(job)
                        .arg(node)
                        .arg("")
                        .arg("completed")
                        .arg(format!("done-{job}"));
                }
                let replies = match pipe.query_async::<Vec<String>>(&mut conn).await {
                    Ok(replies) => replies,
                    Err(err) => {
                        tracing::warn!(%err, "Ceiling pipeline failed.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let completed = replies.iter().filter(|r| r.contains("\"status\":\"completed\"")).count();
                done.fetch_add(completed as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.cancel();
    for w in workers {
        let _ = w.await;
    }
    Ok(done.load(std::sync::atomic::Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// The languages of the fleet's nodes, in the order node shapes take them (the sessions speak zh → en).
const FLEET_LANGS: [&str; 16] =
    ["zh", "en", "ja", "ko", "fr", "de", "es", "it", "ru", "pt", "ar", "hi", "vi", "th", "id", "tr"];

/// A node shape as the fleet registers it: `asr_languages × semantic_languages`.
#[derive(Debug, Clone)]
struct Shape {
    asr: Vec<String>,
    semantic: Vec<String>,
}

impl Shape {
    /// `n` languages both ways: n² pairs. `n == 1` is zh → {zh, en}: 2 pairs.
    fn languages(n: usize) -> Self {
        let langs: Vec<String> = FLEET_LANGS[..n.max(2)].iter().map(|l| l.to_string()).collect();
        let asr = if n == 1 { vec!["zh".to_owned()] } else { langs.clone() };
        Self { asr, semantic: langs }
    }

    fn pairs(&self) -> usize {
        self.asr.len() * self.semantic.len()
    }

    fn pair_list(&self) -> Vec<String> {
        let mut pairs: Vec<String> =
            self.asr.iter().flat_map(|a| self.semantic.iter().map(move |b| format!("{a}>{b}"))).collect();
        pairs.sort();
        pairs
    }
}

#[derive(Debug, Serialize)]
struct Report {
    machine: String,
    command: String,
    /// The Redis ceiling with nodes of 2 and of 256 pairs.
    ceilings: Vec<(usize, f64)>,
    ceiling_tasks_per_s: f64,
    best_tasks_per_s: f64,
    ratio_to_ceiling: f64,
    memory_per_idle_node_kib: f64,
    memory_per_idle_session_kib: f64,
    heartbeat_cpu_percent_of_core: f64,
    heartbeat_nodes: usize,
    scenarios: Vec<ScenarioResult>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(minutes) = args.soak {
        return super::soak::run(minutes, args.soak_rate, args.redis_url).await;
    }
    let private = match &args.redis_url {
        Some(_) => None,
        None => Some(RedisServer::start()?),
    };
    let redis_url = args.redis_url.clone().unwrap_or_else(|| private.as_ref().unwrap().url());
    let gateway = match &args.url {
        Some(ws) => {
            let ws = ws.trim_end_matches('/').to_owned();
            wait_serving(&ws).await?;
            GatewayProc {
                child: None,
                ws,
                admin: args.admin_url.as_ref().map(|a| a.trim_end_matches('/').into()),
            }
        }
        None => GatewayProc::start(&redis_url).await?,
    };
    let redis = vec![redis::Client::open(redis_url.as_str())?.get_connection_manager().await?];
    let (max_nodes, session_steps): (usize, &[usize]) =
        if args.quick { (1_000, &[10, 100, 500]) } else { (10_000, &[10, 100, 1_000, 5_000]) };
    let node_steps: Vec<usize> = [10, 1_000, 10_000].into_iter().filter(|n| *n <= max_nodes).collect();
    let steps = 1 + 3 + 1 + node_steps.len() + session_steps.len() + 2 + 1 + 2 + 2 + 10;
    let progress = ProgressBar::new(steps as u64);
    progress
        .set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}").expect("template"));
    let audio: Arc<str> = "A".repeat(args.audio_bytes).into();
    let mut bench = Bench { args, redis, gateway, other_pid: None, audio, progress };
    let mut scenarios = Vec::new();
    let seconds = bench.args.seconds;

    bench.progress.set_message("ceiling: Redis alone");
    let mut ceilings = Vec::new();
    for langs in [1, 16] {
        let shape = Shape::languages(langs);
        ceilings.push((shape.pairs(), ceiling(&redis_url, seconds, &shape).await?));
    }
    let ceiling = ceilings[0].1;
    bench.progress.inc(1);

    // Closed loop: throughput at growing concurrency, nodes never the bottleneck.
    for (sessions, k) in [(10, 4), (100, 4), (1_000, 1)] {
        let stop = CancellationToken::new();
        bench.nodes(10, bench.node_spec(1_000, Duration::from_secs(5)), &stop).await?;
        let s = bench.sessions(sessions).await?;
        let name = format!("closed loop, {sessions} sessions × {k}");
        scenarios.push(bench.measure(&name, 10, s, Load::Closed { in_flight: k }).await);
        stop.cancel();
    }
    let best = scenarios.iter().map(|s| s.tasks_per_s).fold(0.0, f64::max);

    // Open loop at half the best throughput: dispatch latency under moderate load.
    {
        let stop = CancellationToken::new();
        bench.nodes(10, bench.node_spec(1_000, Duration::from_secs(5)), &stop).await?;
        let s = bench.sessions(100).await?;
        let interval = Duration::from_secs_f64(100.0 / (best / 2.0).max(1.0));
        let name = format!("open loop at 50% ({:.0}/s)", best / 2.0);
        scenarios.push(bench.measure(&name, 10, s, Load::Open { interval }).await);
        stop.cancel();
    }

    // Nodes 10 → 10,000 (heartbeating every 5 s): cost per task must not grow with them.
    for &nodes in &node_steps {
        let stop = CancellationToken::new();
        bench.progress.set_message(format!("connecting {nodes} nodes"));
        bench.nodes(nodes, bench.node_spec(64, Duration::from_secs(5)), &stop).await?;
        let s = bench.sessions(100).await?;
        let name = format!("{nodes} nodes, 100 sessions × 2");
        scenarios.push(bench.measure(&name, nodes, s, Load::Closed { in_flight: 2 }).await);
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The fleet's node shapes: 2, 16, 144 and 256 language pairs per node, and a mixed fleet (a
    // third each of 4-, 36- and 144-pair nodes, requests over 20 pairs), with 10 and 1,000 nodes.
    // Redis commands and µs per task must stay flat in the pairs.
    for nodes in [10usize, 1_000] {
        for langs in [1usize, 4, 12, 16] {
            let shape = Shape::languages(langs);
            let stop = CancellationToken::new();
            bench.progress.set_message(format!("{nodes} nodes of {} pairs", shape.pairs()));
            bench.nodes(nodes, bench.shaped(&shape, 64), &stop).await?;
            let s = bench.sessions(100).await?;
            let name = format!("{nodes} nodes × {} pairs, 100 × 2", shape.pairs());
            scenarios.push(bench.measure(&name, nodes, s, Load::Closed { in_flight: 2 }).await);
            stop.cancel();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let stop = CancellationToken::new();
        bench.progress.set_message(format!("{nodes} nodes, mixed fleet"));
        for langs in [2usize, 6, 12] {
            bench.nodes(nodes / 3 + 1, bench.shaped(&Shape::languages(langs), 64), &stop).await?;
        }
        let pairs: Vec<(String, String)> = FLEET_LANGS[..6]
            .iter()
            .flat_map(|a| {
                FLEET_LANGS[..6].iter().filter(move |b| *b != a).map(move |b| (a.to_string(), b.to_string()))
            })
            .take(20)
            .collect();
        let s = bench.sessions_over(100, &pairs).await?;
        let name = format!("{nodes} nodes mixed 4/36/144 pairs, 20 pairs");
        scenarios.push(bench.measure(&name, nodes, s, Load::Closed { in_flight: 2 }).await);
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Sessions 10 → 5,000, one utterance in flight each.
    for &sessions in session_steps {
        let stop = CancellationToken::new();
        bench.nodes(10, bench.node_spec(1_000, Duration::from_secs(5)), &stop).await?;
        let s = bench.sessions(sessions).await?;
        let name = format!("{sessions} sessions × 1");
        scenarios.push(bench.measure(&name, 10, s, Load::Closed { in_flight: 1 }).await);
        stop.cancel();
    }

    // Rooms of 3 and 8 languages: one speaker per room (open loop), every other member hears it
    // in their own language, so each utterance is (languages - 1) tasks.
    const LANGS: [&str; 8] = ["en", "zh", "ja", "ko", "fr", "de", "es", "it"];
    for (rooms, size) in [(20usize, 3usize), (10, 8)] {
        let stop = CancellationToken::new();
        let mut spec = bench.node_spec(1_000, Duration::from_secs(5));
        spec.asr_languages = vec!["zh".into()]; // the simulated sessions speak zh
        spec.semantic_languages = LANGS.iter().map(|l| l.to_string()).collect();
        bench.nodes(10, spec, &stop).await?;
        let mut sessions = bench.sessions(rooms * size).await?;
        for room in sessions.chunks_mut(size) {
            let code = room[0].create_room("en").await?;
            for (member, lang) in room[1..].iter_mut().zip(&LANGS[1..]) {
                member.join_room(&code, lang).await?;
            }
        }
        // Half the best single-session rate, spread over the rooms' speakers.
        let per_speaker = (best / 2.0) / (rooms * (size - 1)) as f64;
        let interval = Duration::from_secs_f64(1.0 / per_speaker.max(0.1));
        let name = format!("{rooms} rooms of {size} languages");
        let speakers_first: Vec<Session> = sessions;
        scenarios.push(bench.measure_rooms(&name, 10, speakers_first, size, interval).await);
        stop.cancel();
    }

    // Two gateways: the nodes on the first, the sessions on a second, so every job_assign and
    // every result crosses gateways (through the other one's inbox). Compare with the closed-loop
    // row of 100 sessions × 4 on one gateway.
    if bench.args.url.is_none() {
        let stop = CancellationToken::new();
        bench.nodes(10, bench.node_spec(1_000, Duration::from_secs(5)), &stop).await?;
        let second = GatewayProc::start(&redis_url).await?;
        let first = std::mem::replace(&mut bench.gateway, second);
        bench.other_pid = first.pid();
        let s = bench.sessions(100).await?;
        let name = "2 gateways: 100 sessions on one, 10 nodes on the other";
        scenarios.push(bench.measure(name, 10, s, Load::Closed { in_flight: 4 }).await);
        stop.cancel();
        bench.other_pid = None;
        drop(std::mem::replace(&mut bench.gateway, first));
    } else {
        bench.progress.inc(1);
    }

    // Redis Cluster: the same load as the closed-loop row of 100 sessions × 4 on a local
    // 3-primary cluster, with 1 cell (one primary does the work) and with 3 cells (one per
    // primary; nodes spread over the cells by id).
    if bench.args.url.is_none() {
        let cluster = RedisCluster::start(3)?;
        let mut servers = Vec::new();
        for url in cluster.urls() {
            servers.push(redis::Client::open(url.as_str())?.get_connection_manager().await?);
        }
        let single = std::mem::replace(&mut bench.redis, servers);
        for cells in [1, 3] {
            let stop = CancellationToken::new();
            let gateway = GatewayProc::start_with_cells(&cluster.url(), cells).await?;
            let previous = std::mem::replace(&mut bench.gateway, gateway);
            bench.nodes(12, bench.node_spec(1_000, Duration::from_secs(5)), &stop).await?;
            let s = bench.sessions(100).await?;
            let name = format!("cluster of 3 primaries, {cells} cell{}", if cells == 1 { "" } else { "s" });
            scenarios.push(bench.measure(&name, 12, s, Load::Closed { in_flight: 4 }).await);
            stop.cancel();
            drop(std::mem::replace(&mut bench.gateway, previous));
        }
        bench.redis = single;
    } else {
        bench.progress.inc(2);
    }

    // Memory and heartbeat cost, in a fresh gateway process (a used one reuses freed memory):
    // idle sessions first, then idle nodes heartbeating every 5 s on top.
    let (memory_per_session, memory_per_node, heartbeat_cpu) = match &bench.args.url {
        Some(_) => (0.0, 0.0, 0.0),
        None => {
            let fresh = GatewayProc::start(&redis_url).await?;
            let pid = fresh.pid().expect("a started gateway has a pid");
            let measuring = std::mem::replace(&mut bench.gateway, fresh);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let base = rss_kib(pid);
            let n_sessions = *session_steps.last().unwrap();
            bench.progress.set_message(format!("{n_sessions} idle sessions"));
            let idle = bench.sessions(n_sessions).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let with_sessions = rss_kib(pid);
            let n_nodes = *node_steps.last().unwrap();
            bench.progress.set_message(format!("{n_nodes} idle nodes"));
            let stop = CancellationToken::new();
            bench.nodes(n_nodes, bench.node_spec(4, Duration::from_secs(5)), &stop).await?;
            tokio::time::sleep(Duration::from_secs(6)).await;
            let with_nodes = rss_kib(pid);
            bench.progress.set_message(format!("{n_nodes} idle nodes heartbeating"));
            let cpu0 = cpu_micros(pid);
            let window = Duration::from_secs(20);
            tokio::time::sleep(window).await;
            let heartbeat = (cpu_micros(pid) - cpu0) as f64 / window.as_micros() as f64 * 100.0;
            stop.cancel();
            drop(idle);
            bench.gateway = measuring;
            bench.progress.inc(2);
            (
                with_sessions.saturating_sub(base) as f64 / n_sessions as f64,
                with_nodes.saturating_sub(with_sessions) as f64 / n_nodes as f64,
                heartbeat,
            )
        }
    };
    bench.progress.finish_and_clear();

    let best = scenarios.iter().map(|s| s.tasks_per_s).fold(0.0, f64::max);
    let report = Report {
        machine: machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ceilings,
        ceiling_tasks_per_s: ceiling,
        best_tasks_per_s: best,
        ratio_to_ceiling: best / ceiling.max(1.0),
        memory_per_idle_node_kib: memory_per_node,
        memory_per_idle_session_kib: memory_per_session,
        heartbeat_cpu_percent_of_core: heartbeat_cpu,
        heartbeat_nodes: *node_steps.last().unwrap(),
        scenarios,
    };
    let table = table(&report);
    println!("{table}");
    if let Some(dir) = bench.args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&bench.args.json, serde_json::to_string_pretty(&report)?)?;
    println!("JSON: {}", bench.args.json.display());
    if let Some(path) = &bench.args.write_docs {
        std::fs::write(path, markdown(&report, &table))?;
        println!("Report: {}", path.display());
    }
    Ok(())
}

fn table(r: &Report) -> String {
    let mut out = format!(
        "{:<38} {:>9} {:>33} {:>15} {:>9} {:>6} {:>7} {:>5} {:>6} {:>9} {:>9}\n",
        "scenario",
        "tasks/s",
        "e2e ms p50/p95/p99/p99.9",
        "dispatch µs p50/p99",
        "redis µs",
        "cmds",
        "evalsha",
        "rt",
        "B/task",
        "gw cpu µs",
        "policy µs"
    );
    for s in &r.scenarios {
        out += &format!(
            "{:<38} {:>9.0} {:>33} {:>15} {:>9.1} {:>6.2} {:>7.2} {:>5.2} {:>6.0} {:>9} {:>9.1}\n",
            s.name,
            s.tasks_per_s,
            if s.e2e_ms[0].is_nan() {
                "-".to_owned()
            } else {
                format!("{:.2}/{:.2}/{:.2}/{:.2}", s.e2e_ms[0], s.e2e_ms[1], s.e2e_ms[2], s.e2e_ms[3])
            },
            format!("{:.0}/{:.0}", s.dispatch_us[0], s.dispatch_us[1]),
            s.redis_us_per_task,
            s.redis_cmds_per_task,
            s.evalsha_per_task,
            s.dispatch_round_trips,
            s.redis_bytes_per_task,
            s.gateway_cpu_us_per_task.map_or("-".into(), |c| format!("{c:.0}")),
            s.policy_us_per_decision,
        );
    }
    for (pairs, rate) in &r.ceilings {
        out += &format!(
            "\nRedis ceiling (candidates + dispatch_task + complete_task pipelined, 8 × 32 tasks in flight), nodes of {pairs} pairs: {rate:.0} tasks/s",
        );
    }
    out += "\n";
    out += &format!(
        "best end-to-end: {:.0} tasks/s = {:.0} % of the ceiling\n",
        r.best_tasks_per_s,
        r.ratio_to_ceiling * 100.0
    );
    out += &format!(
        "gateway memory: {:.1} KiB per idle node, {:.1} KiB per idle session\n",
        r.memory_per_idle_node_kib, r.memory_per_idle_session_kib
    );
    out += &format!(
        "heartbeats of {} idle nodes every 5 s: {:.1} % of one core (gateway process)\n",
        r.heartbeat_nodes, r.heartbeat_cpu_percent_of_core
    );
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024 / 1024);
    let redis = Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} GiB; {redis}")
}

fn markdown(r: &Report, table: &str) -> String {
    format!(
        "# Benchmarks\n\nRegenerate with `cargo run --release -- bench --write-docs docs/benchmarks.md` (a private redis-server \
and one gateway process are started; simulated nodes and clients speak the protocol over real WebSockets from the bench \
process, on the same machine).\n\n\
Another scheduler that speaks the fleet protocol (the fleet's old one included) is measured with the same load by \
`bench --url ws://HOST:PORT` (add `--admin-url` for a Switchboard gateway's dispatch and policy columns, `--redis-url` for \
the Redis columns); the bench first waits up to 60 s until a node registered there is given work. Run the target without \
per-address connection and message limits: every simulated peer comes from one address.\n\n- machine: {}\n- command: `{}`\n- JSON: `target/bench/bench.json`\n\n```\n{}```\n\n\
{}\n{}\nColumns: `tasks/s` completed translation results per second; `e2e` utterance sent → translation_result received at the \
simulated client (node answers at once unless `--answer-delay-ms`); `dispatch` utterance received → job_assign sent, \
inside the gateway (histogram bucket upper bounds); `redis µs` and `cmds` Redis server time and commands per task from \
`INFO commandstats`, less the idle rate measured before the load (heartbeats, sweeps; over one 5 s heartbeat period with many nodes); `evalsha` script calls per \
task, likewise; `rt` the dispatch path's script calls per assigned job, counted by the gateway; `B/task` growth of Redis `used_memory` per completed task over the run (what a task leaves for its ttl; the 2-gateway row also grows the stream inboxes, up to their `MAXLEN`, and rows that open or close many sessions count their session keys coming or going, so read it on the steady rows); room rows: tasks/s counts results \
delivered to listeners (one task per listener language), e2e is not measured there (listeners do not send); `gw cpu µs` gateway process CPU \
per task (/proc, 10 ms resolution); `policy µs` mean node-selection decision on the live dispatch path.\n\n\
The `2 gateways` row runs the `closed loop, 100 sessions × 4` load with the sessions on one gateway and the nodes on \
another, so every job_assign and every result crosses gateways through a Redis stream inbox (docs/rooms.md): per task \
that adds a node lookup and an `XADD` for the job, a `session_route` and an `XADD` for the result and for the \
speaker's UI event, and the readers' `XREADGROUP`/`XACK` (about 8 more commands and 2 more script calls); its \
`gw cpu µs` is the two gateway processes together, which also share the 2 cores with Redis and the bench.\n\n\
{}",
        r.machine,
        r.command,
        table,
        targets(r),
        dispatch_time(r) + LIMITS,
        cluster(r),
    )
}

/// Where a dispatch's time goes, for the unsaturated rows: the two script round trips and the
/// policy, against utterance → job_assign; the rest is the gateway's own work and its queueing.
fn dispatch_time(r: &Report) -> String {
    let rows: Vec<&ScenarioResult> = r
        .scenarios
        .iter()
        .filter(|s| {
            s.name.starts_with("open loop")
                || s.name == "10 sessions × 1"
                || s.name == "closed loop, 100 sessions × 4"
        })
        .filter(|s| s.candidates_rt_us[0] > 0.0)
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "## Where the dispatch time goes

Utterance received → job_assign sent (`dispatch`), against its parts as the gateway measured them: the round trips of `candidates` and `dispatch_task` (request written → reply parsed, so Redis's own time, its queue and the gateway's wake-up), and the policy's decision. p50 / p99 in µs, histogram bucket upper bounds (a bucket is ~1.19× the one below), so parts do not add up exactly.

| row | tasks/s | dispatch | `candidates` | `dispatch_task` | policy (mean) |
|---|---|---|---|---|---|
",
    );
    for s in rows {
        out += &format!(
            "| {} | {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} |\n",
            s.name,
            s.tasks_per_s,
            s.dispatch_us[0],
            s.dispatch_us[1],
            s.candidates_rt_us[0],
            s.candidates_rt_us[1],
            s.dispatch_task_rt_us[0],
            s.dispatch_task_rt_us[1],
            s.policy_us_per_decision
        );
    }
    out += "\nThe two round trips are most of a dispatch: on this machine Redis, the gateway and the simulated peers share two cores, so a round trip waits for Redis to be scheduled and then for a gateway worker to be woken; the p99 is that queueing, not work. What could be taken was: one script call less per dispatch is not possible (the policy decides between the read and the write), the scripts do 3 and 6 commands, and `complete_task` runs on its own connection so results do not queue behind dispatches.\n\n";
    out
}

/// Single Redis against the cluster rows, when the run had them.
fn cluster(r: &Report) -> String {
    let row = |name: &str| r.scenarios.iter().find(|s| s.name == name);
    let (Some(single), Some(one), Some(three)) = (
        row("closed loop, 100 sessions × 4"),
        row("cluster of 3 primaries, 1 cell"),
        row("cluster of 3 primaries, 3 cells"),
    ) else {
        return String::new();
    };
    let line = |label: &str, s: &ScenarioResult| {
        format!(
            "| {label} | {:.0} | {:.0} / {:.0} | {:.1} | {:.2} |\n",
            s.tasks_per_s, s.e2e_ms[0], s.e2e_ms[2], s.redis_cmds_per_task, s.evalsha_per_task
        )
    };
    format!(
        "## Single Redis against Redis Cluster\n\nThe same load (100 sessions × 4 in flight, one gateway, nodes never the \
bottleneck) on one redis-server and on a local cluster of 3 primaries (`redis-cli --cluster create`, no replicas), with \
1 cell (all node, task and job state on one primary; sessions, rooms and inboxes still spread by their own tags) and \
with 3 cells (one per primary). Redis counters are summed over the primaries.\n\n\
| Redis | tasks/s | e2e p50 / p99 ms | cmds per task | evalsha per task |\n|---|---|---|---|---|\n{}{}{}\n\
Everything runs on the same 2 cores: the three primaries, the gateway and the simulated peers compete for them, so \
this measures the cost of the cluster path (slot routing, one pipeline per slot) rather than the scale-out, which \
needs the primaries on their own cores or machines (docs/scaling.md).\n",
        line("single redis-server", single),
        line("cluster, 1 cell", one),
        line("cluster, 3 cells", three),
    )
}

/// The issue's targets, with this run's figures.
fn targets(r: &Report) -> String {
    let by_nodes: Vec<&ScenarioResult> = r.scenarios.iter().filter(|s| s.name.contains(" nodes, ")).collect();
    let open = r.scenarios.iter().find(|s| s.name.starts_with("open loop"));
    let round_trips = r.scenarios.iter().map(|s| s.dispatch_round_trips).fold(0.0, f64::max);
    let evalsha = r.scenarios.iter().map(|s| s.evalsha_per_task).fold(0.0, f64::max);
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let mut out = String::from("## Against the targets\n\n| target | this run | |\n|---|---|---|\n");
    out += &format!(
        "| end-to-end ≥ 50 % of the same-run Redis ceiling | {:.0} of {:.0} tasks/s = {:.0} % | {} |\n",
        r.best_tasks_per_s,
        r.ceiling_tasks_per_s,
        r.ratio_to_ceiling * 100.0,
        verdict(r.ratio_to_ceiling >= 0.5)
    );
    out += &format!(
        "| ≤ 3 Redis round trips per task on the dispatch path | at most {round_trips:.2} on the dispatch path (counted by the gateway), {evalsha:.2} script calls per task with the completion | {} |\n",
        verdict(round_trips <= 3.0)
    );
    if let (Some(first), Some(last)) = (by_nodes.first(), by_nodes.last()) {
        out += &format!(
            "| no Redis time that grows with the number of nodes | {:.2} → {:.2} commands and {:.0} → {:.0} µs per task from {} to {} nodes | {} |\n",
            first.redis_cmds_per_task,
            last.redis_cmds_per_task,
            first.redis_us_per_task,
            last.redis_us_per_task,
            first.nodes,
            last.nodes,
            verdict(last.redis_cmds_per_task <= first.redis_cmds_per_task * 1.05)
        );
    }
    if let Some(open) = open {
        out += &format!(
            "| dispatch p99 ≤ 2 ms at half the maximum throughput | p50 {:.0} µs, p99 {:.0} µs at {:.0} tasks/s | {} |\n",
            open.dispatch_us[0],
            open.dispatch_us[1],
            open.tasks_per_s,
            verdict(open.dispatch_us[1] <= 2000.0)
        );
    }
    // The fleet's shapes: per-task Redis cost flat from 2 to 256 pairs per node.
    for nodes in [10usize, 1_000] {
        let rows: Vec<&ScenarioResult> = [2, 16, 144, 256]
            .iter()
            .filter_map(|p| {
                r.scenarios.iter().find(|s| s.name == format!("{nodes} nodes × {p} pairs, 100 × 2"))
            })
            .collect();
        if rows.len() < 2 {
            continue;
        }
        let spread = |f: fn(&ScenarioResult) -> f64| {
            let (lo, hi) =
                rows.iter().map(|s| f(s)).fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
            (lo, hi, (hi - lo) / ((hi + lo) / 2.0).max(f64::MIN_POSITIVE))
        };
        let (cmd_lo, cmd_hi, cmd_spread) = spread(|s| s.redis_cmds_per_task);
        let (us_lo, us_hi, us_spread) = spread(|s| s.redis_us_per_task);
        out += &format!(
            "| Redis commands and µs per task flat (±15 %) from 2 to 256 pairs per node, {nodes} nodes | {cmd_lo:.2}–{cmd_hi:.2} commands ({:.0} % apart), {us_lo:.0}–{us_hi:.0} µs ({:.0} % apart) | {} |\n",
            cmd_spread * 100.0,
            us_spread * 100.0,
            verdict(cmd_spread <= 0.30 && us_spread <= 0.30)
        );
    }
    let common: Vec<&ScenarioResult> = r
        .scenarios
        .iter()
        .filter(|s| s.name.starts_with("closed loop") || s.name.contains(" pairs, 100 × 2"))
        .collect();
    let worst_cmds = common.iter().map(|s| s.redis_cmds_per_task).fold(0.0, f64::max);
    out += &format!(
        "| ≤ 20 Redis commands per task on the common path | at most {worst_cmds:.2} (closed-loop and pair-count rows; a pool of several classes adds a read per class: mixed-fleet rows) | {} |\n",
        verdict(worst_cmds <= 20.0)
    );
    let cpu: Vec<f64> = common.iter().filter_map(|s| s.gateway_cpu_us_per_task).collect();
    if !cpu.is_empty() {
        let mut sorted = cpu.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        out += &format!(
            "| gateway CPU ≤ 120 µs per task | median {median:.0} µs, {:.0}–{:.0} µs over the closed-loop and pair-count rows | {} |\n",
            sorted[0],
            sorted[sorted.len() - 1],
            verdict(median <= 120.0)
        );
    }
    if let Some(row) = r.scenarios.iter().find(|s| s.name == "closed loop, 100 sessions × 4") {
        let standing_gib = row.redis_bytes_per_task * r.best_tasks_per_s * 600.0 / (1u64 << 30) as f64;
        out += &format!(
            "| ≤ 300 Redis bytes per completed task | {:.0} B per task (closed loop, 100 × 4); at the best rate ({:.0} tasks/s) held for the 10 min task ttl: {standing_gib:.2} GiB standing | {} |\n",
            row.redis_bytes_per_task,
            r.best_tasks_per_s,
            verdict(row.redis_bytes_per_task <= 300.0)
        );
    }
    out += &format!(
        "| ≤ 64 KiB gateway memory per idle connected node | {:.1} KiB | {} |\n",
        r.memory_per_idle_node_kib,
        verdict(r.memory_per_idle_node_kib <= 64.0)
    );
    out += &format!(
        "| heartbeats of 10,000 nodes every 5 s under 25 % of one core | {:.1} % ({} nodes) | {} |\n",
        r.heartbeat_cpu_percent_of_core,
        r.heartbeat_nodes,
        verdict(r.heartbeat_cpu_percent_of_core < 25.0 && r.heartbeat_nodes >= 10_000)
    );
    out
}

const LIMITS: &str = "## What limits the figures\n\n\
Everything runs on one 2-core machine: Redis, the gateway and the bench process that simulates every node and \
client. Throughput is bounded by CPU shared by the three, not by any one of them; the Redis ceiling is measured in \
the same run with the bench process pipelining, so it is an upper bound for this machine, not for Redis. Redis \
`usec` from `INFO commandstats` includes time a script spent preempted by the other processes, which inflates \
`redis µs` several-fold against the ~6 µs a bare `EVALSHA` and ~2-3 µs per inner command take on an idle core. \
Latency under closed-loop load is queueing behind that shared CPU (hundreds of sessions each keeping utterances in \
flight); the `10 sessions × 1` row and the open-loop row show the latency of an unsaturated gateway. Profiling the \
gateway (`perf record -p` on the closed-loop load) shows about a third of its CPU in the kernel — a `send`/`writev` per \
WebSocket frame and per Redis call, and worker threads parked and woken — and, before it moved to mimalloc, ~15 % in \
glibc's malloc; JSON (de)serialisation of the frames and script replies is most of the rest, and the node-selection \
policy ~10 µs per task (its host-side preparation included). \
The room rows are offered half the best rate through one speaker per room (~29 utterances/s each) and deliver about \
half of it: a session's utterances are handled one after another, each costing `room_speak`, `availability` and two \
calls per task, so one very fast speaker is the limit there, not the gateway (people speak about once a second).\n";
