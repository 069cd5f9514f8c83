"""CPython's task, future, lock and queue tests, run on the Tiffany loop.

``test_tasks``, ``test_taskgroups``, ``test_timeouts``, ``test_waitfor``,
``test_locks``, ``test_queues`` and ``test_futures`` are imported from the
interpreter's installed ``test`` package (never copied). Each of their test
classes is subclassed here with :class:`_OnTiffany` in front, which puts every
loop the tests use on Tiffany:

* ``self.new_test_loop(gen)`` (``test_tasks``, ``test_futures``) gives a Tiffany
  loop with ``clock="virtual"`` instead of ``test_utils.TestLoop``: that fake
  clock advances by what the test's generator says when nothing is ready;
  the virtual clock jumps to the next timer when nothing is runnable, which
  is what those tests need (the generator itself is not consulted);
* ``asyncio.new_event_loop()`` and ``IsolatedAsyncioTestCase``'s runner get
  Tiffany loops (real clock) through ``tiffany.EventLoopPolicy``, installed
  for the test;
* ``setUp`` asserts that the test's loop is a Tiffany loop, and so does
  ``set_event_loop`` for every loop a test makes and registers itself.

How tasks are made is left to the loop (``loop.create_task``), except where a
test sets its own task factory: ``test_tasks`` runs each test with the C and
the pure-Python ``Task``/``Future`` classes (that is what it tests); those
tasks run on the Tiffany loop all the same.

Every test still failing is listed in ``KNOWN`` (``module.Class.test`` or
``module.*.test`` for every class of the module -> why), and skipped with the
reason.
"""

# The interpreter's test package has no type information: its classes are Any.
# mypy: disable-error-code="import-not-found,misc"

from __future__ import annotations

import asyncio
import os
import sys
import unittest
from types import ModuleType
from typing import Any

import pytest

import tiffany

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform != "linux", reason="the loop is Linux-only (epoll)"),
]

test_asyncio = pytest.importorskip("test.test_asyncio")
from test.test_asyncio import (  # noqa: E402
    test_futures,
    test_locks,
    test_queues,
    test_taskgroups,
    test_tasks,
    test_timeouts,
    test_waitfor,
)
from test.test_asyncio import utils as test_utils  # noqa: E402

# "module.Class.test" (or "module.*.test") -> why it fails on Tiffany's loop.
_ADVANCE = (
    "moves TestLoop's fake clock by hand from inside a task (loop.advance_time(), a "
    "method of test_utils.TestLoop only); a virtual clock moves only when nothing is "
    "runnable and has no such method (uvloop fails it too: AttributeError)"
)
_READY = (
    "drives the loop while its private `_ready` deque (BaseEventLoop's ready queue) "
    "is non-empty; Tiffany's ready queue is native, so `_ready` stays empty and the "
    "test never runs the loop (uvloop has no `_ready`: AttributeError)"
)
KNOWN: dict[str, str] = {
    **{
        f"test_tasks.*.{test}": _ADVANCE
        for test in (
            "test_as_completed",
            "test_as_completed_reverse_wait",
            "test_as_completed_with_timeout",
            "test_wait_concurrent_complete",
            "test_wait_first_completed",
            "test_wait_first_exception",
            "test_wait_first_exception_in_wait",
            "test_wait_with_timeout",
        )
    },
    **{
        f"test_tasks.{cls}.{test}": _READY
        for cls in ("FutureGatherTests", "CoroutineGatherTests")
        for test in (
            "test_success",
            "test_return_exceptions",
            "test_result_exception_success",
            "test_one_exception",
        )
    },
    "test_tasks.FutureGatherTests.test_one_cancellation": _READY,
    "test_tasks.CoroutineGatherTests.test_duplicate_coroutines": _READY,
    "test_tasks.*.test_log_destroyed_pending_task": (
        "calls the loop's private `_run_once()` (one iteration of BaseEventLoop's "
        "Python loop); Tiffany runs its iterations natively (uvloop has no "
        "`_run_once`: AttributeError)"
    ),
    "test_tasks.*.test_stop_while_run_in_complete": (
        "expects loop.time() == 0.3 after stop() at 0.2: TestLoop advances its fake "
        "clock after the stopping iteration as its generator says; a virtual clock "
        "does not move when nothing waits, so it reads 0.2"
    ),
}

# TIFFANY_CONFORMANCE_LOOP=uvloop runs the same harness on uvloop's loop, to
# compare (the KNOWN skips are then not applied).
_LOOP = os.environ.get("TIFFANY_CONFORMANCE_LOOP", "tiffany")


def _new_loop(*, virtual: bool) -> asyncio.AbstractEventLoop:
    if _LOOP == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return tiffany.new_event_loop(clock="virtual" if virtual else "real")


class _Policy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _new_loop(virtual=False)


def _loop_class() -> type:
    if _LOOP == "uvloop":
        import uvloop

        return uvloop.Loop
    return tiffany.EventLoop


class _OnTiffany:
    """Puts the test's loops on Tiffany (see the module's docstring)."""

    def run(self, result: Any = None) -> Any:
        old_policy = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(_Policy())
        try:
            return super().run(result)
        finally:
            asyncio.set_event_loop_policy(old_policy)

    def setUp(self) -> None:
        super().setUp()
        runner = getattr(self, "_asyncioRunner", None)
        loop = runner.get_loop() if runner is not None else getattr(self, "loop", None)
        assert loop is None or isinstance(loop, _loop_class()), loop

    def set_event_loop(self, loop: Any, *, cleanup: bool = True) -> None:
        # Every loop a test makes for itself is registered here: it is Tiffany's too.
        assert isinstance(loop, _loop_class()), loop
        super().set_event_loop(loop, cleanup=cleanup)

    @staticmethod
    def close_loop(loop: Any) -> None:
        if _LOOP == "uvloop":  # test_utils' close_loop reads BaseEventLoop's privates
            if not loop.is_closed():
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
        else:
            test_utils.TestCase.close_loop(loop)

    def new_test_loop(self, gen: Any = None) -> asyncio.AbstractEventLoop:
        loop = _new_loop(virtual=True)
        self.set_event_loop(loop)
        return loop


def _reason(module: str, cls: str, test: str) -> str | None:
    if _LOOP != "tiffany":
        return None
    return KNOWN.get(f"{module}.{cls}.{test}") or KNOWN.get(f"{module}.*.{test}")


def _on_tiffany(module: ModuleType) -> None:
    """Adds to this module a Tiffany subclass of every test class of ``module``."""
    short = module.__name__.rpartition(".")[2]
    for name, cls in sorted(vars(module).items()):
        if not (
            isinstance(cls, type)
            and issubclass(cls, unittest.TestCase)
            and cls.__module__ == module.__name__
        ):
            continue
        body: dict[str, Any] = {"__module__": __name__, "__qualname__": f"{short}_{name}"}
        for test in dir(cls):
            reason = _reason(short, name, test) if test.startswith("test") else None
            if reason is not None:
                body[test] = unittest.skip(reason)(getattr(cls, test))
        globals()[f"{short}_{name}"] = type(f"{short}_{name}", (_OnTiffany, cls), body)


#: The suites run on the Tiffany loop.
_SUITES = (
    test_tasks,
    test_taskgroups,
    test_timeouts,
    test_waitfor,
    test_locks,
    test_queues,
    test_futures,
)

for _module in _SUITES:
    _on_tiffany(_module)


def test_known_entries_name_existing_tests() -> None:
    """Every KNOWN entry names a test that exists (the list follows the suites)."""
    modules = {m.__name__.rpartition(".")[2]: m for m in _SUITES}
    for key in KNOWN:
        module, cls, test = key.split(".")
        classes = (
            [c for c in vars(modules[module]).values() if isinstance(c, type)]
            if cls == "*"
            else [getattr(modules[module], cls)]
        )
        assert any(hasattr(c, test) for c in classes), key
