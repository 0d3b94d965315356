//! The periodic sweep: every gateway calls `sweep.lua` for each cell each interval; the script's
//! lock lets one call per cell and interval do the work. Expired nodes go offline, overdue jobs get a new attempt (and a
//! `job_cancel`), waiting tasks that are due are dispatched again.

use std::time::Duration;

use tracing::{info, warn};

use super::AppState;
use crate::store::SweepReply;

pub async fn run(state: AppState) {
    let interval = Duration::from_millis(state.config.scheduler.sweep_interval_ms);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        let cells = state.store.cells();
        let replies = futures_util::future::join_all(
            cells.iter().map(|cell| state.store.sweep(cell, &state.gateway_id)),
        )
        .await;
        for (cell, reply) in cells.iter().zip(replies) {
            match reply {
                Ok(SweepReply::Busy) => {}
                Ok(SweepReply::Swept { offline, released, due }) => {
                    if !offline.is_empty() {
                        info!(cell = cell.tag(), nodes = ?offline, "Nodes missed their heartbeats; taken offline.");
                    }
                    state.handle_released(cell, released);
                    for task_id in due {
                        state.spawn_redispatch(cell, task_id);
                    }
                }
                Err(err) => warn!(%err, cell = cell.tag(), "Sweep failed."),
            }
        }
    }
}
