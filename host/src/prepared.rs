//! Instances prepared ahead of their invocations, and the clean-up that
//! follows an answer.
//!
//! Instantiating a component and dropping its Store are most of what an
//! invocation costs (docs/architecture.md, "Performance"). Neither needs to
//! happen between a request and its answer:
//! - a host keeps instances made ahead — at most one per function, at most
//!   [`crate::HostConfig::prepared_instances`] in all; an invocation that
//!   finds one gives it its contexts and calls;
//! - [`crate::Host::invoke_deferring_cleanup`] answers first and hands back
//!   a [`Cleanup`]: dropping the finished Store (then freeing its instance
//!   slot) and making the function's next instance, run by the caller once
//!   the answer is on its way. The HTTP API and the workflow executor do so
//!   on the worker thread that ran the call; [`crate::Host::invoke`] runs it
//!   before it returns.
//!
//! The work is moved, not removed: it runs on the thread that ran the call,
//! with no hand-over between threads (waking another thread costs more, on
//! a VM, than the Store's teardown it would move).
//!
//! Isolation does not change: every invocation gets an instance that no
//! other invocation ran in. An instance is made with placeholder contexts
//! that refuse every scope, whether ahead or on the invocation's path, so a
//! component's start function (none in components built with the SDK) sees
//! the same thing either way; the invocation's own contexts are set just
//! before the call.
//!
//! Limits: prepared instances hold pooling-allocator slots of their own (the
//! pool has `max_concurrent_instances + prepared_instances`), never an
//! invocation's; when all are taken, the function whose instance was made
//! longest ago gives its up. A chain of hand-offs on one host keeps only its
//! last step's Store for the clean-up; earlier steps' Stores are dropped
//! before the next step takes a slot.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use crate::host::{Host, Loaded, Prepared};
use crate::slots::Slot;

/// Which functions hold a prepared instance (or are having one made),
/// oldest first, and how many may.
pub(crate) struct Spares {
    max: usize,
    holders: Mutex<Vec<Weak<Loaded>>>,
}

impl Spares {
    /// Room for `max` prepared instances (none for 0).
    pub(crate) fn new(max: usize) -> Spares {
        Spares { max, holders: Mutex::new(Vec::new()) }
    }

    /// Take a place for an instance of `loaded`, evicting the oldest ready
    /// instance when all places are taken. False when none should be made:
    /// the limit is 0, `loaded` has one ready or being made, or every place
    /// is held by an instance still being made.
    pub(crate) fn reserve(&self, loaded: &Arc<Loaded>) -> bool {
        if self.max == 0 || loaded.has_spare() || loaded.making.swap(true, Ordering::AcqRel) {
            return false;
        }
        let Ok(mut holders) = self.holders.lock() else {
            loaded.making.store(false, Ordering::Release);
            return false;
        };
        holders.retain(|w| {
            w.upgrade().is_some_and(|l| !Arc::ptr_eq(&l, loaded) && (l.has_spare() || l.making.load(Ordering::Acquire)))
        });
        let ready = |w: &Weak<Loaded>| w.upgrade().is_some_and(|l| l.has_spare());
        match make_room(&mut holders, self.max, ready) {
            Some(evicted) => {
                for l in evicted.iter().filter_map(Weak::upgrade) {
                    drop(l.take_spare());
                }
                holders.push(Arc::downgrade(loaded));
                true
            }
            None => {
                loaded.making.store(false, Ordering::Release);
                false
            }
        }
    }

    /// Keep `prepared` (made after [`Spares::reserve`] said yes) for
    /// `loaded`'s next invocation.
    pub(crate) fn keep(&self, loaded: &Loaded, prepared: Option<Prepared>) {
        if let Some(p) = prepared {
            loaded.put_spare(p);
        }
        loaded.making.store(false, Ordering::Release);
    }

    /// Prepared instances held now.
    pub(crate) fn count(&self) -> usize {
        self.holders.lock().map(|h| h.iter().filter_map(Weak::upgrade).filter(|l| l.has_spare()).count()).unwrap_or(0)
    }
}

/// Remove (and return, oldest first) the holders that must give up their
/// instance so that one more fits under `max`, taking only those `ready`
/// says have one; `None` when that cannot make room.
fn make_room<T>(holders: &mut Vec<T>, max: usize, ready: impl Fn(&T) -> bool) -> Option<Vec<T>> {
    let over = (holders.len() + 1).saturating_sub(max);
    let candidates: Vec<usize> = (0..holders.len()).filter(|&i| ready(&holders[i])).take(over).collect();
    if candidates.len() < over {
        return None;
    }
    let mut evicted = Vec::with_capacity(over);
    for i in candidates.into_iter().rev() {
        evicted.push(holders.remove(i));
    }
    evicted.reverse();
    Some(evicted)
}

/// What is left to do after an invocation's answer: drop its last Store
/// (then free the instance slot it held) and make the next instance of each
/// function it ran. Run it with [`Cleanup::run`] once the answer is handed
/// on; dropping it runs it too.
#[must_use = "dropping it runs it at once; hand the answer on first, then run it"]
pub struct Cleanup {
    host: Host,
    retired: Option<(Prepared, Slot)>,
    prepare: Vec<Arc<Loaded>>,
}

impl Cleanup {
    pub(crate) fn new(host: Host) -> Cleanup {
        Cleanup { host, retired: None, prepare: Vec::new() }
    }

    /// Drop the Store kept so far (then its slot) now: before a chained
    /// step takes a slot of its own.
    pub(crate) fn retire_now(&mut self) {
        if let Some((prepared, slot)) = self.retired.take() {
            drop(prepared);
            drop(slot);
        }
    }

    /// Keep a finished step's Store and slot for the clean-up, and remember
    /// to prepare `loaded`'s next instance.
    pub(crate) fn finished(&mut self, prepared: Prepared, slot: Slot, loaded: &Arc<Loaded>) {
        self.retire_now();
        self.retired = Some((prepared, slot));
        if !self.prepare.iter().any(|l| Arc::ptr_eq(l, loaded)) {
            self.prepare.push(loaded.clone());
        }
    }

    /// Do the clean-up now.
    pub fn run(self) {}
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.retire_now();
        for loaded in std::mem::take(&mut self.prepare) {
            self.host.prepare_spare(&loaded);
        }
    }
}

impl std::fmt::Debug for Cleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cleanup")
            .field("store", &self.retired.is_some())
            .field("prepare", &self.prepare.iter().map(|l| l.info.name.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::make_room;

    #[test]
    fn room_is_made_by_evicting_the_oldest_ready_holders_only() {
        let all = |_: &i32| true;
        let mut holders = vec![1, 2, 3];
        assert_eq!(make_room(&mut holders, 4, all), Some(vec![]), "room left: nothing evicted");
        assert_eq!(holders, [1, 2, 3]);
        assert_eq!(make_room(&mut holders, 3, all), Some(vec![1]), "full: the oldest goes");
        assert_eq!(holders, [2, 3]);
        let mut holders = vec![1, 2, 3, 4];
        assert_eq!(make_room(&mut holders, 2, all), Some(vec![1, 2, 3]), "over: the oldest go until one fits");
        assert_eq!(holders, [4]);
    }

    #[test]
    fn an_instance_still_being_made_is_never_evicted() {
        let odd_ready = |x: &i32| x % 2 == 1;
        let mut holders = vec![2, 3, 4, 5];
        assert_eq!(make_room(&mut holders, 3, odd_ready), Some(vec![3, 5]), "the oldest ready ones, in order");
        assert_eq!(holders, [2, 4]);
        let mut holders = vec![2, 4];
        assert_eq!(make_room(&mut holders, 2, odd_ready), None, "nothing ready to give up: no room");
        assert_eq!(holders, [2, 4], "and nothing changed");
    }
}
