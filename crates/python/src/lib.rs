//! `tiffany._native`: Python bindings of Tiffany's kernel.
//!
//! This crate only translates: Python coroutines become kernel task bodies
//! ([`body`]), the awaitables become system calls ([`syscall`]), the
//! scheduler and tasks get Pythonic classes ([`scheduler`], [`task`]) found
//! through the thread's current scheduler ([`current`]), I/O waits share
//! registrations ([`io_registry`]), Ctrl-C shuts a run down ([`signals`]),
//! and events reach Python one by one or in batches ([`telemetry`]). Scheduling itself
//! lives in the `tiffany-scheduler` crate.
//!
//! The crate has no Rust API (it is the Python module); its documentation is
//! for its maintainers, and links to its private modules on purpose
//! (`cargo doc --document-private-items`).
#![allow(rustdoc::private_intra_doc_links)]

use pyo3::prelude::*;

mod aio;
mod args;
mod body;
mod convert;
mod current;
mod errors;
mod event;
mod host;
mod io_registry;
mod owner;
mod process;
mod scheduler;
mod scope;
mod service;
mod signals;
mod sockets;
mod syscall;
mod task;
mod telemetry;
mod testing;
mod threads;

/// The compiled core of the `tiffany` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<scheduler::PyScheduler>()?;
    m.add_class::<task::Task>()?;
    m.add_class::<telemetry::PyTaskEvent>()?;
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
    m.add("Deadlock", py.get_type::<errors::Deadlock>())?;
    m.add("PRI_SYSTEM", tiffany_scheduler::PRI_SYSTEM)?;
    m.add("PRI_DEFAULT", tiffany_scheduler::PRI_DEFAULT)?;
    m.add("PRI_LOWEST", tiffany_scheduler::PRI_LOWEST)?;
    m.add(
        "DEFAULT_QUANTUM",
        tiffany_scheduler::DEFAULT_QUANTUM.as_secs_f64(),
    )?;
    syscall::add_sleep(m)?;
    m.add_function(wrap_pyfunction!(syscall::yield_now, m)?)?;
    m.add_function(wrap_pyfunction!(syscall::get_tid, m)?)?;
    m.add_function(wrap_pyfunction!(syscall::admit, m)?)?;
    m.add_function(wrap_pyfunction!(syscall::shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(scheduler::spawn, m)?)?;
    m.add_function(wrap_pyfunction!(scheduler::now, m)?)?;
    m.add_function(wrap_pyfunction!(scheduler::current_task, m)?)?;
    m.add_function(wrap_pyfunction!(task::join, m)?)?;
    m.add_function(wrap_pyfunction!(syscall::wait_readable, m)?)?;
    m.add_function(wrap_pyfunction!(syscall::wait_writable, m)?)?;
    m.add_function(wrap_pyfunction!(sockets::sock_recv, m)?)?;
    m.add_function(wrap_pyfunction!(sockets::sock_sendall, m)?)?;
    m.add_function(wrap_pyfunction!(sockets::sock_accept, m)?)?;
    m.add_class::<process::PyCompleted>()?;
    m.add_function(wrap_pyfunction!(process::exec, m)?)?;
    m.add_function(wrap_pyfunction!(testing::spawn_native_join, m)?)?;
    m.add_function(wrap_pyfunction!(testing::spawn_native_sleep, m)?)?;
    scope::init(m)?;
    aio::init(m)?;
    service::init(m)?;
    host::init(m)?;
    Ok(())
}
