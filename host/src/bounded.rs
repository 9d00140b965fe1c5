//! Running work with bounded concurrency, holding at most `limit` tasks at
//! once: a node with thousands of images must not allocate a task for each
//! up front.

use std::future::Future;

use tokio::task::JoinSet;

/// Runs `f` on every item, at most `limit` at a time, and returns the
/// results in completion order. A panicking task panics the caller.
pub async fn map_bounded<I, F, Fut, T>(items: I, limit: usize, mut f: F) -> Vec<T>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut items = items.into_iter();
    let mut running = JoinSet::new();
    let mut done = Vec::new();
    loop {
        while running.len() < limit.max(1) {
            match items.next() {
                Some(item) => {
                    running.spawn(f(item));
                }
                None => break,
            }
        }
        match running.join_next().await {
            Some(Ok(result)) => done.push(result),
            Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Some(Err(_)) => {}
            None => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn never_runs_more_than_the_limit() {
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut out = map_bounded(0..50, 3, |i| {
            let (now, peak) = (now.clone(), peak.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::task::yield_now().await;
                now.fetch_sub(1, Ordering::SeqCst);
                i * 2
            }
        })
        .await;
        out.sort();
        assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }
}
