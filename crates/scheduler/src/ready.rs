//! The ready queue: highest priority first, FIFO within a priority.
//!
//! One FIFO per priority level and a 256-bit map of the non-empty levels make
//! push and pop constant time. The queue holds task keys; the scheduler keeps a
//! `queued` flag per task so a task is never queued twice, and checks each key
//! it pops against the task table so a stale key (a task that has since ended)
//! is skipped, never resumed.

use std::collections::VecDeque;

use crate::task::{Priority, TaskId};

/// A task's place in the table plus its id, to detect reuse of the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReadyKey {
    pub(crate) slot: usize,
    pub(crate) id: TaskId,
}

pub(crate) struct ReadyQueue {
    /// One FIFO per priority (a fixed array: indexing by a `u8` priority
    /// needs no bounds check).
    levels: Box<[VecDeque<ReadyKey>; 256]>,
    nonempty: [u64; 4],
    len: usize,
}

impl Default for ReadyQueue {
    fn default() -> Self {
        ReadyQueue {
            levels: Box::new(std::array::from_fn(|_| VecDeque::new())),
            nonempty: [0; 4],
            len: 0,
        }
    }
}

impl ReadyQueue {
    #[inline]
    pub(crate) fn push(&mut self, priority: Priority, key: ReadyKey) {
        let p = priority as usize;
        self.levels[p].push_back(key);
        self.nonempty[p >> 6] |= 1 << (p & 63);
        self.len += 1;
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<ReadyKey> {
        for (word_index, word) in self.nonempty.iter_mut().enumerate() {
            if *word == 0 {
                continue;
            }
            let p = (word_index << 6) | word.trailing_zeros() as usize;
            let level = &mut self.levels[p];
            let key = level.pop_front();
            if level.is_empty() {
                *word &= !(1 << (p & 63));
            }
            self.len -= 1;
            return key;
        }
        None
    }

    /// Whether a task of priority `priority` or a higher one (a lower
    /// number) is queued.
    #[inline]
    pub(crate) fn has_at_or_above(&self, priority: Priority) -> bool {
        let p = priority as usize;
        let word = p >> 6;
        // Bits 0..=p of the priority's own word, and every word before it.
        let mask = u64::MAX >> (63 - (p & 63));
        self.nonempty[word] & mask != 0 || self.nonempty[..word].iter().any(|w| *w != 0)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}
