//! Readiness means "can serve": Redis answers and holds every script. Scripts vanish when Redis
//! restarts empty, fails over to a replica that never loaded them, or runs `SCRIPT FLUSH`; calls
//! reload them on `NOSCRIPT`, but scripts no traffic uses would stay missing and keep the gateway
//! out of rotation for ever. So the probe reloads what is missing, and so does a keeper loop, so a
//! gateway nobody probes is ready too before its next call.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use tracing::{info, warn};

use super::AppState;

/// How often the keeper checks the scripts: readiness is back within this of Redis answering.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// A probe answers within this whatever the command timeout: it must see an outage (a frozen
/// Redis) while commands still wait for it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match tokio::time::timeout(PROBE_TIMEOUT, state.store.ensure_scripts()).await {
        Ok(Ok(true)) => (StatusCode::OK, "ready"),
        Ok(Ok(false)) => (StatusCode::SERVICE_UNAVAILABLE, "scripts not loaded"),
        Ok(Err(_)) | Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable"),
    }
}

/// Reloads the scripts whenever Redis lost them, and gives up the outcomes this gateway's
/// sessions wait for when Redis lost its data, until shutdown.
pub async fn keep_scripts_loaded(state: AppState) {
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    // The first call sets this gateway's marks.
    let _ = state.store.data_intact(&state.gateway_id).await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        let checked = Instant::now();
        if let Ok(Ok(false)) =
            tokio::time::timeout(PROBE_TIMEOUT, state.store.data_intact(&state.gateway_id)).await
        {
            state.give_up_lost_outcomes(checked);
        }
        match tokio::time::timeout(PROBE_TIMEOUT, state.store.ensure_scripts()).await {
            Ok(Ok(true)) if !healthy => {
                healthy = true;
                info!("Redis holds every script again; ready.");
            }
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Ok(Err(_)) | Err(_) if healthy => {
                healthy = false;
                warn!("Redis is unreachable or lost the scripts; not ready until they are back.");
            }
            _ => {}
        }
    }
}
