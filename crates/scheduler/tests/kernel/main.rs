//! The kernel's integration tests, as one test binary.
//!
//! Each module was once its own file under `tests/` (so its own binary, each
//! linked against the kernel); they are modules of one binary so that a
//! change to the kernel links one test executable, not 32 (a mutant of
//! `cargo mutants` costs one link, and so does CI). A module keeps its former
//! file's name, so nextest names a test `kernel priority::…`. Every test still
//! runs in its own process under nextest.
//!
//! A new test file goes here as a module: `tests/kernel/<name>.rs` and a
//! `mod <name>;` line below, kept in alphabetical order.

mod common;

mod abandon;
mod backpressure;
mod budget;
mod cancel;
mod cancel_edge;
mod capacity;
mod cross_thread;
mod daemons;
mod deadlock;
mod dependencies;
mod determinism;
mod errors;
mod events_sync;
mod handle_commands;
mod io_pipe;
mod io_timeout;
mod join_timeout;
mod memory;
mod panic_isolation;
mod priority;
mod process;
mod process_fds;
mod properties;
mod scopes;
mod settings;
mod shard_pool;
mod shutdown;
mod stack_pool;
mod stale_ready;
mod step_now;
mod task_state;
mod telemetry;
mod virtual_clock;
mod yield_order;
