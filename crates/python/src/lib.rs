//! `tiffany._native`: Python bindings of Tiffany's kernel.
//!
//! This crate only translates: Python coroutines become kernel task bodies
//! ([`body`]), the awaitables become system calls ([`syscall`]), and the
//! scheduler and tasks get Pythonic classes ([`runtime`]), events reach
//! Python one by one or in batches ([`telemetry`]). Scheduling itself
//! lives in the `tiffany-scheduler` crate.
//!
//! The crate has no Rust API (it is the Python module); its documentation is
//! for its maintainers, and links to its private modules on purpose
//! (`cargo doc --document-private-items`).
#![allow(rustdoc::private_intra_doc_links)]

use pyo3::prelude::*;

mod body;
mod convert;
mod errors;
mod event;
mod process;
mod runtime;
mod service;
mod sockets;
mod syscall;
mod telemetry;
mod threads;

/// The compiled core of the `tiffany` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<runtime::PyScheduler>()?;
    m.add_class::<runtime::Task>()?;
    m.add_class::<runtime::PyTaskEvent>()?;
    m.add_class::<telemetry::EventBatch>()?;
    m.add_class::<event::Event>()?;
    syscall::init(m)?;
    m.add_class::<threads::Handle>()?;
    m.add_class::<threads::Completion>()?;
    m.add("Cancelled", py.get_type::<errors::Cancelled>())?;
    m.add("TaskCancelled", py.get_type::<errors::TaskCancelled>())?;
    m.add("JoinTimeout", py.get_type::<errors::JoinTimeout>())?;
    m.add("SpawnError", py.get_type::<errors::SpawnError>())?;
    m.add("TaskFailed", py.get_type::<errors::TaskFailed>())?;
    m.add("PRI_SYSTEM", tiffany_scheduler::PRI_SYSTEM)?;
    m.add("PRI_DEFAULT", tiffany_scheduler::PRI_DEFAULT)?;
    m.add("PRI_LOWEST", tiffany_scheduler::PRI_LOWEST)?;
    syscall::add_sleep(m)?;
    m.add_function(wrap_pyfunction!(syscall::yield_now, m)?)?;
    m.add_function(wrap_pyfunction!(syscall::get_tid, m)?)?;
    m.add_function(wrap_pyfunction!(syscall::admit, m)?)?;
    m.add_function(wrap_pyfunction!(syscall::shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::spawn, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::now, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::current_task, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::join, m)?)?;
    m.add_function(wrap_pyfunction!(syscall::wait_readable, m)?)?;
    m.add_function(wrap_pyfunction!(syscall::wait_writable, m)?)?;
    m.add_function(wrap_pyfunction!(sockets::sock_recv, m)?)?;
    m.add_function(wrap_pyfunction!(sockets::sock_sendall, m)?)?;
    m.add_function(wrap_pyfunction!(sockets::sock_accept, m)?)?;
    m.add_class::<process::PyCompleted>()?;
    m.add_function(wrap_pyfunction!(process::exec, m)?)?;
    service::init(m)?;
    Ok(())
}
