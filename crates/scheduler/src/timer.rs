//! The timer heap: deadlines in order, ties broken by arrival.
//!
//! Sleeps, join and I/O timeouts and the shutdown deadline all become entries
//! here. Equal deadlines fire in the order they were made (a sequence number),
//! never in an order that depends on addresses or hashing, so virtual-time runs
//! repeat exactly. Entries are not removed when their wait ends some other way;
//! they carry the wait's generation and are skipped when they fire stale.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::waiter::Waiter;

/// What a timer does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimerKind {
    /// Wake this wait (sleep over, or a join / I/O timeout).
    Wake(Waiter),
    /// The shutdown deadline: cancel what remains.
    ShutdownDeadline,
}

#[derive(Debug)]
struct Entry {
    deadline: Duration,
    seq: u64,
    kind: TimerKind,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline && self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

/// Pending deadlines, earliest first.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

impl Timers {
    pub(crate) fn push(&mut self, deadline: Duration, kind: TimerKind) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            deadline,
            seq: self.seq,
            kind,
        }));
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.heap.peek().map(|e| e.0.deadline)
    }

    /// The earliest entry, without removing it.
    pub(crate) fn peek(&self) -> Option<(Duration, TimerKind)> {
        self.heap.peek().map(|e| (e.0.deadline, e.0.kind))
    }

    /// Removes the earliest entry.
    pub(crate) fn pop(&mut self) {
        self.heap.pop();
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Duration) -> Option<TimerKind> {
        if self.heap.peek()?.0.deadline <= now {
            self.heap.pop().map(|e| e.0.kind)
        } else {
            None
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}
