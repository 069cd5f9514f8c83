//! Telemetry: an event for every transition, and the PAL that records them.
//!
//! Every state change of every task is a [`TaskEvent`]. Subscribers
//! ([`Scheduler::subscribe`](crate::Scheduler::subscribe)) receive them on the
//! scheduler's thread between steps; [`PalWriter`] writes them as JSON lines,
//! the *Process Activity Log* (PAL):
//!
//! ```text
//! {"ts":0.05,"task_id":2,"event":"sleep","until":0.1}
//! ```
//!
//! `ts` is the scheduler's time in seconds (virtual or real), `task_id` the task
//! (`null` for scheduler-wide events), `event` the kind; the other fields are
//! the kind's details. Under the virtual clock the PAL of a program without
//! outside I/O is identical from run to run, byte for byte.
//!
//! Events are only built when someone subscribes: with no subscriber the cost
//! on the hot path is one predictable branch. A subscriber that panics is
//! caught, logged (`tracing`) and counted (`callback_errors_total`); it cannot
//! break the scheduler.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::event::EventId;
use crate::io::{Interest, IoToken};
use crate::task::{Priority, TaskId};

/// One transition.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskEvent {
    /// Scheduler time of the event.
    pub time: Duration,
    /// The task, or `None` for scheduler-wide events.
    pub task: Option<TaskId>,
    /// What happened.
    pub kind: EventKind,
}

/// What happened, with its details.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// A task was created.
    Spawned {
        /// Its priority.
        priority: Priority,
        /// Its name, if any.
        name: Option<Arc<str>>,
        /// How many dependencies it waits for.
        deps: usize,
    },
    /// A task was resumed.
    Running,
    /// A task yielded (or slept for zero).
    Yield,
    /// A task went to sleep.
    Sleep {
        /// When it wakes.
        until: Duration,
    },
    /// A task waits for I/O.
    IoWait {
        /// The source.
        token: IoToken,
        /// Readable or writable.
        interest: Interest,
    },
    /// A task waits for an event to be set.
    EventWait {
        /// The event.
        event: EventId,
    },
    /// A task waits for another to finish.
    Join {
        /// The task it waits for.
        target: TaskId,
    },
    /// A task returned.
    Done,
    /// A task failed.
    Failed {
        /// The panic or exception message.
        message: Arc<str>,
    },
    /// A task ended cancelled.
    Cancelled,
    /// A task used its quantum and was re-queued behind its peers.
    Throttled {
        /// CPU time charged in the run that used the quantum up.
        used: Duration,
    },
    /// Back-pressure reached the high watermark: intake paused.
    Paused {
        /// The pressure read.
        pressure: f64,
    },
    /// Back-pressure fell below the low watermark: intake resumed.
    Resumed {
        /// The pressure read.
        pressure: f64,
    },
    /// A spawn was refused.
    SpawnDenied {
        /// Why (see [`SpawnError::reason`](crate::SpawnError::reason)).
        reason: &'static str,
    },
    /// A shutdown began.
    ShutdownBegin {
        /// How long tasks may take to finish.
        timeout: Duration,
    },
    /// A shutdown completed.
    ShutdownComplete {
        /// Whether every task finished before the deadline.
        clean: bool,
    },
    /// A task logged a message.
    Log {
        /// The message.
        message: Arc<str>,
    },
}

impl EventKind {
    /// The kind's name in the PAL: `spawned`, `running`, `yield`, `sleep`,
    /// `io_wait`, `join`, `done`, `failed`, `cancelled`, `throttled`, `paused`,
    /// `resumed`, `spawn_denied`, `shutdown_begin`, `shutdown_complete`, `log`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Spawned { .. } => "spawned",
            EventKind::Running => "running",
            EventKind::Yield => "yield",
            EventKind::Sleep { .. } => "sleep",
            EventKind::IoWait { .. } => "io_wait",
            EventKind::Join { .. } => "join",
            EventKind::EventWait { .. } => "event_wait",
            EventKind::Done => "done",
            EventKind::Failed { .. } => "failed",
            EventKind::Cancelled => "cancelled",
            EventKind::Throttled { .. } => "throttled",
            EventKind::Paused { .. } => "paused",
            EventKind::Resumed { .. } => "resumed",
            EventKind::SpawnDenied { .. } => "spawn_denied",
            EventKind::ShutdownBegin { .. } => "shutdown_begin",
            EventKind::ShutdownComplete { .. } => "shutdown_complete",
            EventKind::Log { .. } => "log",
        }
    }
}

/// The value of one of an event's detail fields (see [`TaskEvent::fields`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Field<'a> {
    /// A count or an id.
    Int(u64),
    /// Seconds, or a pressure reading.
    Float(f64),
    /// A name, message or reason.
    Str(&'a str),
    /// A yes/no detail.
    Bool(bool),
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Field::Int(v) => s.serialize_u64(v),
            Field::Float(v) => s.serialize_f64(v),
            Field::Str(v) => s.serialize_str(v),
            Field::Bool(v) => s.serialize_bool(v),
        }
    }
}

impl EventKind {
    /// Calls `f` with each detail field of the event, by name, in the order
    /// the PAL writes them. This is the one description of an event's
    /// fields: the PAL line and the bindings' dictionaries are both built
    /// from it, so they cannot drift apart. A field without a value (a task
    /// without a name, a spawn without dependencies) is left out.
    pub fn for_each_field<'a>(&'a self, mut f: impl FnMut(&'static str, Field<'a>)) {
        let secs = |d: &Duration| Field::Float(d.as_secs_f64());
        match self {
            EventKind::Spawned {
                priority,
                name,
                deps,
            } => {
                f("priority", Field::Int(u64::from(*priority)));
                if let Some(n) = name {
                    f("name", Field::Str(n));
                }
                if *deps > 0 {
                    f("deps", Field::Int(*deps as u64));
                }
            }
            EventKind::Sleep { until } => f("until", secs(until)),
            EventKind::IoWait { token, interest } => {
                f("token", Field::Int(token.get()));
                f("interest", Field::Str(interest.name()));
            }
            EventKind::Join { target } => f("target", Field::Int(target.get())),
            EventKind::EventWait { event } => f("event_id", Field::Int(event.get())),
            EventKind::Failed { message } => f("error", Field::Str(message)),
            EventKind::Throttled { used } => f("used", secs(used)),
            EventKind::Paused { pressure } | EventKind::Resumed { pressure } => {
                f("pressure", Field::Float(*pressure))
            }
            EventKind::SpawnDenied { reason } => f("reason", Field::Str(reason)),
            EventKind::ShutdownBegin { timeout } => f("timeout", secs(timeout)),
            EventKind::ShutdownComplete { clean } => f("clean", Field::Bool(*clean)),
            EventKind::Log { message } => f("message", Field::Str(message)),
            EventKind::Running | EventKind::Yield | EventKind::Done | EventKind::Cancelled => {}
        }
    }
}

impl TaskEvent {
    /// The event as one PAL line (JSON, without the newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"event\":\"{}\",\"error\":\"{e}\"}}", self.kind.name()))
    }

    /// The event's detail fields, by name (see [`EventKind::for_each_field`]).
    pub fn fields(&self) -> Vec<(&'static str, Field<'_>)> {
        let mut out = Vec::new();
        self.kind
            .for_each_field(|name, value| out.push((name, value)));
        out
    }
}

impl Serialize for TaskEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("ts", &self.time.as_secs_f64())?;
        m.serialize_entry("task_id", &self.task.map(TaskId::get))?;
        m.serialize_entry("event", self.kind.name())?;
        let mut result = Ok(());
        self.kind.for_each_field(|name, value| {
            if result.is_ok() {
                result = m.serialize_entry(name, &value);
            }
        });
        result?;
        m.end()
    }
}

/// Receives events on the scheduler's thread.
///
/// The scheduler hands events over as slices, in order, between steps
/// ([`on_events`](Self::on_events), which by default calls
/// [`on_event`](Self::on_event) for each). By default it does so after
/// every step. A subscriber that forwards events somewhere costly (a Python
/// callback, a file) can ask for batches instead ([`max_batch`](Self::max_batch)):
/// the scheduler then gathers events and hands them over once that many have
/// gathered, when it is about to wait for something to happen (time, I/O,
/// another thread), and when a run ends — so no event waits long, and the
/// hot path pays only for building the event.
pub trait EventSubscriber {
    /// Called once per event, in order.
    fn on_event(&mut self, event: &TaskEvent);

    /// Called with the next events, in order.
    fn on_events(&mut self, events: &[TaskEvent]) {
        for event in events {
            self.on_event(event);
        }
    }

    /// How many events to gather before handing them over (default 1:
    /// after every step). With several subscribers the smallest wins.
    fn max_batch(&self) -> usize {
        1
    }

    /// The scheduler has nothing to run and is about to wait, or its run is
    /// ending; every gathered event has been handed over just before.
    fn on_idle(&mut self) {}
}

impl<F: FnMut(&TaskEvent)> EventSubscriber for F {
    fn on_event(&mut self, event: &TaskEvent) {
        self(event)
    }
}

/// Writes every event as a JSON line: the PAL.
pub struct PalWriter<W: Write> {
    out: W,
    failed: bool,
}

impl<W: Write> PalWriter<W> {
    /// A PAL written to `out`.
    pub fn new(out: W) -> Self {
        PalWriter { out, failed: false }
    }

    /// The writer back (flushed).
    pub fn into_inner(mut self) -> W {
        let _ = self.out.flush();
        self.out
    }
}

impl<W: Write> EventSubscriber for PalWriter<W> {
    fn on_event(&mut self, event: &TaskEvent) {
        if self.failed {
            return;
        }
        let mut line = event.to_json();
        line.push('\n');
        if let Err(e) = self.out.write_all(line.as_bytes()) {
            // Report once; a broken PAL sink must not spam or stop the scheduler.
            self.failed = true;
            tracing::error!(error = %e, "PAL writer failed; further events are dropped");
        }
    }
}

/// A subscriber that keeps every event in memory (handy in tests).
#[derive(Clone, Default)]
pub struct EventLog {
    events: Arc<std::sync::Mutex<Vec<TaskEvent>>>,
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        EventLog::default()
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<TaskEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The events so far as PAL lines.
    pub fn to_pal(&self) -> String {
        let mut s = String::new();
        for e in self.events() {
            s.push_str(&e.to_json());
            s.push('\n');
        }
        s
    }
}

impl EventSubscriber for EventLog {
    fn on_event(&mut self, event: &TaskEvent) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> TaskEvent {
        TaskEvent {
            time: Duration::from_millis(1500),
            task: Some(TaskId(4)),
            kind,
        }
    }

    /// `fields` lists an event's detail fields in the PAL's order, leaving
    /// out those without a value; the PAL line carries the same.
    #[test]
    fn fields_are_the_details_in_order() {
        let named = event(EventKind::Spawned {
            priority: 3,
            name: Some(Arc::from("w")),
            deps: 2,
        });
        assert_eq!(
            named.fields(),
            vec![
                ("priority", Field::Int(3)),
                ("name", Field::Str("w")),
                ("deps", Field::Int(2)),
            ]
        );
        assert_eq!(
            named.to_json(),
            r#"{"ts":1.5,"task_id":4,"event":"spawned","priority":3,"name":"w","deps":2}"#
        );
        let bare = event(EventKind::Spawned {
            priority: 3,
            name: None,
            deps: 0,
        });
        assert_eq!(bare.fields(), vec![("priority", Field::Int(3))]);
        assert_eq!(event(EventKind::Running).fields(), vec![]);
    }

    /// A closure is a subscriber: it is called with each event, and a
    /// batch reaches it one event at a time, in order.
    #[test]
    fn a_closure_receives_every_event_in_order() {
        let mut seen = Vec::new();
        let mut subscriber = |e: &TaskEvent| seen.push(e.kind.name());
        EventSubscriber::on_event(&mut subscriber, &event(EventKind::Running));
        EventSubscriber::on_events(
            &mut subscriber,
            &[event(EventKind::Yield), event(EventKind::Done)],
        );
        assert_eq!(EventSubscriber::max_batch(&subscriber), 1);
        assert_eq!(seen, ["running", "yield", "done"]);
    }
}
