//! A byte budget shared by everything a host holds in memory on behalf of
//! requests in flight (their bodies): reservations are taken without
//! waiting and given back when dropped, so N concurrent large uploads cannot
//! take more than the budget together.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// At most `limit` bytes reserved at once.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicU64,
    limit: u64,
}

/// Bytes reserved from a [`ByteBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ByteBudget>,
    bytes: u64,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<ByteBudget> {
        Arc::new(ByteBudget { used: AtomicU64::new(0), limit })
    }

    /// Reserve `bytes` if they fit in what is left now; `None` otherwise
    /// (nothing is reserved then).
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|after| *after <= self.limit)
            })
            .ok()
            .map(|_| Reservation { budget: self.clone(), bytes })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_limit_and_come_back() {
        let b = ByteBudget::new(100);
        let a = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(41).is_none(), "over the limit: refused");
        assert_eq!(b.used(), 60, "a refused reservation holds nothing");
        let c = b.try_reserve(40).unwrap();
        drop(a);
        assert_eq!(b.used(), 40);
        drop(c);
        assert_eq!(b.used(), 0);
        assert!(b.try_reserve(u64::MAX).is_none(), "no overflow");
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limit() {
        let b = ByteBudget::new(1000);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if let Some(r) = b.try_reserve(300) {
                            assert!(b.used() <= 1000);
                            drop(r);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.used(), 0);
    }
}
