//! Keeps this gateway's policies in step with the versions stored in Redis by the admin API: polls
//! each role's state and loads what changed. Polling (not pub/sub) also catches up after a Redis
//! restart or a missed message, at the cost of two small reads per interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Loaded, Policies, Role};
use crate::scheduler::{MinimalSchedulerService, PolicyState};

pub async fn run(
    policies: Arc<Policies>,
    scheduler: MinimalSchedulerService,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut applied: HashMap<Role, PolicyState> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for role in Role::ALL {
            // A canary past its limits is ended in Redis, so every gateway drops it; the first
            // gateway to see it does, the others find it ended.
            if let Some((sha, reason)) = policies.canary_verdict(role) {
                match scheduler.end_canary(role.as_str(), &sha, &reason).await {
                    Ok(true) => {
                        warn!(role = role.as_str(), policy.sha256 = %super::short(&sha), %reason, "Canary rolled back.");
                        policies.count_canary_rollback(role);
                    }
                    Ok(false) => {}
                    Err(err) => warn!(%err, "Ending a canary failed."),
                }
            }
            let state = match scheduler.policy_state(role.as_str()).await {
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
                match load(&policies, &scheduler, role, &state.active).await {
                    Ok(Some(loaded)) => policies.activate(role, loaded),
                    Ok(None) => policies.reset(role),
                    Err(()) => {}
                }
            }
            if state.shadow != before.shadow
                && let Ok(shadow) = load(&policies, &scheduler, role, &state.shadow).await
            {
                policies.set_shadow(role, shadow);
            }
            if (state.canary != before.canary || state.canary_share != before.canary_share)
                && let Ok(canary) = load(&policies, &scheduler, role, &state.canary).await
            {
                policies.set_canary(role, canary, state.canary_share);
            }
            applied.insert(role, state);
        }
    }
}

/// The stored version `sha`, compiled and smoke-tested; `None` for the empty sha.
async fn load(
    policies: &Arc<Policies>,
    scheduler: &MinimalSchedulerService,
    role: Role,
    sha: &str,
) -> Result<Option<Arc<Loaded>>, ()> {
    if sha.is_empty() {
        return Ok(None);
    }
    if policies.active(role).compiled.sha256 == sha {
        return Ok(Some(policies.active(role)));
    }
    let bytes = match scheduler.policy_blob(sha).await {
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
