"""CPython's own event-loop conformance tests, run against ``tiffany.new_event_loop``.

The tests are imported from the interpreter's installed ``test`` package (never
copied), the way alternative loops run them: a ``TestCase`` combining a
stdlib mixin with ``test.test_asyncio.utils.TestCase`` whose
``create_event_loop`` returns a Tiffany loop. Tests that use
``asyncio.new_event_loop()`` get Tiffany loops through the policy.

Every test left failing is listed in ``KNOWN`` with its reason.
"""

# The interpreter's test package has no type information: its classes are Any.
# mypy: disable-error-code="import-not-found,misc"

from __future__ import annotations

import asyncio
import sys
import unittest

import pytest

import tiffany

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform != "linux", reason="the loop is Linux-only (epoll)"),
]

test_asyncio = pytest.importorskip("test.test_asyncio")
from test.test_asyncio import (  # noqa: E402
    test_events,
    test_sendfile,
    test_server,
    test_sock_lowlevel,
    test_streams,
    test_subprocess,
)
from test.test_asyncio import utils as test_utils  # noqa: E402

# test name -> why it fails on Tiffany's loop (kept as a skip with the reason).
KNOWN: dict[str, str] = {}


def _known(cls: type) -> type:
    for name, reason in KNOWN.items():
        if hasattr(cls, name):
            setattr(cls, name, unittest.skip(reason)(getattr(cls, name)))
    return cls


class _TiffanyPolicy:
    """Installs tiffany's policy for the test (for ``asyncio.new_event_loop()``)."""

    def setUp(self) -> None:
        self._old_policy = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(tiffany.EventLoopPolicy())
        super().setUp()
        loop = getattr(self, "loop", None)
        assert loop is None or isinstance(loop, tiffany.EventLoop), loop

    def tearDown(self) -> None:
        super().tearDown()
        asyncio.set_event_loop_policy(self._old_policy)

    def create_event_loop(self) -> asyncio.AbstractEventLoop:
        return tiffany.new_event_loop()

    def new_loop(self) -> asyncio.AbstractEventLoop:
        return tiffany.new_event_loop()


@_known
class TestEvents(
    _TiffanyPolicy,
    test_events.UnixEventLoopTestsMixin,
    test_events.SubprocessTestsMixin,
    test_utils.TestCase,
):
    pass


@_known
class TestSockLowlevel(_TiffanyPolicy, test_sock_lowlevel.BaseSockTestsMixin, test_utils.TestCase):
    pass


@_known
class TestSubprocessThreadedWatcher(
    _TiffanyPolicy, test_subprocess.SubprocessWatcherMixin, test_utils.TestCase
):
    Watcher = asyncio.unix_events.ThreadedChildWatcher


@_known
class TestSubprocessPidfdWatcher(
    _TiffanyPolicy, test_subprocess.SubprocessWatcherMixin, test_utils.TestCase
):
    Watcher = asyncio.unix_events.PidfdChildWatcher


@_known
class TestStreams(_TiffanyPolicy, test_streams.StreamTests):
    pass


@_known
class TestServer(_TiffanyPolicy, test_server.SelectorStartServerTests):
    pass


@_known
class TestSendfile(_TiffanyPolicy, test_sendfile.SendfileTestsBase, test_utils.TestCase):
    pass
