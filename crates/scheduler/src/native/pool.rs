//! The coroutine pool: finished native coroutines kept for reuse.
//!
//! A fresh coroutine costs a few microseconds: its stack is an `mmap` plus an
//! `mprotect` for the guard page, and freeing it is an `munmap`, whose TLB
//! shootdown interrupts every other thread of the process. A finished
//! coroutine is therefore reset and reused rather than freed.
//!
//! Each thread keeps its own pool, so taking and giving back costs no lock.
//! When a thread ends, what its pool holds goes to a process-wide reserve
//! that other threads draw from once their own pool is empty: the threads of
//! a shard pool that is run again, or of one started after another ended,
//! begin with warm stacks instead of mapping fresh ones.

use std::cell::RefCell;
use std::sync::{Mutex, PoisonError};

use super::NativeGen;

/// How many finished coroutines a thread keeps, by default, and how many the
/// process-wide reserve keeps.
pub(super) const DEFAULT_LIMIT: usize = 1024;

/// Coroutines grouped by stack size (in words); few sizes are ever in use.
#[derive(Default)]
struct BySize(Vec<(usize, Vec<NativeGen>)>);

impl BySize {
    const fn new() -> Self {
        BySize(Vec::new())
    }

    fn len(&self) -> usize {
        self.0.iter().map(|(_, v)| v.len()).sum()
    }

    fn pop(&mut self, words: usize) -> Option<NativeGen> {
        self.0.iter_mut().find(|(w, _)| *w == words)?.1.pop()
    }

    fn push(&mut self, words: usize, g: NativeGen) {
        match self.0.iter_mut().find(|(w, _)| *w == words) {
            Some((_, v)) => v.push(g),
            None => self.0.push((words, vec![g])),
        }
    }

    /// Keeps at most `n` coroutines; the rest are freed.
    fn truncate(&mut self, mut n: usize) {
        for (_, v) in &mut self.0 {
            let keep = v.len().min(n);
            v.truncate(keep);
            n -= keep;
        }
    }

    /// Moves coroutines into `into` until it holds `limit`.
    fn spill(&mut self, into: &mut BySize, limit: usize) {
        let mut room = limit.saturating_sub(into.len());
        for (words, v) in &mut self.0 {
            while room > 0 {
                let Some(g) = v.pop() else { break };
                into.push(*words, g);
                room -= 1;
            }
        }
    }
}

/// A thread's pool; its coroutines go to the reserve when the thread ends.
struct Local {
    coroutines: BySize,
    limit: usize,
}

impl Drop for Local {
    fn drop(&mut self) {
        let mut reserve = RESERVE.lock().unwrap_or_else(PoisonError::into_inner);
        self.coroutines.spill(&mut reserve, DEFAULT_LIMIT);
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local { coroutines: BySize::new(), limit: DEFAULT_LIMIT })
    };
}

/// What ended threads left behind.
static RESERVE: Mutex<BySize> = Mutex::new(BySize::new());

/// A finished coroutine with a stack of `words` words, if one is pooled:
/// this thread's first, else one from the reserve.
pub(super) fn take(words: usize) -> Option<NativeGen> {
    let local = LOCAL
        .try_with(|l| l.borrow_mut().coroutines.pop(words))
        .ok()
        .flatten();
    local.or_else(|| {
        RESERVE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop(words)
    })
}

/// Keeps a finished coroutine for reuse, unless this thread's pool is full
/// (or gone, during the thread's teardown): then it is freed.
pub(super) fn give(words: usize, g: NativeGen) {
    let _ = LOCAL.try_with(|l| {
        let mut l = l.borrow_mut();
        if l.coroutines.len() < l.limit {
            l.coroutines.push(words, g);
        }
    });
}

/// Sets how many finished coroutines this thread keeps for reuse.
pub(crate) fn set_limit(n: usize) {
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        l.limit = n;
        l.coroutines.truncate(n);
    });
}

/// Number of coroutines in this thread's pool.
pub(super) fn pooled() -> usize {
    LOCAL.with(|l| l.borrow().coroutines.len())
}

/// Number of coroutines in the process-wide reserve.
pub(super) fn reserved() -> usize {
    RESERVE.lock().unwrap_or_else(PoisonError::into_inner).len()
}

#[cfg(test)]
mod tests {
    use generator::Gn;

    use super::*;
    use crate::native::Yielded;
    use crate::outcome::Value;

    const SMALL: usize = 1024;
    const LARGE: usize = 2048;

    /// A coroutine (never started) with a stack of `words` words.
    fn coroutine(words: usize) -> NativeGen {
        Gn::new_scoped_opt(words, |_| Yielded::Return(Value::new(())))
    }

    fn pool(sizes: &[(usize, usize)]) -> BySize {
        let mut p = BySize::new();
        for &(words, n) in sizes {
            for _ in 0..n {
                p.push(words, coroutine(words));
            }
        }
        p
    }

    /// A coroutine is given back only for a task asking the same stack size.
    #[test]
    fn coroutines_are_kept_by_stack_size() {
        let mut p = pool(&[(SMALL, 1), (LARGE, 1), (SMALL, 1)]);
        assert_eq!(p.len(), 3);
        assert_eq!(p.0.len(), 2, "one group per size");
        assert!(p.pop(4 * LARGE).is_none());
        assert!(p.pop(LARGE).is_some());
        assert!(p.pop(LARGE).is_none());
        assert!(p.pop(SMALL).is_some() && p.pop(SMALL).is_some());
        assert!(p.pop(SMALL).is_none());
        assert_eq!(p.len(), 0);
    }

    /// Truncating keeps `n` coroutines in all, across sizes.
    #[test]
    fn truncate_keeps_n_in_all() {
        let mut p = pool(&[(SMALL, 1), (LARGE, 5)]);
        p.truncate(4);
        assert_eq!(p.len(), 4);
        p.truncate(0);
        assert_eq!(p.len(), 0);
    }

    /// A spill moves coroutines until the target holds `limit`, keeping
    /// each one's size; the rest stay.
    #[test]
    fn spill_fills_the_target_up_to_its_limit() {
        let mut from = pool(&[(SMALL, 3)]);
        let mut into = pool(&[(LARGE, 1)]);
        from.spill(&mut into, 3);
        assert_eq!((from.len(), into.len()), (1, 3));
        assert!(into.pop(SMALL).is_some() && into.pop(SMALL).is_some());
        from.spill(&mut into, 1);
        assert_eq!((from.len(), into.len()), (1, 1));
    }
}
