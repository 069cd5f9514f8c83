//! A reference to one wait of one task, safe to keep after the wait ended.
//!
//! A blocked task can be recorded in several places at once: the timer heap
//! (a timeout), a target's joiner list, an I/O source. Whichever fires first
//! wakes it; the others must then do nothing. Each wait therefore gets a
//! generation number, bumped when the task is woken, and every entry carries
//! the generation it was made for. An entry whose generation is no longer the
//! task's is stale and ignored, so a task is resumed once per wait.

use crate::task::TaskId;

/// One wait of one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Waiter {
    /// The task's slot in the task table.
    pub(crate) slot: usize,
    /// The task's id, to detect a slot reused by another task.
    pub(crate) task: TaskId,
    /// The wait's generation.
    pub(crate) generation: u32,
}
