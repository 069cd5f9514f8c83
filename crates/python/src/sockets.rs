//! Socket helpers that do the I/O natively.
//!
//! `await tiffany.sock_recv(sock, n)` and friends try the system call first
//! (non-blocking, from Rust, without going through Python's socket methods);
//! only when it would block do they yield an I/O wait to the scheduler, and
//! they retry when woken. A [`SockOp`] is that little state machine: an
//! awaitable whose `__next__` is "try, or wait".

use pyo3::exceptions::{PyOSError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::syscall::{Kind, Syscall, fd_of};

thread_local! {
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

enum Op {
    Recv { n: usize },
    SendAll { data: Vec<u8>, sent: usize },
    Accept,
}

/// A socket operation in progress (returned by `sock_recv`, `sock_sendall`,
/// `sock_accept`).
#[pyclass(module = "tiffany._native", name = "SockOp", unsendable)]
pub struct SockOp {
    fd: i32,
    op: Op,
    /// The socket object (kept alive while the operation runs; accept uses
    /// its family to build the new socket).
    sock: Py<PyAny>,
}

fn would_block(errno: i32) -> bool {
    errno == libc::EAGAIN || errno == libc::EWOULDBLOCK || errno == libc::EINTR
}

fn os_error(errno: i32) -> PyErr {
    let msg = std::io::Error::from_raw_os_error(errno).to_string();
    PyOSError::new_err((errno, msg))
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn wait(fd: i32, writable: bool) -> Syscall {
    Syscall::new(Kind::Io {
        fd,
        writable,
        timeout: None,
    })
}

impl SockOp {
    /// Tries the operation: `Ok(Ok(result))` when done, `Ok(Err(syscall))`
    /// when it must wait first.
    fn attempt(&mut self, py: Python<'_>) -> PyResult<Result<Py<PyAny>, Syscall>> {
        match &mut self.op {
            Op::Recv { n } => {
                // One buffer per thread, grown (and zeroed) once: a receive
                // copies only the bytes that arrived.
                let received = RECV_BUF.with(|b| {
                    let mut buf = b.borrow_mut();
                    if buf.len() < *n {
                        buf.resize(*n, 0);
                    }
                    // SAFETY: buf is valid for at least n bytes.
                    let r = unsafe {
                        libc::recv(self.fd, buf.as_mut_ptr().cast(), *n, libc::MSG_DONTWAIT)
                    };
                    (r >= 0).then(|| PyBytes::new(py, &buf[..r as usize]).into_any().unbind())
                });
                if let Some(bytes) = received {
                    return Ok(Ok(bytes));
                }
                let e = last_errno();
                if would_block(e) {
                    Ok(Err(wait(self.fd, false)))
                } else {
                    Err(os_error(e))
                }
            }
            Op::SendAll { data, sent } => {
                while *sent < data.len() {
                    let rest = &data[*sent..];
                    // SAFETY: rest is a valid slice.
                    let r = unsafe {
                        libc::send(
                            self.fd,
                            rest.as_ptr().cast(),
                            rest.len(),
                            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                        )
                    };
                    if r >= 0 {
                        *sent += r as usize;
                        continue;
                    }
                    let e = last_errno();
                    if would_block(e) {
                        return Ok(Err(wait(self.fd, true)));
                    }
                    return Err(os_error(e));
                }
                Ok(Ok(py.None()))
            }
            Op::Accept => {
                // SAFETY: null address pointers are allowed.
                let fd = unsafe {
                    libc::accept4(
                        self.fd,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    )
                };
                if fd < 0 {
                    let e = last_errno();
                    return if would_block(e) || e == libc::ECONNABORTED {
                        Ok(Err(wait(self.fd, false)))
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
                Ok(Ok((conn, addr).into_pyobject(py)?.into_any().unbind()))
            }
        }
    }

    fn new(sock: &Bound<'_, PyAny>, op: Op) -> PyResult<Self> {
        Ok(SockOp {
            fd: fd_of(sock)?,
            op,
            sock: sock.clone().unbind(),
        })
    }
}

#[pymethods]
impl SockOp {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Syscall> {
        match self.attempt(py)? {
            Ok(result) => {
                if result.is_none(py) {
                    Err(PyStopIteration::new_err(()))
                } else {
                    Err(PyStopIteration::new_err((result,)))
                }
            }
            Err(wait) => Ok(wait),
        }
    }

    /// Resumes after the wait (the value sent is ignored).
    fn send(&mut self, py: Python<'_>, _value: Py<PyAny>) -> PyResult<Syscall> {
        self.__next__(py)
    }
}

/// `await tiffany.sock_recv(sock, n)`: up to `n` bytes (`b""` at end of stream).
#[pyfunction]
pub fn sock_recv(sock: &Bound<'_, PyAny>, n: usize) -> PyResult<SockOp> {
    SockOp::new(sock, Op::Recv { n })
}

/// `await tiffany.sock_sendall(sock, data)`: send every byte of `data`.
#[pyfunction]
pub fn sock_sendall(sock: &Bound<'_, PyAny>, data: &[u8]) -> PyResult<SockOp> {
    SockOp::new(
        sock,
        Op::SendAll {
            data: data.to_vec(),
            sent: 0,
        },
    )
}

/// `conn, addr = await tiffany.sock_accept(sock)`: the next connection (a
/// non-blocking socket) and its peer's address.
#[pyfunction]
pub fn sock_accept(sock: &Bound<'_, PyAny>) -> PyResult<SockOp> {
    SockOp::new(sock, Op::Accept)
}
