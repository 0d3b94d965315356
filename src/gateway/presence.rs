//! Living next to other gateways: this gateway's inbox reader, its presence in the registry, the
//! takeover of gateways that died (their sessions detached and ended after the resume grace,
//! their inboxes claimed), and the expiry of the rooms this gateway's sessions are in.
//!
//! A dead gateway's nodes need nothing here: their liveness deadline expires like any silent
//! node's, the sweep takes them offline and their jobs get new attempts (docs/rooms.md).

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::AppState;
use crate::protocol::{RoomExpired, ToClient};
use crate::store::{Fence, SessionEnd};

/// Sessions and gateways handled per Redis call during a takeover.
const TAKEOVER_BATCH: usize = 256;

/// Reads this gateway's inbox and delivers what it holds, until shutdown. Reopens the inbox
/// after an error (which also recreates it after Redis lost it).
pub async fn run_inbox(state: AppState) {
    let retry = Duration::from_millis(500);
    let block = Duration::from_secs(1);
    while !state.shutdown.is_cancelled() {
        let mut inbox = match state.store.open_inbox(&state.gateway_id, block).await {
            Ok(inbox) => inbox,
            Err(err) => {
                warn!(%err, "Opening the inbox failed; retrying.");
                sleep_or_shutdown(&state, retry).await;
                continue;
            }
        };
        loop {
            let read = tokio::select! {
                read = inbox.read(block) => read,
                _ = state.shutdown.cancelled() => return,
            };
            let ids = match read {
                Ok(entries) => state.deliver_entries(entries, true),
                Err(err) => {
                    warn!(%err, "Reading the inbox failed; reopening it.");
                    break;
                }
            };
            if let Err(err) = inbox.ack(&ids).await {
                warn!(%err, "Acknowledging inbox entries failed; reopening it.");
                break;
            }
        }
        sleep_or_shutdown(&state, retry).await;
    }
}

async fn sleep_or_shutdown(state: &AppState, wait: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = state.shutdown.cancelled() => {}
    }
}

/// Each interval: refreshes this gateway's presence, takes over gateways that died, and checks
/// the rooms of local sessions for expiry. On shutdown, gives its presence up so the others take
/// over its sessions at once.
pub async fn run_presence(state: AppState) {
    let config = &state.config.gateways;
    let interval = Duration::from_millis(config.heartbeat_interval_ms);
    let window = 3 * config.heartbeat_interval_ms;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    // Since when this gateway's own refreshes have gone through on time. Another gateway's stale
    // presence proves it dead only if Redis took refreshes all that while: after Redis froze or
    // was away (or this process stalled), every presence looks stale, live gateways' included, and
    // taking over a live gateway would end its connected sessions.
    let mut in_contact_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = state.shutdown.cancelled() => break,
        }
        let asked = Instant::now();
        let refreshed = state.store.gateway_presence(&state.gateway_id, window).await;
        if refreshed.is_err() || asked.elapsed() > interval {
            in_contact_since = None;
        } else {
            in_contact_since.get_or_insert(asked);
        }
        match refreshed {
            Ok(true) if !first => {
                warn!(
                    "This gateway had been taken for dead (no presence for {window} ms); attaching its sessions again."
                );
                if let Err(err) = reattach_sessions(&state).await {
                    warn!(%err, "Attaching sessions again failed; their clients resume on reconnect.");
                }
            }
            Ok(_) => first = false,
            Err(err) => warn!(%err, "Refreshing this gateway's presence failed."),
        }
        let judged = in_contact_since.is_some_and(|t| t.elapsed() >= Duration::from_millis(window));
        if judged && let Err(err) = take_over_dead(&state).await {
            warn!(%err, "Taking over dead gateways failed; retrying next interval.");
        }
        if let Err(err) = expire_rooms(&state).await {
            warn!(%err, "Checking rooms for expiry failed.");
        }
    }
    if let Err(err) = state.store.gateway_presence(&state.gateway_id, 0).await {
        warn!(%err, "Giving up this gateway's presence failed; the others notice when it expires.");
    }
}

/// After this gateway was taken for dead (a Redis or network outage longer than its presence
/// window), another gateway detached its sessions although their sockets are still here; after
/// Redis restarted empty, their records are gone. Either way they are attached here again.
async fn reattach_sessions(state: &AppState) -> crate::store::Result<()> {
    for (session_id, peer) in state.peers.sessions() {
        let (token_sha, settings) = &*peer.record;
        let kept = state
            .store
            .session_reattach(&session_id, &state.gateway_id, &peer.conn, token_sha, settings)
            .await?;
        state.deliver_kept(&session_id, &peer, kept.unwrap_or_default());
    }
    Ok(())
}

async fn take_over_dead(state: &AppState) -> crate::store::Result<()> {
    let me = &*state.gateway_id;
    let reap =
        state.store.gateway_reap(TAKEOVER_BATCH as u32, state.config.gateways.dead_retention_ms).await?;
    for dead in reap.reaped.iter().filter(|g| *g != me) {
        info!(gateway.id = %dead, "Gateway is dead; taking over its sessions.");
        loop {
            let sessions = state.store.pop_sessions(dead, TAKEOVER_BATCH).await?;
            if sessions.is_empty() {
                break;
            }
            for session_id in sessions {
                let ttl = state.detached_ttl_ms();
                if let Some(conn) =
                    state.store.session_detach(&session_id, Fence::Gateway(dead, reap.at), ttl).await?
                {
                    state.end_after_grace(session_id, conn);
                }
            }
        }
    }
    for dead in reap.dead.iter().filter(|g| *g != me) {
        // A dead gateway's unacknowledged entries are idle for at least two presence intervals
        // when it is found dead; one interval keeps two claimers from taking the same entry.
        let min_idle = state.config.gateways.heartbeat_interval_ms;
        let entries = state.store.claim_inbox(dead, me, min_idle).await?;
        if !entries.is_empty() {
            info!(gateway.id = %dead, frames = entries.len(), "Claimed frames from a dead gateway's inbox.");
            let ids = state.deliver_entries(entries, false);
            state.store.ack_inbox(dead, &ids).await?;
        }
    }
    for gone in &reap.forgotten {
        state.store.forget_gateway(gone).await?;
    }
    Ok(())
}

/// Tells local members of rooms that expired (idle for the room ttl) and ends their membership.
async fn expire_rooms(state: &AppState) -> crate::store::Result<()> {
    let rooms = state.peers.rooms();
    if rooms.is_empty() {
        return Ok(());
    }
    let codes: Vec<&str> = rooms.keys().map(String::as_str).collect();
    let exist = state.store.rooms_exist(&codes).await?;
    for (code, exists) in codes.iter().zip(exist) {
        if exists {
            continue;
        }
        info!(room.code = %code, "Room expired.");
        for (session_id, peer) in &rooms[*code] {
            let was_member = {
                let mut room = peer.room.lock();
                room.take_if(|room| room == code).is_some()
            };
            if !was_member {
                continue;
            }
            peer.outbox.send(&ToClient::RoomExpired(RoomExpired {
                room_code: code.to_string(),
                message: "the room was idle too long and has closed".into(),
            }));
            state.store.session_room(session_id, None).await?;
        }
    }
    Ok(())
}

impl AppState {
    /// How long a detached session's record lives: twice the resume grace, so the grace timer
    /// always finds it; without a timer (its gateway died untaken) it still goes away.
    pub fn detached_ttl_ms(&self) -> u64 {
        2 * self.config.sessions.resume_grace_ms
    }

    /// Ends a detached session once its resume grace is over, unless it resumed meanwhile:
    /// leaves its room and forgets it.
    pub fn end_after_grace(&self, session_id: String, conn: String) {
        let state = self.clone();
        let grace = Duration::from_millis(self.config.sessions.resume_grace_ms);
        // Shutdown ends it at once; the gateway that takes over this one's sessions schedules
        // the end again.
        let span = tracing::debug_span!("end_after_grace", session.id = %session_id);
        self.spawn(span, async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = state.shutdown.cancelled() => return,
            }
            match state.store.session_end(&session_id, &conn, true).await {
                Ok(SessionEnd::Ended { room }) => {
                    info!(session.id = %session_id, "Resume grace over; session ended.");
                    if !room.is_empty() {
                        state.depart_room(&session_id, &room).await;
                    }
                    let _ = state.store.unindex_session(&state.gateway_id, &session_id).await;
                }
                Ok(SessionEnd::Stale) => {}
                Err(err) => {
                    warn!(%err, session.id = %session_id, "Ending a session failed; its record expires.")
                }
            }
        });
    }
}
