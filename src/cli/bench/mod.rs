//! `switchboard bench`: throughput, latency, Redis cost per task, gateway CPU and memory, policy
//! cost, and the Redis-only ceiling, against gateways it starts (or one given with --url).
//! Simulated nodes and clients speak the protocol over real WebSockets (`switchboard::sim`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use switchboard::devredis::{RedisCluster, RedisServer};
use switchboard::sim::client::{Load, Session};
use tokio_util::sync::CancellationToken;

mod ceiling;
mod measure;
mod overload;
pub(super) mod procs;
mod report;
mod scenarios;

use ceiling::{FLEET_LANGS, Shape, ceiling};
use measure::ScenarioResult;
use procs::{GatewayProc, cpu_micros, rss_kib, wait_serving};
use report::{machine, markdown, table};
use scenarios::Bench;

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
    /// Only the overload rows (two tenants, the fair queue on and off; docs/overload.md), printed
    /// as Markdown.
    #[arg(long, conflicts_with_all = ["url", "write_docs"])]
    overload: bool,
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
    /// Two tenants under a burst (none when measuring another scheduler).
    overload: Vec<overload::TenantRow>,
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
    if args.overload {
        let rows = overload::run(&redis_url, args.seconds, "A".repeat(args.audio_bytes).into()).await?;
        println!("{}", overload::markdown(&rows));
        return Ok(());
    }
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
    let overload = match bench.args.url {
        Some(_) => Vec::new(),
        None => overload::run(&redis_url, seconds, bench.audio.clone()).await?,
    };
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
        overload,
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
