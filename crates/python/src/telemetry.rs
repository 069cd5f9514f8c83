//! Events delivered to Python in batches.
//!
//! `Scheduler.on_event(callback)` calls Python once per event: simple, and
//! about 150 ns per event, most of it the Python call and a `TaskEvent`
//! object. `Scheduler.on_events(callback, max_batch)` gathers events natively
//! and calls Python once per batch, with an [`EventBatch`]: a sequence whose
//! `TaskEvent` objects are only made when looked at, and which can write
//! itself as PAL lines without making them at all. A batch is delivered when
//! `max_batch` events have gathered, when the scheduler is about to wait
//! (for time, I/O or another thread) and when a run ends, so no event waits
//! long; the callback runs on the scheduler's thread between steps, like
//! every callback.

use std::cell::Cell;
use std::rc::Rc;

use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySlice};
use tiffany_scheduler::{EventSubscriber, Field, TaskEvent, TaskId};

/// Events in the order they happened, handed to an `on_events` callback.
#[pyclass(module = "tiffany._native", name = "EventBatch", frozen, sequence)]
pub struct EventBatch {
    events: Vec<TaskEvent>,
}

#[pymethods]
impl EventBatch {
    fn __len__(&self) -> usize {
        self.events.len()
    }

    fn __getitem__<'py>(&self, index: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = index.py();
        if let Ok(slice) = index.cast::<PySlice>() {
            let ix = slice.indices(self.events.len() as isize)?;
            let picked = (0..ix.slicelength).map(|k| {
                let i = ix.start + k as isize * ix.step;
                PyTaskEvent::new(self.events[i as usize].clone())
            });
            return PyList::new(py, picked).map(Bound::into_any);
        }
        let index: isize = index.extract()?;
        let len = self.events.len() as isize;
        let i = if index < 0 { index + len } else { index };
        if i < 0 || i >= len {
            return Err(PyIndexError::new_err("event index out of range"));
        }
        Bound::new(py, PyTaskEvent::new(self.events[i as usize].clone())).map(Bound::into_any)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let list = PyList::new(py, self.events.iter().map(|e| PyTaskEvent::new(e.clone())))?;
        list.try_iter().map(Bound::into_any)
    }

    /// How many events of each kind, e.g. `{"running": 10, "yield": 9, ...}`.
    fn counts(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for e in &self.events {
            *counts.entry(e.kind.name()).or_insert(0) += 1;
        }
        counts
    }

    /// The events as PAL lines: one JSON object per line, each ending in `\n`.
    fn pal(&self) -> String {
        let mut out = String::with_capacity(self.events.len() * 64);
        for e in &self.events {
            out.push_str(&e.to_json());
            out.push('\n');
        }
        out
    }

    fn __repr__(&self) -> String {
        format!("<EventBatch of {} events>", self.events.len())
    }
}

/// Calls a Python callback once per batch of events (the kernel gathers them).
pub(crate) struct BatchSubscriber {
    callback: Py<PyAny>,
    max_batch: usize,
    errors: Rc<Cell<u64>>,
}

impl BatchSubscriber {
    pub(crate) fn new(callback: Py<PyAny>, max_batch: usize, errors: Rc<Cell<u64>>) -> Self {
        BatchSubscriber {
            callback,
            max_batch,
            errors,
        }
    }
}

impl EventSubscriber for BatchSubscriber {
    fn on_event(&mut self, event: &TaskEvent) {
        self.on_events(std::slice::from_ref(event));
    }

    fn on_events(&mut self, events: &[TaskEvent]) {
        Python::attach(|py| {
            // The last step may take a batch past its size: split it.
            for chunk in events.chunks(self.max_batch) {
                let batch = EventBatch {
                    events: chunk.to_vec(),
                };
                let delivered =
                    Py::new(py, batch).and_then(|batch| self.callback.call1(py, (batch,)));
                if let Err(err) = delivered {
                    self.errors.set(self.errors.get() + 1);
                    crate::errors::log_callback_error(py, "an on_events callback", err);
                }
            }
        });
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }
}

/// An event given to `on_event` callbacks: one transition of one task (or of
/// the scheduler).
#[pyclass(module = "tiffany._native", name = "TaskEvent", frozen)]
pub struct PyTaskEvent {
    event: TaskEvent,
}

impl PyTaskEvent {
    pub(crate) fn new(event: TaskEvent) -> Self {
        PyTaskEvent { event }
    }
}

#[pymethods]
impl PyTaskEvent {
    /// "spawned", "running", "yield", "sleep", "io_wait", "join", "event_wait", "done",
    /// "failed", "cancelled", "throttled", "paused", "resumed", "spawn_denied",
    /// "shutdown_begin", "shutdown_complete" or "log".
    #[getter]
    fn kind(&self) -> &'static str {
        self.event.kind.name()
    }

    /// The task's id, or None for scheduler-wide events.
    #[getter]
    fn task_id(&self) -> Option<u64> {
        self.event.task.map(TaskId::get)
    }

    /// The scheduler's time of the event, in seconds.
    #[getter]
    fn time(&self) -> f64 {
        self.event.time.as_secs_f64()
    }

    /// The event's details (for example `{"until": 0.05}` for "sleep"): the
    /// fields of its PAL line, from the kernel's one description of them
    /// (`EventKind::for_each_field`), so the two cannot drift apart.
    #[getter]
    fn detail<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let mut result = Ok(());
        self.event.kind.for_each_field(|name, value| {
            if result.is_ok() {
                result = match value {
                    Field::Int(v) => d.set_item(name, v),
                    Field::Float(v) => d.set_item(name, v),
                    Field::Str(v) => d.set_item(name, v),
                    Field::Bool(v) => d.set_item(name, v),
                };
            }
        });
        result.map(|()| d)
    }

    /// The event as one PAL line (JSON).
    fn to_json(&self) -> String {
        self.event.to_json()
    }

    fn __repr__(&self) -> String {
        format!("<TaskEvent {}>", self.event.to_json())
    }
}
