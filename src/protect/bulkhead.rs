//! Per-department bulkhead: a cap on calls in flight (tokio `Semaphore`) and
//! a bounded, time-limited wait queue in front of it. Beyond both a caller is
//! refused at once with [`BulkheadFull`] (503 + `Retry-After`), so a slow
//! department cannot pin every gateway task.
//!
//! Cancel-safety: the queue slot and the permit are RAII guards; a waiting
//! future that is dropped frees its queue slot, a dropped permit frees its
//! in-flight slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::BulkheadSettings;
use super::error::{BulkheadFull, BulkheadFullReason};

/// The bulkhead of one department.
#[derive(Debug)]
pub struct Bulkhead {
    department: Arc<str>,
    semaphore: Arc<Semaphore>,
    max_in_flight: usize,
    max_queue: usize,
    queue_timeout: Duration,
    waiting: AtomicUsize,
}

/// An in-flight slot; released when dropped.
#[derive(Debug)]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
}

/// A place in the wait queue; freed when dropped (also when the waiting
/// future is cancelled).
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    /// A bulkhead for `department`.
    pub fn new(department: Arc<str>, settings: &BulkheadSettings) -> Self {
        let max_in_flight = settings.max_in_flight.get() as usize;
        Self {
            department,
            semaphore: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            max_queue: settings.max_queue as usize,
            queue_timeout: settings.queue_timeout,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Takes an in-flight slot: at once when one is free, else after waiting
    /// in the queue for at most `queue_timeout`; refused at once when the
    /// queue is full.
    pub async fn acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        if let Ok(permit) = self.semaphore.clone().try_acquire_owned() {
            return Ok(BulkheadPermit { _permit: permit });
        }
        let Some(slot) = self.join_queue() else {
            return Err(self.full(BulkheadFullReason::QueueFull));
        };
        let waited =
            tokio::time::timeout(self.queue_timeout, self.semaphore.clone().acquire_owned()).await;
        drop(slot);
        match waited {
            Ok(Ok(permit)) => Ok(BulkheadPermit { _permit: permit }),
            // The semaphore is never closed; treat it like a timeout.
            Ok(Err(_)) | Err(_) => Err(self.full(BulkheadFullReason::QueueTimeout)),
        }
    }

    /// Takes an in-flight slot only if one is free now.
    pub fn try_acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        self.semaphore
            .clone()
            .try_acquire_owned()
            .map(|permit| BulkheadPermit { _permit: permit })
            .map_err(|_| self.full(BulkheadFullReason::QueueFull))
    }

    fn join_queue(&self) -> Option<QueueSlot<'_>> {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_queue).then_some(n + 1)
            })
            .ok()
            .map(|_| QueueSlot(&self.waiting))
    }

    fn full(&self, reason: BulkheadFullReason) -> BulkheadFull {
        BulkheadFull::new(
            self.department.clone(),
            reason,
            self.queue_timeout.max(Duration::from_secs(1)),
        )
    }

    /// Calls in flight now (for metrics).
    pub fn in_flight(&self) -> usize {
        self.max_in_flight
            .saturating_sub(self.semaphore.available_permits())
    }

    /// Callers waiting now (for metrics).
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// The in-flight cap.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::protect::config::nz;

    fn bulkhead(in_flight: u32, queue: u32) -> Bulkhead {
        Bulkhead::new(
            Arc::from("fire-rescue"),
            &BulkheadSettings {
                max_in_flight: nz(in_flight),
                max_queue: queue,
                queue_timeout: Duration::from_millis(1000),
            },
        )
    }

    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test(start_paused = true)]
    async fn caps_in_flight_and_queue_then_refuses_at_once() {
        let b = bulkhead(2, 1);
        let p1 = b.acquire().await.unwrap();
        let _p2 = b.acquire().await.unwrap();
        assert_eq!((b.in_flight(), b.queue_depth()), (2, 0));

        let mut waiter = pin!(b.acquire());
        assert!(poll_once(waiter.as_mut()).is_pending());
        assert_eq!(b.queue_depth(), 1);

        // Queue full: refused at once, no waiting.
        let err = b.acquire().await.unwrap_err();
        assert_eq!(err.reason(), BulkheadFullReason::QueueFull);
        assert_eq!(err.retry_after_secs(), 1);
        assert_eq!(err.department(), "fire-rescue");

        // A released slot goes to the waiter.
        drop(p1);
        let p3 = waiter.await.unwrap();
        assert_eq!((b.in_flight(), b.queue_depth()), (2, 0));
        drop(p3);
        assert_eq!(b.in_flight(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_waiter_frees_its_queue_slot() {
        let b = bulkhead(1, 1);
        let _held = b.acquire().await.unwrap();
        {
            let mut waiter = pin!(b.acquire());
            assert!(poll_once(waiter.as_mut()).is_pending());
            assert_eq!(b.queue_depth(), 1);
            assert!(b.acquire().await.is_err(), "queue is full");
        } // the waiting future is dropped (cancelled) here
        assert_eq!(b.queue_depth(), 0);
        let mut again = pin!(b.acquire());
        assert!(
            poll_once(again.as_mut()).is_pending(),
            "the slot is free again"
        );
        assert_eq!(b.queue_depth(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn waiter_gives_up_after_queue_timeout() {
        let b = bulkhead(1, 4);
        let _held = b.acquire().await.unwrap();
        let started = tokio::time::Instant::now();
        let err = b.acquire().await.unwrap_err();
        assert_eq!(err.reason(), BulkheadFullReason::QueueTimeout);
        assert_eq!(started.elapsed(), Duration::from_millis(1000));
        assert_eq!(b.queue_depth(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn in_flight_never_exceeds_the_cap_under_parallel_load() {
        use std::sync::atomic::AtomicUsize;
        let b = Arc::new(Bulkhead::new(
            Arc::from("public-security"),
            &BulkheadSettings {
                max_in_flight: nz(4),
                max_queue: 1000,
                queue_timeout: Duration::from_secs(60),
            },
        ));
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (b, now, peak) = (b.clone(), now.clone(), peak.clone());
                tokio::spawn(async move {
                    let _permit = b.acquire().await.unwrap();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    assert!(b.in_flight() <= 4);
                    tokio::task::yield_now().await;
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 4);
        assert_eq!((b.in_flight(), b.queue_depth()), (0, 0));
    }

    #[tokio::test]
    async fn no_queue_means_immediate_refusal() {
        let b = bulkhead(1, 0);
        let _held = b.try_acquire().unwrap();
        let err = b.acquire().await.unwrap_err();
        assert_eq!(err.reason(), BulkheadFullReason::QueueFull);
    }
}
