//! The coroutine pool: finished native coroutines are kept for reuse, per
//! thread, and an ended thread's go to a reserve the other threads draw on.
//!
//! One test per file's process matters here: the reserve is process-wide,
//! and other tests' threads would add to it and draw from it.

use tiffany_scheduler::native::{pooled_stacks, reserved_stacks};
use tiffany_scheduler::*;

#[test]
fn coroutines_are_pooled_and_an_ended_threads_go_to_the_others() {
    let reserved = reserved_stacks();
    std::thread::spawn(|| {
        let s = Scheduler::new();
        for _ in 0..10 {
            s.spawn(|cx| cx.yield_now()).unwrap();
        }
        s.run();
        // Finished coroutines are kept by the thread, not freed.
        assert_eq!(pooled_stacks(), 10);
    })
    .join()
    .unwrap();
    // The thread ended: its pool went to the reserve.
    assert_eq!(reserved_stacks(), reserved + 10);
    std::thread::spawn(move || {
        let s = Scheduler::new();
        for _ in 0..4 {
            s.spawn(|cx| cx.yield_now()).unwrap();
        }
        // A new thread's spawns draw on the reserve once its own pool is empty.
        assert_eq!(reserved_stacks(), reserved + 6);
        s.run();
        assert_eq!(pooled_stacks(), 4);
        // Ten spawns take the thread's 4 and the reserve's 6; with a pool
        // limit of 3, the thread keeps 3 of the 10 when they end.
        let s = Scheduler::builder().stack_pool(3).build().unwrap();
        for _ in 0..10 {
            s.spawn(|_| ()).unwrap();
        }
        assert_eq!(reserved_stacks(), reserved);
        s.run();
        assert_eq!(pooled_stacks(), 3);
    })
    .join()
    .unwrap();
    assert_eq!(reserved_stacks(), reserved + 3);
}

/// A task that never ran gives its coroutine back to the pool when its
/// scheduler is dropped.
#[test]
fn coroutines_of_tasks_dropped_unfinished_are_pooled() {
    std::thread::spawn(|| {
        let s = Scheduler::new();
        for _ in 0..3 {
            s.spawn(|_| ()).unwrap();
        }
        drop(s);
        assert_eq!(pooled_stacks(), 3, "never started");
    })
    .join()
    .unwrap();
}
