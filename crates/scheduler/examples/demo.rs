//! A tour of the kernel on the virtual clock: prioritized tasks, a dependency,
//! a cancellation, a join timeout, the event log and a metrics summary.
//!
//! Run it with `cargo run --example demo -p tiffany-scheduler`.

use std::time::Duration;

use tiffany_scheduler::{
    EventLog, JoinResult, PRI_DEFAULT, PRI_SYSTEM, Scheduler, ShutdownResult, SpawnOptions,
};

fn main() {
    let sched = Scheduler::builder()
        .virtual_clock()
        .build()
        .expect("a poller");
    let log = EventLog::new();
    sched.subscribe(log.clone());
    sched.add_shutdown_hook(|r: ShutdownResult| println!("shutdown hook ran: {}", r.name()));

    // Three workers at different priorities: each does a few steps of "work".
    let mut workers = Vec::new();
    for (name, priority) in [("low", 200u8), ("default", PRI_DEFAULT), ("urgent", 1)] {
        let id = sched
            .spawn_with(
                SpawnOptions::priority(priority).with_name(name),
                move |cx| {
                    for step in 0..3 {
                        cx.log(format!("{name}: step {step}"));
                        cx.sleep(Duration::from_millis(100));
                    }
                    name.len()
                },
            )
            .expect("spawn");
        workers.push(id);
    }

    // A report that may only start once every worker is done.
    sched
        .spawn_with(SpawnOptions::default().with_deps(&workers), |cx| {
            cx.log("report: all workers done")
        })
        .expect("spawn");

    // A slow task that the supervisor gives one second before cancelling it.
    let slow = sched
        .spawn_with(SpawnOptions::default().with_name("slow"), |cx| {
            cx.sleep(Duration::from_secs(3600));
        })
        .expect("spawn");
    sched
        .spawn_with(SpawnOptions::system(), move |cx| {
            match cx.join_timeout(slow, Duration::from_secs(1)) {
                JoinResult::Timeout => cx.log("supervisor: slow task timed out, cancelling it"),
                other => cx.log(format!("supervisor: unexpected {other:?}")),
            }
            cx.cancel(slow);
            let r = cx.join(slow);
            cx.log(format!("supervisor: slow task ended {r:?}"));
        })
        .expect("spawn");

    let order = sched.run();
    println!("tasks finished in this order: {order:?}");
    println!(
        "virtual time elapsed: {:?} (an hour-long sleep was cut short)",
        sched.now()
    );
    println!("priority {PRI_SYSTEM} is the system priority.\n");

    println!("-- events (PAL) --");
    for e in log.events() {
        println!("{}", e.to_json());
    }

    println!("\n-- metrics --");
    let m = sched.metrics();
    println!(
        "spawned {} | done {} | failed {} | cancelled {} | steps {}",
        m.spawned, m.done, m.failed, m.cancelled, m.steps
    );
    println!("shutdown: {:?}", sched.shutdown(Duration::from_secs(1)));
}
