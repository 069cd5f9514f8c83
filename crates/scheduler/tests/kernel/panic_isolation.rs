//! A panicking task fails alone: its joiners learn why, the scheduler goes on.

use std::sync::Arc;

use crate::common::*;
use tiffany_scheduler::*;

#[test]
fn panic_fails_only_that_task() {
    let s = vsched();
    let log = logged(&s);
    let (dropped, guard) = drop_flag();
    let bad = s
        .spawn(move |cx| -> u32 {
            let _guard = guard;
            cx.sleep(ms(5));
            panic!("boom at step {}", 2);
        })
        .unwrap();
    let joiner = s
        .spawn(move |cx| match cx.join(bad) {
            JoinResult::Failed(e) => e.message().to_string(),
            other => format!("unexpected {other:?}"),
        })
        .unwrap();
    let bystander = s
        .spawn(|cx| {
            let mut n = 0;
            for _ in 0..3 {
                cx.sleep(ms(4));
                n += 1;
            }
            n
        })
        .unwrap();

    let order = s.run();

    assert_eq!(order, vec![bad, joiner, bystander]);
    assert_eq!(s.state(bad), Some(TaskState::Failed));
    assert_eq!(s.error(bad).unwrap().message(), "boom at step 2");
    assert!(matches!(s.outcome(bad), Some(Outcome::Failed(_))));
    assert!(s.value(bad).is_none());
    assert!(is_set(&dropped), "the panicking task's destructors ran");
    assert_eq!(value_of::<String>(&s, joiner), "boom at step 2");
    assert_eq!(value_of::<i32>(&s, bystander), 3);
    assert_eq!(
        s.now(),
        ms(12),
        "the scheduler kept running after the panic"
    );

    let events = log.events();
    let failed: Vec<&TaskEvent> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Failed { .. }))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].task, Some(bad));
    assert_eq!(
        failed[0].kind,
        EventKind::Failed {
            message: Arc::from("boom at step 2")
        }
    );
    assert_eq!(failed[0].time, ms(5));
    assert!(failed[0].to_json().contains(r#""error":"boom at step 2""#));

    let m = s.metrics();
    assert_eq!((m.done, m.failed, m.cancelled), (2, 1, 0));
}

#[test]
fn static_str_and_non_string_payloads() {
    let s = vsched();
    let a = s.spawn(|_cx| -> () { panic!("plain") }).unwrap();
    let b = s
        .spawn(|_cx| -> () { std::panic::panic_any(17u8) })
        .unwrap();
    s.run();
    assert_eq!(s.error(a).unwrap().message(), "plain");
    assert_eq!(
        s.error(b).unwrap().message(),
        "task panicked with a non-string payload"
    );
}

#[test]
fn many_panics_do_not_disturb_the_others() {
    let s = vsched();
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for i in 0..50u32 {
        if i % 3 == 0 {
            bad.push(
                s.spawn(move |cx| -> u32 {
                    cx.yield_now();
                    panic!("task {i} failed")
                })
                .unwrap(),
            );
        } else {
            good.push((
                i,
                s.spawn(move |cx| {
                    cx.yield_now();
                    i * 2
                })
                .unwrap(),
            ));
        }
    }
    let order = s.run();
    assert_eq!(order.len(), 50);
    for (i, id) in good {
        assert_eq!(value_of::<u32>(&s, id), i * 2);
    }
    for id in &bad {
        assert_eq!(s.state(*id), Some(TaskState::Failed));
    }
    assert_eq!(s.metrics().failed, bad.len() as u64);
}

#[test]
fn a_panicking_subscriber_is_counted_and_ignored() {
    let s = vsched();
    let log = logged(&s);
    s.subscribe(|e: &TaskEvent| {
        if e.kind == EventKind::Done {
            panic!("subscriber broke");
        }
    });
    let t = s.spawn(|cx| cx.sleep(ms(1))).unwrap();
    let u = s.spawn(|_cx| 2).unwrap();
    s.run();
    assert_eq!(s.state(t), Some(TaskState::Finished));
    assert_eq!(s.state(u), Some(TaskState::Finished));
    assert_eq!(s.metrics().callback_errors, 2);
    // The other subscriber still saw every event.
    assert_eq!(
        log.events()
            .iter()
            .filter(|e| e.kind == EventKind::Done)
            .count(),
        2
    );
}

#[test]
fn a_panicking_end_callback_and_a_reported_callback_error_are_counted() {
    let s = vsched();
    let t = s.spawn(|cx| cx.sleep(ms(1))).unwrap();
    let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    assert!(s.on_task_end(t, |_, _| panic!("end callback broke")));
    let ran_w = ran.clone();
    assert!(s.on_task_end(t, move |_, _| {
        ran_w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    s.run();
    // The second callback still ran; the first one's panic is counted.
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(s.metrics().callback_errors, 1);
    // A binding that caught its callback's failure itself reports it.
    s.record_callback_error();
    s.record_callback_error();
    assert_eq!(s.metrics().callback_errors, 3);
}

/// A subscriber whose `on_idle` panics: each panic is counted once.
struct PanicsWhenIdle(Arc<std::sync::atomic::AtomicU64>);

impl EventSubscriber for PanicsWhenIdle {
    fn on_event(&mut self, _event: &TaskEvent) {}

    fn on_idle(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        panic!("idle subscriber broke");
    }
}

#[test]
fn panics_of_an_idle_subscriber_and_of_the_pressure_listener_are_counted() {
    // The subscriber: every idle call panicked, every panic counted.
    let s = vsched();
    let idles = Arc::new(std::sync::atomic::AtomicU64::new(0));
    s.subscribe(PanicsWhenIdle(idles.clone()));
    let t = s.spawn(|cx| cx.sleep(ms(5))).unwrap();
    s.run();
    assert_eq!(s.state(t), Some(TaskState::Finished));
    let idles = idles.load(std::sync::atomic::Ordering::SeqCst);
    assert!(idles >= 1);
    assert_eq!(s.metrics().callback_errors, idles);

    // The pressure listener: every reading panicked, every panic counted.
    let s = vsched();
    let readings = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let r = readings.clone();
    s.set_backpressure_listener(move || -> f64 {
        r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        panic!("listener broke")
    });
    let t = s
        .spawn(|cx| {
            for _ in 0..3 {
                cx.sleep(ms(5));
            }
        })
        .unwrap();
    s.run();
    assert_eq!(s.state(t), Some(TaskState::Finished));
    let readings = readings.load(std::sync::atomic::Ordering::SeqCst);
    assert!(readings >= 1);
    assert_eq!(s.metrics().callback_errors, readings);
}
