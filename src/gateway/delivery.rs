//! Delivery of frames to sessions and nodes wherever they are connected. A peer on this gateway
//! gets the frame on its socket at once; a peer on another gateway gets it through that gateway's
//! Redis stream inbox; a session whose socket is gone (resumable) keeps it in its backlog.
//! Frames for other gateways go through the forwarder (`forwarder.rs`).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::connections::{Frame, SessionPeer};
use super::ordering::Overdue;
use super::{AppState, Metrics};
use crate::protocol::{ErrorCode, ErrorFrame, ToClient, ToNode};
use crate::store::{CellKeys, InboxEntry, TaskRef, TaskSpec};

/// What one gateway puts in another's inbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Envelope {
    Session {
        id: String,
        item: Item,
    },
    /// A frame for node `id` of the cell tagged `cell` (where its record, with its gateway, is).
    Node {
        id: String,
        cell: String,
        frame: String,
    },
}

/// What a session receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Item {
    /// A frame delivered as it comes (UI events, partials, room members, …).
    Frame { frame: String },
    /// A task of the speaker's utterance `index` is meant for this session (ordering).
    Expect {
        speaker: String,
        index: u64,
        #[serde(default)]
        task: Option<TaskRef>,
    },
    /// That task's outcome (result, `missing_result`, failure), released in the speaker's order.
    /// One that `closes` the utterance is its last: anything after it for the index is dropped.
    Outcome {
        speaker: String,
        index: u64,
        frame: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        closes: bool,
    },
}

impl Item {
    /// Whether a detached session keeps it in its backlog: frames and outcomes are kept (as items,
    /// so outcomes find their place in the order when the session is back); expectations are not.
    pub(super) fn worth_keeping(&self) -> bool {
        !matches!(self, Item::Expect { .. })
    }
}

pub(super) fn json<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).expect("protocol messages serialize")
}

impl AppState {
    /// A frame to a session, delivered as it comes.
    pub fn to_session(&self, session_id: &str, message: &ToClient) {
        self.deliver(session_id, Item::Frame { frame: json(message) });
    }

    /// Announces to `session_id` that a task of `speaker`'s utterance `index` is meant for it.
    pub fn expect_outcome(&self, session_id: &str, speaker: &str, index: u64, task: TaskRef) {
        self.deliver(session_id, Item::Expect { speaker: speaker.to_owned(), index, task: Some(task) });
    }

    /// A task's outcome to one recipient, in the speaker's utterance order.
    pub fn outcome_to(&self, session_id: &str, speaker: &str, index: u64, message: &ToClient) {
        let frame = json(message);
        self.deliver(session_id, Item::Outcome { speaker: speaker.to_owned(), index, frame, closes: false });
    }

    /// A speaker's utterance failed before its tasks were known to exist: `error` is its only
    /// outcome. A submission that timed out may still create its task once Redis answers again,
    /// and that task's result is then dropped rather than sent as a second outcome.
    pub fn failure_to_speaker(&self, speaker: &str, index: u64, error: &ToClient) {
        let frame = json(error);
        self.deliver(speaker, Item::Outcome { speaker: speaker.to_owned(), index, frame, closes: true });
    }

    /// A speaker sent again an utterance whose task exists — typically after resuming on this
    /// gateway because the one it was on died, with what it knew of the utterance. Unless this
    /// gateway has or awaits an outcome for it already, its outcome is awaited here so it keeps
    /// its place in the order: a running task's result comes here; an ended task's outcome may be
    /// on its way (through the dead gateway's inbox, taken over) or lost with that gateway, in
    /// which case the outcome audit gives it up as `missing_result{reason:"outcome_unavailable"}`
    /// (or the gap timeout skips it), so the utterance still ends in exactly one outcome.
    pub fn resent(&self, spec: &TaskSpec, task: TaskRef, state: &str) {
        debug!(utterance = spec.utterance_index, state, "An utterance sent again; its task exists.");
        if !spec.recipients.contains(&spec.session_id) {
            return;
        }
        let Some(peer) = self.peers.session(&spec.session_id) else { return };
        peer.sequencer.lock().expect_unless_known(&spec.session_id, spec.utterance_index, task);
    }

    /// Looks up the tasks of outcomes this gateway's sessions have awaited for
    /// `sessions.outcome_audit_ms`, and gives up those whose tasks ended and whose outcome still
    /// has not come one round later (see [`Sequencer::audited`]).
    pub async fn audit_outcomes(&self) -> crate::store::Result<()> {
        let after = Duration::from_millis(self.config.sessions.outcome_audit_ms);
        let now = Instant::now();
        let overdue: Vec<(String, SessionPeer, Overdue)> = self
            .peers
            .sessions()
            .into_iter()
            .flat_map(|(id, peer)| {
                let overdue = peer.sequencer.lock().overdue(now, after);
                overdue.into_iter().map(move |o| (id.clone(), peer.clone(), o))
            })
            .collect();
        if overdue.is_empty() {
            return Ok(());
        }
        let tasks: Vec<TaskRef> = overdue.iter().flat_map(|(_, _, o)| o.tasks.iter().cloned()).collect();
        let mut ended = self.store.tasks_ended(&tasks).await?.into_iter();
        for (session_id, peer, o) in overdue {
            // Every task of this utterance takes its answer from `ended`, whatever the others say
            // (the answers of the next utterance follow).
            let answers: Vec<bool> = o.tasks.iter().map(|_| ended.next().unwrap_or(false)).collect();
            let all_ended = answers.iter().all(|e| *e);
            let mut sequencer = peer.sequencer.lock();
            let released = sequencer.audited(&o.speaker, o.index, all_ended, Instant::now());
            if !released.frames.is_empty() {
                warn!(session.id = %session_id, speaker = %o.speaker, utterance = o.index,
                    "An outcome was lost (its tasks ended long ago); reported as missing.");
                Metrics::inc(&self.metrics.undeliverable);
            }
            send_released(&peer, released.frames);
        }
        Ok(())
    }

    /// A frame to a node of `cell`, on this gateway or another.
    pub fn to_node(&self, cell: &CellKeys, node_id: &str, message: &ToNode) {
        match self.peers.node(node_id) {
            Some(outbox) => {
                outbox.send(message);
            }
            None => self.forward(
                Envelope::Node { id: node_id.to_owned(), cell: cell.tag().to_owned(), frame: json(message) },
                false,
            ),
        }
    }

    fn deliver(&self, session_id: &str, item: Item) {
        match self.peers.session(session_id) {
            Some(peer) => self.deliver_local(session_id, &peer, item),
            None => self.forward(Envelope::Session { id: session_id.to_owned(), item }, false),
        }
    }

    /// Delivers to a socket of this gateway.
    pub fn deliver_local(&self, session_id: &str, peer: &SessionPeer, item: Item) {
        match item {
            Item::Frame { frame } => {
                peer.outbox.send_frame(Frame::Text(frame));
            }
            Item::Expect { speaker, index, task } => peer.sequencer.lock().expect(&speaker, index, task),
            Item::Outcome { speaker, index, frame, closes } => {
                let (late, arm) = {
                    let mut sequencer = peer.sequencer.lock();
                    let released = sequencer.outcome(&speaker, index, frame, closes);
                    let arm = released.held && sequencer.arm();
                    send_released(peer, released.frames);
                    (released.late, arm)
                };
                if late {
                    Metrics::inc(&self.metrics.results_late);
                }
                if arm {
                    self.gap_timer(session_id.to_owned(), peer.clone());
                }
            }
        }
    }

    /// Redis lost its data (restarted empty): the tasks this gateway's sessions still wait for
    /// are gone with it and no outcome will come for them. Each such utterance announced before
    /// `before` gets an `error` now, in its speaker's order, so the client knows to send it again.
    pub fn give_up_lost_outcomes(&self, before: Instant) {
        let lost = |speaker: &str, index: u64| {
            let frame = ErrorFrame::new(
                ErrorCode::SchedulerDependencyDown,
                "the scheduler store restarted and lost this utterance's task; send it again",
            )
            .with_details(serde_json::json!({ "session_id": speaker, "utterance_index": index }));
            json(&ToClient::Error(frame))
        };
        let mut given_up = 0;
        for (_, peer) in self.peers.sessions() {
            let mut sequencer = peer.sequencer.lock();
            let frames = sequencer.give_up(before, lost);
            given_up += frames.len();
            send_released(&peer, frames);
        }
        warn!(frames = given_up, "Redis lost its data; outcomes still awaited were given up.");
    }

    /// After the gap timeout (or once a resumed session settled), releases what is held and skips
    /// what still holds this session's results up (again each timeout while results stay held).
    fn gap_timer(&self, session_id: String, peer: SessionPeer) {
        let span = tracing::debug_span!("gap_timer", session.id = %session_id);
        self.spawn(span, async move {
            loop {
                let wait = peer.sequencer.lock().next_check(Instant::now());
                // A closed socket (shutdown closes them all) ends the timer at once.
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = peer.outbox.closed().cancelled() => {}
                }
                let held = {
                    let mut sequencer = peer.sequencer.lock();
                    let released = sequencer.expire(Instant::now());
                    if !released.held || peer.outbox.closed().is_cancelled() {
                        sequencer.disarm();
                    }
                    send_released(&peer, released.frames);
                    released.held
                };
                if !held || peer.outbox.closed().is_cancelled() {
                    return;
                }
                debug!(session.id = %session_id, "Results still held behind a gap.");
            }
        });
    }

    /// Delivers what another gateway sent here; what is no longer connected here is routed again
    /// (a session that just moved, or that is detached and keeps it in its backlog).
    fn deliver_envelope(&self, envelope: Envelope, from_own_inbox: bool) {
        Metrics::inc(&self.metrics.frames_received);
        match envelope {
            Envelope::Session { id, item } => match self.peers.session(&id) {
                Some(peer) => self.deliver_local(&id, &peer, item),
                None => self.forward(Envelope::Session { id, item }, from_own_inbox),
            },
            Envelope::Node { id, cell, frame } => match self.peers.node(&id) {
                Some(outbox) => {
                    outbox.send_frame(Frame::Text(frame));
                }
                // Our own inbox named a node that left: it is offline or elsewhere; a job's
                // deadline covers an assignment that reaches no node.
                None if from_own_inbox => Metrics::inc(&self.metrics.undeliverable),
                None => self.forward(Envelope::Node { id, cell, frame }, false),
            },
        }
    }

    /// Delivers what a session's backlog kept (items, oldest first) to its socket here.
    pub fn deliver_kept(&self, session_id: &str, peer: &SessionPeer, kept: Vec<String>) {
        for raw in kept {
            match serde_json::from_str::<Item>(&raw) {
                Ok(item) => self.deliver_local(session_id, peer, item),
                Err(err) => warn!(%err, session.id = %session_id, "Unreadable backlog entry dropped."),
            }
        }
    }

    /// Parses and delivers inbox entries; returns their ids for `XACK`.
    pub fn deliver_entries(&self, entries: Vec<InboxEntry>, from_own_inbox: bool) -> Vec<String> {
        let now = crate::protocol::now_ms();
        entries
            .into_iter()
            .map(|entry| {
                // An entry id starts with the Redis time it was appended at, in ms.
                if from_own_inbox
                    && let Some(appended) = entry.id.split('-').next().and_then(|t| t.parse::<u64>().ok())
                {
                    self.metrics.inbox_lag.record(now.saturating_sub(appended) * 1000);
                }
                match serde_json::from_str::<Envelope>(&entry.payload) {
                    Ok(envelope) => self.deliver_envelope(envelope, from_own_inbox),
                    Err(err) => warn!(%err, entry = %entry.id, "Unreadable inbox entry dropped."),
                }
                entry.id
            })
            .collect()
    }
}

/// Sends what a sequencer released. Callers hold the sequencer's lock while they do: two
/// deliveries on two runtime threads would otherwise send their releases in either order.
fn send_released(peer: &SessionPeer, frames: Vec<String>) {
    for frame in frames {
        peer.outbox.send_frame(Frame::Text(frame));
    }
}

/// Audits long-awaited outcomes every second (see [`AppState::audit_outcomes`]).
pub async fn run_outcome_audit(state: AppState) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        if let Err(err) = state.audit_outcomes().await {
            debug!(%err, "Auditing awaited outcomes failed; next round.");
        }
    }
}
