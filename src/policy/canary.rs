//! Canaries are judged on the whole fleet's evidence. A canary decides a share of the calls on
//! every gateway, but the outcome of a task it placed is seen by the gateway its node is connected
//! to — often another one. So each gateway counts what it sees of the canary and of the active
//! version (decisions, fallbacks, µs per decision; how the tasks each placed ended, and their
//! result latency), and every sync interval adds what it counted since its last report to one hash
//! in Redis (`lua/canary_report.lua`), which answers with the fleet's totals. Every gateway judges
//! the same totals with `judge`; the first to find a verdict ends the canary in Redis (rolled back
//! or promoted, compare-and-clear), and the others find it ended.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use super::Role;
use super::stats::Stats;
use crate::histogram::{BUCKETS, quantile_of};

/// When a canary is rolled back or promoted on its own (`policy.canary_*`). Once it has decided
/// `min_calls` calls it is rolled back if more than `max_fallback_percent` of them fell back to the
/// default (failures, deadline misses, calls its breaker skipped), or its p99 per decision exceeds
/// both `max_p99_us` and twice the active version's. Once `min_calls` of the tasks it placed have
/// ended it is rolled back if their failure rate (timeouts included) is more than
/// `max_failure_points` percentage points above the active version's, or their result p99 more
/// than `max_result_p99_ratio` times the active's and `result_p99_slack_ms` above it (results take
/// hundreds of ms; a few ms apart is noise, whatever the ratio). With `promote_after` > 0, a canary that has
/// decided that many calls (and seen `min_calls` outcomes, for node selection) within every limit
/// is promoted.
#[derive(Debug, Clone, Copy)]
pub struct CanaryLimits {
    pub min_calls: u64,
    pub max_fallback_percent: f64,
    pub max_p99_us: u64,
    pub max_failure_points: f64,
    pub max_result_p99_ratio: f64,
    pub result_p99_slack_ms: u64,
    pub promote_after: u64,
}

impl Default for CanaryLimits {
    fn default() -> Self {
        Self {
            min_calls: 100,
            max_fallback_percent: 5.0,
            max_p99_us: 2_000,
            max_failure_points: 5.0,
            max_result_p99_ratio: 2.0,
            result_p99_slack_ms: 100,
            promote_after: 0,
        }
    }
}

/// What the evidence says about a canary, and why.
#[derive(Debug, Clone, PartialEq)]
pub enum CanaryVerdict {
    RollBack(String),
    Promote(String),
}

/// What was counted of one version: by one gateway, or added up over the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    pub decisions: u64,
    pub fallbacks: u64,
    pub ok: u64,
    pub failed: u64,
    pub timed_out: u64,
    /// Bucket counts (`Histogram::buckets`) of µs per decision and of ms per task result.
    pub decision_us: Vec<u64>,
    pub result_ms: Vec<u64>,
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            decisions: 0,
            fallbacks: 0,
            ok: 0,
            failed: 0,
            timed_out: 0,
            decision_us: vec![0; BUCKETS],
            result_ms: vec![0; BUCKETS],
        }
    }
}

impl Totals {
    /// Everything a version counted on this gateway (decisions include the calls its breaker
    /// skipped: the default made them in its place).
    pub fn of(s: &Stats) -> Self {
        Self {
            decisions: s.calls.load(Relaxed) + s.skipped.load(Relaxed),
            fallbacks: s.fallbacks.load(Relaxed),
            ok: s.tasks_ok.load(Relaxed),
            failed: s.tasks_failed.load(Relaxed),
            timed_out: s.tasks_timed_out.load(Relaxed),
            decision_us: s.latency.buckets(),
            result_ms: s.result_ms.buckets(),
        }
    }

    /// What was counted since `earlier`.
    pub fn since(&self, earlier: &Totals) -> Totals {
        let minus = |a: &[u64], b: &[u64]| a.iter().zip(b).map(|(a, b)| a.saturating_sub(*b)).collect();
        Totals {
            decisions: self.decisions.saturating_sub(earlier.decisions),
            fallbacks: self.fallbacks.saturating_sub(earlier.fallbacks),
            ok: self.ok.saturating_sub(earlier.ok),
            failed: self.failed.saturating_sub(earlier.failed),
            timed_out: self.timed_out.saturating_sub(earlier.timed_out),
            decision_us: minus(&self.decision_us, &earlier.decision_us),
            result_ms: minus(&self.result_ms, &earlier.result_ms),
        }
    }

    /// The non-zero counts as hash fields named `<prefix>.<count>` (`<prefix>.us.<bucket>`,
    /// `<prefix>.ms.<bucket>` for the histograms), as `canary_report.lua` adds them up.
    pub fn fields(&self, prefix: &str) -> Vec<(String, u64)> {
        let counts = [
            ("decisions", self.decisions),
            ("fallbacks", self.fallbacks),
            ("ok", self.ok),
            ("failed", self.failed),
            ("timed_out", self.timed_out),
        ];
        let mut fields: Vec<(String, u64)> =
            counts.iter().map(|(name, n)| (format!("{prefix}.{name}"), *n)).collect();
        for (unit, buckets) in [("us", &self.decision_us), ("ms", &self.result_ms)] {
            fields.extend(buckets.iter().enumerate().map(|(i, n)| (format!("{prefix}.{unit}.{i}"), *n)));
        }
        fields.retain(|(_, n)| *n > 0);
        fields
    }

    /// The counts named `<prefix>.…` in a hash written by `canary_report.lua`.
    pub fn from_fields(fields: &HashMap<String, u64>, prefix: &str) -> Totals {
        let get = |name: &str| fields.get(&format!("{prefix}.{name}")).copied().unwrap_or(0);
        let buckets = |unit: &str| (0..BUCKETS).map(|i| get(&format!("{unit}.{i}"))).collect();
        Totals {
            decisions: get("decisions"),
            fallbacks: get("fallbacks"),
            ok: get("ok"),
            failed: get("failed"),
            timed_out: get("timed_out"),
            decision_us: buckets("us"),
            result_ms: buckets("ms"),
        }
    }

    /// Tasks that ended, and the percent of them that failed (timeouts included).
    fn outcomes(&self) -> (u64, f64) {
        let failed = self.failed + self.timed_out;
        let ended = failed + self.ok;
        (ended, if ended == 0 { 0.0 } else { failed as f64 * 100.0 / ended as f64 })
    }
}

/// The verdict on a canary of `role` from its totals and the active version's over the same
/// window, or `None` while it should keep running.
pub fn judge(role: Role, canary: &Totals, active: &Totals, l: &CanaryLimits) -> Option<CanaryVerdict> {
    let min = l.min_calls.max(1);
    if canary.decisions >= min {
        let fallback_percent = canary.fallbacks as f64 * 100.0 / canary.decisions as f64;
        if fallback_percent > l.max_fallback_percent {
            return Some(CanaryVerdict::RollBack(format!(
                "{fallback_percent:.1} % of {} decisions fell back to the default (limit {} %)",
                canary.decisions, l.max_fallback_percent
            )));
        }
        let (p99, active_p99) =
            (quantile_of(&canary.decision_us, 0.99), quantile_of(&active.decision_us, 0.99));
        if p99 > l.max_p99_us && p99 > 2 * active_p99 {
            return Some(CanaryVerdict::RollBack(format!(
                "p99 {p99} µs per decision, the active version's {active_p99} µs (limit {} µs)",
                l.max_p99_us
            )));
        }
    }
    let ((ended, failed), (active_ended, active_failed)) = (canary.outcomes(), active.outcomes());
    if ended >= min {
        if failed > active_failed + l.max_failure_points {
            return Some(CanaryVerdict::RollBack(format!(
                "{failed:.1} % of its {ended} tasks failed or timed out, the active version's \
                 {active_failed:.1} % (limit +{} points)",
                l.max_failure_points
            )));
        }
        let (p99, active_p99) = (quantile_of(&canary.result_ms, 0.99), quantile_of(&active.result_ms, 0.99));
        if active_ended >= min
            && p99 as f64 > l.max_result_p99_ratio * active_p99 as f64
            && p99 > active_p99 + l.result_p99_slack_ms
        {
            return Some(CanaryVerdict::RollBack(format!(
                "result p99 {p99} ms for its tasks, the active version's {active_p99} ms (limit {}× and +{} ms)",
                l.max_result_p99_ratio, l.result_p99_slack_ms
            )));
        }
    }
    // Room routing and admission place no tasks: their decisions are the whole evidence.
    let outcomes_seen = role != Role::NodeSelection || ended >= min;
    let promote = l.promote_after > 0 && canary.decisions >= l.promote_after.max(min) && outcomes_seen;
    promote.then(|| {
        CanaryVerdict::Promote(format!(
            "{} decisions and {ended} task outcomes within the limits",
            canary.decisions
        ))
    })
}
