//! The scenarios of a benchmark run: a fleet of simulated nodes and sessions against the gateways,
//! with the figures read before and after.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use switchboard::histogram::Histogram;
use switchboard::sim::client::{Load, Session, Tally};
use switchboard::sim::node::{self, NodeSpec};
use tokio_util::sync::CancellationToken;

use super::BenchArgs;
use super::ceiling::Shape;
use super::measure::{ScenarioResult, quantile, redis_counters, redis_memory, scrape};
use super::procs::{GatewayProc, cpu_micros};

pub(super) struct Bench {
    pub(super) args: BenchArgs,
    /// The Redis servers whose counters are read: the one, or each cluster primary.
    pub(super) redis: Vec<redis::aio::ConnectionManager>,
    /// The gateway the sessions use (dispatch latency is scraped there).
    pub(super) gateway: GatewayProc,
    /// Another gateway whose CPU counts too (the two-gateway scenario).
    pub(super) other_pid: Option<u32>,
    pub(super) audio: Arc<str>,
    pub(super) progress: ProgressBar,
}

impl Bench {
    pub(super) fn node_spec(&self, capacity: u32, heartbeat: Duration) -> NodeSpec {
        NodeSpec {
            heartbeat,
            answer_delay: Duration::from_millis(self.args.answer_delay_ms),
            answer_delay_max: Duration::from_millis(self.args.answer_delay_ms),
            ..NodeSpec::new(&["zh"], &["en"], capacity)
        }
    }

    /// Connects `n` nodes (64 at a time); they run until `stop`.
    pub(super) async fn nodes(
        &self,
        n: usize,
        spec: NodeSpec,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
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
    pub(super) fn shaped(&self, shape: &Shape, capacity: u32) -> NodeSpec {
        let mut spec = self.node_spec(capacity, Duration::from_secs(5));
        spec.asr_languages = shape.asr.clone();
        spec.semantic_languages = shape.semantic.clone();
        spec
    }

    pub(super) async fn sessions(&self, n: usize) -> anyhow::Result<Vec<Session>> {
        self.sessions_over(n, &[("zh".into(), "en".into())]).await
    }

    /// `n` one-way sessions, their language pairs taken round robin from `pairs`.
    pub(super) async fn sessions_over(
        &self,
        n: usize,
        pairs: &[(String, String)],
    ) -> anyhow::Result<Vec<Session>> {
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
    pub(super) async fn measure_rooms(
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
    pub(super) async fn measure(
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
    pub(super) async fn measure_each(
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
