//! Per-version call counters and latency.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::histogram::Histogram;

#[derive(Debug, Default)]
pub struct Stats {
    pub calls: AtomicU64,
    pub fallbacks: AtomicU64,
    /// Shadow mode: decisions equal to, and different from, the active policy's.
    pub agreements: AtomicU64,
    pub disagreements: AtomicU64,
    pub latency: Histogram,
    /// The breaker: failed calls in a row (reset by a good one), and until when the version is
    /// suspended (ms since the epoch; 0 = never was). While suspended it is not called at all.
    pub failures_in_a_row: AtomicU64,
    pub suspended_until_ms: AtomicU64,
    pub suspensions: AtomicU64,
    /// Calls it would have had while suspended (the default decided them).
    pub skipped: AtomicU64,
    /// Node selection: how the tasks in its share ended (judged for a canary against the active
    /// version's), and their result latency from the utterance to the node's result, in ms.
    pub tasks_ok: AtomicU64,
    pub tasks_failed: AtomicU64,
    pub tasks_timed_out: AtomicU64,
    pub result_ms: Histogram,
    /// The last call's duration: a version whose last call was slow runs its next one off the
    /// async worker (see `Policies::select`).
    pub last_us: AtomicU64,
    /// Calls run off the async worker because the version had been slow.
    pub offloaded: AtomicU64,
}

impl Stats {
    pub fn record(&self, micros: u64) {
        self.calls.fetch_add(1, Relaxed);
        self.latency.record(micros);
        self.last_us.store(micros, Relaxed);
    }

    pub fn suspended_at(&self, now_ms: u64) -> bool {
        self.suspended_until_ms.load(Relaxed) > now_ms
    }

    /// The upper bound of quantile `q` of call latency, in µs.
    pub fn quantile(&self, q: f64) -> u64 {
        self.latency.quantile(q)
    }
}
