//! asyncio on Tiffany: the native half of `tiffany.EventLoop`.
//!
//! - [`handle`]: `LoopHandle`, a scheduled callback (asyncio's `Handle` and
//!   `TimerHandle`);
//! - [`selector`]: `Selector`, the loop's `selectors`-compatible selector
//!   over a private epoll set;
//! - [`core`]: `LoopCore`, the ready queue, the timers and the kernel task
//!   that runs asyncio's iterations on Tiffany's scheduler;
//! - [`future`]: a Tiffany task awaiting an asyncio future;
//! - [`task`]: asyncio tasks as kernel tasks (`loop.create_task`);
//! - [`transport`]: `StreamTransportCore`, the socket I/O of the TCP and
//!   Unix stream transports.
//!
//! The Python half (`python/tiffany/_loop.py`) mixes `LoopCore` into the
//! stdlib's selector event loop.

use pyo3::prelude::*;

pub(crate) mod core;
mod epoll;
pub(crate) mod future;
pub(crate) mod handle;
mod selector;
pub(crate) mod task;
pub(crate) mod transport;

/// Adds the asyncio classes to the module.
pub(crate) fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<core::LoopCore>()?;
    m.add_class::<handle::Handle>()?;
    m.add_class::<selector::Selector>()?;
    m.add_class::<transport::StreamCore>()?;
    task::init(m)?;
    Ok(())
}
