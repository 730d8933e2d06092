//! Per-source token buckets for the UDP reply rate, in a table whose size is
//! capped whatever sources spoofed datagrams claim, and a throttle that
//! keeps drop and refusal logs to one line a second.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::canonical;

/// Sources tracked at once. Each costs about 64 bytes (map entry and
/// queue slot), so the table stays under ~5 MiB however many addresses a
/// flood of spoofed datagrams claims. Past it, the source seen first is
/// forgotten: it starts again with a full bucket, so an attacker cycling
/// through 65,536 fake sources buys its victim at most one more burst per
/// cycle.
pub const MAX_SOURCES: usize = 65_536;

/// One token bucket per source: `rate` tokens a second, holding at most
/// `rate` (a burst of one second's worth). A reply takes a token.
///
/// An IPv4 source is its address; an IPv6 source is its /64, the prefix one
/// host (or one attacker) is routed: keying by the full address would give
/// a host 2^64 buckets to spend.
#[derive(Debug)]
pub struct SourceRates {
    rate: f64,
    capacity: usize,
    buckets: HashMap<IpAddr, Bucket>,
    /// Sources in the order first seen, to forget the oldest at the cap.
    order: VecDeque<IpAddr>,
    /// Sources forgotten to make room, not yet reported.
    forgotten: u64,
}

/// The key of a source: an IPv4 address, or an IPv6 /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 64) - 1),
        )),
        v4 => v4,
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl SourceRates {
    /// Buckets of `per_s` (at least 1) tokens a second.
    pub fn new(per_s: u32) -> SourceRates {
        SourceRates::with_capacity(per_s, MAX_SOURCES)
    }

    /// Buckets of `per_s` tokens a second for at most `capacity` sources.
    pub fn with_capacity(per_s: u32, capacity: usize) -> SourceRates {
        SourceRates {
            rate: f64::from(per_s.max(1)),
            capacity: capacity.max(1),
            buckets: HashMap::new(),
            order: VecDeque::new(),
            forgotten: 0,
        }
    }

    /// Sources forgotten to make room since the last call (each starts
    /// again with a full bucket): for the throttled log line.
    pub fn take_forgotten(&mut self) -> u64 {
        std::mem::take(&mut self.forgotten)
    }

    /// Whether `ip` may get a reply at `now`; if so, its token is taken.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = source_key(ip);
        let rate = self.rate;
        if let Some(bucket) = self.buckets.get_mut(&ip) {
            let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
            bucket.at = now.max(bucket.at);
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                return true;
            }
            return false;
        }
        if self.buckets.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.buckets.remove(&oldest);
            self.forgotten += 1;
        }
        self.order.push_back(ip);
        self.buckets.insert(
            ip,
            Bucket {
                tokens: rate - 1.0,
                at: now,
            },
        );
        true
    }

    /// Sources tracked now (at most the capacity).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// At most one log line a second for a stream of like events (dropped
/// datagrams, refused connections), carrying how many happened.
#[derive(Debug, Default)]
pub struct LogThrottle {
    last: Option<Instant>,
    pending: u64,
}

impl LogThrottle {
    /// Nothing counted yet; the first event is logged at once.
    pub const fn new() -> LogThrottle {
        LogThrottle {
            last: None,
            pending: 0,
        }
    }

    /// Counts one event at `now`; `Some(events since the last line)` when
    /// a line is due.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn burst_then_steady_rate() {
        let mut rates = SourceRates::new(10);
        let t0 = Instant::now();
        let granted = (0..100).filter(|_| rates.allow(v4(1), t0)).count();
        assert_eq!(granted, 10, "a burst of one second's worth");
        assert!(!rates.allow(v4(1), t0 + Duration::from_millis(50)));
        assert!(
            rates.allow(v4(1), t0 + Duration::from_millis(100)),
            "one token per 100 ms"
        );
        assert!(!rates.allow(v4(1), t0 + Duration::from_millis(100)));
        // Idle for a minute: the bucket is full again, never fuller.
        let later = t0 + Duration::from_secs(60);
        let granted = (0..100).filter(|_| rates.allow(v4(1), later)).count();
        assert_eq!(granted, 10);
        assert!(rates.allow(v4(2), t0), "another source has its own bucket");
    }

    #[test]
    fn table_is_capped_forgetting_the_oldest() {
        let mut rates = SourceRates::with_capacity(1, 1000);
        let t0 = Instant::now();
        assert!(rates.allow(v4(0), t0));
        assert!(!rates.allow(v4(0), t0), "source 0 is out of tokens");
        for n in 1..5000 {
            rates.allow(v4(n), t0);
            assert!(rates.len() <= 1000);
        }
        assert_eq!(rates.len(), 1000);
        assert!(rates.allow(v4(0), t0), "forgotten, so a fresh bucket");
        let mut full = SourceRates::new(1);
        for n in 0..(MAX_SOURCES as u32 + 10) {
            full.allow(v4(n), t0);
        }
        assert_eq!(full.len(), MAX_SOURCES);
    }

    #[test]
    fn an_ipv6_source_is_its_slash_64() {
        let mut rates = SourceRates::new(2);
        let t0 = Instant::now();
        let host =
            |last: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, last));
        // Every address of one /64 shares one bucket of 2.
        assert!(rates.allow(host(1), t0));
        assert!(rates.allow(host(2), t0));
        assert!(!rates.allow(host(3), t0), "the /64's bucket is empty");
        let other = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert!(rates.allow(other, t0), "another /64 has its own");
        assert_eq!(rates.len(), 2);
    }

    #[test]
    fn forgotten_sources_are_counted() {
        let mut rates = SourceRates::with_capacity(1, 10);
        let t0 = Instant::now();
        for n in 0..25 {
            rates.allow(v4(n), t0);
        }
        assert_eq!(rates.take_forgotten(), 15);
        assert_eq!(rates.take_forgotten(), 0);
    }

    #[test]
    fn throttle_counts_between_lines() {
        let mut log = LogThrottle::new();
        let t0 = Instant::now();
        assert_eq!(log.hit(t0), Some(1));
        assert_eq!(log.hit(t0 + Duration::from_millis(999)), None);
        assert_eq!(log.hit(t0 + Duration::from_millis(999)), None);
        assert_eq!(log.hit(t0 + Duration::from_secs(1)), Some(3));
        assert_eq!(log.hit(t0 + Duration::from_secs(5)), Some(1));
    }

    proptest! {
        /// Whatever the arrival times, a source never gets more than a
        /// burst plus the rate times the time elapsed.
        #[test]
        fn never_more_than_burst_plus_rate(rate in 1u32..50, gaps in proptest::collection::vec(0u64..200, 1..400)) {
            let mut rates = SourceRates::new(rate);
            let t0 = Instant::now();
            let mut now = t0;
            let mut granted = 0u64;
            for gap in gaps {
                now += Duration::from_millis(gap);
                if rates.allow(v4(7), now) {
                    granted += 1;
                }
            }
            let elapsed = now.duration_since(t0).as_secs_f64();
            let bound = f64::from(rate) + f64::from(rate) * elapsed + 1e-6;
            prop_assert!(granted as f64 <= bound, "{} granted, bound {}", granted, bound);
        }

        /// The table never grows past its cap, whatever the sources.
        #[test]
        fn memory_is_bounded(sources in proptest::collection::vec(any::<u32>(), 0..2000), cap in 1usize..300) {
            let mut rates = SourceRates::with_capacity(5, cap);
            let t0 = Instant::now();
            for s in sources {
                rates.allow(v4(s), t0);
                prop_assert!(rates.len() <= cap);
                prop_assert!(rates.order.len() <= cap);
            }
        }
    }
}
