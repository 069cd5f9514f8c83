//! Socket operations the driver performs natively.
//!
//! `await tiffany.sock_recv(sock, n)` and its siblings build a
//! [`Syscall`](crate::syscall) that names the operation and carries the socket
//! (and, for a send, the bytes). The driver ([`crate::body`]) tries the system
//! call at once, from Rust and without going through Python's socket methods;
//! only when it would block does the task wait for readiness, and the driver
//! tries again when woken. The result is sent into the coroutine as the value
//! of its `await`: no Python-level iterator, no `StopIteration` per call.
//!
//! Because the failed attempt has just shown the socket not ready, the wait
//! tells the kernel so (`after_would_block`), and the socket stays registered
//! with the reactor from one wait to the next (see `io_registry::io_acquire`). A
//! round trip therefore costs the receive that would block, the receive and
//! the send, plus a share of one `epoll_wait` — nothing else.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::os_error;

/// The most one `sock_recv` returns, whatever the caller asks for: a receive
/// returns what has arrived, rarely more than a socket buffer, so a larger
/// request is served by later calls (as Python's `sock.recv` would be
/// limited by the kernel). The buffer is allocated once per thread.
pub(crate) const RECV_MAX: usize = 256 * 1024;

thread_local! {
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Which socket operation a `Syscall` asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum SockKind {
    /// Up to `n` bytes.
    Recv { fd: i32, n: usize },
    /// Every byte of the `Syscall`'s data.
    SendAll { fd: i32 },
    /// The next connection.
    Accept { fd: i32 },
}

impl SockKind {
    pub(crate) fn describe(&self) -> String {
        match self {
            SockKind::Recv { fd, n } => format!("sock_recv fd={fd} n={n}"),
            SockKind::SendAll { fd } => format!("sock_sendall fd={fd}"),
            SockKind::Accept { fd } => format!("sock_accept fd={fd}"),
        }
    }
}

/// What one attempt at an operation came to.
pub(crate) enum Attempt {
    /// Finished: the value of the `await`.
    Done(Py<PyAny>),
    /// It would block: wait until `fd` is readable (or writable), then retry.
    Wait { fd: i32, writable: bool },
}

/// A socket operation a task is carrying out (kept by the driver across waits).
pub(crate) struct SockOp {
    kind: SockKind,
    sock: Py<PyAny>,
    data: Option<Py<PyBytes>>,
    sent: usize,
}

fn would_block(errno: i32) -> bool {
    errno == libc::EAGAIN || errno == libc::EWOULDBLOCK || errno == libc::EINTR
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl SockOp {
    /// The operation a `Syscall` of kind `kind` with these operands asks for.
    pub(crate) fn new(
        kind: SockKind,
        sock: Option<Bound<'_, PyAny>>,
        data: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let sock = sock.ok_or_else(|| {
            pyo3::exceptions::PyRuntimeError::new_err("socket operation without a socket")
        })?;
        let data = data.map(|d| d.cast_into::<PyBytes>()).transpose()?;
        Ok(SockOp {
            kind,
            sock: sock.unbind(),
            data: data.map(Bound::unbind),
            sent: 0,
        })
    }

    /// The socket the operation works on.
    pub(crate) fn sock(&self) -> &Py<PyAny> {
        &self.sock
    }

    /// Tries the operation once, without blocking.
    pub(crate) fn attempt(&mut self, py: Python<'_>) -> PyResult<Attempt> {
        match self.kind {
            SockKind::Recv { fd, n } => {
                // One buffer per thread, grown (and zeroed) once: a receive
                // copies only the bytes that arrived.
                let received = RECV_BUF.with(|b| {
                    let mut buf = b.borrow_mut();
                    if buf.len() < n {
                        buf.resize(n, 0);
                    }
                    // SAFETY: buf is valid for at least n bytes.
                    let r =
                        unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), n, libc::MSG_DONTWAIT) };
                    (r >= 0).then(|| PyBytes::new(py, &buf[..r as usize]).into_any().unbind())
                });
                if let Some(bytes) = received {
                    return Ok(Attempt::Done(bytes));
                }
                let e = last_errno();
                if would_block(e) {
                    Ok(Attempt::Wait {
                        fd,
                        writable: false,
                    })
                } else {
                    Err(os_error(e))
                }
            }
            SockKind::SendAll { fd } => {
                let Some(data) = &self.data else {
                    return Ok(Attempt::Done(py.None()));
                };
                let data = data.bind(py).as_bytes();
                while self.sent < data.len() {
                    let rest = &data[self.sent..];
                    // SAFETY: rest is a valid slice.
                    let r = unsafe {
                        libc::send(
                            fd,
                            rest.as_ptr().cast(),
                            rest.len(),
                            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                        )
                    };
                    if r >= 0 {
                        self.sent += r as usize;
                        continue;
                    }
                    let e = last_errno();
                    if would_block(e) {
                        return Ok(Attempt::Wait { fd, writable: true });
                    }
                    return Err(os_error(e));
                }
                Ok(Attempt::Done(py.None()))
            }
            SockKind::Accept { fd } => self.accept(py, fd),
        }
    }

    fn accept(&self, py: Python<'_>, listener: i32) -> PyResult<Attempt> {
        // SAFETY: null address pointers are allowed.
        let fd = unsafe {
            libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        if fd < 0 {
            let e = last_errno();
            return if would_block(e) || e == libc::ECONNABORTED {
                Ok(Attempt::Wait {
                    fd: listener,
                    writable: false,
                })
            } else {
                Err(os_error(e))
            };
        }
        let socket = py.import("socket")?;
        let sock = self.sock.bind(py);
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("family", sock.getattr("family")?)?;
        kwargs.set_item("type", sock.getattr("type")?)?;
        kwargs.set_item("proto", sock.getattr("proto")?)?;
        kwargs.set_item("fileno", fd)?;
        let conn = match socket.getattr("socket")?.call((), Some(&kwargs)) {
            Ok(c) => c,
            Err(e) => {
                // SAFETY: we own fd and nothing else refers to it.
                unsafe { libc::close(fd) };
                return Err(e);
            }
        };
        conn.call_method1("setblocking", (false,))?;
        let addr = conn.call_method0("getpeername")?;
        Ok(Attempt::Done(
            (conn, addr).into_pyobject(py)?.into_any().unbind(),
        ))
    }
}

/// `await tiffany.sock_recv(sock, n)`: up to `n` bytes (`b""` at end of
/// stream), at most [`RECV_MAX`] per call. The socket must be non-blocking.
#[pyfunction]
pub fn sock_recv<'py>(sock: &Bound<'py, PyAny>, n: i64) -> PyResult<Bound<'py, PyAny>> {
    if n < 0 {
        return Err(PyValueError::new_err(format!(
            "sock_recv() n must be >= 0, got {n}"
        )));
    }
    let n = usize::try_from(n).unwrap_or(usize::MAX).min(RECV_MAX);
    let fd = crate::syscall::fd_of(sock)?;
    require_nonblocking(sock, fd, "sock_recv()")?;
    crate::syscall::sock_syscall(sock, SockKind::Recv { fd, n }, None)
}

/// Refuses a blocking socket: the scheduler's thread must never block in it.
///
/// A Python socket says so itself, with no system call: `gettimeout()` is
/// `None` exactly when its descriptor is blocking (CPython makes the
/// descriptor non-blocking for any timeout, zero or not). Anything else (a
/// raw descriptor) is asked with `fcntl`. (An `fcntl` on every
/// `sock_recv` was two system calls per round trip of an echo, about a
/// seventh of its time.)
fn require_nonblocking(sock: &Bound<'_, PyAny>, fd: i32, what: &str) -> PyResult<()> {
    let blocking = if sock.is_instance_of::<pyo3::types::PyInt>() {
        None
    } else {
        sock.call_method0(pyo3::intern!(sock.py(), "gettimeout"))
            .ok()
            .map(|t| t.is_none())
    };
    let blocking = match blocking {
        Some(b) => b,
        None => {
            // SAFETY: F_GETFL only reads the descriptor's flags.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            if flags < 0 {
                return Err(os_error(last_errno()));
            }
            flags & libc::O_NONBLOCK == 0
        }
    };
    if blocking {
        return Err(PyValueError::new_err(format!(
            "{what} needs a non-blocking socket: call sock.setblocking(False) first"
        )));
    }
    Ok(())
}

/// `await tiffany.sock_sendall(sock, data)`: send every byte of `data` (any
/// bytes-like object; anything but `bytes` is copied first).
#[pyfunction]
pub fn sock_sendall<'py>(
    sock: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let fd = crate::syscall::fd_of(sock)?;
    let bytes = if data.is_instance_of::<PyBytes>() {
        data.clone()
    } else {
        let py = sock.py();
        let buffer = pyo3::buffer::PyBuffer::<u8>::get(data).map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "sock_sendall() needs a bytes-like object, got {}",
                data.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        PyBytes::new(py, &buffer.to_vec(py)?).into_any()
    };
    crate::syscall::sock_syscall(sock, SockKind::SendAll { fd }, Some(bytes))
}

/// `conn, addr = await tiffany.sock_accept(sock)`: the next connection (a
/// non-blocking socket) and its peer's address. The listening socket must be
/// non-blocking (`ValueError` otherwise).
#[pyfunction]
pub fn sock_accept<'py>(sock: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let fd = crate::syscall::fd_of(sock)?;
    // Accept has no MSG_DONTWAIT: it would block the whole scheduler on a
    // blocking listener.
    require_nonblocking(sock, fd, "sock_accept()")?;
    crate::syscall::sock_syscall(sock, SockKind::Accept { fd }, None)
}
