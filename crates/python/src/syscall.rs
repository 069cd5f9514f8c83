//! The awaitables: native objects a Python task yields to make a system call.
//!
//! `await tiffany.sleep(1)` builds a [`Syscall`] object; its `__await__` is
//! itself, and its first `__next__` yields itself up through the coroutine's
//! frames to the driver ([`crate::body`]), which turns it into a kernel
//! [`SystemCall`](tiffany_scheduler::SystemCall). The driver resumes the
//! coroutine with the answer: `None` ends the await through `__next__`, any
//! other value through `send`, and a failure is thrown into the coroutine at its
//! `await`. A generator task may `yield` the same objects directly, pyos style.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;

/// What a [`Syscall`] asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kind {
    Yield,
    Sleep(f64),
    Join {
        target: u64,
        sched: u64,
        timeout: Option<f64>,
    },
    GetTid,
    Admit,
    Shutdown(f64),
    /// Wait for a file descriptor (registered by the driver for the wait).
    Io {
        fd: i32,
        writable: bool,
        timeout: Option<f64>,
    },
    /// Wait for a kernel event (`tiffany.Event`) of scheduler `sched`.
    EventWait {
        event: u64,
        sched: u64,
    },
    /// Wait for an in-memory channel (a completion from another thread).
    Channel {
        token: u64,
    },
    /// A socket operation the driver performs natively ([`crate::sockets`]):
    /// the socket is the object's `owner`, the bytes to send its `data`.
    Sock(crate::sockets::SockKind),
}

/// A system call, awaitable from a coroutine or yieldable from a generator.
///
/// On the Python side this is `tiffany._native.Syscall`, a type built at the
/// C level (not a PyO3 class) so that an `await` costs no method lookup, no
/// exception and no allocation beyond the object itself: its `am_send` slot
/// answers `PyIter_Send` directly. The protocol is stateless, so one object
/// can be awaited by many tasks (`yield_now()` returns a shared one):
///
/// - sent `None` (the start of an `await`): yield the object itself, up to the
///   driver;
/// - sent the driver's answer: return it as the value of the `await` (the
///   driver sends [`unit`] instead of `None`, which this maps back to `None`).
#[derive(Clone, Copy, Debug)]
pub struct Syscall {
    pub(crate) kind: Kind,
}

impl Syscall {
    pub(crate) fn new(kind: Kind) -> Self {
        Syscall { kind }
    }
    fn __repr__(&self) -> String {
        match self.kind {
            Kind::Yield => "<tiffany syscall yield>".into(),
            Kind::Sleep(s) => format!("<tiffany syscall sleep {s}>"),
            Kind::Join {
                target, timeout, ..
            } => match timeout {
                Some(t) => format!("<tiffany syscall join {target} timeout={t}>"),
                None => format!("<tiffany syscall join {target}>"),
            },
            Kind::GetTid => "<tiffany syscall get_tid>".into(),
            Kind::Admit => "<tiffany syscall admit>".into(),
            Kind::Shutdown(t) => format!("<tiffany syscall shutdown {t}>"),
            Kind::Io { fd, writable, .. } => format!(
                "<tiffany syscall wait_{} fd={fd}>",
                if writable { "writable" } else { "readable" }
            ),
            Kind::Channel { token } => format!("<tiffany syscall channel {token}>"),
            Kind::EventWait { event, .. } => format!("<tiffany syscall event_wait {event}>"),
            Kind::Sock(op) => format!("<tiffany syscall {}>", op.describe()),
        }
    }
}

#[repr(C)]
struct RawSyscall {
    ob_base: ffi::PyObject,
    kind: Kind,
    /// Owned references (or NULL): the socket of a socket operation, and
    /// the bytes it sends.
    owner: *mut ffi::PyObject,
    data: *mut ffi::PyObject,
}

/// The `Syscall` type object, the `unit` sentinel and the shared `yield` object.
static TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());
static UNIT: AtomicPtr<ffi::PyObject> = AtomicPtr::new(std::ptr::null_mut());
static YIELD: AtomicPtr<ffi::PyObject> = AtomicPtr::new(std::ptr::null_mut());

/// The value the driver sends for "no value" (the await then returns `None`).
pub(crate) fn unit() -> *mut ffi::PyObject {
    UNIT.load(Ordering::Relaxed)
}

/// The system call an object asks for, if it is a `Syscall`.
#[inline]
pub(crate) fn kind_of(obj: &Bound<'_, PyAny>) -> Option<Kind> {
    let ptr = obj.as_ptr();
    // SAFETY: reading the type pointer of a live object; the layout is ours
    // when the type matches.
    unsafe {
        if ffi::Py_TYPE(ptr) != TYPE.load(Ordering::Relaxed) {
            return None;
        }
        Some((*(ptr as *mut RawSyscall)).kind)
    }
}

/// The objects a socket-operation `Syscall` carries: its socket, and the
/// bytes to send (if any). `obj` must be a `Syscall` (see [`kind_of`]).
pub(crate) fn operands_of<'py>(
    obj: &Bound<'py, PyAny>,
) -> (Option<Bound<'py, PyAny>>, Option<Bound<'py, PyAny>>) {
    let py = obj.py();
    let raw = obj.as_ptr() as *mut RawSyscall;
    // SAFETY: the caller checked the type; the pointers are owned references
    // or NULL, and borrowing them for the object's lifetime is sound.
    unsafe {
        let own = |p: *mut ffi::PyObject| (!p.is_null()).then(|| Bound::from_borrowed_ptr(py, p));
        (own((*raw).owner), own((*raw).data))
    }
}

/// A socket-operation `Syscall` carrying `owner` (the socket) and `data`.
pub(crate) fn sock_syscall<'py>(
    owner: &Bound<'py, PyAny>,
    op: crate::sockets::SockKind,
    data: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    owned_syscall(owner, Kind::Sock(op), data)
}

/// A `Syscall` of kind `kind` carrying `owner` (the object it is about:
/// a socket, an `Event`, which it keeps alive) and `data`.
pub(crate) fn owned_syscall<'py>(
    owner: &Bound<'py, PyAny>,
    kind: Kind,
    data: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let obj = alloc(owner.py(), kind)?;
    let raw = obj.as_ptr() as *mut RawSyscall;
    // SAFETY: a fresh object of our type; we store owned references that
    // the dealloc releases.
    unsafe {
        (*raw).owner = owner.clone().into_ptr();
        (*raw).data = data.map_or(std::ptr::null_mut(), Bound::into_ptr);
    }
    Ok(obj)
}

impl<'py> IntoPyObject<'py> for Syscall {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if matches!(self.kind, Kind::Yield) {
            let shared = YIELD.load(Ordering::Relaxed);
            // SAFETY: the shared object lives for the whole process.
            return Ok(unsafe { Bound::from_borrowed_ptr(py, shared) });
        }
        alloc(py, self.kind)
    }
}

fn alloc<'py>(py: Python<'py>, kind: Kind) -> PyResult<Bound<'py, PyAny>> {
    let ty = TYPE.load(Ordering::Relaxed);
    // SAFETY: the type was created at module init; GenericAlloc returns a new,
    // zeroed object of our size (or NULL with an exception set).
    unsafe {
        let obj = ffi::PyType_GenericAlloc(ty, 0);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        let raw = obj as *mut RawSyscall;
        std::ptr::addr_of_mut!((*raw).kind).write(kind);
        std::ptr::addr_of_mut!((*raw).owner).write(std::ptr::null_mut());
        std::ptr::addr_of_mut!((*raw).data).write(std::ptr::null_mut());
        Ok(Bound::from_owned_ptr(py, obj))
    }
}

unsafe extern "C" fn syscall_dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: called by CPython with the last reference; a heap type's
    // instances own a reference to the type.
    unsafe {
        let raw = obj as *mut RawSyscall;
        ffi::Py_XDECREF((*raw).owner);
        ffi::Py_XDECREF((*raw).data);
        let ty = ffi::Py_TYPE(obj);
        let free = ffi::PyType_GetSlot(ty, ffi::Py_tp_free);
        let free: ffi::freefunc = std::mem::transmute(free);
        free(obj.cast());
        ffi::Py_DECREF(ty.cast());
    }
}

unsafe extern "C" fn syscall_self(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: returning a new reference to a live object.
    unsafe { ffi::Py_INCREF(obj) };
    obj
}

unsafe extern "C" fn syscall_am_send(
    obj: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // SAFETY: CPython passes live objects and a valid out pointer.
    unsafe {
        if arg.is_null() || arg == ffi::Py_None() {
            ffi::Py_INCREF(obj);
            *result = obj;
            return ffi::PySendResult::PYGEN_NEXT;
        }
        let value = if arg == unit() { ffi::Py_None() } else { arg };
        ffi::Py_INCREF(value);
        *result = value;
        ffi::PySendResult::PYGEN_RETURN
    }
}

/// `send(value)`, for callers that do not use `am_send` (CPython under a trace
/// function, or user code).
unsafe extern "C" fn syscall_send(
    obj: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: live objects; on the "return" path we set StopIteration(value).
    unsafe {
        if arg == ffi::Py_None() {
            ffi::Py_INCREF(obj);
            return obj;
        }
        if arg == unit() {
            ffi::PyErr_SetNone(ffi::PyExc_StopIteration);
            return std::ptr::null_mut();
        }
        let args = ffi::PyTuple_Pack(1, arg);
        if args.is_null() {
            return std::ptr::null_mut();
        }
        let exc = ffi::PyObject_CallObject(ffi::PyExc_StopIteration, args);
        ffi::Py_DECREF(args);
        if !exc.is_null() {
            ffi::PyErr_SetObject(ffi::PyExc_StopIteration, exc);
            ffi::Py_DECREF(exc);
        }
        std::ptr::null_mut()
    }
}

unsafe extern "C" fn syscall_repr(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: obj is one of ours (the slot belongs to our type).
    let kind = unsafe { (*(obj as *mut RawSyscall)).kind };
    let text = Syscall::new(kind).__repr__();
    // SAFETY: a valid UTF-8 buffer.
    unsafe { ffi::PyUnicode_FromStringAndSize(text.as_ptr().cast(), text.len() as ffi::Py_ssize_t) }
}

/// Creates the `Syscall` type and the shared objects; adds the type to `m`.
pub(crate) fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    if TYPE.load(Ordering::Relaxed).is_null() {
        let methods = Box::leak(Box::new([
            ffi::PyMethodDef {
                ml_name: c"send".as_ptr(),
                ml_meth: ffi::PyMethodDefPointer {
                    PyCFunction: syscall_send,
                },
                ml_flags: ffi::METH_O,
                ml_doc: c"Resume the await with a value (the scheduler's answer).".as_ptr(),
            },
            ffi::PyMethodDef::zeroed(),
        ]));
        let slots = Box::leak(Box::new([
            ffi::PyType_Slot { slot: ffi::Py_tp_dealloc, pfunc: syscall_dealloc as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_iter, pfunc: syscall_self as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_iternext, pfunc: syscall_self as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_am_await, pfunc: syscall_self as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_am_send, pfunc: syscall_am_send as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_repr, pfunc: syscall_repr as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_methods, pfunc: methods.as_mut_ptr().cast() },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_doc,
                pfunc: c"A tiffany system call: await it in a task (or yield it from a generator task).".as_ptr() as *mut c_void,
            },
            ffi::PyType_Slot { slot: 0, pfunc: std::ptr::null_mut() },
        ]));
        let spec = Box::leak(Box::new(ffi::PyType_Spec {
            name: c"tiffany._native.Syscall".as_ptr(),
            basicsize: std::mem::size_of::<RawSyscall>() as c_int,
            itemsize: 0,
            flags: ffi::Py_TPFLAGS_DEFAULT as c_uint,
            slots: slots.as_mut_ptr(),
        }));
        // SAFETY: a complete, 'static spec.
        let ty = unsafe { ffi::PyType_FromSpec(spec) };
        if ty.is_null() {
            return Err(PyErr::fetch(py));
        }
        TYPE.store(ty.cast(), Ordering::Relaxed);
        let sentinel = py.import("builtins")?.getattr("object")?.call0()?;
        UNIT.store(sentinel.into_ptr(), Ordering::Relaxed);
        let shared = alloc(py, Kind::Yield)?;
        YIELD.store(shared.into_ptr(), Ordering::Relaxed);
    }
    // SAFETY: the type object lives for the whole process.
    let ty = unsafe { Bound::from_borrowed_ptr(py, TYPE.load(Ordering::Relaxed).cast()) };
    m.add("Syscall", ty)
}

/// The longest duration the kernel's clock can represent, in seconds: its
/// timers count nanoseconds in 64 bits (about 584 years).
pub(crate) const MAX_SECONDS: f64 = 18_446_744_073.0;

/// A number of seconds checked by [`check_seconds`] as a `Duration`.
pub(crate) fn seconds(s: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(s).unwrap_or(std::time::Duration::MAX)
}

/// Checks a duration given in seconds: finite, not negative, and within the
/// clock's range (a longer one is refused, not silently shortened).
#[inline]
pub(crate) fn check_seconds(name: &str, s: f64) -> PyResult<f64> {
    // The range check is false for NaN; the message is built out of line,
    // so the check stays a couple of comparisons on `sleep`'s hot path.
    if (0.0..=MAX_SECONDS).contains(&s) {
        Ok(s)
    } else {
        Err(bad_seconds(name, s))
    }
}

/// The error [`check_seconds`] raises.
#[cold]
#[inline(never)]
fn bad_seconds(name: &str, s: f64) -> PyErr {
    if !s.is_finite() || s < 0.0 {
        PyValueError::new_err(format!(
            "{name} must be a finite number of seconds >= 0, got {s}"
        ))
    } else {
        pyo3::exceptions::PyOverflowError::new_err(format!(
            "{name} of {s} seconds is beyond the clock's range (at most {MAX_SECONDS} \
             seconds, about 584 years)"
        ))
    }
}

/// `await tiffany.sleep(seconds)`: sleep on the scheduler's clock.
///
/// A C function taking one argument (`METH_O`) rather than a PyO3 function:
/// it is called on every step of a task that sleeps or yields, and argument
/// parsing and a float conversion of an `int` cost more than the rest of the
/// call. `sleep(0)` is a yield (the kernel treats them alike): it returns the
/// shared yield object, with no allocation.
unsafe extern "C" fn sleep_raw(
    _module: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython passes one live argument; every path returns a new
    // reference or NULL with an exception set.
    unsafe {
        let seconds = if ffi::PyLong_CheckExact(arg) != 0 {
            let v = ffi::PyLong_AsLongLong(arg);
            if v == -1 && !ffi::PyErr_Occurred().is_null() {
                // Too large for 64 bits: as a float (refused below).
                ffi::PyErr_Clear();
                let f = ffi::PyFloat_AsDouble(arg);
                if f == -1.0 && !ffi::PyErr_Occurred().is_null() {
                    return std::ptr::null_mut();
                }
                f
            } else {
                v as f64
            }
        } else {
            let v = ffi::PyFloat_AsDouble(arg);
            if v == -1.0 && !ffi::PyErr_Occurred().is_null() {
                return std::ptr::null_mut();
            }
            v
        };
        let py = Python::assume_attached();
        let kind = match check_seconds("sleep()", seconds) {
            Ok(0.0) => Kind::Yield,
            Ok(s) => Kind::Sleep(s),
            Err(e) => {
                e.restore(py);
                return std::ptr::null_mut();
            }
        };
        match Syscall::new(kind).into_pyobject(py) {
            Ok(obj) => obj.into_ptr(),
            Err(e) => {
                e.restore(py);
                std::ptr::null_mut()
            }
        }
    }
}

/// Adds `sleep` to the module (see [`sleep_raw`]).
pub(crate) fn add_sleep(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let def = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: c"sleep".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunction: sleep_raw,
        },
        ml_flags: ffi::METH_O,
        ml_doc: c"sleep(seconds, /)\n--\n\n`await tiffany.sleep(seconds)`: sleep on the scheduler's clock; `sleep(0)` yields.".as_ptr(),
    }));
    let py = m.py();
    // SAFETY: a 'static method definition; the module object is live.
    let f = unsafe {
        let name = pyo3::types::PyString::new(py, "tiffany._native");
        let raw = ffi::PyCFunction_NewEx(def, std::ptr::null_mut(), name.as_ptr());
        Bound::from_owned_ptr_or_err(py, raw)?
    };
    m.add("sleep", f)
}

/// `await tiffany.yield_now()`: go behind every ready task of the same priority.
#[pyfunction]
pub fn yield_now() -> Syscall {
    Syscall::new(Kind::Yield)
}

/// `tid = yield tiffany.GetTid()`: the current task's id (pyos style).
#[pyfunction(name = "GetTid")]
pub fn get_tid() -> Syscall {
    Syscall::new(Kind::GetTid)
}

/// `await tiffany.admit()`: wait at the back-pressure admission gate.
#[pyfunction]
pub fn admit() -> Syscall {
    Syscall::new(Kind::Admit)
}

/// `await tiffany.shutdown(timeout)`: shut the scheduler down from a task.
#[pyfunction]
pub fn shutdown(timeout: f64) -> PyResult<Syscall> {
    Ok(Syscall::new(Kind::Shutdown(check_seconds(
        "shutdown() timeout",
        timeout,
    )?)))
}

/// The file descriptor of an int or of an object with `fileno()`.
pub(crate) fn fd_of(obj: &Bound<'_, PyAny>) -> PyResult<i32> {
    // An int is checked first: trying to extract one from a socket would
    // build (and drop) a TypeError on every call.
    let fd: i64 = if obj.is_instance_of::<pyo3::types::PyInt>() {
        obj.extract()?
    } else {
        obj.call_method0(pyo3::intern!(obj.py(), "fileno"))
            .map_err(|_| {
                pyo3::exceptions::PyTypeError::new_err(
                    "expected a file descriptor (int) or an object with fileno()",
                )
            })?
            .extract()?
    };
    if fd < 0 || fd > i32::MAX as i64 {
        return Err(PyValueError::new_err(format!(
            "invalid file descriptor {fd} (closed socket?)"
        )));
    }
    Ok(fd as i32)
}

fn io_wait(obj: &Bound<'_, PyAny>, writable: bool, timeout: Option<f64>) -> PyResult<Syscall> {
    let fd = fd_of(obj)?;
    let timeout = timeout.map(|t| check_seconds("timeout", t)).transpose()?;
    Ok(Syscall::new(Kind::Io {
        fd,
        writable,
        timeout,
    }))
}

/// `await tiffany.wait_readable(fd_or_fileobj, timeout=None)`: wait until
/// readable; raises `TimeoutError` if the timeout passes first.
#[pyfunction]
#[pyo3(signature = (fd, timeout = None))]
pub fn wait_readable(fd: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<Syscall> {
    io_wait(fd, false, timeout)
}

/// `await tiffany.wait_writable(fd_or_fileobj, timeout=None)`: wait until
/// writable; raises `TimeoutError` if the timeout passes first.
#[pyfunction]
#[pyo3(signature = (fd, timeout = None))]
pub fn wait_writable(fd: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<Syscall> {
    io_wait(fd, true, timeout)
}
