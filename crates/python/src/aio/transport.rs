//! `tiffany._native.StreamTransportCore`: the socket I/O of
//! `tiffany.EventLoop`'s TCP and Unix stream transports.
//!
//! The transport object a protocol sees is `tiffany._transport.SocketTransport`
//! (Python, so that it is an `asyncio.Transport` and a `_FlowControlMixin`,
//! as the stdlib's `sendfile` fallback requires); everything on the path of
//! the bytes is here:
//!
//! - **reading**: on readiness, one `recv` into a per-thread 256 KiB buffer,
//!   one `bytes` of the received size, and `protocol.data_received` called
//!   directly (or, for a `BufferedProtocol`, `recv` straight into the buffer
//!   `get_buffer` returned, then `buffer_updated`). The loop's epoll set is
//!   level-triggered: a short read needs no second `recv` to see `EAGAIN`,
//!   and nothing is re-armed;
//! - **writing**: `write` sends at once while nothing is buffered; what the
//!   socket does not take is buffered here, and only then does the transport
//!   watch for writability; flow control (`pause_writing`/`resume_writing`
//!   at the high and low water marks) is counted on that buffer;
//! - **closing**: `close` (after the buffer drains), `abort`, errors, the
//!   peer's EOF (`eof_received`), and `connection_lost` exactly once, with
//!   the error that ended the connection.
//!
//! The semantics are those of the stdlib's `_SelectorSocketTransport`:
//! exceptions from protocol callbacks go to the loop's exception handler
//! (`OSError`s only to the debug log) and close the transport;
//! `KeyboardInterrupt` and `SystemExit` end the loop.

use std::cell::RefCell;
use std::ffi::CStr;

use pyo3::exceptions::{
    PyConnectionError, PyKeyboardInterrupt, PyOSError, PyRuntimeError, PySystemExit, PyTypeError,
};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView};
use pyo3::{PyTraverseError, PyVisit, ffi};

use super::handle::call_in_context;

/// How much one `recv` reads at most (the stdlib's `max_size`).
const MAX_READ: usize = 256 * 1024;

/// After this many writes to a lost connection, each one logs a warning
/// (asyncio's `LOG_THRESHOLD_FOR_CONNLOST_WRITES`).
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

thread_local! {
    /// The buffer every transport of this thread reads into before the
    /// bytes are copied into a `bytes` of their size.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; MAX_READ].into_boxed_slice());
}

/// One `recv` on `fd` into the thread's scratch buffer, copied into a
/// `bytes` of the received size; `Err(0)` at the peer's EOF, else the errno.
fn recv_bytes(py: Python<'_>, fd: i32) -> Result<Bound<'_, PyBytes>, i32> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        // SAFETY: the scratch buffer is MAX_READ writable bytes.
        let n = unsafe { libc::recv(fd, scratch.as_mut_ptr().cast(), scratch.len(), 0) };
        if n <= 0 {
            return Err(if n == 0 { 0 } else { errno() });
        }
        Ok(PyBytes::new(py, &scratch[..n as usize]))
    })
}

/// A Python `OSError` for `errno` (the constructor picks the subclass:
/// `ConnectionResetError`, `BrokenPipeError`, ...).
fn os_error(errno: i32) -> PyErr {
    // SAFETY: strerror returns a valid C string (a static or thread-local
    // buffer) for any errno; it is copied at once.
    let msg = unsafe { CStr::from_ptr(libc::strerror(errno)) }
        .to_string_lossy()
        .into_owned();
    PyOSError::new_err((errno, msg))
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn would_block(e: i32) -> bool {
    e == libc::EAGAIN || e == libc::EWOULDBLOCK || e == libc::EINTR
}

/// Whether an error must end the loop rather than the connection.
fn is_fatal(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

/// A contiguous buffer borrowed from a bytes-like object (released on drop).
struct View {
    view: Box<ffi::Py_buffer>,
}

impl View {
    fn get(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<View> {
        // SAFETY: an all-zero Py_buffer is the documented initial state;
        // PyObject_GetBuffer fills it or fails (and then it is not released).
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        let flags = if writable {
            ffi::PyBUF_WRITABLE
        } else {
            ffi::PyBUF_SIMPLE
        };
        // SAFETY: `obj` is a live object and `view` a valid Py_buffer.
        let r = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) };
        if r != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(View { view })
    }

    fn len(&self) -> usize {
        self.view.len.max(0) as usize
    }

    fn ptr(&self) -> *mut u8 {
        self.view.buf.cast()
    }

    fn as_slice(&self) -> &[u8] {
        if self.len() == 0 {
            return &[];
        }
        // SAFETY: a simple buffer is `len` contiguous bytes at `buf`, valid
        // until released (on drop, after this borrow).
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len()) }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: the view was filled by PyObject_GetBuffer; views are only
        // made and dropped with the GIL held (inside transport methods).
        unsafe { ffi::PyBuffer_Release(&mut *self.view) };
    }
}

/// `asyncio.BufferedProtocol`, looked up once.
fn buffered_protocol_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static CLS: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    CLS.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("asyncio")?.getattr("BufferedProtocol")?.unbind())
    })
    .map(|c| c.bind(py))
}

fn asyncio_logger(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("asyncio.log")?.getattr("logger")
}

/// What a write did.
enum Written {
    /// All sent (or nothing to send, or dropped after the connection was lost).
    Sent,
    /// Dropped after the connection was lost, often enough to warn.
    Lost,
    /// `send` failed with this errno.
    Failed(i32),
    /// Some is buffered; `first`: the buffer was empty before.
    Buffered { first: bool },
}

/// Sends an error to the loop's exception handler, as the stdlib's
/// transports do.
fn report(
    lp: &Bound<'_, PyAny>,
    message: &str,
    exc: Py<PyAny>,
    transport: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
) -> PyResult<()> {
    let py = lp.py();
    let context = PyDict::new(py);
    context.set_item("message", message)?;
    context.set_item("exception", exc)?;
    context.set_item("transport", transport)?;
    context.set_item("protocol", protocol)?;
    lp.call_method1(intern!(py, "call_exception_handler"), (context,))?;
    Ok(())
}

/// The socket I/O and state of one stream transport.
#[pyclass(module = "tiffany._native", name = "StreamTransportCore")]
pub struct StreamCore {
    fd: i32,
    /// The loop, the Python transport and the protocol: dropped when the
    /// connection is lost (so the transport and its core make no cycle).
    loop_: Option<Py<PyAny>>,
    transport: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    /// The protocol is a `BufferedProtocol`.
    buffered: bool,
    /// `protocol.data_received`, looked up once per protocol (as uvloop
    /// does): the read path calls it with no attribute lookup.
    data_received: Option<Py<PyAny>>,
    /// Bytes not yet sent: `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    /// Set when `connection_lost` is scheduled; then counts writes.
    conn_lost: u32,
    closing: bool,
    /// `pause_reading` was called.
    paused: bool,
    /// `write_eof` was called.
    eof: bool,
    high: usize,
    low: usize,
    protocol_paused: bool,
    /// A future resolved when the buffer is empty (the stdlib's `sendfile`).
    empty_waiter: Option<Py<PyAny>>,
}

impl StreamCore {
    fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    fn clear_buffer(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    fn is_reading(&self) -> bool {
        !self.closing && !self.paused
    }

    fn the_loop<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.loop_.as_ref().map(|l| l.bind(py).clone())
    }

    fn set_protocol_inner(&mut self, py: Python<'_>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        self.buffered = protocol.is_instance(buffered_protocol_type(py)?)?;
        self.data_received = if self.buffered {
            None
        } else {
            // A protocol without one fails when data comes, as in asyncio.
            protocol
                .getattr(intern!(py, "data_received"))
                .ok()
                .map(Bound::unbind)
        };
        self.protocol = Some(protocol.clone().unbind());
        Ok(())
    }
}

/// The transport's methods that take `slf` (they call into Python, so they
/// never hold a borrow of the core while they do).
impl StreamCore {
    fn bound_method<'py>(slf: &Bound<'py, Self>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        slf.getattr(name)
    }

    fn add_reader(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (lp, fd) = {
            let me = slf.borrow();
            if !me.is_reading() {
                return Ok(());
            }
            (me.the_loop(py), me.fd)
        };
        if let Some(lp) = lp {
            // The core itself is the reader's callback: the loop sees it and
            // reads through `read_ready_in` with no Python call in between
            // (calling the core does the same, for any other caller).
            lp.call_method1(intern!(py, "_add_reader"), (fd, slf))?;
        }
        Ok(())
    }

    /// The socket is readable (the loop's direct path): one `recv` into the
    /// scratch buffer, one `bytes`, and `context.run(data_received, data)`
    /// as one vectorcall. A `BufferedProtocol`, the peer's EOF and errors
    /// take the general path (`_read_ready` and the callbacks it calls,
    /// run in `context`).
    pub(crate) fn read_ready_in(slf: &Bound<'_, Self>, context: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (fd, data_received) = {
            let me = slf.borrow();
            if me.conn_lost > 0 {
                return Ok(());
            }
            match (&me.protocol, &me.data_received, me.buffered) {
                (Some(_), Some(dr), false) => (me.fd, dr.clone_ref(py).into_bound(py)),
                _ => {
                    drop(me);
                    let read = Self::bound_method(slf, "_read_ready")?;
                    return call_in_context(py, context, &read, &[]);
                }
            }
        };
        let got = recv_bytes(py, fd);
        match got {
            Ok(data) => match call_in_context(py, context, &data_received, &[data.as_any()]) {
                Ok(()) => Ok(()),
                Err(e) => Self::callback_failed(
                    slf,
                    e,
                    "Fatal error: protocol.data_received() call failed.",
                ),
            },
            Err(e) if e != 0 && would_block(e) => Ok(()),
            Err(e) => {
                let after = Self::bound_method(slf, "_read_ended")?;
                let e = e.into_pyobject(py)?;
                call_in_context(py, context, &after, &[e.as_any()])
            }
        }
    }

    fn loop_call(slf: &Bound<'_, Self>, method: &Bound<'_, pyo3::types::PyString>) -> PyResult<()> {
        let (lp, fd) = {
            let me = slf.borrow();
            (me.the_loop(slf.py()), me.fd)
        };
        if let Some(lp) = lp {
            lp.call_method1(method, (fd,))?;
        }
        Ok(())
    }

    /// A protocol callback failed: `KeyboardInterrupt` and `SystemExit`
    /// propagate, anything else is a fatal error of the transport.
    fn callback_failed(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if is_fatal(py, &err) {
            return Err(err);
        }
        Self::fatal_error(slf, err.into_value(py).into_any(), message)
    }

    fn fatal_error(slf: &Bound<'_, Self>, exc: Py<PyAny>, message: &str) -> PyResult<()> {
        let py = slf.py();
        let (lp, transport, protocol) = {
            let me = slf.borrow();
            (
                me.the_loop(py),
                me.transport.as_ref().map(|t| t.clone_ref(py)),
                me.protocol.as_ref().map(|p| p.clone_ref(py)),
            )
        };
        if let Some(lp) = &lp {
            if exc.bind(py).is_instance_of::<PyOSError>() {
                if lp.call_method0(intern!(py, "get_debug"))?.is_truthy()? {
                    let kwargs = PyDict::new(py);
                    kwargs.set_item("exc_info", exc.clone_ref(py))?;
                    asyncio_logger(py)?.call_method(
                        "debug",
                        ("%r: %s", transport, message),
                        Some(&kwargs),
                    )?;
                }
            } else {
                report(lp, message, exc.clone_ref(py), transport, protocol)?;
            }
        }
        Self::force_close(slf, Some(exc))
    }

    fn force_close(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let (lp, fd, had_buffer, was_closing) = {
            let mut me = slf.borrow_mut();
            if me.conn_lost > 0 {
                return Ok(());
            }
            let had_buffer = me.pending() > 0;
            me.clear_buffer();
            let was_closing = me.closing;
            me.closing = true;
            me.conn_lost += 1;
            (me.the_loop(py), me.fd, had_buffer, was_closing)
        };
        let Some(lp) = lp else { return Ok(()) };
        if had_buffer {
            lp.call_method1(intern!(py, "_remove_writer"), (fd,))?;
        }
        if !was_closing {
            lp.call_method1(intern!(py, "_remove_reader"), (fd,))?;
        }
        let cb = Self::bound_method(slf, "_call_connection_lost")?;
        lp.call_method1(intern!(py, "call_soon"), (cb, exc))?;
        Ok(())
    }

    fn read_buffered(slf: &Bound<'_, Self>, fd: i32, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let got = protocol
            .call_method1(intern!(py, "get_buffer"), (-1,))
            .and_then(|buf| {
                let view = View::get(&buf, true)?;
                if view.len() == 0 {
                    return Err(PyRuntimeError::new_err(
                        "get_buffer() returned an empty buffer",
                    ));
                }
                Ok(view)
            });
        let view = match got {
            Ok(v) => v,
            Err(e) => {
                return Self::callback_failed(
                    slf,
                    e,
                    "Fatal error: protocol.get_buffer() call failed.",
                );
            }
        };
        // SAFETY: the view is `len` writable bytes, held until it drops.
        let n = unsafe { libc::recv(fd, view.ptr().cast(), view.len(), 0) };
        drop(view);
        if n < 0 {
            let e = errno();
            if would_block(e) {
                return Ok(());
            }
            return Self::fatal_error(
                slf,
                os_error(e).into_value(py).into_any(),
                "Fatal read error on socket transport",
            );
        }
        if n == 0 {
            return Self::on_eof(slf, protocol);
        }
        if let Err(e) = protocol.call_method1(intern!(py, "buffer_updated"), (n,)) {
            return Self::callback_failed(
                slf,
                e,
                "Fatal error: protocol.buffer_updated() call failed.",
            );
        }
        Ok(())
    }

    fn on_eof(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let keep_open = match protocol
            .call_method0(intern!(py, "eof_received"))
            .and_then(|r| r.is_truthy())
        {
            Ok(k) => k,
            Err(e) => {
                return Self::callback_failed(
                    slf,
                    e,
                    "Fatal error: protocol.eof_received() call failed.",
                );
            }
        };
        if keep_open {
            // Nothing more to read, but the protocol may still write.
            Self::loop_call(slf, intern!(py, "_remove_reader"))
        } else {
            Self::close(slf)
        }
    }

    /// Sends what it can of `data` now and buffers the rest; calls no
    /// Python code (`data` may be a buffer borrowed from a bytearray), so
    /// what follows is done by [`StreamCore::after_write`].
    fn send_or_buffer(&mut self, data: &[u8]) -> PyResult<Written> {
        if self.eof {
            return Err(PyRuntimeError::new_err(
                "Cannot call write() after write_eof()",
            ));
        }
        if self.empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err(
                "unable to write; sendfile is in progress",
            ));
        }
        if data.is_empty() {
            return Ok(Written::Sent);
        }
        if self.conn_lost > 0 {
            let warn = self.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES;
            self.conn_lost += 1;
            return Ok(if warn { Written::Lost } else { Written::Sent });
        }
        let mut sent = 0;
        let first = self.pending() == 0;
        if first {
            // SAFETY: `data` is a valid slice for the call.
            let n = unsafe {
                libc::send(
                    self.fd,
                    data.as_ptr().cast(),
                    data.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = errno();
                if !would_block(e) {
                    return Ok(Written::Failed(e));
                }
            } else {
                sent = n as usize;
                if sent == data.len() {
                    return Ok(Written::Sent);
                }
            }
        }
        self.buf.extend_from_slice(&data[sent..]);
        Ok(Written::Buffered { first })
    }

    /// What follows a write: the error, the writer's registration, flow control.
    fn after_write(slf: &Bound<'_, Self>, written: Written) -> PyResult<()> {
        let py = slf.py();
        match written {
            Written::Sent => Ok(()),
            Written::Lost => {
                asyncio_logger(py)?
                    .call_method1("warning", ("socket.send() raised exception.",))?;
                Ok(())
            }
            Written::Failed(e) => Self::fatal_error(
                slf,
                os_error(e).into_value(py).into_any(),
                "Fatal write error on socket transport",
            ),
            Written::Buffered { first } => {
                if first {
                    let (lp, fd) = {
                        let me = slf.borrow();
                        (me.the_loop(py), me.fd)
                    };
                    if let Some(lp) = lp {
                        let cb = Self::bound_method(slf, "_write_ready")?;
                        lp.call_method1(intern!(py, "_add_writer"), (fd, cb))?;
                    }
                }
                Self::maybe_pause_protocol(slf)
            }
        }
    }

    fn shutdown_write(fd: i32) -> PyResult<()> {
        // SAFETY: plain system call on the transport's descriptor.
        if unsafe { libc::shutdown(fd, libc::SHUT_WR) } < 0 {
            return Err(os_error(errno()));
        }
        Ok(())
    }

    /// Calls `protocol.<method>()` for flow control; a failure goes to the
    /// loop's exception handler with `message`.
    fn flow_callback(slf: &Bound<'_, Self>, method: &str, message: &str) -> PyResult<()> {
        let py = slf.py();
        let (protocol, lp, transport) = {
            let me = slf.borrow();
            (
                me.protocol.as_ref().map(|p| p.clone_ref(py)),
                me.the_loop(py),
                me.transport.as_ref().map(|t| t.clone_ref(py)),
            )
        };
        let Some(protocol) = protocol else {
            return Ok(());
        };
        if let Err(e) = protocol.bind(py).call_method0(method) {
            if is_fatal(py, &e) {
                return Err(e);
            }
            if let Some(lp) = lp {
                report(
                    &lp,
                    message,
                    e.into_value(py).into_any(),
                    transport,
                    Some(protocol),
                )?;
            }
        }
        Ok(())
    }

    fn maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        {
            let mut me = slf.borrow_mut();
            if me.pending() <= me.high || me.protocol_paused {
                return Ok(());
            }
            me.protocol_paused = true;
        }
        Self::flow_callback(slf, "pause_writing", "protocol.pause_writing() failed")
    }

    fn maybe_resume_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        {
            let mut me = slf.borrow_mut();
            if !me.protocol_paused || me.pending() > me.low {
                return Ok(());
            }
            me.protocol_paused = false;
        }
        Self::flow_callback(slf, "resume_writing", "protocol.resume_writing() failed")
    }

    fn resolve_empty_waiter(
        py: Python<'_>,
        waiter: Option<Py<PyAny>>,
        exc: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let Some(w) = waiter else { return Ok(()) };
        let w = w.bind(py);
        if w.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        match exc {
            Some(e) => w.call_method1(intern!(py, "set_exception"), (e,))?,
            None => w.call_method1(intern!(py, "set_result"), (py.None(),))?,
        };
        Ok(())
    }
}

#[pymethods]
impl StreamCore {
    /// The core of a transport over the connected, non-blocking socket
    /// `fd`, for `transport` (the Python object protocols see) on `loop`.
    #[new]
    fn new(
        py: Python<'_>,
        r#loop: Py<PyAny>,
        transport: Py<PyAny>,
        fd: i32,
        protocol: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let mut core = StreamCore {
            fd,
            loop_: Some(r#loop),
            transport: Some(transport),
            protocol: None,
            buffered: false,
            data_received: None,
            buf: Vec::new(),
            start: 0,
            conn_lost: 0,
            closing: false,
            paused: false,
            eof: false,
            high: 64 * 1024,
            low: 16 * 1024,
            protocol_paused: false,
            empty_waiter: None,
        };
        core.set_protocol_inner(py, protocol)?;
        Ok(core)
    }

    /// Starts reading (after `connection_made`), unless paused or closing.
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::add_reader(slf)
    }

    /// The socket is readable: one `recv`, then the protocol's callback.
    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (fd, buffered, protocol) = {
            let me = slf.borrow();
            if me.conn_lost > 0 {
                return Ok(());
            }
            let Some(p) = me.protocol.as_ref() else {
                return Ok(());
            };
            (me.fd, me.buffered, p.clone_ref(py))
        };
        let protocol = protocol.into_bound(py);
        if buffered {
            return Self::read_buffered(slf, fd, &protocol);
        }
        let got = recv_bytes(py, fd);
        match got {
            Ok(data) => {
                if let Err(e) = protocol.call_method1(intern!(py, "data_received"), (data,)) {
                    return Self::callback_failed(
                        slf,
                        e,
                        "Fatal error: protocol.data_received() call failed.",
                    );
                }
                Ok(())
            }
            Err(0) => Self::on_eof(slf, &protocol),
            Err(e) if would_block(e) => Ok(()),
            Err(e) => Self::fatal_error(
                slf,
                os_error(e).into_value(py).into_any(),
                "Fatal read error on socket transport",
            ),
        }
    }

    /// What the direct read path does when `recv` answered 0 (the peer's
    /// EOF) or failed with `errno`.
    fn _read_ended(slf: &Bound<'_, Self>, errno: i32) -> PyResult<()> {
        let py = slf.py();
        let protocol = slf.borrow().protocol.as_ref().map(|p| p.clone_ref(py));
        let Some(protocol) = protocol else {
            return Ok(());
        };
        if errno == 0 {
            return Self::on_eof(slf, protocol.bind(py));
        }
        Self::fatal_error(
            slf,
            os_error(errno).into_value(py).into_any(),
            "Fatal read error on socket transport",
        )
    }

    /// Calling the core is `_read_ready` (it is the reader's callback).
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::_read_ready(slf)
    }

    /// The socket is writable and data is buffered: send what it takes.
    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let sent = {
            let mut me = slf.borrow_mut();
            if me.conn_lost > 0 || me.pending() == 0 {
                return Ok(());
            }
            let pending = &me.buf[me.start..];
            // SAFETY: `pending` is a valid slice for the call.
            let n = unsafe {
                libc::send(
                    me.fd,
                    pending.as_ptr().cast(),
                    pending.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = errno();
                if would_block(e) {
                    return Ok(());
                }
                me.clear_buffer();
                Err(e)
            } else {
                me.consume(n as usize);
                Ok(())
            }
        };
        if let Err(e) = sent {
            Self::loop_call(slf, intern!(py, "_remove_writer"))?;
            let exc = os_error(e).into_value(py).into_any();
            Self::fatal_error(
                slf,
                exc.clone_ref(py),
                "Fatal write error on socket transport",
            )?;
            let waiter = slf.borrow().empty_waiter.as_ref().map(|w| w.clone_ref(py));
            return Self::resolve_empty_waiter(py, waiter, Some(exc));
        }
        Self::maybe_resume_protocol(slf)?; // may write more
        let (empty, closing, eof, fd, waiter) = {
            let me = slf.borrow();
            (
                me.pending() == 0,
                me.closing,
                me.eof,
                me.fd,
                me.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
            )
        };
        if empty {
            Self::loop_call(slf, intern!(py, "_remove_writer"))?;
            Self::resolve_empty_waiter(py, waiter, None)?;
            if closing {
                Self::_call_connection_lost(slf, None)?;
            } else if eof {
                Self::shutdown_write(fd)?;
            }
        }
        Ok(())
    }

    /// Sends `data` (bytes, bytearray or memoryview): at once if nothing is
    /// buffered, the rest when the socket is writable.
    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(b) = data.cast::<PyBytes>() {
            let written = slf.borrow_mut().send_or_buffer(b.as_bytes())?;
            return Self::after_write(slf, written);
        }
        if !(data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()) {
            let name = data.get_type().name()?;
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not '{name}'"
            )));
        }
        let written = {
            let view = View::get(data, false)?;
            slf.borrow_mut().send_or_buffer(view.as_slice())?
        };
        Self::after_write(slf, written)
    }

    /// Writes the concatenation of an iterable of bytes-like objects.
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let joined = PyBytes::new(py, b"").call_method1(intern!(py, "join"), (list_of_data,))?;
        Self::write(slf, &joined)
    }

    /// Closes the write side once the buffer is sent.
    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let fd = {
            let mut me = slf.borrow_mut();
            if me.closing || me.eof {
                return Ok(());
            }
            me.eof = true;
            if me.pending() > 0 {
                return Ok(());
            }
            me.fd
        };
        Self::shutdown_write(fd)
    }

    /// Always true: stream sockets can half-close.
    fn can_write_eof(&self) -> bool {
        true
    }

    /// Closes the transport: reading stops at once, `connection_lost(None)`
    /// is called once the buffer is sent.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (lp, fd, drained) = {
            let mut me = slf.borrow_mut();
            if me.closing {
                return Ok(());
            }
            me.closing = true;
            let drained = me.pending() == 0;
            if drained {
                me.conn_lost += 1;
            }
            (me.the_loop(py), me.fd, drained)
        };
        let Some(lp) = lp else { return Ok(()) };
        lp.call_method1(intern!(py, "_remove_reader"), (fd,))?;
        if drained {
            lp.call_method1(intern!(py, "_remove_writer"), (fd,))?;
            let cb = Self::bound_method(slf, "_call_connection_lost")?;
            lp.call_method1(intern!(py, "call_soon"), (cb, py.None()))?;
        }
        Ok(())
    }

    /// Closes at once: the buffer is dropped, `connection_lost(None)` follows.
    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, None)
    }

    /// Closes at once with `exc` for `connection_lost`.
    #[pyo3(signature = (exc))]
    fn _force_close(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        Self::force_close(slf, exc)
    }

    /// Reports `exc` (as the stdlib does) and closes at once.
    #[pyo3(signature = (exc, message = "Fatal error on transport"))]
    fn _fatal_error(slf: &Bound<'_, Self>, exc: Py<PyAny>, message: &str) -> PyResult<()> {
        Self::fatal_error(slf, exc, message)
    }

    /// Calls `protocol.connection_lost(exc)`, then closes the socket (through
    /// the Python transport) and lets go of the loop and the protocol.
    #[pyo3(signature = (exc))]
    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let protocol = slf.borrow().protocol.as_ref().map(|p| p.clone_ref(py));
        let lost = match protocol {
            Some(p) => p
                .bind(py)
                .call_method1(intern!(py, "connection_lost"), (exc,))
                .map(drop),
            None => Ok(()),
        };
        let (transport, waiter, protocol) = {
            let mut me = slf.borrow_mut();
            me.loop_ = None;
            me.data_received = None;
            (
                me.transport.take(),
                me.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                me.protocol.take(),
            )
        };
        drop(protocol);
        let finished = match transport {
            Some(t) => t
                .bind(py)
                .call_method0(intern!(py, "_finish_close"))
                .map(drop),
            None => Ok(()),
        };
        lost?;
        finished?;
        let closed = PyConnectionError::new_err("Connection is closed by peer");
        Self::resolve_empty_waiter(py, waiter, Some(closed.into_value(py).into_any()))
    }

    /// Whether the transport is closing or closed.
    fn is_closing(&self) -> bool {
        self.closing
    }

    /// Whether the transport is reading (not closing, not paused).
    #[pyo3(name = "is_reading")]
    fn py_is_reading(&self) -> bool {
        self.is_reading()
    }

    /// Stops reading until `resume_reading`.
    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        {
            let mut me = slf.borrow_mut();
            if !me.is_reading() {
                return Ok(());
            }
            me.paused = true;
        }
        Self::loop_call(slf, intern!(slf.py(), "_remove_reader"))
    }

    /// Resumes reading after `pause_reading`.
    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        {
            let mut me = slf.borrow_mut();
            if me.closing || !me.paused {
                return Ok(());
            }
            me.paused = false;
        }
        Self::add_reader(slf)
    }

    /// Sets the protocol (a `BufferedProtocol` is read into its buffers).
    fn set_protocol(&mut self, py: Python<'_>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_protocol_inner(py, protocol)
    }

    /// The current protocol (None once the connection is lost).
    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.protocol.as_ref().map(|p| p.clone_ref(py))
    }

    /// How many bytes are buffered, not yet sent.
    fn get_write_buffer_size(&self) -> usize {
        self.pending()
    }

    /// Sets the water marks (validated by the Python transport).
    fn _set_limits(&mut self, high: usize, low: usize) {
        self.high = high;
        self.low = low;
    }

    /// Calls `protocol.pause_writing()` if the buffer is above the high mark.
    fn _maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::maybe_pause_protocol(slf)
    }

    /// Calls `protocol.resume_writing()` if paused and at or below the low mark.
    fn _maybe_resume_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::maybe_resume_protocol(slf)
    }

    #[getter]
    fn _protocol_paused(&self) -> bool {
        self.protocol_paused
    }

    #[setter(_protocol_paused)]
    fn set_protocol_paused(&mut self, value: bool) {
        self.protocol_paused = value;
    }

    #[getter]
    fn _conn_lost(&self) -> u32 {
        self.conn_lost
    }

    #[getter]
    fn _eof(&self) -> bool {
        self.eof
    }

    #[getter]
    fn _paused(&self) -> bool {
        self.paused
    }

    /// A future resolved when the buffer is empty (for `sendfile`).
    fn _make_empty_waiter(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (lp, empty) = {
            let me = slf.borrow();
            if me.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err("Empty waiter is already set"));
            }
            (me.the_loop(py), me.pending() == 0)
        };
        let Some(lp) = lp else {
            return Err(PyRuntimeError::new_err("the transport is closed"));
        };
        let fut = lp.call_method0(intern!(py, "create_future"))?;
        if empty {
            fut.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        slf.borrow_mut().empty_waiter = Some(fut.clone().unbind());
        Ok(fut.unbind())
    }

    /// Forgets the empty waiter.
    fn _reset_empty_waiter(&mut self) {
        self.empty_waiter = None;
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for obj in [
            &self.loop_,
            &self.transport,
            &self.protocol,
            &self.data_received,
            &self.empty_waiter,
        ]
        .into_iter()
        .flatten()
        {
            visit.call(obj)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.loop_ = None;
        self.transport = None;
        self.protocol = None;
        self.data_received = None;
        self.empty_waiter = None;
    }
}
