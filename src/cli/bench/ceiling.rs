//! The Redis-only ceiling: the dispatch path's scripts run pipelined against Redis alone, with the
//! fleet's node shapes.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use switchboard::store::{NodeRegistration, Payload, SchedulerConfig, Store};
use tokio_util::sync::CancellationToken;

/// The rate at which Redis alone runs the dispatch path's scripts — candidates, dispatch_task,
/// complete_task, the same scripts and keys as the gateway — pipelined: 8 connections, each with a
/// pipeline of 32 tasks (96 EVALSHA) in flight. Nodes are taken round robin, so no call waits for
/// another's reply.
pub(super) async fn ceiling(redis_url: &str, seconds: u64, shape: &Shape) -> anyhow::Result<f64> {
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
                        .arg(&pool)
                        // No tenant, the fair queue as the gateway runs it, no cap.
                        .arg("")
                        .arg(1)
                        .arg(1)
                        .arg(cfg.max_waiting_per_tenant)
                        .arg(if cfg.fair_queue { "1" } else { "0" })
                        .arg("");
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
                        .arg(format!("done-{job}"))
                        .arg(if cfg.fair_queue { "1" } else { "0" })
                        .arg(format!("job-{}-handoff-{job}", k.tag()))
                        .arg(cfg.job_timeout_ms);
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
pub(super) const FLEET_LANGS: [&str; 16] =
    ["zh", "en", "ja", "ko", "fr", "de", "es", "it", "ru", "pt", "ar", "hi", "vi", "th", "id", "tr"];

/// A node shape as the fleet registers it: `asr_languages × semantic_languages`.
#[derive(Debug, Clone)]
pub(super) struct Shape {
    pub(super) asr: Vec<String>,
    pub(super) semantic: Vec<String>,
}

impl Shape {
    /// `n` languages both ways: n² pairs. `n == 1` is zh → {zh, en}: 2 pairs.
    pub(super) fn languages(n: usize) -> Self {
        let langs: Vec<String> = FLEET_LANGS[..n.max(2)].iter().map(|l| l.to_string()).collect();
        let asr = if n == 1 { vec!["zh".to_owned()] } else { langs.clone() };
        Self { asr, semantic: langs }
    }

    pub(super) fn pairs(&self) -> usize {
        self.asr.len() * self.semantic.len()
    }

    pub(super) fn pair_list(&self) -> Vec<String> {
        let mut pairs: Vec<String> =
            self.asr.iter().flat_map(|a| self.semantic.iter().map(move |b| format!("{a}>{b}"))).collect();
        pairs.sort();
        pairs
    }
}
