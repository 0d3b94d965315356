//! `/metrics` on the admin listener, in the Prometheus text format. Labels are bounded: roles,
//! policy versions in memory (active and shadow), script names, error codes, the cell; never node
//! or session ids.

use std::fmt::Write;

use super::AppState;
use crate::histogram::Histogram;
use crate::policy::short;

pub async fn render(state: &AppState) -> String {
    let mut out = String::new();
    for (name, value) in state.metrics.snapshot() {
        let _ = writeln!(out, "# TYPE switchboard_{name}_total counter\nswitchboard_{name}_total {value}");
    }
    histogram(&mut out, "switchboard_dispatch_seconds", "", &state.metrics.dispatch_latency);
    histogram(&mut out, "switchboard_result_seconds", "", &state.metrics.result_latency);
    histogram(&mut out, "switchboard_inbox_lag_seconds", "", &state.metrics.inbox_lag);
    let _ = writeln!(out, "# TYPE switchboard_tasks_failed_by_reason_total counter");
    for (reason, count) in state.metrics.failures.lock().iter() {
        let _ = writeln!(out, "switchboard_tasks_failed_by_reason_total{{reason=\"{reason}\"}} {count}");
    }
    let _ = writeln!(out, "# TYPE switchboard_script_seconds histogram");
    for (script, h) in state.store.script_latency().iter() {
        histogram(&mut out, "switchboard_script_seconds", &format!("script=\"{script}\""), h);
    }
    if let Ok(counts) = state.store.node_counts().await {
        let _ = writeln!(out, "# TYPE switchboard_nodes gauge");
        for (cell, (online, live)) in state.store.cells().iter().zip(counts) {
            let cell = cell.tag();
            let _ = writeln!(out, "switchboard_nodes{{cell=\"{cell}\",state=\"online\"}} {online}");
            let _ = writeln!(out, "switchboard_nodes{{cell=\"{cell}\",state=\"live\"}} {live}");
        }
    }
    if let Ok(cells) = state.store.queues().await {
        let label = |s: &str| s.replace(['"', '\\', '\n'], "_");
        let _ = writeln!(out, "# TYPE switchboard_waiting_tasks gauge");
        for q in &cells {
            for (tenant, n) in &q.waiting {
                let (cell, tenant) = (&q.cell, label(tenant));
                let _ = writeln!(out, "switchboard_waiting_tasks{{cell=\"{cell}\",tenant=\"{tenant}\"}} {n}");
            }
        }
        let _ = writeln!(out, "# TYPE switchboard_waiting_tasks_by_pool gauge");
        for q in &cells {
            for (pool, n) in &q.pools {
                let (cell, pool) = (&q.cell, label(pool));
                let _ =
                    writeln!(out, "switchboard_waiting_tasks_by_pool{{cell=\"{cell}\",pool=\"{pool}\"}} {n}");
            }
        }
        let _ = writeln!(out, "# TYPE switchboard_running_tasks gauge");
        for q in &cells {
            for (tenant, n) in &q.running {
                let (cell, tenant) = (&q.cell, label(tenant));
                let _ = writeln!(out, "switchboard_running_tasks{{cell=\"{cell}\",tenant=\"{tenant}\"}} {n}");
            }
        }
    }
    // Tasks alive on the runtime: sockets, timers, background loops; flat under a steady load.
    let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let _ = writeln!(out, "# TYPE switchboard_tokio_tasks gauge\nswitchboard_tokio_tasks {tasks}");
    let rooms = state.peers.rooms().len();
    let _ = writeln!(out, "# TYPE switchboard_rooms gauge\nswitchboard_rooms {rooms}");
    let (nodes, sessions) = state.peers.counts();
    let _ = writeln!(out, "# TYPE switchboard_connected_nodes gauge\nswitchboard_connected_nodes {nodes}");
    let _ = writeln!(
        out,
        "# TYPE switchboard_connected_sessions gauge\nswitchboard_connected_sessions {sessions}"
    );
    let _ = writeln!(out, "# TYPE switchboard_policy_calls_total counter");
    let _ = writeln!(out, "# TYPE switchboard_policy_fallbacks_total counter");
    let _ = writeln!(out, "# TYPE switchboard_policy_seconds histogram");
    let _ = writeln!(out, "# TYPE switchboard_policy_suspensions_total counter");
    let _ = writeln!(out, "# TYPE switchboard_policy_suspended gauge");
    let _ = writeln!(out, "# TYPE switchboard_policy_offloaded_total counter");
    let _ = writeln!(out, "# TYPE switchboard_policy_tasks_total counter");
    let _ = writeln!(out, "# TYPE switchboard_policy_canary_rollbacks_total counter");
    let _ = writeln!(out, "# TYPE switchboard_policy_canary_promotions_total counter");
    for role in crate::policy::Role::ALL {
        let (rollbacks, promotions) = state.policies.canary_ends(role);
        let role_label = role.as_str();
        let _ =
            writeln!(out, "switchboard_policy_canary_rollbacks_total{{role=\"{role_label}\"}} {rollbacks}");
        let _ =
            writeln!(out, "switchboard_policy_canary_promotions_total{{role=\"{role_label}\"}} {promotions}");
        let versions = [
            Some(("active", state.policies.active(role))),
            state.policies.shadow(role).map(|s| ("shadow", s)),
            state.policies.canary(role).map(|c| ("canary", c)),
        ];
        for (slot, loaded) in versions.into_iter().flatten() {
            let labels = format!(
                "role=\"{}\",slot=\"{slot}\",version=\"{}\"",
                role.as_str(),
                short(&loaded.compiled.sha256)
            );
            let calls = loaded.stats.calls.load(std::sync::atomic::Ordering::Relaxed);
            let fallbacks = loaded.stats.fallbacks.load(std::sync::atomic::Ordering::Relaxed);
            let _ = writeln!(out, "switchboard_policy_calls_total{{{labels}}} {calls}");
            let _ = writeln!(out, "switchboard_policy_fallbacks_total{{{labels}}} {fallbacks}");
            let suspensions = loaded.stats.suspensions.load(std::sync::atomic::Ordering::Relaxed);
            let suspended = u8::from(loaded.stats.suspended_at(crate::protocol::now_ms()));
            let _ = writeln!(out, "switchboard_policy_suspensions_total{{{labels}}} {suspensions}");
            let _ = writeln!(out, "switchboard_policy_suspended{{{labels}}} {suspended}");
            let offloaded = loaded.stats.offloaded.load(std::sync::atomic::Ordering::Relaxed);
            let _ = writeln!(out, "switchboard_policy_offloaded_total{{{labels}}} {offloaded}");
            if role == crate::policy::Role::NodeSelection {
                let s = &loaded.stats;
                for (outcome, n) in [
                    ("delivered", &s.tasks_ok),
                    ("failed", &s.tasks_failed),
                    ("timed_out", &s.tasks_timed_out),
                ] {
                    let n = n.load(std::sync::atomic::Ordering::Relaxed);
                    let _ =
                        writeln!(out, "switchboard_policy_tasks_total{{{labels},outcome=\"{outcome}\"}} {n}");
                }
            }
            histogram(&mut out, "switchboard_policy_seconds", &labels, &loaded.stats.latency);
        }
    }
    out
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    if labels.is_empty() {
        let _ = writeln!(out, "# TYPE {name} histogram");
    }
    for (edge_us, count) in h.cumulative() {
        let le = edge_us as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_micros() as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count());
}
