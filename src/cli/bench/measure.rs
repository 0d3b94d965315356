//! What a benchmark reads around a run: Redis counters and memory, the gateway's `/metrics`, and
//! the figures of one scenario.

use serde::Serialize;
use switchboard::admin_client;

/// Redis counters summed over the servers (one, or each cluster primary): (commands, server µs,
/// EVALSHA calls).
pub(super) async fn redis_counters(servers: &mut [redis::aio::ConnectionManager]) -> (u64, u64, u64) {
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
pub(super) async fn redis_memory(servers: &mut [redis::aio::ConnectionManager]) -> u64 {
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

pub(super) async fn server_counters(conn: &mut redis::aio::ConnectionManager) -> (u64, u64, u64) {
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
pub(super) struct Scrape {
    pub(super) dispatch: Vec<(f64, u64)>,
    /// Round trips of the dispatch path's two scripts, as the gateway saw them.
    pub(super) candidates_rt: Vec<(f64, u64)>,
    pub(super) dispatch_task_rt: Vec<(f64, u64)>,
    pub(super) policy_sum: f64,
    pub(super) policy_count: f64,
    pub(super) script_calls: f64,
    pub(super) assigned: f64,
}

pub(super) async fn scrape(admin: Option<&str>) -> Scrape {
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
pub(super) fn quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> f64 {
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
pub(super) struct ScenarioResult {
    pub(super) name: String,
    pub(super) nodes: usize,
    pub(super) sessions: usize,
    pub(super) load: String,
    pub(super) seconds: f64,
    pub(super) completed: u64,
    pub(super) errors: u64,
    pub(super) tasks_per_s: f64,
    pub(super) e2e_ms: [f64; 4],
    pub(super) dispatch_us: [f64; 2],
    /// p50 and p99 round trip (µs) of `candidates` and of `dispatch_task`, as the gateway saw them.
    pub(super) candidates_rt_us: [f64; 2],
    pub(super) dispatch_task_rt_us: [f64; 2],
    pub(super) redis_us_per_task: f64,
    pub(super) redis_cmds_per_task: f64,
    /// Growth of Redis `used_memory` per completed task over the run: what a task leaves behind
    /// for its ttl (tasks in flight at the end count too, a few of thousands).
    pub(super) redis_bytes_per_task: f64,
    pub(super) evalsha_per_task: f64,
    /// Script calls of the dispatch path per assigned job, counted by the gateway.
    pub(super) dispatch_round_trips: f64,
    pub(super) gateway_cpu_us_per_task: Option<f64>,
    pub(super) policy_us_per_decision: f64,
}
