//! Task id → slot in the task table.
//!
//! Ids are handed out in increasing order, and the tasks alive at one time
//! have ids close together. So the map is mostly a window: an array indexed
//! by `id - base`, 4 bytes per id, where a lookup, an insert and a removal are
//! one array access (a hash table of a million tasks missed the cache on every
//! access). Ids that fall behind the window (a long-lived task among many
//! short ones) move to a hash map, so the window stays at most a few times as
//! long as the number of ids in it and a scheduler that runs forever does not
//! grow.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::task::TaskId;

/// The window is compacted once it is longer than this many times the ids it
/// holds (plus [`SLACK`]).
const SPREAD: usize = 8;
const SLACK: usize = 4096;

#[derive(Default)]
pub(crate) struct IdMap {
    /// The id of `window[0]`.
    base: u64,
    /// `slot + 1` per id from `base` on; `0` for none.
    window: VecDeque<u32>,
    /// Ids present in the window.
    in_window: usize,
    /// Ids below `base` still present (`base` never decreases, so every id
    /// in here stays below it).
    far: FxHashMap<u64, usize>,
}

impl IdMap {
    pub(crate) fn get(&self, id: TaskId) -> Option<usize> {
        let id = id.get();
        if id >= self.base {
            let i = usize::try_from(id - self.base).ok()?;
            match self.window.get(i) {
                Some(&s) if s != 0 => Some(s as usize - 1),
                _ => None,
            }
        } else {
            self.far.get(&id).copied()
        }
    }

    pub(crate) fn insert(&mut self, id: TaskId, slot: usize) {
        let id = id.get();
        let stored = u32::try_from(slot + 1).expect("fewer than 2^32 - 1 task slots");
        if id < self.base {
            self.far.insert(id, slot);
            return;
        }
        if self.window.is_empty() {
            self.base = id;
        }
        let mut i = (id - self.base) as usize;
        if i >= self.window.len() {
            if i >= (self.in_window + 1) * SPREAD + SLACK {
                // The ids in the window are too few for its length: send them
                // (all below `id`) to the far map and start a new window here.
                self.compact();
                self.base = id;
                i = 0;
            }
            self.window.resize(i + 1, 0);
        }
        if self.window[i] == 0 {
            self.in_window += 1;
        }
        self.window[i] = stored;
    }

    pub(crate) fn remove(&mut self, id: TaskId) -> Option<usize> {
        let id = id.get();
        if id < self.base {
            return self.far.remove(&id);
        }
        let i = usize::try_from(id - self.base).ok()?;
        let s = std::mem::replace(self.window.get_mut(i)?, 0);
        if s == 0 {
            return None;
        }
        self.in_window -= 1;
        // Drop the empty front, so the window follows the oldest live id.
        while self.window.front() == Some(&0) {
            self.window.pop_front();
            self.base += 1;
        }
        Some(s as usize - 1)
    }

    /// Moves every id in the window to the far map and empties the window.
    fn compact(&mut self) {
        for (i, &s) in self.window.iter().enumerate() {
            if s != 0 {
                self.far.insert(self.base + i as u64, s as usize - 1);
            }
        }
        self.window.clear();
        self.in_window = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Random inserts (near an advancing frontier, sometimes far behind or
    /// ahead) and removals, checked against a `HashMap`.
    #[test]
    fn behaves_like_a_hash_map() {
        let mut map = IdMap::default();
        let mut model: HashMap<u64, usize> = HashMap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next_id = 1u64;
        let mut slot = 0usize;
        for step in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 10 {
                0..=4 => {
                    let id = match x % 97 {
                        0 => next_id + 50_000,               // far ahead (another shard's ids)
                        1 if next_id > 100 => next_id - 100, // a late reserved id
                        _ => {
                            next_id += 1 + (x >> 40) % 3;
                            next_id
                        }
                    };
                    if model.contains_key(&id) {
                        continue;
                    }
                    slot += 1;
                    map.insert(TaskId(id), slot);
                    model.insert(id, slot);
                }
                5..=8 => {
                    // Remove a present id (most often a recent one) or a random one.
                    let id = if x.is_multiple_of(3) {
                        x % (next_id + 1)
                    } else {
                        next_id.saturating_sub((x >> 20) % 64)
                    };
                    assert_eq!(map.remove(TaskId(id)), model.remove(&id), "step {step}");
                }
                _ => {
                    let id = x % (next_id + 60_000);
                    assert_eq!(map.get(TaskId(id)), model.get(&id).copied(), "step {step}");
                }
            }
        }
        for (&id, &s) in &model {
            assert_eq!(map.get(TaskId(id)), Some(s));
        }
        assert!(map.window.len() <= (map.in_window + 1) * SPREAD + SLACK);
    }

    /// The window is compacted exactly when an id lands at or past
    /// `(ids in window + 1) * SPREAD + SLACK` from its base: one short of
    /// that the window just grows.
    #[test]
    fn compaction_starts_at_the_spread_limit() {
        let limit = 2 * SPREAD + SLACK; // one id in the window
        let mut grown = IdMap::default();
        grown.insert(TaskId(1), 0);
        grown.insert(TaskId(1 + limit as u64 - 1), 1);
        assert_eq!(grown.window.len(), limit);
        assert_eq!((grown.base, grown.in_window, grown.far.len()), (1, 2, 0));

        let mut compacted = IdMap::default();
        compacted.insert(TaskId(1), 0);
        compacted.insert(TaskId(1 + limit as u64), 1);
        assert_eq!(compacted.window.len(), 1);
        assert_eq!(compacted.base, 1 + limit as u64);
        assert_eq!((compacted.in_window, compacted.far.len()), (1, 1));
        assert_eq!(compacted.get(TaskId(1)), Some(0));
        assert_eq!(compacted.get(TaskId(1 + limit as u64)), Some(1));
    }

    /// Consecutive ids stay in one window: no compaction while it is dense.
    #[test]
    fn consecutive_ids_share_one_window() {
        let mut map = IdMap::default();
        for id in 10..20u64 {
            map.insert(TaskId(id), id as usize);
        }
        assert_eq!((map.base, map.window.len(), map.in_window), (10, 10, 10));
        assert!(map.far.is_empty());
    }

    /// One long-lived task among many short ones: the window does not grow.
    #[test]
    fn a_long_lived_task_does_not_pin_the_window() {
        let mut map = IdMap::default();
        map.insert(TaskId(1), 0);
        for id in 2..1_000_000u64 {
            map.insert(TaskId(id), 1);
            assert_eq!(map.remove(TaskId(id)), Some(1));
        }
        assert!(map.window.len() <= SPREAD + SLACK);
        assert_eq!(map.get(TaskId(1)), Some(0));
        assert_eq!(map.remove(TaskId(1)), Some(0));
        assert_eq!(map.get(TaskId(1)), None);
    }
}
