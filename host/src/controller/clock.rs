//! The controller's sense of time: when a run is due, when a Pending pod
//! times out, when finished pods go, when the Lease expires. Production
//! reads the system clock; tests drive their own, so that timeouts of
//! minutes and intervals of days play out in moments against a real API
//! server.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
    /// Resolves once `now()` has reached `deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> Sleep<'_>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// A far deadline is slept towards in steps, so a wall-clock jump (a
/// suspended VM, an NTP step) is noticed within this long.
const LONGEST_SLEEP: Duration = Duration::from_secs(300);

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep<'_> {
        Box::pin(async move {
            loop {
                let left = deadline.duration_since(Timestamp::now());
                let Ok(left) = Duration::try_from(left) else {
                    return;
                };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(LONGEST_SLEEP)).await;
            }
        })
    }
}

/// `t + d`, saturating at the end of time.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// `t - d`, saturating at the start of time.
pub fn sub(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_sub(d).unwrap_or(Timestamp::MIN)
}

/// `t + seconds` for a count of seconds kept in an object (never negative).
pub fn add_secs(t: Timestamp, seconds: i64) -> Timestamp {
    add(t, Duration::from_secs(seconds.max(0).unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_past_deadline_does_not_sleep() {
        let clock = SystemClock;
        let before = std::time::Instant::now();
        clock.sleep_until(sub(clock.now(), Duration::from_secs(60))).await;
        clock.sleep_until(Timestamp::MIN).await;
        assert!(before.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(add(Timestamp::MAX, Duration::from_secs(1)), Timestamp::MAX);
        assert_eq!(sub(Timestamp::MIN, Duration::from_secs(1)), Timestamp::MIN);
        let t: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        assert_eq!(add_secs(t, -5), t);
        assert_eq!(add_secs(t, 60).to_string(), "2026-11-23T10:01:00Z");
    }
}
