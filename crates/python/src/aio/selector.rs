//! `tiffany._native.Selector`: the loop's selector, a `selectors`-compatible
//! object over a private level-triggered epoll set.
//!
//! The stdlib's transports and `sock_*` methods talk to `loop._selector`
//! (`get_key`, `register`, `modify`, `unregister`) with `(reader, writer)`
//! handle pairs as data; this selector keeps that shape. The loop's kernel
//! task never calls `select` through Python: it drains the set natively and
//! queues the handles (see [`Selector::dispatch`]). The set's own descriptor
//! is what the kernel polls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::epoll::{Epoll, IN, OUT};
use super::handle::Handle;

pub(crate) const EVENT_READ: u32 = 1;
pub(crate) const EVENT_WRITE: u32 = 2;

struct Entry {
    key: Py<PyAny>,
    fileobj: Py<PyAny>,
    events: u32,
    data: Py<PyAny>,
}

/// A selector over a private epoll set.
#[pyclass(module = "tiffany._native", name = "Selector", frozen)]
pub struct Selector {
    epoll: Epoll,
    map: Mutex<HashMap<i32, Entry>>,
    closed: AtomicBool,
}

fn selector_key(
    py: Python<'_>,
    fileobj: &Py<PyAny>,
    fd: i32,
    events: u32,
    data: &Py<PyAny>,
) -> PyResult<Py<PyAny>> {
    static KEY: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    let cls = KEY.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("selectors")?.getattr("SelectorKey")?.unbind())
    })?;
    Ok(cls.bind(py).call1((fileobj, fd, events, data))?.unbind())
}

fn epoll_bits(events: u32) -> u32 {
    let mut bits = 0;
    if events & EVENT_READ != 0 {
        bits |= IN;
    }
    if events & EVENT_WRITE != 0 {
        bits |= OUT;
    }
    bits
}

/// The descriptor of a file object or number (as `selectors` finds it).
fn fileno(obj: &Bound<'_, PyAny>) -> PyResult<i32> {
    let fd = match obj.extract::<i64>() {
        Ok(n) => n,
        Err(_) => obj
            .call_method0("fileno")
            .and_then(|f| f.extract::<i64>())
            .map_err(|_| PyValueError::new_err(format!("Invalid file object: {obj}")))?,
    };
    if fd < 0 || fd > i32::MAX as i64 {
        return Err(PyValueError::new_err(format!(
            "Invalid file descriptor: {fd}"
        )));
    }
    Ok(fd as i32)
}

impl Selector {
    /// Finds the registered descriptor of `obj` (a number, a file object,
    /// or a closed file object still registered).
    fn lookup(&self, obj: &Bound<'_, PyAny>) -> PyResult<i32> {
        match fileno(obj) {
            Ok(fd) => Ok(fd),
            Err(e) => {
                let map = self.map.lock().expect("selector map");
                for (fd, entry) in map.iter() {
                    if entry.fileobj.bind(obj.py()).is(obj) {
                        return Ok(*fd);
                    }
                }
                Err(e)
            }
        }
    }

    fn check_open(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(PyRuntimeError::new_err("the selector is closed"));
        }
        Ok(())
    }

    /// Adds `which` (EVENT_READ or EVENT_WRITE) with `handle` for `fd`;
    /// returns the handle it replaces, if any.
    pub(crate) fn add_interest(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        which: u32,
        handle: Py<Handle>,
    ) -> PyResult<Option<Py<PyAny>>> {
        self.check_open()?;
        let fd = self.lookup(obj)?;
        let (events, reader, writer, old) = {
            let map = self.map.lock().expect("selector map");
            match map.get(&fd) {
                None => (0, py.None(), py.None(), None),
                Some(e) => {
                    let (r, w) = pair(py, &e.data);
                    let old = if which == EVENT_READ {
                        r.clone_ref(py)
                    } else {
                        w.clone_ref(py)
                    };
                    (e.events, r, w, Some(old))
                }
            }
        };
        let h = handle.into_any();
        let data = if which == EVENT_READ {
            PyTuple::new(py, [h, writer])?
        } else {
            PyTuple::new(py, [reader, h])?
        }
        .into_any()
        .unbind();
        let fileobj = obj.clone().unbind();
        if events == 0 && old.is_none() {
            self.register_fd(py, fd, fileobj, which, data)?;
        } else {
            self.modify_fd(py, fd, Some(fileobj), events | which, data)?;
        }
        Ok(old.filter(|o| !o.is_none(py)))
    }

    /// Removes `which` for `fd`; returns the handle it held, if any.
    pub(crate) fn remove_interest(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        which: u32,
    ) -> PyResult<Option<Py<PyAny>>> {
        if self.closed.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let Ok(fd) = self.lookup(obj) else {
            return Ok(None);
        };
        self.remove_fd_interest(py, fd, which)
    }

    fn remove_fd_interest(
        &self,
        py: Python<'_>,
        fd: i32,
        which: u32,
    ) -> PyResult<Option<Py<PyAny>>> {
        let (events, reader, writer) = {
            let map = self.map.lock().expect("selector map");
            match map.get(&fd) {
                None => return Ok(None),
                Some(e) => {
                    let (r, w) = pair(py, &e.data);
                    (e.events, r, w)
                }
            }
        };
        let mask = events & !which;
        let (old, data) = if which == EVENT_READ {
            (reader, PyTuple::new(py, [py.None(), writer])?)
        } else {
            (writer, PyTuple::new(py, [reader, py.None()])?)
        };
        if mask == 0 {
            self.unregister_fd(fd);
        } else {
            self.modify_fd(py, fd, None, mask, data.into_any().unbind())?;
        }
        Ok(Some(old).filter(|o| !o.is_none(py)))
    }

    fn register_fd(
        &self,
        py: Python<'_>,
        fd: i32,
        fileobj: Py<PyAny>,
        events: u32,
        data: Py<PyAny>,
    ) -> PyResult<Py<PyAny>> {
        if events == 0 || events & !(EVENT_READ | EVENT_WRITE) != 0 {
            return Err(PyValueError::new_err(format!("Invalid events: {events}")));
        }
        if self.map.lock().expect("selector map").contains_key(&fd) {
            return Err(PyKeyError::new_err(format!(
                "{} (FD {fd}) is already registered",
                fileobj.bind(py)
            )));
        }
        self.epoll
            .add(fd, epoll_bits(events))
            .map_err(PyErr::from)?;
        let key = selector_key(py, &fileobj, fd, events, &data)?;
        self.map.lock().expect("selector map").insert(
            fd,
            Entry {
                key: key.clone_ref(py),
                fileobj,
                events,
                data,
            },
        );
        Ok(key)
    }

    fn modify_fd(
        &self,
        py: Python<'_>,
        fd: i32,
        fileobj: Option<Py<PyAny>>,
        events: u32,
        data: Py<PyAny>,
    ) -> PyResult<Py<PyAny>> {
        if events == 0 || events & !(EVENT_READ | EVENT_WRITE) != 0 {
            return Err(PyValueError::new_err(format!("Invalid events: {events}")));
        }
        let (old_events, fileobj) = {
            let map = self.map.lock().expect("selector map");
            let Some(e) = map.get(&fd) else {
                return Err(PyKeyError::new_err(format!("{fd} is not registered")));
            };
            (e.events, fileobj.unwrap_or_else(|| e.fileobj.clone_ref(py)))
        };
        if old_events != events {
            self.epoll
                .modify(fd, epoll_bits(events))
                .map_err(PyErr::from)?;
        }
        let key = selector_key(py, &fileobj, fd, events, &data)?;
        let replaced = self.map.lock().expect("selector map").insert(
            fd,
            Entry {
                key: key.clone_ref(py),
                fileobj,
                events,
                data,
            },
        );
        drop(replaced);
        Ok(key)
    }

    fn unregister_fd(&self, fd: i32) -> Option<Py<PyAny>> {
        let entry = self.map.lock().expect("selector map").remove(&fd)?;
        // The descriptor may be closed already: epoll dropped it then.
        let _ = self.epoll.delete(fd);
        Some(entry.key)
    }

    /// Drains the ready set without blocking and appends the handles to
    /// run to `out` (a cancelled handle's interest is removed instead, as
    /// asyncio does).
    pub(crate) fn dispatch(
        &self,
        py: Python<'_>,
        scratch: &mut Vec<(i32, u32)>,
        out: &mut Vec<Py<PyAny>>,
        timeout_ms: i32,
    ) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Ok(());
        }
        scratch.clear();
        if timeout_ms != 0 {
            let ep = &self.epoll;
            let s = &mut *scratch;
            py.detach(|| ep.wait(s, timeout_ms))
        } else {
            self.epoll.wait(scratch, 0)
        }
        .map_err(PyErr::from)?;
        for &(fd, bits) in scratch.iter() {
            let mut ready = 0;
            if bits & !OUT != 0 {
                ready |= EVENT_READ;
            }
            if bits & !IN != 0 {
                ready |= EVENT_WRITE;
            }
            let (reader, writer, events) = {
                let map = self.map.lock().expect("selector map");
                let Some(e) = map.get(&fd) else { continue };
                let (r, w) = pair(py, &e.data);
                (r, w, e.events)
            };
            let ready = ready & events;
            for (which, h) in [(EVENT_READ, reader), (EVENT_WRITE, writer)] {
                if ready & which == 0 || h.is_none(py) {
                    continue;
                }
                if is_cancelled(py, &h) {
                    self.remove_fd_interest(py, fd, which)?;
                } else {
                    out.push(h);
                }
            }
        }
        Ok(())
    }
}

fn is_cancelled(py: Python<'_>, h: &Py<PyAny>) -> bool {
    match h.bind(py).cast::<Handle>() {
        Ok(n) => n.borrow().cancelled,
        Err(_) => h
            .bind(py)
            .getattr("_cancelled")
            .and_then(|c| c.is_truthy())
            .unwrap_or(false),
    }
}

/// The `(reader, writer)` pair of a key's data (None, None if not a pair).
fn pair(py: Python<'_>, data: &Py<PyAny>) -> (Py<PyAny>, Py<PyAny>) {
    match data.bind(py).cast::<PyTuple>() {
        Ok(t) if t.len() == 2 => (
            t.get_item(0)
                .map(Bound::unbind)
                .unwrap_or_else(|_| py.None()),
            t.get_item(1)
                .map(Bound::unbind)
                .unwrap_or_else(|_| py.None()),
        ),
        _ => (py.None(), py.None()),
    }
}

#[pymethods]
impl Selector {
    #[new]
    fn new() -> PyResult<Self> {
        Ok(Selector {
            epoll: Epoll::new().map_err(PyErr::from)?,
            map: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        })
    }

    /// Registers a file object for `events`; returns its `SelectorKey`.
    #[pyo3(signature = (fileobj, events, data = None))]
    fn register(
        &self,
        py: Python<'_>,
        fileobj: &Bound<'_, PyAny>,
        events: u32,
        data: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.check_open()?;
        let fd = fileno(fileobj)?;
        self.register_fd(
            py,
            fd,
            fileobj.clone().unbind(),
            events,
            data.unwrap_or_else(|| py.None()),
        )
    }

    /// Unregisters a file object; returns its key.
    fn unregister(&self, fileobj: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.check_open()?;
        let fd = self.lookup(fileobj)?;
        self.unregister_fd(fd)
            .ok_or_else(|| PyKeyError::new_err(format!("{fileobj} is not registered")))
    }

    /// Changes the events or data of a registered file object.
    #[pyo3(signature = (fileobj, events, data = None))]
    fn modify(
        &self,
        py: Python<'_>,
        fileobj: &Bound<'_, PyAny>,
        events: u32,
        data: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.check_open()?;
        let fd = self.lookup(fileobj)?;
        self.modify_fd(py, fd, None, events, data.unwrap_or_else(|| py.None()))
    }

    /// The key of a registered file object (KeyError if it is not).
    fn get_key(&self, py: Python<'_>, fileobj: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.check_open()?;
        let fd = self
            .lookup(fileobj)
            .map_err(|_| PyKeyError::new_err(format!("{fileobj} is not registered")))?;
        let map = self.map.lock().expect("selector map");
        map.get(&fd)
            .map(|e| e.key.clone_ref(py))
            .ok_or_else(|| PyKeyError::new_err(format!("{fileobj} is not registered")))
    }

    /// A dict from descriptors to keys.
    fn get_map<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (fd, e) in self.map.lock().expect("selector map").iter() {
            d.set_item(fd, e.key.clone_ref(py))?;
        }
        Ok(d)
    }

    /// Waits up to `timeout` seconds; returns `[(key, events)]`.
    #[pyo3(signature = (timeout = None))]
    fn select<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        self.check_open()?;
        let ms = match timeout {
            None => -1,
            Some(t) if t <= 0.0 => 0,
            Some(t) => (t * 1000.0).ceil().min(i32::MAX as f64) as i32,
        };
        let mut scratch = Vec::new();
        let ep = &self.epoll;
        py.detach(|| ep.wait(&mut scratch, ms))
            .map_err(PyErr::from)?;
        let out = PyList::empty(py);
        for (fd, bits) in scratch {
            let mut ready = 0;
            if bits & !OUT != 0 {
                ready |= EVENT_READ;
            }
            if bits & !IN != 0 {
                ready |= EVENT_WRITE;
            }
            let map = self.map.lock().expect("selector map");
            if let Some(e) = map.get(&fd) {
                out.append((e.key.clone_ref(py), ready & e.events))?;
            }
        }
        Ok(out)
    }

    /// The epoll set's descriptor.
    fn fileno(&self) -> i32 {
        self.epoll.raw()
    }

    /// Forgets every registration (the epoll set closes with the object).
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let drained: Vec<Entry> = self
            .map
            .lock()
            .expect("selector map")
            .drain()
            .map(|(_, e)| e)
            .collect();
        drop(drained);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, _a: Py<PyAny>, _b: Py<PyAny>, _c: Py<PyAny>) {
        self.close();
    }
}

impl Selector {
    pub(crate) fn raw_fd(&self) -> i32 {
        self.epoll.raw()
    }
}
