"""Helpers for tests and demonstrations: native (Rust) tasks on a scheduler.

``spawn_native_sleep(sched, seconds, result)`` spawns a native task that
sleeps on the kernel's clock and returns ``result``; ``spawn_native_join(sched,
task)`` spawns a native task that joins ``task``. They show that native and
Python tasks share one scheduler, one id space and one ready queue, and can
join each other.
"""

from __future__ import annotations

from tiffany._native import spawn_native_join, spawn_native_sleep

__all__ = ["spawn_native_join", "spawn_native_sleep"]
