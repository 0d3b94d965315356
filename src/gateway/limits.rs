//! Limits on what one peer may cost: messages per second per connection (a token bucket) and
//! connections per client address. Exceeding them gets a clear answer — `RATE_LIMITED` for a
//! message, HTTP 429 for a connection — and the gateway goes on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// Messages per second on one connection, with a burst of one second's worth.
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    tokens: f64,
    last: Instant,
    last_notice: Option<Instant>,
}

impl RateLimit {
    /// `None` when `per_second` is 0 (unlimited).
    pub fn new(per_second: u32) -> Option<Self> {
        (per_second > 0).then(|| Self {
            per_second: per_second as f64,
            tokens: per_second as f64,
            last: Instant::now(),
            last_notice: None,
        })
    }

    /// Takes a token; false when the connection is over its rate.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether to tell the peer (at most once a second, so a flood is not answered by a flood).
    pub fn notice(&mut self, now: Instant) -> bool {
        let due = self.last_notice.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if due {
            self.last_notice = Some(now);
        }
        due
    }
}

/// Open connections per client address.
#[derive(Debug, Clone, Default)]
pub struct AddressLimits {
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

/// One counted connection; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: AddressLimits,
    ip: IpAddr,
}

impl AddressLimits {
    /// A place for one more connection from `ip`, or `None` when it has `max` already (0 =
    /// unlimited).
    pub fn acquire(&self, ip: IpAddr, max: u32) -> Option<ConnectionSlot> {
        let mut open = self.open.lock();
        let count = open.entry(ip).or_insert(0);
        if max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot { limits: self.clone(), ip })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The answer to a socket over the limit per address.
pub fn refused() -> axum::response::Response {
    use axum::response::IntoResponse;
    (axum::http::StatusCode::TOO_MANY_REQUESTS, "too many connections from this address").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let mut limit = RateLimit::new(10).unwrap();
        let t0 = Instant::now();
        assert_eq!((0..20).filter(|_| limit.allow(t0)).count(), 10, "a burst of one second");
        assert!(!limit.allow(t0));
        assert!(limit.allow(t0 + Duration::from_millis(100)), "one token per 100 ms");
        assert!(limit.notice(t0) && !limit.notice(t0 + Duration::from_millis(500)));
        assert!(RateLimit::new(0).is_none());
    }

    #[test]
    fn connections_per_address_are_counted_until_dropped() {
        let limits = AddressLimits::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = limits.acquire(ip, 2).unwrap();
        let _b = limits.acquire(ip, 2).unwrap();
        assert!(limits.acquire(ip, 2).is_none());
        assert!(limits.acquire("10.0.0.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(limits.acquire(ip, 2).is_some());
        assert!(limits.acquire(ip, 0).is_some(), "0 is unlimited");
    }
}
