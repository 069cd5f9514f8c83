//! Events: a flag tasks wait for; setting it wakes them all.
//!
//! An event starts clear. A task that waits on a clear event blocks; setting
//! the event wakes every waiter at once and lets later waits through until the
//! event is cleared again — the `Event` of asyncio and trio. It is the cheap
//! way for many tasks to wait for one thing: a waiter costs one entry in the
//! event's list, and a `set` wakes them in the order they began to wait.
//!
//! Events belong to a scheduler ([`Scheduler::new_event`](crate::Scheduler::new_event)).
//! Tasks wait with [`SystemCall::EventWait`](crate::SystemCall::EventWait)
//! ([`TaskContext::event_wait`](crate::TaskContext::event_wait)); code on the
//! scheduler's thread sets and clears them
//! ([`Scheduler::set_event`](crate::Scheduler::set_event), or
//! [`SystemCall::EventSet`](crate::SystemCall::EventSet) from a native task).
//! A waiter that is cancelled leaves a stale entry behind (see `waiter`): it is
//! skipped when the event is set, and such entries are pruned as the list
//! grows, so an event that is never set does not grow without bound.
//! An [`EventId`] carries a generation: the id of a removed event is refused,
//! never confused with a newer event in the same slot.

use slab::Slab;
use smallvec::SmallVec;

use crate::waiter::Waiter;

/// The id of an event of one scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventId(u64);

crate::slot_id::slot_id!(EventId, "event id");

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "event {}#{}", self.slot(), self.generation())
    }
}

/// The waiters of one event.
pub(crate) type Waiters = SmallVec<[Waiter; 1]>;

struct EventState {
    generation: u32,
    set: bool,
    /// Tasks waiting, oldest first; some may be stale (woken another way).
    /// One inline: most events have one waiter at a time (an asyncio
    /// task's step event always), and a list of its own would be one more
    /// place in memory for every wait to touch.
    waiters: Waiters,
}

/// Where a wait on an event stands.
pub(crate) enum EventWait {
    /// The event is set: the wait is answered at once.
    Set,
    /// The task must block; it is recorded as a waiter.
    Blocked,
}

/// The events of one scheduler.
#[derive(Default)]
pub(crate) struct Events {
    slab: Slab<EventState>,
    next_generation: u32,
}

impl Events {
    pub(crate) fn create(&mut self) -> EventId {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let slot = self.slab.insert(EventState {
            generation,
            set: false,
            waiters: Waiters::new(),
        });
        EventId::new(slot, generation)
    }

    fn get(&self, id: EventId) -> Option<&EventState> {
        self.slab
            .get(id.slot())
            .filter(|e| e.generation == id.generation())
    }

    fn get_mut(&mut self, id: EventId) -> Option<&mut EventState> {
        self.slab
            .get_mut(id.slot())
            .filter(|e| e.generation == id.generation())
    }

    /// Whether the event is set; `None` for an unknown id.
    pub(crate) fn is_set(&self, id: EventId) -> Option<bool> {
        self.get(id).map(|e| e.set)
    }

    /// Sets the event; returns the waiters to wake (`None`: unknown id).
    pub(crate) fn set(&mut self, id: EventId) -> Option<Waiters> {
        let e = self.get_mut(id)?;
        e.set = true;
        Some(std::mem::take(&mut e.waiters))
    }

    /// Clears the event; `false` for an unknown id.
    pub(crate) fn clear(&mut self, id: EventId) -> bool {
        self.get_mut(id).map(|e| e.set = false).is_some()
    }

    /// Starts a wait. `live` tells whether a recorded waiter is still waiting
    /// (used to prune stale entries as the list grows).
    pub(crate) fn wait(
        &mut self,
        id: EventId,
        waiter: Waiter,
        live: impl Fn(&Waiter) -> bool,
    ) -> Option<EventWait> {
        let e = self.get_mut(id)?;
        if e.set {
            return Some(EventWait::Set);
        }
        // The stale entries at the end go first: a task that waits on its
        // own event again and again (an asyncio task's step event, woken in
        // place by `Scheduler::step_now`, which leaves its entry behind)
        // then keeps a list of one, instead of one that grows to the next
        // pruning and is reallocated on the way.
        while e.waiters.last().is_some_and(|w| !live(w)) {
            e.waiters.pop();
        }
        let n = e.waiters.len();
        if n >= 64 && n.is_power_of_two() {
            e.waiters.retain(|w| live(w));
        }
        e.waiters.push(waiter);
        Some(EventWait::Blocked)
    }

    /// Removes the event if no task waits on it; returns whether it was
    /// removed. An event with waiters stays until it is set (and then removed
    /// by a later call) or the scheduler ends.
    pub(crate) fn remove(&mut self, id: EventId, live: impl Fn(&Waiter) -> bool) -> bool {
        let Some(e) = self.get_mut(id) else {
            return false;
        };
        if e.waiters.iter().any(live) {
            return false;
        }
        self.slab.remove(id.slot());
        true
    }

    /// Events that exist.
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(n: usize) -> Waiter {
        Waiter {
            slot: n,
            task: crate::task::TaskId::from_raw(n as u64 + 1),
            generation: 0,
        }
    }

    /// Waits that ended another way (a cancel, a timeout) leave stale entries;
    /// the list is pruned each time its length reaches a power of two from
    /// 64 on, so it stays within about twice the live waiters, however many
    /// waits came and went — and a live waiter is never dropped.
    #[test]
    fn stale_waiters_are_pruned_as_the_list_grows() {
        const LIVE: usize = 100;
        let mut events = Events::default();
        let id = events.create();
        let mut longest = 0;
        for n in 0..10_000 {
            // The first LIVE waits and the latest one are live; the rest are stale.
            assert!(matches!(
                events.wait(id, waiter(n), |w| w.slot < LIVE || w.slot + 1 == n),
                Some(EventWait::Blocked)
            ));
            longest = longest.max(events.get(id).unwrap().waiters.len());
        }
        assert!(
            longest <= 2 * (LIVE + 1),
            "the waiter list grew to {longest}"
        );
        let woken = events.set(id).unwrap();
        assert_eq!(
            &woken[..LIVE],
            &(0..LIVE).map(waiter).collect::<Vec<_>>()[..]
        );
        assert_eq!(woken.last(), Some(&waiter(9_999)));
    }

    /// The pruning runs only where the list's length reaches a power of two
    /// from 64 on, so a wait costs O(1) amortized: below 64 a stale entry
    /// in the middle of the list stays (a prune on every wait would scan
    /// the list each time), and at 64 it goes.
    #[test]
    fn pruning_waits_for_the_list_to_grow() {
        let mut events = Events::default();
        let id = events.create();
        // Waiter 1's wait ends once waiter 2 is listed (a stale entry last
        // in the list would go at once); every other wait is live.
        let live = |n: usize| move |w: &Waiter| w.slot != 1 || n <= 2;
        for n in 0..64 {
            events.wait(id, waiter(n), live(n));
            assert_eq!(events.get(id).unwrap().waiters.len(), n + 1);
        }
        events.wait(id, waiter(64), live(64));
        assert_eq!(events.get(id).unwrap().waiters.len(), 64);
        assert!(!events.get(id).unwrap().waiters.contains(&waiter(1)));
    }

    /// A task that waits on the same event again after its last wait ended
    /// another way leaves no entry behind: the list stays one long.
    #[test]
    fn a_repeated_wait_replaces_its_own_stale_entry() {
        let mut events = Events::default();
        let id = events.create();
        for n in 0..100 {
            // Only the wait being made is live; every earlier one is stale.
            assert!(matches!(
                events.wait(id, waiter(n), |w| w.slot == n),
                Some(EventWait::Blocked)
            ));
            assert_eq!(events.get(id).unwrap().waiters.len(), 1);
        }
        // A live waiter at the end is kept.
        events.wait(id, waiter(200), |_| true);
        assert_eq!(events.get(id).unwrap().waiters.len(), 2);
    }

    /// `len` counts the events that exist.
    #[test]
    fn len_counts_existing_events() {
        let mut events = Events::default();
        let a = events.create();
        events.create();
        assert_eq!(events.len(), 2);
        assert!(events.remove(a, |_| false));
        assert_eq!(events.len(), 1);
    }
}
