//! Counters of what this gateway did. Read by tests and the benchmark; the `/metrics` endpoint of
//! the operator surface will export them.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::histogram::Histogram;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        pub struct Metrics {
            $($(#[$doc])* pub $name: AtomicU64,)*
            /// Utterance received → `job_assign` sent, for utterances assigned at once.
            pub dispatch_latency: Histogram,
            /// Utterance received → `translation_result` sent (millisecond resolution: the task's
            /// creation time is stored in Redis in ms).
            pub result_latency: Histogram,
            /// Inbox entry appended → read by this gateway (ms resolution: the entry id's time).
            pub inbox_lag: Histogram,
            /// Failed tasks by protocol error code (a bounded set).
            pub failures: parking_lot::Mutex<std::collections::BTreeMap<&'static str, u64>>,
        }

        impl Metrics {
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters!(
    /// Job attempts assigned to a node (first attempts and re-dispatches).
    jobs_assigned,
    /// Re-dispatches: attempts after the first.
    jobs_reassigned,
    /// Tasks that ended with a node's result.
    tasks_completed,
    /// Tasks that ended with an error (node failure, timeout, no node).
    tasks_failed,
    /// Utterances that repeated an existing task and were ignored.
    tasks_duplicate,
    /// Tasks the admission policy turned away (`NODE_OVERLOADED`, with its reason).
    tasks_rejected,
    /// Results from a node that does not hold the job (superseded attempt, second result, other node).
    results_stale,
    /// Results for jobs that do not exist.
    results_unknown,
    /// `asr_partial`s for jobs the node does not hold (dropped).
    partials_dropped,
    /// Messages answered with INVALID_MESSAGE.
    invalid_messages,
    /// Messages dropped for exceeding a connection's rate.
    messages_rate_limited,
    /// Connections refused (HTTP 429) for exceeding the limit per address.
    connections_refused,
    /// `node_error` messages.
    node_errors,
    /// Frames that reached no socket and no backlog (the peer is gone).
    undeliverable,
    /// Frames appended to other gateways' inboxes.
    frames_forwarded,
    /// Frames read from an inbox (this gateway's, or a dead gateway's it claimed).
    frames_received,
    /// Frames kept in the backlog of a detached session.
    frames_kept,
    /// Outcomes dropped because their listener had already skipped them (gap timeout).
    results_late,
    /// Redis script calls made by dispatches (`candidates` and `dispatch_task`): divided by
    /// `jobs_assigned`, the dispatch path's round trips per task.
    dispatch_script_calls,
    /// WebRTC signals relayed to another member of a room.
    signals_relayed,
    /// WebRTC signals dropped: over a connection's signal rate, or withheld because the receiver
    /// turned the sender's voice off.
    signals_dropped,
);

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self, code: &'static str) {
        *self.failures.lock().entry(code).or_insert(0) += 1;
    }

    pub fn get(&self, name: &str) -> u64 {
        self.snapshot().into_iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| v)
    }
}
