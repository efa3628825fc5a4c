//! Sleeping until a condition holds, woken by whoever makes it hold.

use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use crate::ring::barrier::{self, heavy_barrier, light_barrier};
use crate::sync::{AtomicUsize, Condvar, Mutex, Ordering};

/// How long a waiter sleeps when the system barrier failed (see `ring::barrier`).
const UNORDERED_NAP: Duration = Duration::from_millis(1);

/// An event a thread can wait on: `wait_until(ready)` sleeps until `ready()` holds, and
/// a task can register for it (`poll_until`); whoever may have made it hold calls
/// `notify()` (cheap when nobody waits), which wakes sleeping threads and registered
/// tasks.
///
/// No wake-up is lost: a waiter registers (increments the waiter count), issues the heavy
/// barrier and checks `ready()` again, all under the lock, before sleeping; a notifier
/// publishes its change, issues the light barrier, reads the waiter count and, if anyone
/// waits, notifies under the same lock. The two barriers order each side's write before
/// its read (`ring::barrier`), so one side sees the other's write. A registered task counts
/// as a waiter until a notify wakes it.
///
/// Each event has cache lines of its own: its waiter count is read by every push (or
/// pop) of the other side and written only when a thread goes to sleep, so it must not
/// share a line with anything written more often.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Event {
    waiters: AtomicUsize,
    /// The tasks to wake.
    lock: Mutex<Vec<Waker>>,
    cond: Condvar,
}

impl Event {
    pub(crate) fn new() -> Self {
        barrier::init();
        Event {
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(Vec::new()),
            cond: Condvar::new(),
        }
    }

    /// Wakes every waiter, if any. Call after publishing the change they wait for.
    #[inline]
    pub(crate) fn notify(&self) {
        light_barrier();
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.wake_all();
        }
    }

    /// `notify`'s slow path, out of line so that the fast path inlines into every push
    /// and pop.
    #[cold]
    #[inline(never)]
    fn wake_all(&self) {
        let tasks = {
            let mut tasks = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.cond.notify_all();
            self.waiters.fetch_sub(tasks.len(), Ordering::SeqCst);
            std::mem::take(&mut *tasks)
        };
        // Woken outside the lock: a waker may run code that registers again.
        for t in tasks {
            t.wake();
        }
    }

    /// For a task: `true` if `ready()` holds; otherwise registers the task's waker (to be
    /// woken by the next `notify`) and returns `false` (the caller returns `Pending`).
    pub(crate) fn poll_until(&self, cx: &Context<'_>, mut ready: impl FnMut() -> bool) -> bool {
        if ready() {
            return true;
        }
        let mut tasks = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if !tasks.iter().any(|t| t.will_wake(cx.waker())) {
            tasks.push(cx.waker().clone());
            self.waiters.fetch_add(1, Ordering::SeqCst);
        }
        // As in `wait_until`: the barriers order each side's write before its read.
        if !heavy_barrier() {
            // A notify may go unseen: come back at once rather than hang.
            cx.waker().wake_by_ref();
        }
        // Ready now: the caller goes on; the registration only costs a spurious wake-up.
        ready()
    }

    /// Waits until `ready()` holds (returns `true`) or `deadline` passes (`false`).
    pub(crate) fn wait_until(
        &self,
        mut ready: impl FnMut() -> bool,
        deadline: Option<Instant>,
    ) -> bool {
        loop {
            if ready() {
                return true;
            }
            let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.waiters.fetch_add(1, Ordering::SeqCst);
            // Pairs with the light barrier in `notify`: one side sees the other's write
            // (the waiter count, or the change `ready` reads).
            let ordered = heavy_barrier();
            if ready() {
                self.waiters.fetch_sub(1, Ordering::SeqCst);
                return true;
            }
            // Without the barrier a notify may go unseen: sleep briefly, then look again.
            let wake_by = match (ordered, deadline) {
                (true, d) => d,
                (false, None) => Some(Instant::now() + UNORDERED_NAP),
                (false, Some(d)) => Some(d.min(Instant::now() + UNORDERED_NAP)),
            };
            let timed_out = self.sleep(guard, wake_by) && wake_by == deadline;
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            if timed_out {
                return ready();
            }
        }
    }

    /// Sleeps once; returns whether the deadline has passed.
    #[cfg(not(sabot_loom))]
    fn sleep(
        &self,
        guard: std::sync::MutexGuard<'_, Vec<Waker>>,
        deadline: Option<Instant>,
    ) -> bool {
        match deadline {
            None => {
                drop(self.cond.wait(guard).unwrap_or_else(|e| e.into_inner()));
                false
            }
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return true;
                }
                drop(
                    self.cond
                        .wait_timeout(guard, d - now)
                        .unwrap_or_else(|e| e.into_inner()),
                );
                Instant::now() >= d
            }
        }
    }

    /// Loom does not model time: a wait with a deadline waits as one without.
    #[cfg(sabot_loom)]
    fn sleep(
        &self,
        guard: loom::sync::MutexGuard<'_, Vec<Waker>>,
        _deadline: Option<Instant>,
    ) -> bool {
        drop(self.cond.wait(guard).unwrap_or_else(|e| e.into_inner()));
        false
    }
}
