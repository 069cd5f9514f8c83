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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> ReadyKey {
        ReadyKey {
            slot: n as usize,
            id: TaskId(n),
        }
    }

    /// Drains the queue, giving each key's id in the order popped.
    fn drain(q: &mut ReadyQueue) -> Vec<u64> {
        std::iter::from_fn(|| q.pop().map(|k| k.id.0)).collect()
    }

    /// Highest priority (lowest number) first, across the four words of the
    /// map; first in, first out within a priority; empty once drained.
    #[test]
    fn pops_by_priority_then_in_order() {
        let mut q = ReadyQueue::default();
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
        // (priority, id): pushed out of order, two of them at 64.
        for (p, id) in [
            (200, 1),
            (64, 2),
            (255, 3),
            (0, 4),
            (64, 5),
            (63, 6),
            (127, 7),
            (128, 8),
        ] {
            q.push(p, key(id));
        }
        assert!(!q.is_empty());
        assert_eq!(drain(&mut q), vec![4, 6, 2, 5, 7, 8, 1, 3]);
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
    }

    /// A level's bit is cleared when its last key is popped, not before:
    /// the next pop goes on to the next level.
    #[test]
    fn a_level_leaves_the_map_with_its_last_key() {
        let mut q = ReadyQueue::default();
        q.push(3, key(1));
        q.push(3, key(2));
        q.push(10, key(3));
        assert_eq!(q.pop(), Some(key(1)));
        assert!(q.has_at_or_above(3));
        assert_eq!(q.pop(), Some(key(2)));
        assert!(!q.has_at_or_above(3));
        assert!(!q.is_empty());
        assert_eq!(q.pop(), Some(key(3)));
        assert!(q.is_empty());
        // Used again after it was emptied.
        q.push(70, key(4));
        assert_eq!(q.pop(), Some(key(4)));
        assert!(q.is_empty());
    }

    /// `has_at_or_above(p)`: a queued priority `q` counts when `q <= p`,
    /// at the edges of a word and across words.
    #[test]
    fn has_at_or_above_counts_equal_and_higher_priorities_only() {
        for queued in [0u8, 1, 62, 63, 64, 65, 70, 127, 128, 191, 192, 254, 255] {
            let mut q = ReadyQueue::default();
            assert!(!q.has_at_or_above(255));
            q.push(queued, key(1));
            for asked in 0..=255u8 {
                assert_eq!(
                    q.has_at_or_above(asked),
                    queued <= asked,
                    "{queued} queued, asked about {asked}"
                );
            }
        }
        // Two levels in different words: the higher one decides.
        let mut q = ReadyQueue::default();
        q.push(200, key(1));
        q.push(70, key(2));
        assert!(!q.has_at_or_above(69));
        assert!(q.has_at_or_above(70));
    }
}
