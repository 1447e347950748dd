//! A token bucket for `--rate`: `rate` files per second on average, with bursts of at most
//! [`burst`] files (a tenth of a second's worth, at least 1, at most 100), so a PACS export
//! share sees a steady trickle instead of the whole budget at once.
//!
//! Pure: the caller passes the time, so the tests drive it with a fake clock.

use std::time::{Duration, Instant};

/// The burst allowed at `rate` files per second.
pub fn burst(rate: f64) -> f64 {
    (rate / 10.0).clamp(1.0, 100.0)
}

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now` (the first [`burst`] files go at once). `rate` must be > 0.
    pub fn new(rate: f64, now: Instant) -> TokenBucket {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            f64::MIN_POSITIVE
        };
        let capacity = burst(rate);
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Take one token at `now`: `None` if there was one, else how long until there is (ask
    /// again then). A clock that goes backwards adds nothing.
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            let wait = (1.0 - self.tokens) / self.rate;
            // Rounded up to the microsecond, so the token is there when the caller comes back
            // (never a zero wait, which would spin); never an absurd one.
            let micros = (wait * 1e6).ceil().clamp(1.0, 86_400e6);
            Some(Duration::from_micros(micros as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many tokens can be taken over about `secs` of fake time, asking every `step`,
    /// and the fake time that passed.
    fn taken_over(rate: f64, secs: f64, step: Duration) -> (u64, f64) {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate, t0);
        let mut n = 0;
        let mut now = t0;
        let mut last = t0;
        while now <= t0 + Duration::from_secs_f64(secs) {
            while b.take(now).is_none() {
                n += 1;
            }
            last = now;
            now += step;
        }
        (n, (last - t0).as_secs_f64())
    }

    #[test]
    fn the_average_rate_holds_plus_one_burst() {
        for (rate, secs) in [(30.0, 10.0), (1000.0, 3.0), (0.5, 20.0), (7.0, 1.0)] {
            let (n, elapsed) = taken_over(rate, secs, Duration::from_millis(7));
            let most = (rate * elapsed + burst(rate) + 1e-9).floor() as u64;
            assert!(n <= most, "rate {rate}: {n} > {most}");
            assert!(n + 2 >= most, "rate {rate}: {n} well below {most}");
        }
    }

    #[test]
    fn bursts_are_small_and_the_wait_is_exact() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(30.0, t0);
        // A full bucket: 3 at once, then a wait of one token's time.
        for _ in 0..3 {
            assert_eq!(b.take(t0), None);
        }
        let wait = b.take(t0).unwrap();
        assert!((wait.as_secs_f64() - 1.0 / 30.0).abs() < 1e-6, "{wait:?}");
        assert_eq!(b.take(t0 + wait), None);
        // An idle minute refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        let mut n = 0;
        while b.take(later).is_none() {
            n += 1;
        }
        assert_eq!(n, 3);
        // Time going backwards neither adds tokens nor panics.
        assert!(b.take(t0).is_some());
        assert_eq!(burst(0.1), 1.0);
        assert_eq!(burst(5_000.0), 100.0);
    }
}
