"""The pyos-level pieces: raw system calls and wake-ups from other threads.

Everyday code uses ``await tiffany.sleep(...)``, tasks, ``Event`` and the
socket helpers; these are the pieces they are built from (compare
``trio.lowlevel``):

- ``Syscall``: the awaitable object every system call is; a generator task
  may ``yield`` one directly, pyos style.
- ``GetTid()``: ``tid = yield GetTid()``, the current task's id.
- ``Completion``: a one-shot wake-up: a task awaits it, any thread calls
  ``notify()`` (``tiffany.to_thread`` is built on it).
- ``wait_readable(fd)`` / ``wait_writable(fd)``: wait for a descriptor's
  readiness, with an optional timeout.
- ``TaskHandle``: the kernel's handle of a task, what ``Scheduler.spawn``
  returns (and ``tiffany.spawn`` where no asyncio loop runs): ``id``,
  ``name``, ``priority``, ``state``, ``done``, ``cancelled``, ``result``, ``exception``,
  ``cancel`` (the kernel's, level-triggered), ``add_dependency``,
  ``add_done_callback``, ``await``. Where a Tiffany loop runs, tasks are
  :class:`tiffany.Task` objects instead (ADR 13).
"""

from __future__ import annotations

from tiffany._native import Completion, GetTid, Syscall, wait_readable, wait_writable
from tiffany._native import Task as TaskHandle

__all__ = ["Completion", "GetTid", "Syscall", "TaskHandle", "wait_readable", "wait_writable"]
