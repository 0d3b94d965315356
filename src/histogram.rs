//! A lock-free latency histogram: log-spaced buckets, 4 per doubling, so a quantile is known to
//! within 19 %. Records microseconds.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub const BUCKETS: usize = 96;

#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum: AtomicU64::new(0) }
    }
}

impl Histogram {
    pub fn record(&self, micros: u64) {
        self.counts[bucket(micros)].fetch_add(1, Relaxed);
        self.sum.fetch_add(micros, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn sum_micros(&self) -> u64 {
        self.sum.load(Relaxed)
    }

    /// The upper edge of the bucket holding quantile `q` (0..1), in µs; 0 before any record.
    pub fn quantile(&self, q: f64) -> u64 {
        quantile_of(&self.buckets(), q)
    }

    /// The count in each bucket (`BUCKETS` of them), to add up histograms recorded apart.
    pub fn buckets(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.load(Relaxed)).collect()
    }

    /// Cumulative counts at each distinct upper edge (µs), for Prometheus `le` buckets; only the
    /// edges up to the last non-empty bucket. The first buckets share the edge 1 µs (they split
    /// the first microsecond): they come out once, or Prometheus would see a duplicate series.
    pub fn cumulative(&self) -> Vec<(u64, u64)> {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let last = counts.iter().rposition(|c| *c > 0).unwrap_or(0);
        let mut seen = 0;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (i, c) in counts[..=last].iter().enumerate() {
            seen += c;
            match out.last_mut() {
                Some((edge, count)) if *edge == upper_edge(i) => *count = seen,
                _ => out.push((upper_edge(i), seen)),
            }
        }
        out
    }
}

/// Quantile `q` (0..1) of bucket counts (`Histogram::buckets`, or several added up): the upper edge
/// of the bucket holding it; 0 when they are empty.
pub fn quantile_of(counts: &[u64], q: f64) -> u64 {
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
    upper_edge(counts.len().saturating_sub(1))
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
        let h = Histogram::default();
        for us in [3, 4, 5, 6, 7, 8, 9, 10, 11, 1000] {
            h.record(us);
        }
        let p50 = h.quantile(0.5);
        assert!((7..=9).contains(&p50), "p50 {p50}");
        let p99 = h.quantile(0.99);
        assert!((1000..=1200).contains(&p99), "p99 {p99}");
        assert_eq!(Histogram::default().quantile(0.5), 0);
        assert_eq!(h.count(), 10);
        assert_eq!(h.cumulative().last().unwrap().1, 10);
        let edges: Vec<u64> = h.cumulative().iter().map(|(edge, _)| *edge).collect();
        assert!(edges.windows(2).all(|w| w[0] < w[1]), "edges strictly increasing: {edges:?}");
    }
}
