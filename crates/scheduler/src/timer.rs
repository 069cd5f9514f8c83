//! The timer heap: deadlines in order, ties broken by arrival.
//!
//! Sleeps, join and I/O timeouts, cancel scopes' deadlines and the shutdown
//! deadline all become entries here. Equal deadlines fire in the order they were made (a sequence number),
//! never in an order that depends on addresses or hashing, so virtual-time runs
//! repeat exactly. Entries are not removed when their wait ends some other way;
//! they carry the wait's generation and are skipped when they fire stale.
//!
//! With a million sleepers the heap is far larger than the cache, and each pop
//! walks it from the root to a leaf. So it is a 4-ary heap (half the levels of
//! a binary one, the four children of a node side by side in memory) of
//! 32-byte entries (deadline and sequence number as one `u128` key, the waiter
//! packed), and a pop sifts the hole down to a leaf before placing the last
//! entry (which belongs near the bottom) on the way back up.

use std::time::Duration;

use crate::scope::ScopeId;
use crate::task::TaskId;
use crate::waiter::Waiter;

/// What a timer does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimerKind {
    /// Wake this wait (sleep over, or a join / I/O timeout).
    Wake(Waiter),
    /// The shutdown deadline: cancel what remains.
    ShutdownDeadline,
    /// A cancel scope's deadline: cancel the scope (if it still has that
    /// deadline when the timer fires).
    ScopeDeadline {
        /// The task's slot.
        slot: usize,
        /// The task.
        task: TaskId,
        /// The scope.
        scope: ScopeId,
    },
}

/// Marks a scope deadline in a packed entry's task field (task ids never
/// reach 2^63).
const SCOPE_BIT: u64 = 1 << 63;

/// The slot that marks the shutdown deadline in a packed entry.
const SHUTDOWN: u32 = u32::MAX;

/// One pending deadline, packed.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Deadline in nanoseconds (high 64 bits; deadlines past 2^64 ns, some
    /// 584 years, count as that), then the sequence number.
    key: u128,
    task: u64,
    slot: u32,
    generation: u32,
}

impl Entry {
    fn new(deadline: Duration, seq: u64, kind: TimerKind) -> Self {
        let nanos = u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX);
        let key = (u128::from(nanos) << 64) | u128::from(seq);
        match kind {
            TimerKind::Wake(w) => Entry {
                key,
                task: w.task.get(),
                slot: u32::try_from(w.slot).expect("fewer than 2^32 - 1 task slots"),
                generation: w.generation,
            },
            TimerKind::ShutdownDeadline => Entry {
                key,
                task: 0,
                slot: SHUTDOWN,
                generation: 0,
            },
            TimerKind::ScopeDeadline { slot, task, scope } => Entry {
                key,
                task: task.get() | SCOPE_BIT,
                slot: u32::try_from(slot).expect("fewer than 2^32 - 1 task slots"),
                generation: scope.get(),
            },
        }
    }

    fn deadline(&self) -> Duration {
        Duration::from_nanos((self.key >> 64) as u64)
    }

    fn kind(&self) -> TimerKind {
        if self.slot == SHUTDOWN {
            TimerKind::ShutdownDeadline
        } else if self.task & SCOPE_BIT != 0 {
            TimerKind::ScopeDeadline {
                slot: self.slot as usize,
                task: TaskId(self.task & !SCOPE_BIT),
                scope: ScopeId(self.generation),
            }
        } else {
            TimerKind::Wake(Waiter {
                slot: self.slot as usize,
                task: TaskId(self.task),
                generation: self.generation,
            })
        }
    }
}

/// Children per node.
const ARITY: usize = 4;

/// Pending deadlines, earliest first.
#[derive(Default)]
pub(crate) struct Timers {
    heap: Vec<Entry>,
    seq: u64,
}

impl Timers {
    pub(crate) fn push(&mut self, deadline: Duration, kind: TimerKind) {
        self.seq += 1;
        let entry = Entry::new(deadline, self.seq, kind);
        self.heap.push(entry);
        self.sift_up(self.heap.len() - 1, entry);
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.heap.first().map(Entry::deadline)
    }

    /// The earliest entry, without removing it.
    pub(crate) fn peek(&self) -> Option<(Duration, TimerKind)> {
        self.heap.first().map(|e| (e.deadline(), e.kind()))
    }

    /// The earliest entry and the one after it (the smallest child of the
    /// root), without removing them: what fires next, and next but one.
    pub(crate) fn upcoming(&self) -> (Option<TimerKind>, Option<TimerKind>) {
        let next = self.heap.first().map(Entry::kind);
        let after = self
            .heap
            .get(1..self.heap.len().min(ARITY + 1))
            .and_then(|children| children.iter().min_by_key(|e| e.key))
            .map(Entry::kind);
        (next, after)
    }

    /// Removes the earliest entry.
    pub(crate) fn pop(&mut self) {
        let Some(last) = self.heap.pop() else { return };
        if self.heap.is_empty() {
            return;
        }
        // Move the hole at the root down along the smallest children to a
        // leaf, then put the former last entry in it and let it rise.
        let len = self.heap.len();
        let mut hole = 0;
        loop {
            let first = hole * ARITY + 1;
            if first >= len {
                break;
            }
            let end = (first + ARITY).min(len);
            let mut best = first;
            for c in first + 1..end {
                if self.heap[c].key < self.heap[best].key {
                    best = c;
                }
            }
            self.heap[hole] = self.heap[best];
            hole = best;
        }
        self.sift_up(hole, last);
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Duration) -> Option<TimerKind> {
        let first = self.heap.first()?;
        if first.deadline() <= now {
            let kind = first.kind();
            self.pop();
            Some(kind)
        } else {
            None
        }
    }

    /// The earliest deadline in whole nanoseconds, if any (no conversion to
    /// a `Duration`: the loop compares it on every step).
    #[inline]
    pub(crate) fn next_deadline_nanos(&self) -> Option<u64> {
        self.heap.first().map(|e| (e.key >> 64) as u64)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Places `entry` at `hole` or above, moving larger parents down.
    fn sift_up(&mut self, mut hole: usize, entry: Entry) {
        while hole > 0 {
            let parent = (hole - 1) / ARITY;
            if self.heap[parent].key <= entry.key {
                break;
            }
            self.heap[hole] = self.heap[parent];
            hole = parent;
        }
        self.heap[hole] = entry;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::within;

    fn waiter(n: u64) -> TimerKind {
        TimerKind::Wake(Waiter {
            slot: n as usize,
            task: TaskId(n),
            generation: n as u32,
        })
    }

    #[test]
    fn entries_are_packed() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }

    /// `upcoming` looks at all four children of the root: here the next but
    /// one is the root's last child.
    #[test]
    fn upcoming_is_the_root_and_its_smallest_child() {
        // Bounded (as every test here that pops): a pop whose descent never
        // reaches a leaf fails the test instead of hanging it.
        within(upcoming_is_the_root_and_its_smallest_child_unbounded);
    }

    fn upcoming_is_the_root_and_its_smallest_child_unbounded() {
        let mut timers = Timers::default();
        assert_eq!(timers.upcoming(), (None, None));
        timers.push(Duration::ZERO, waiter(0));
        assert_eq!(timers.upcoming(), (Some(waiter(0)), None));
        // Children of the root in the order pushed: deadlines 4, 3, 2, 1.
        for n in (1..=4).rev() {
            timers.push(Duration::from_secs(n), waiter(n));
        }
        assert_eq!(timers.upcoming(), (Some(waiter(0)), Some(waiter(1))));
        timers.pop();
        assert_eq!(timers.upcoming(), (Some(waiter(1)), Some(waiter(2))));
    }

    /// Pops in (deadline, arrival) order, against a sort of the same entries.
    #[test]
    fn pops_in_deadline_then_arrival_order() {
        within(pops_in_deadline_then_arrival_order_unbounded);
    }

    fn pops_in_deadline_then_arrival_order_unbounded() {
        let mut timers = Timers::default();
        let mut expected = Vec::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for n in 0..5000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct deadlines, so many ties.
            let deadline = Duration::from_millis(x % 97);
            let kind = if n % 1000 == 999 {
                TimerKind::ShutdownDeadline
            } else if n % 7 == 3 {
                TimerKind::ScopeDeadline {
                    slot: n as usize,
                    task: TaskId(n),
                    scope: ScopeId(n as u32 + 1),
                }
            } else {
                waiter(n)
            };
            timers.push(deadline, kind);
            expected.push((deadline, n, kind));
            if n % 3 == 0 {
                // Interleave pops with pushes, as a running scheduler does.
                expected.sort_by_key(|&(d, n, _)| (d, n));
                let (d, _, k) = expected.remove(0);
                assert_eq!(timers.peek(), Some((d, k)));
                assert_eq!(timers.pop_due(d), Some(k));
            }
        }
        expected.sort_by_key(|&(d, n, _)| (d, n));
        let (next, after) = timers.upcoming();
        assert_eq!(next, Some(expected[0].2));
        assert_eq!(after, Some(expected[1].2));
        for (d, _, k) in expected {
            assert_eq!(timers.next_deadline(), Some(d));
            if !d.is_zero() {
                assert_eq!(timers.pop_due(d - Duration::from_nanos(1)), None);
            }
            assert_eq!(timers.pop_due(d), Some(k));
        }
        assert!(timers.is_empty());
        timers.pop();
        assert_eq!(timers.peek(), None);
    }
}
