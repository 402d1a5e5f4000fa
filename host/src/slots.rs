//! Instance slots: at most `capacity` invocations hold an instance at once
//! (the pooling allocator has that many); the next ones wait in a bounded
//! queue for at most a set time instead of failing at once.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The gate in front of the pooling allocator. Cheap to clone; clones
/// share the slots.
#[derive(Clone)]
pub(crate) struct Slots {
    inner: Arc<Gate>,
}

struct Gate {
    state: Mutex<Counts>,
    freed: Condvar,
    capacity: u32,
    max_waiting: u32,
    max_wait: Duration,
}

#[derive(Default)]
struct Counts {
    in_use: u32,
    waiting: u32,
}

/// A held slot; dropping it lets the next waiter in. Drop it only after the
/// Store that used it.
pub(crate) struct Slot {
    gate: Arc<Gate>,
}

impl Slots {
    /// `capacity` slots, at most `max_waiting` callers queued, each for at
    /// most `max_wait`.
    pub(crate) fn new(capacity: u32, max_waiting: u32, max_wait: Duration) -> Slots {
        let gate =
            Gate { state: Mutex::new(Counts::default()), freed: Condvar::new(), capacity, max_waiting, max_wait };
        Slots { inner: Arc::new(gate) }
    }

    /// [`Slots::acquire`] from async code: the wait happens on a blocking
    /// thread.
    #[cfg(feature = "http-apps")]
    pub(crate) async fn acquire_async(&self) -> Result<Slot> {
        let slots = self.clone();
        tokio::task::spawn_blocking(move || slots.acquire())
            .await
            .map_err(|e| Error::Runtime(format!("waiting for an instance slot failed: {e}")))?
    }

    /// Take a slot, waiting in the queue when all are busy. `unavailable`
    /// when the queue is full or the wait runs out.
    pub(crate) fn acquire(&self) -> Result<Slot> {
        fn poisoned<T>(_: T) -> Error {
            Error::Runtime("instance slot lock poisoned".into())
        }
        let gate = &self.inner;
        let mut counts = gate.state.lock().map_err(poisoned)?;
        if counts.in_use < gate.capacity {
            counts.in_use += 1;
            return Ok(Slot { gate: self.inner.clone() });
        }
        if counts.waiting >= gate.max_waiting {
            return Err(Error::Unavailable(format!(
                "all {} instance slots are busy and {} invocations already wait for one",
                gate.capacity, counts.waiting
            )));
        }
        counts.waiting += 1;
        let deadline = Instant::now() + gate.max_wait;
        while counts.in_use >= gate.capacity {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                counts.waiting -= 1;
                return Err(Error::Unavailable(format!(
                    "all {} instance slots stayed busy for {} ms",
                    gate.capacity,
                    gate.max_wait.as_millis()
                )));
            }
            counts = gate.freed.wait_timeout(counts, left).map_err(poisoned)?.0;
        }
        counts.waiting -= 1;
        counts.in_use += 1;
        Ok(Slot { gate: self.inner.clone() })
    }

    /// Slots held now, and invocations waiting for one.
    pub(crate) fn usage(&self) -> (u32, u32) {
        self.inner.state.lock().map(|c| (c.in_use, c.waiting)).unwrap_or((0, 0))
    }

    /// Slots held now.
    #[cfg(test)]
    fn in_use(&self) -> u32 {
        self.usage().0
    }
}

impl Drop for Slot {
    /// Frees the slot and wakes one waiter, if any waits: a waiter counts
    /// itself under the lock before it waits, so one that is not counted yet
    /// will find the slot free. (Waking no one would still cost a `futex`
    /// system call per invocation.)
    fn drop(&mut self) {
        let waiting = match self.gate.state.lock() {
            Ok(mut counts) => {
                counts.in_use = counts.in_use.saturating_sub(1);
                counts.waiting
            }
            // A poisoned lock: wake one anyway, it will report the poison.
            Err(_) => 1,
        };
        if waiting > 0 {
            self.gate.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn waiters_get_slots_in_turn_and_never_more_than_capacity() {
        let slots = Arc::new(Slots::new(3, 100, Duration::from_secs(10)));
        let peak = Arc::new(AtomicU32::new(0));
        let now = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..30)
            .map(|_| {
                let (slots, peak, now) = (slots.clone(), peak.clone(), now.clone());
                std::thread::spawn(move || {
                    let _slot = slots.acquire().unwrap();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(slots.in_use(), 0);
    }

    #[test]
    fn a_full_queue_or_a_long_wait_is_unavailable_and_holds_nothing() {
        let slots = Slots::new(1, 1, Duration::from_millis(50));
        let held = slots.acquire().unwrap();
        let started = Instant::now();
        let e = slots.acquire().err().unwrap();
        assert!(matches!(e, Error::Unavailable(_)), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(50), "it waited its time");
        assert_eq!(slots.in_use(), 1);
        drop(held);
        assert!(slots.acquire().is_ok(), "a freed slot is taken at once");
        let no_queue = Slots::new(1, 0, Duration::from_secs(10));
        let _held = no_queue.acquire().unwrap();
        let started = Instant::now();
        assert!(matches!(no_queue.acquire(), Err(Error::Unavailable(_))));
        assert!(started.elapsed() < Duration::from_secs(1), "no queue: refused at once");
    }
}
