//! A clock the test moves by hand, for the controller: a Pending timeout of
//! ten minutes or an interval of a day passes in one call, against a real
//! API server.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use scour::controller::clock::{Clock, Sleep};
use tokio::sync::watch;

pub struct ManualClock {
    now: Mutex<Timestamp>,
    moved: watch::Sender<Timestamp>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        let (moved, _) = watch::channel(start);
        Self {
            now: Mutex::new(start),
            moved,
        }
    }

    /// Moves time forward, waking every sleeper whose deadline has come.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now = now
            .checked_add(SignedDuration::try_from(by).expect("a representable duration"))
            .expect("a representable time");
        self.moved.send_replace(*now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep<'_> {
        let mut moved = self.moved.subscribe();
        Box::pin(async move {
            loop {
                if *moved.borrow_and_update() >= deadline {
                    return;
                }
                if moved.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sleeper_wakes_when_the_clock_passes_its_deadline() {
        let start: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let clock = std::sync::Arc::new(ManualClock::new(start));
        let deadline = start.checked_add(SignedDuration::from_secs(60)).unwrap();
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(deadline).await })
        };
        clock.advance(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished(), "woke 30 s early");
        clock.advance(Duration::from_secs(30));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woke at its deadline")
            .unwrap();
        assert_eq!(clock.now(), deadline);
    }
}
