//! What `GET /admin/policies`, `policy status` and the dashboard show of each role: its versions
//! and their counters.

use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use super::{Loaded, Policies, Rejection, Role};
use crate::protocol::now_ms;

/// A role's state, for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct RoleStatus {
    pub role: Role,
    pub active: VersionStatus,
    pub shadow: Option<VersionStatus>,
    /// The canary and the percent of calls it decides.
    pub canary: Option<VersionStatus>,
    pub canary_share: u32,
    pub last_rejection: Option<Rejection>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionStatus {
    pub sha256: String,
    pub source: String,
    pub loaded_at_ms: u64,
    pub calls: u64,
    pub fallbacks: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Shadow versions: how often their decision matched the active one's.
    pub agreement: Option<f64>,
    /// Set while the breaker holds it suspended: until when (ms since the epoch).
    pub suspended_until_ms: Option<u64>,
    /// Times the breaker suspended it, and calls it did not get meanwhile.
    pub suspensions: u64,
    pub skipped: u64,
    /// Calls run off the async worker because the version's previous call was slow.
    pub offloaded: u64,
    /// Node selection: how the tasks it placed ended, and their result latency p99 (ms).
    pub tasks_ok: u64,
    pub tasks_failed: u64,
    pub tasks_timed_out: u64,
    pub result_p99_ms: u64,
}

impl VersionStatus {
    fn of(l: &Loaded) -> Self {
        let agree = l.stats.agreements.load(Relaxed);
        let disagree = l.stats.disagreements.load(Relaxed);
        Self {
            sha256: l.compiled.sha256.clone(),
            source: l.source.clone(),
            loaded_at_ms: l.loaded_at_ms,
            calls: l.stats.calls.load(Relaxed),
            fallbacks: l.stats.fallbacks.load(Relaxed),
            p50_us: l.stats.quantile(0.5),
            p99_us: l.stats.quantile(0.99),
            agreement: (agree + disagree > 0).then(|| agree as f64 / (agree + disagree) as f64),
            suspended_until_ms: l
                .stats
                .suspended_at(now_ms())
                .then(|| l.stats.suspended_until_ms.load(Relaxed)),
            suspensions: l.stats.suspensions.load(Relaxed),
            skipped: l.stats.skipped.load(Relaxed),
            offloaded: l.stats.offloaded.load(Relaxed),
            tasks_ok: l.stats.tasks_ok.load(Relaxed),
            tasks_failed: l.stats.tasks_failed.load(Relaxed),
            tasks_timed_out: l.stats.tasks_timed_out.load(Relaxed),
            result_p99_ms: l.stats.result_ms.quantile(0.99),
        }
    }
}

impl Policies {
    pub fn status(&self) -> Vec<RoleStatus> {
        Role::ALL
            .into_iter()
            .map(|role| {
                let slot = self.slot(role);
                RoleStatus {
                    role,
                    active: VersionStatus::of(&slot.active.load()),
                    shadow: slot.shadow.load().as_deref().map(VersionStatus::of),
                    canary: slot.canary.load().as_deref().map(VersionStatus::of),
                    canary_share: slot.canary_share.load(Relaxed),
                    last_rejection: slot.last_rejection.load().as_deref().cloned(),
                }
            })
            .collect()
    }
}
