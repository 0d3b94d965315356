//! The breaker: a version that failed `failures` calls in a row is suspended for a cool-down (the
//! default decides, without paying its deadline each time); after it, one more failure suspends it
//! again, one good call closes the breaker.

use std::sync::atomic::Ordering::Relaxed;

use super::{CallError, Loaded, Policies, short};
use crate::protocol::now_ms;

/// When a misbehaving version stops being called (`policy.breaker_*`).
#[derive(Debug, Clone, Copy)]
pub struct Breaker {
    /// Failed calls in a row that suspend a version; 0 turns the breaker off.
    pub failures: u64,
    pub cooldown_ms: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Self { failures: 5, cooldown_ms: 30_000 }
    }
}

impl Policies {
    /// Calls version `l` unless the breaker holds it suspended (`None` then), and keeps its breaker:
    /// `breaker.failures` failed calls in a row suspend it for `breaker.cooldown_ms`.
    pub(super) fn guarded<T>(
        &self,
        l: &Loaded,
        run: &impl Fn(&Loaded) -> Result<T, CallError>,
    ) -> Option<Result<T, CallError>> {
        let now = now_ms();
        if l.stats.suspended_at(now) {
            l.stats.skipped.fetch_add(1, Relaxed);
            return None;
        }
        let out = run(l);
        if out.is_ok() {
            l.stats.failures_in_a_row.store(0, Relaxed);
        } else {
            let in_a_row = l.stats.failures_in_a_row.fetch_add(1, Relaxed) + 1;
            // Past a cool-down the count is still at the threshold: one more failure suspends again.
            if self.breaker.failures > 0 && in_a_row >= self.breaker.failures {
                l.stats.suspended_until_ms.store(now + self.breaker.cooldown_ms, Relaxed);
                l.stats.suspensions.fetch_add(1, Relaxed);
                tracing::warn!(
                    policy.sha256 = %short(&l.compiled.sha256),
                    failures = in_a_row,
                    cooldown_ms = self.breaker.cooldown_ms,
                    "Policy suspended after failed calls in a row; the default decides until the cool-down ends."
                );
            }
        }
        Some(out)
    }
}
