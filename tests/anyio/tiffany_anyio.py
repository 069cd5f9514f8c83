"""A pytest plugin that runs anyio's own test suite on the Tiffany loop.

``just test-anyio`` downloads the sdist of the installed anyio (its tests are
not in the wheel) into ``target/anyio`` and runs its ``tests/`` with
``-p tiffany_anyio``. This plugin

* keeps only the asyncio backend: the ``anyio_backend`` parameters other
  than anyio's plain ``asyncio`` one (uvloop, trio, eager tasks), and the
  ``anyio_backend_name`` ones other than ``asyncio``, are deselected, and
  the plain one gets ``loop_factory=tiffany.new_event_loop``;
* installs ``tiffany.EventLoopPolicy`` for the whole session, so the loops
  anyio's tests make themselves (``asyncio.new_event_loop()``,
  ``anyio.run(..., backend="asyncio")``) are Tiffany loops too;
* skips the tests listed in ``known_failures.txt`` beside this file
  (``test id<TAB>reason``), with their reason;
* before each test, waits (at most 10 s) for the anyio worker threads that
  an earlier test's loop told to stop: they end on their own time, and one
  ending during a test that counts threads (``test_single_thread``) failed
  it, on any loop;
* fails the session if no Tiffany loop ran, and names the listed tests that
  no longer exist (another anyio release may rename them).
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

import tiffany

_KNOWN_FILE = Path(__file__).with_name("known_failures.txt")
_loops_made = 0


def _known() -> dict[str, str]:
    known: dict[str, str] = {}
    for line in _KNOWN_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            test_id, _, reason = line.partition("\t")
            known[test_id.strip()] = reason.strip() or "known failure"
    return known


def _tiffany_loop() -> asyncio.AbstractEventLoop:
    global _loops_made
    _loops_made += 1
    return tiffany.new_event_loop()


class _Policy(tiffany.EventLoopPolicy):
    def _loop_factory(self) -> tiffany.EventLoop:
        loop = _tiffany_loop()
        assert isinstance(loop, tiffany.EventLoop)
        return loop


# TIFFANY_ANYIO_LOOP=asyncio runs the same selection on the stdlib's loop, to
# compare (known_failures.txt is then not applied).
_ON_TIFFANY = os.environ.get("TIFFANY_ANYIO_LOOP", "tiffany") == "tiffany"


def pytest_configure(config: pytest.Config) -> None:
    if _ON_TIFFANY:
        asyncio.set_event_loop_policy(_Policy())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    known = _known()
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        # Tests parametrised by backend name alone (they run pytest in a
        # subprocess per backend): only the asyncio one concerns a loop.
        if (
            callspec is not None
            and callspec.params.get("anyio_backend_name", "asyncio") != "asyncio"
        ):
            dropped.append(item)
            continue
        if callspec is not None and "anyio_backend" in callspec.params:
            backend = callspec.params["anyio_backend"]
            name, options = backend if isinstance(backend, tuple) else (backend, {})
            # anyio's plain asyncio parameter has no loop factory of its own.
            if name != "asyncio" or "loop_factory" in options:
                dropped.append(item)
                continue
            if _ON_TIFFANY:
                callspec.params["anyio_backend"] = (
                    "asyncio",
                    {**options, "loop_factory": _tiffany_loop},
                )
        reason = known.pop(item.nodeid, None)
        if reason is not None and _ON_TIFFANY:
            item.add_marker(pytest.mark.skip(reason=f"on Tiffany: {reason}"))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    config._tiffany_stale_known = sorted(known)  # type: ignore[attr-defined]


def pytest_runtest_setup(item: pytest.Item) -> None:
    # anyio stops a worker thread when its loop's root task ends: `stop()`
    # sets `stopping` and queues a sentinel, and the thread returns when it
    # reads it. Counting threads before that is a race (the stdlib's loop
    # has it too), so let the stopped ones finish first. Bounded.
    for thread in threading.enumerate():
        if thread.name == "AnyIO worker thread" and getattr(thread, "stopping", False):
            thread.join(timeout=10)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stale: list[str] = getattr(session.config, "_tiffany_stale_known", [])
    # Only a full run can tell a stale entry (a -k selection leaves many out).
    # (A warning, not a failure: another anyio release may rename tests.)
    if stale and not session.config.option.keyword and session.testscollected:
        print(f"\ntiffany_anyio: known_failures.txt lists tests not collected: {stale}")
    collected = session.testscollected and not session.config.option.collectonly
    if _ON_TIFFANY and collected and _loops_made == 0:
        print("\ntiffany_anyio: no Tiffany loop was made: the suite did not run on Tiffany")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(f"tiffany_anyio: {_loops_made} Tiffany event loops made")
