//! `switchboard node-sim`, `switchboard client-sim` and the demo of `switchboard dev --demo`:
//! simulated nodes and clients (the same ones the benchmark drives) against a running gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use switchboard::histogram::Histogram;
use switchboard::sim::client::{Load, Session};
use switchboard::sim::node::{self, NodeSpec};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct NodeSimArgs {
    /// The gateway's public address.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    url: String,
    /// Nodes to run.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// ASR languages of every node.
    #[arg(long, value_delimiter = ',', default_value = "zh,en,ja")]
    asr: Vec<String>,
    /// Target languages of every node.
    #[arg(long, value_delimiter = ',', default_value = "en,zh,ja")]
    semantic: Vec<String>,
    /// Slots per node.
    #[arg(long, default_value_t = 4)]
    capacity: u32,
    /// Answer delay in ms, a value or a uniform range `min-max`.
    #[arg(long, default_value = "300-900")]
    delay_ms: String,
    /// Share of jobs that fail (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// `region` label of the nodes (node ids become `node-<region>-<n>`).
    #[arg(long)]
    region: Option<String>,
    #[arg(long, default_value_t = 5_000)]
    heartbeat_ms: u64,
}

#[derive(clap::Args)]
pub struct ClientSimArgs {
    /// The gateway's public address.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    url: String,
    /// One-way sessions.
    #[arg(long, default_value_t = 4)]
    sessions: usize,
    #[arg(long, default_value = "zh")]
    src: String,
    #[arg(long, default_value = "en")]
    tgt: String,
    /// Time between two utterances of one session (or room member).
    #[arg(long, default_value_t = 2_000)]
    interval_ms: u64,
    /// Rooms, each with one member per language of `--room-langs`.
    #[arg(long, default_value_t = 0)]
    rooms: usize,
    #[arg(long, value_delimiter = ',', default_value = "en,zh,ja")]
    room_langs: Vec<String>,
}

/// Base64 of 1 KiB of silence-ish audio.
fn audio() -> Arc<str> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(vec![0u8; 1024]).into()
}

fn delay_range(text: &str) -> anyhow::Result<(Duration, Duration)> {
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let (lo, hi): (u64, u64) = (lo.trim().parse()?, hi.trim().parse()?);
    if hi < lo {
        bail!("--delay-ms: {lo}-{hi} is not a range");
    }
    Ok((Duration::from_millis(lo), Duration::from_millis(hi)))
}

/// Starts `count` nodes like `spec`, numbered when it has an id prefix; returns how many answered.
pub async fn start_nodes(
    url: &str,
    spec: &NodeSpec,
    id_prefix: Option<&str>,
    count: usize,
    stop: &CancellationToken,
) -> anyhow::Result<Arc<AtomicU64>> {
    let answered = Arc::new(AtomicU64::new(0));
    let url = format!("{}/ws/node", url.trim_end_matches('/'));
    for i in 1..=count {
        let mut spec = spec.clone();
        spec.node_id = id_prefix.map(|p| format!("{p}-{i}"));
        let (_, serve) =
            node::start(&url, spec, answered.clone(), stop.clone()).await.context("starting a node")?;
        tokio::spawn(serve);
    }
    Ok(answered)
}

/// Opens one-way sessions and rooms that keep talking until `stop`; returns the latency histogram
/// of the results they get.
pub async fn start_clients(
    url: &str,
    args: &ClientSimArgs,
    stop: &CancellationToken,
) -> anyhow::Result<Arc<Histogram>> {
    let url = format!("{}/ws/session", url.trim_end_matches('/'));
    let latency = Arc::new(Histogram::default());
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let audio = audio();
    let mut talkers = Vec::new();
    for _ in 0..args.sessions {
        talkers.push(Session::open(&url, &args.src, &args.tgt, audio.clone()).await?);
    }
    for _ in 0..args.rooms {
        let mut code = None;
        for lang in &args.room_langs {
            let mut member = Session::open(&url, lang, lang, audio.clone()).await?;
            match &code {
                None => code = Some(member.create_room(lang).await?),
                Some(code) => member.join_room(code, lang).await?,
            }
            talkers.push(member);
        }
    }
    for session in talkers {
        let (latency, stop) = (latency.clone(), stop.clone());
        tokio::spawn(session.run(Load::Open { interval }, latency, stop, Duration::from_secs(2)));
    }
    Ok(latency)
}

pub async fn node_sim(args: NodeSimArgs) -> anyhow::Result<()> {
    let (answer_delay, answer_delay_max) = delay_range(&args.delay_ms)?;
    let mut spec = NodeSpec {
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        answer_delay,
        answer_delay_max,
        failure_rate: args.failure_rate.clamp(0.0, 1.0),
        asr_languages: args.asr.clone(),
        semantic_languages: args.semantic.clone(),
        ..NodeSpec::new(&[], &[], args.capacity)
    };
    let prefix = args.region.as_ref().map(|r| format!("node-{r}"));
    if let Some(region) = &args.region {
        spec.labels.insert("region".into(), region.clone());
    }
    let stop = CancellationToken::new();
    let answered = start_nodes(&args.url, &spec, prefix.as_deref(), args.nodes, &stop).await?;
    println!("{} simulated nodes on {}; Ctrl-C stops them.", args.nodes, args.url);
    report(&stop, move || format!("jobs answered: {}", answered.load(Ordering::Relaxed))).await;
    Ok(())
}

pub async fn client_sim(args: ClientSimArgs) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let latency = start_clients(&args.url, &args, &stop).await?;
    println!(
        "{} sessions and {} rooms of {} talking to {}; Ctrl-C stops them.",
        args.sessions,
        args.rooms,
        args.room_langs.len(),
        args.url
    );
    report(&stop, move || {
        format!(
            "results: {} · p50 {} ms · p99 {} ms",
            latency.count(),
            latency.quantile(0.5) / 1000,
            latency.quantile(0.99) / 1000
        )
    })
    .await;
    Ok(())
}

/// Prints `status()` every 5 s until Ctrl-C, then stops the simulators.
async fn report(stop: &CancellationToken, status: impl Fn() -> String) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => println!("{}", status()),
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The demo of `switchboard dev --demo`: six nodes in two regions and a three-language room that
/// keeps talking, plus a few one-way sessions, against the gateway at `url`.
pub async fn demo(url: String, stop: CancellationToken) -> anyhow::Result<()> {
    let langs = ["en", "zh", "ja"];
    for region in ["eu", "us"] {
        let mut spec = NodeSpec {
            answer_delay: Duration::from_millis(300),
            answer_delay_max: Duration::from_millis(1_200),
            failure_rate: 0.01,
            ..NodeSpec::new(&langs, &langs, 4)
        };
        spec.labels.insert("region".into(), region.into());
        start_nodes(&url, &spec, Some(&format!("node-{region}")), 3, &stop).await?;
    }
    let clients = ClientSimArgs {
        url: url.clone(),
        sessions: 3,
        src: "zh".into(),
        tgt: "en".into(),
        interval_ms: 2_500,
        rooms: 1,
        room_langs: langs.iter().map(|l| l.to_string()).collect(),
    };
    start_clients(&url, &clients, &stop).await?;
    Ok(())
}
