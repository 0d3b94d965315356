//! Per-version call counters and a latency histogram (log-spaced buckets, 4 per doubling).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const BUCKETS: usize = 96;

#[derive(Debug)]
pub struct Stats {
    pub calls: AtomicU64,
    pub fallbacks: AtomicU64,
    /// Shadow mode: decisions equal to, and different from, the active policy's.
    pub agreements: AtomicU64,
    pub disagreements: AtomicU64,
    micros: [AtomicU64; BUCKETS],
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            agreements: AtomicU64::new(0),
            disagreements: AtomicU64::new(0),
            micros: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Stats {
    pub fn record(&self, micros: u64) {
        self.calls.fetch_add(1, Relaxed);
        self.micros[bucket(micros)].fetch_add(1, Relaxed);
    }

    /// The upper edge of the bucket holding quantile `q` (0..1), in µs; 0 before any call.
    pub fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.micros.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper_edge(i);
            }
        }
        upper_edge(BUCKETS - 1)
    }
}

fn bucket(micros: u64) -> usize {
    let b = (4.0 * ((micros + 1) as f64).log2()).floor() as usize;
    b.min(BUCKETS - 1)
}

fn upper_edge(bucket: usize) -> u64 {
    (2f64.powf((bucket + 1) as f64 / 4.0) - 1.0).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_bound_the_recorded_values() {
        let s = Stats::default();
        for us in [3, 4, 5, 6, 7, 8, 9, 10, 11, 1000] {
            s.record(us);
        }
        let p50 = s.quantile(0.5);
        assert!((7..=9).contains(&p50), "p50 {p50}");
        let p99 = s.quantile(0.99);
        assert!((1000..=1200).contains(&p99), "p99 {p99}");
        assert_eq!(Stats::default().quantile(0.5), 0);
    }
}
