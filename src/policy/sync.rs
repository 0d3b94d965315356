//! Keeps this gateway's policies in step with the versions stored in Redis by the admin API: polls
//! each role's state and loads what changed. Polling (not pub/sub) also catches up after a Redis
//! restart or a missed message, at the cost of two small reads per interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::canary::{self, CanaryVerdict, Totals};
use super::{Loaded, Policies, Role};
use crate::store::{CanaryEnd, PolicyState, Store};

pub async fn run(
    policies: Arc<Policies>,
    store: Store,
    gateway_id: Arc<str>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut applied: HashMap<Role, PolicyState> = HashMap::new();
    let mut reported: HashMap<Role, Reported> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for role in Role::ALL {
            judge_canary(&policies, &store, &gateway_id, role, &mut reported, interval).await;
            let state = match store.policy_state(role.as_str()).await {
                Ok(state) => state,
                Err(err) => {
                    warn!(%err, "Reading the stored policy state failed.");
                    continue;
                }
            };
            let before = applied.get(&role).cloned().unwrap_or_default();
            if state.version == before.version {
                continue;
            }
            if state.active != before.active {
                match load(&policies, &store, role, &state.active).await {
                    Ok(Some(loaded)) => policies.activate(role, loaded),
                    Ok(None) => policies.reset(role),
                    Err(()) => {}
                }
            }
            if state.shadow != before.shadow
                && let Ok(shadow) = load(&policies, &store, role, &state.shadow).await
            {
                policies.set_shadow(role, shadow);
            }
            if (state.canary != before.canary || state.canary_share != before.canary_share)
                && let Ok(canary) = load(&policies, &store, role, &state.canary).await
            {
                policies.set_canary(role, canary, state.canary_share);
            }
            applied.insert(role, state);
        }
    }
}

/// What this gateway had counted of a role's canary and active version at its last report.
struct Reported {
    canary: Arc<Loaded>,
    active: Arc<Loaded>,
    canary_totals: Totals,
    active_totals: Totals,
}

/// Reports what this gateway counted of the role's canary since its last report, and judges the
/// fleet's totals (`canary`): a canary past its limits is rolled back in Redis, so every gateway
/// drops it, and one that earned it is made active everywhere; the first gateway to decide does
/// it, the others find it ended.
async fn judge_canary(
    policies: &Policies,
    store: &Store,
    gateway_id: &str,
    role: Role,
    reported: &mut HashMap<Role, Reported>,
    interval: Duration,
) {
    let Some((canary, active)) = policies.canary_and_active(role) else {
        reported.remove(&role);
        return;
    };
    let (canary_now, active_now) = (Totals::of(&canary.stats), Totals::of(&active.stats));
    // Counted from the first report on: the canary's own counts all belong to it, the active
    // version's from the moment this gateway saw the canary (or the active version changed).
    let last = match reported.remove(&role) {
        Some(r) if Arc::ptr_eq(&r.canary, &canary) && Arc::ptr_eq(&r.active, &active) => r,
        _ => Reported {
            canary: canary.clone(),
            active: active.clone(),
            canary_totals: Totals::default(),
            active_totals: active_now.clone(),
        },
    };
    let mut counts = canary_now.since(&last.canary_totals).fields("c");
    counts.extend(active_now.since(&last.active_totals).fields("a"));
    let sha = canary.compiled.sha256.clone();
    // A canary's totals outlive a quiet minute, not a forgotten canary.
    let ttl_ms = (interval.as_millis() as u64 * 20).max(60_000);
    let totals = match store.canary_report(role.as_str(), &sha, &counts, ttl_ms).await {
        Ok(Some(totals)) => totals,
        // Ended or replaced meanwhile: the next sync loads what replaced it.
        Ok(None) => return,
        Err(err) => {
            // Not counted: reported again, with what comes next, at the next interval.
            warn!(%err, "Reporting on a canary failed.");
            reported.insert(role, last);
            return;
        }
    };
    reported.insert(role, Reported { canary, active, canary_totals: canary_now, active_totals: active_now });
    let (fleet_canary, fleet_active) = (Totals::from_fields(&totals, "c"), Totals::from_fields(&totals, "a"));
    let Some(verdict) = canary::judge(role, &fleet_canary, &fleet_active, policies.canary_limits()) else {
        return;
    };
    let (end, reason) = match &verdict {
        CanaryVerdict::RollBack(reason) => (CanaryEnd::RollBack, reason),
        CanaryVerdict::Promote(reason) => (CanaryEnd::Promote, reason),
    };
    match store.end_canary(role.as_str(), &sha, end, reason, gateway_id).await {
        Ok(true) if end == CanaryEnd::RollBack => {
            warn!(role = role.as_str(), policy.sha256 = %super::short(&sha), %reason, "Canary rolled back.");
            policies.count_canary_end(role, false);
        }
        Ok(true) => {
            info!(role = role.as_str(), policy.sha256 = %super::short(&sha), %reason, "Canary promoted.");
            policies.count_canary_end(role, true);
        }
        Ok(false) => {}
        Err(err) => warn!(%err, "Ending a canary failed."),
    }
}

/// The stored version `sha`, compiled and smoke-tested; `None` for the empty sha.
async fn load(
    policies: &Arc<Policies>,
    store: &Store,
    role: Role,
    sha: &str,
) -> Result<Option<Arc<Loaded>>, ()> {
    if sha.is_empty() {
        return Ok(None);
    }
    if policies.active(role).compiled.sha256 == sha {
        return Ok(Some(policies.active(role)));
    }
    let bytes = match store.policy_blob(sha).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            warn!(%sha, "Stored policy has no blob.");
            return Err(());
        }
        Err(err) => {
            warn!(%err, "Reading a stored policy failed.");
            return Err(());
        }
    };
    let p = policies.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let result = p.prepare(role, &bytes, "admin");
        if let Err(why) = &result {
            p.reject(role, &bytes, "admin", why);
        }
        result
    })
    .await;
    match prepared {
        Ok(Ok(loaded)) => Ok(Some(loaded)),
        Ok(Err(_)) => Err(()),
        Err(err) => {
            warn!(%err, "Policy load task failed.");
            Err(())
        }
    }
}
