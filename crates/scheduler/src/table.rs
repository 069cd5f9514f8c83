//! The task table: records in a vector, freed slots reused, and a way to ask
//! the CPU for a record before it is needed.
//!
//! A slab, as the `slab` crate's, plus [`Table::prefetch`]: the address of a
//! slot is known without reading it, so the scheduler can start loading the
//! record of the task a timer will wake next while the current task runs
//! (with a million sleepers, each wake otherwise waits for its record, and
//! then for its body, to come from memory).

use std::ops::{Index, IndexMut};

enum Slot<T> {
    Occupied(T),
    /// Free; the next free slot (or `entries.len()`).
    Vacant(usize),
}

pub(crate) struct Table<T> {
    entries: Vec<Slot<T>>,
    next_free: usize,
    len: usize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            entries: Vec::new(),
            next_free: 0,
            len: 0,
        }
    }
}

impl<T> Table<T> {
    /// Stores `value` in a free slot and returns the slot.
    pub(crate) fn insert(&mut self, value: T) -> usize {
        let key = self.next_free;
        if key == self.entries.len() {
            self.entries.push(Slot::Occupied(value));
            self.next_free = key + 1;
        } else {
            match std::mem::replace(&mut self.entries[key], Slot::Occupied(value)) {
                Slot::Vacant(next) => self.next_free = next,
                Slot::Occupied(_) => unreachable!("the free list holds vacant slots only"),
            }
        }
        self.len += 1;
        key
    }

    pub(crate) fn get(&self, key: usize) -> Option<&T> {
        match self.entries.get(key) {
            Some(Slot::Occupied(v)) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.entries.get_mut(key) {
            Some(Slot::Occupied(v)) => Some(v),
            _ => None,
        }
    }

    /// Removes the value in `key`.
    ///
    /// # Panics
    ///
    /// If the slot is empty.
    pub(crate) fn remove(&mut self, key: usize) -> T {
        match std::mem::replace(&mut self.entries[key], Slot::Vacant(self.next_free)) {
            Slot::Occupied(v) => {
                self.next_free = key;
                self.len -= 1;
                v
            }
            vacant => {
                self.entries[key] = vacant;
                panic!("no value in slot {key}");
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The occupied slots and their values, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(k, s)| match s {
                Slot::Occupied(v) => Some((k, v)),
                Slot::Vacant(_) => None,
            })
    }

    /// Hints that slot `key` will be read soon. Reads nothing: any key is fine.
    #[inline]
    pub(crate) fn prefetch(&self, key: usize) {
        if key < self.entries.len() {
            prefetch(self.entries.as_ptr().wrapping_add(key).cast());
        }
    }
}

impl<T> Index<usize> for Table<T> {
    type Output = T;

    fn index(&self, key: usize) -> &T {
        self.get(key)
            .unwrap_or_else(|| panic!("no value in slot {key}"))
    }
}

impl<T> IndexMut<usize> for Table<T> {
    fn index_mut(&mut self, key: usize) -> &mut T {
        self.get_mut(key)
            .unwrap_or_else(|| panic!("no value in slot {key}"))
    }
}

/// Asks the CPU to bring the cache line at `ptr` in (and the next, since a
/// record spans several). Never faults, whatever the address.
#[inline]
pub(crate) fn prefetch(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is a hint; it never faults and reads nothing
        // the program can observe, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(ptr.cast());
            _mm_prefetch::<_MM_HINT_T0>(ptr.wrapping_add(64).cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_last_freed_first() {
        let mut t = Table::default();
        let a = t.insert("a");
        let b = t.insert("b");
        let c = t.insert("c");
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(t.remove(b), "b");
        assert_eq!(t.remove(a), "a");
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(a), None);
        assert_eq!(t.insert("d"), a);
        assert_eq!(t.insert("e"), b);
        assert_eq!(t.insert("f"), 3);
        assert_eq!(t[c], "c");
        t[c] = "C";
        let all: Vec<_> = t.iter().map(|(k, v)| (k, *v)).collect();
        assert_eq!(all, [(0, "d"), (1, "e"), (2, "C"), (3, "f")]);
        t.prefetch(1_000_000);
        assert_eq!(t.get(1_000_000), None);
    }

    #[test]
    #[should_panic(expected = "no value in slot 0")]
    fn removing_an_empty_slot_panics() {
        let mut t = Table::default();
        let a = t.insert(1);
        t.remove(a);
        t.remove(a);
    }
}
