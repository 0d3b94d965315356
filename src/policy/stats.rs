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
}

impl Stats {
    pub fn record(&self, micros: u64) {
        self.calls.fetch_add(1, Relaxed);
        self.latency.record(micros);
    }

    /// The upper bound of quantile `q` of call latency, in µs.
    pub fn quantile(&self, q: f64) -> u64 {
        self.latency.quantile(q)
    }
}
