//! `switchboard bench --soak MINUTES`: a steady load with churn — sessions that come and go,
//! nodes that reconnect — against a gateway it starts, sampling over time the gateway's RSS, open
//! file descriptors and tokio tasks, and Redis's memory and keys. A leak grows with time; state
//! with a lifetime (task records, detached sessions, buffers) levels off. The run ends with a
//! plateau check and exits non-zero when a figure still grows; `tests/soak.rs` runs a short one.
//!
//! The gateway runs with short lifetimes (tasks kept 20 s, sessions resumable 10 s) so that the
//! steady state is reached within a minute: with the defaults (10 min, 30 s) it is the same
//! plateau, ten times later and ten times higher in Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchboard::admin_client;
use switchboard::devredis::RedisServer;
use switchboard::histogram::Histogram;
use switchboard::sim::client::{Load, Session};
use switchboard::sim::node::{self, NodeSpec};
use tokio_util::sync::CancellationToken;

use super::bench::procs::{GatewayProc, rss_kib};

/// The settings the soaked gateway runs with (see the module doc).
const SOAK_CONFIG: &str = "[scheduler]\ntask_ttl_ms = 20000\n\n[sessions]\nresume_grace_ms = 10000\n";
/// Sessions open at any time; each lives `SESSION_LIFETIME`, then another takes its place.
const LANES: usize = 16;
const SESSION_LIFETIME: Duration = Duration::from_secs(10);
/// Nodes serving the load; one of them reconnects every `NODE_LIFETIME`.
const NODES: usize = 8;
const NODE_LIFETIME: Duration = Duration::from_secs(15);
/// How much a figure may exceed its earlier peak in the last part of the run: relative, plus an
/// absolute allowance for noise (allocator arenas, a burst of sockets at a sample).
const TOLERANCE: f64 = 0.10;

/// One sample of the figures that must plateau.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub at_s: f64,
    pub results: u64,
    pub errors: u64,
    pub rss_kib: u64,
    pub fds: u64,
    pub tokio_tasks: u64,
    pub redis_memory_kib: u64,
    pub redis_keys: u64,
}

/// The figure names, their slack, and how to read them from a sample.
type Figure = (&'static str, f64, fn(&Sample) -> u64);

const FIGURES: [Figure; 5] = [
    ("gateway RSS KiB", 8.0 * 1024.0, |s| s.rss_kib),
    ("open fds", 16.0, |s| s.fds),
    ("tokio tasks", 32.0, |s| s.tokio_tasks),
    ("Redis memory KiB", 2.0 * 1024.0, |s| s.redis_memory_kib),
    ("Redis keys", 64.0, |s| s.redis_keys),
];

pub async fn run(minutes: f64, rate: f64, redis_url: Option<String>) -> anyhow::Result<()> {
    let private = match &redis_url {
        Some(_) => None,
        None => Some(RedisServer::start()?),
    };
    let redis_url = redis_url.unwrap_or_else(|| private.as_ref().unwrap().url());
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("soak.toml");
    std::fs::write(&config, SOAK_CONFIG)?;
    let gateway = GatewayProc::start_with(&redis_url, 1, Some(&config)).await?;
    let pid = gateway.pid().expect("a started gateway");
    let mut redis = redis::Client::open(redis_url.as_str())?.get_connection_manager().await?;

    let stop = CancellationToken::new();
    let results = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let audio: Arc<str> = "A".repeat(1024).into();
    let interval = Duration::from_secs_f64(LANES as f64 / rate);
    let mut lanes = Vec::new();
    for i in 0..NODES {
        let lifetime = (i == 0).then_some(NODE_LIFETIME);
        lanes.push(tokio::spawn(node_lane(gateway.ws.clone(), lifetime, stop.clone())));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..LANES {
        let (ws, audio, stop) = (gateway.ws.clone(), audio.clone(), stop.clone());
        let (results, errors) = (results.clone(), errors.clone());
        lanes.push(tokio::spawn(session_lane(ws, audio, interval, results, errors, stop)));
    }

    let total = Duration::from_secs_f64(minutes * 60.0);
    let every = (total / 30).max(Duration::from_secs(3));
    println!(
        "soak: {minutes} min at {rate:.0} utterances/s, {LANES} sessions renewed every {} s, {NODES} nodes (one \
         reconnecting every {} s), a sample every {:.0} s",
        SESSION_LIFETIME.as_secs(),
        NODE_LIFETIME.as_secs(),
        every.as_secs_f64()
    );
    println!(
        "| t (s) | results (of ended sessions) | errors | gateway RSS (MiB) | open fds | tokio tasks | Redis memory (MiB) | Redis keys |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < total {
        tokio::time::sleep(every.min(total.saturating_sub(start.elapsed()))).await;
        let (redis_memory_kib, redis_keys) = redis_figures(&mut redis).await;
        let sample = Sample {
            at_s: start.elapsed().as_secs_f64(),
            results: results.load(Ordering::Relaxed),
            errors: errors.load(Ordering::Relaxed),
            rss_kib: rss_kib(pid),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
            tokio_tasks: tokio_tasks(gateway.admin.as_deref().expect("the soak starts its gateway")).await,
            redis_memory_kib,
            redis_keys,
        };
        println!(
            "| {:.0} | {} | {} | {:.1} | {} | {} | {:.1} | {} |",
            sample.at_s,
            sample.results,
            sample.errors,
            sample.rss_kib as f64 / 1024.0,
            sample.fds,
            sample.tokio_tasks,
            sample.redis_memory_kib as f64 / 1024.0,
            sample.redis_keys
        );
        samples.push(sample);
    }
    stop.cancel();
    for lane in lanes {
        let _ = lane.await;
    }

    let verdicts = plateau(&samples);
    let mut failed = false;
    for v in &verdicts {
        println!("{v}");
        failed |= v.starts_with("GROWS");
    }
    // A session's results are counted when it ends: growth is seen once per session lifetime.
    let span = 2.0 * SESSION_LIFETIME.as_secs_f64();
    let stalled = samples
        .iter()
        .any(|a| samples.iter().find(|b| b.at_s >= a.at_s + span).is_some_and(|b| b.results == a.results));
    if stalled {
        println!("STALLED  no result for {span:.0} s");
    }
    if failed || stalled {
        anyhow::bail!("the soak did not hold steady");
    }
    Ok(())
}

/// Compares the last third of the run with the middle third (the first is warm-up): a figure
/// plateaus when its peak in the last third is within `TOLERANCE` (plus its slack) of the peak
/// before.
pub fn plateau(samples: &[Sample]) -> Vec<String> {
    let third = samples.len() / 3;
    if third == 0 {
        return vec!["GROWS    too few samples to tell".into()];
    }
    let (middle, last) = (&samples[third..2 * third], &samples[2 * third..]);
    FIGURES
        .iter()
        .map(|(name, slack, read)| {
            let peak = |part: &[Sample]| part.iter().map(read).max().unwrap_or(0) as f64;
            let (before, after) = (peak(middle), peak(last));
            let bound = before * (1.0 + TOLERANCE) + slack;
            let verdict = if after <= bound { "plateau" } else { "GROWS  " };
            format!("{verdict}  {name}: peak {before:.0} in the middle third, {after:.0} in the last (bound {bound:.0})")
        })
        .collect()
}

/// One session slot: a session sends at `interval` for `SESSION_LIFETIME`, closes, and another
/// opens, until `stop`.
async fn session_lane(
    ws: String,
    audio: Arc<str>,
    interval: Duration,
    results: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let url = format!("{ws}/ws/session");
    let latency = Arc::new(Histogram::default());
    while !stop.is_cancelled() {
        let Ok(session) = Session::open(&url, "zh", "en", audio.clone()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let life = stop.child_token();
        let ends = tokio::spawn({
            let life = life.clone();
            async move {
                tokio::time::sleep(SESSION_LIFETIME).await;
                life.cancel()
            }
        });
        let tally = session.run(Load::Open { interval }, latency.clone(), life, Duration::from_secs(2)).await;
        ends.abort();
        results.fetch_add(tally.results, Ordering::Relaxed);
        errors.fetch_add(tally.errors, Ordering::Relaxed);
    }
}

/// A node that serves until `stop`; with a `lifetime`, it disconnects after it and a new one
/// registers (a new connection and id, like a restarted node; the old record expires).
async fn node_lane(ws: String, lifetime: Option<Duration>, stop: CancellationToken) {
    let url = format!("{ws}/ws/node");
    let spec = NodeSpec::new(&["zh"], &["en"], 8);
    let answered = Arc::new(AtomicU64::new(0));
    while !stop.is_cancelled() {
        let life = stop.child_token();
        match node::start(&url, spec.clone(), answered.clone(), life.clone()).await {
            Ok((_, serve)) => {
                let serving = tokio::spawn(serve);
                match lifetime {
                    Some(lifetime) => {
                        tokio::select! {
                            _ = tokio::time::sleep(lifetime) => life.cancel(),
                            _ = stop.cancelled() => {}
                        }
                    }
                    None => stop.cancelled().await,
                }
                let _ = serving.await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn redis_figures(redis: &mut redis::aio::ConnectionManager) -> (u64, u64) {
    let info: String = redis::cmd("INFO").arg("memory").query_async(redis).await.unwrap_or_default();
    let memory = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let keys: u64 = redis::cmd("DBSIZE").query_async(redis).await.unwrap_or(0);
    (memory / 1024, keys)
}

async fn tokio_tasks(admin: &str) -> u64 {
    let Ok((200, text)) = admin_client::request("GET", &format!("{admin}/metrics"), None, b"").await else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("switchboard_tokio_tasks "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
