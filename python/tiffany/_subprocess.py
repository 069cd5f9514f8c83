"""Child processes of ``tiffany.EventLoop``, watched through pidfds.

asyncio's own child watchers either start a thread per child that blocks in
``waitpid`` (``ThreadedChildWatcher``, the default on 3.11), or install a
``SIGCHLD`` handler. A Tiffany loop needs neither: each child gets a *pidfd*
(``pidfd_open(2)``, Linux 5.3+), a descriptor that becomes readable when the
child exits, and the pidfd is watched by the loop's own selector — the epoll
set the kernel's poller waits on. When it is readable, the loop reaps the
child with ``waitid(P_PIDFD, pidfd, WEXITED | WNOHANG)`` (which names that
very process, never a reused pid) and hands the return code to the transport
on the loop's thread, one iteration later (as asyncio does, so the child's
last output is read first).

So there is no thread per child and no signal handler; a child's exit is an
I/O event like any other, also under the virtual clock. The policy's child
watcher is not used (asyncio's ``get_child_watcher`` is never called), so
3.11's and 3.12's deprecations of watchers do not apply.
"""

from __future__ import annotations

import logging
import os
from asyncio import base_subprocess, events, protocols, unix_events
from typing import Any

__all__ = ["ChildWatch", "pidfd_supported"]

logger = logging.getLogger("asyncio")

_supported: bool | None = None


def pidfd_supported() -> bool:
    """Whether this system has ``pidfd_open`` and ``waitid(P_PIDFD)`` (Linux 5.4+)."""
    global _supported
    if _supported is None:
        ok = hasattr(os, "pidfd_open") and hasattr(os, "P_PIDFD")
        if ok:
            try:
                fd = os.pidfd_open(os.getpid())
            except OSError:
                ok = False
            else:
                os.close(fd)
        _supported = ok
    return _supported


def _returncode(info: Any) -> int:
    """A ``waitid`` result as a ``Popen.returncode``: negative for a signal."""
    if info.si_code == os.CLD_EXITED:
        return int(info.si_status)
    return -int(info.si_status)  # CLD_KILLED, CLD_DUMPED


class ChildWatch:
    """The children of one loop: pid -> (pidfd, transport)."""

    def __init__(self, loop: events.AbstractEventLoop) -> None:
        self._loop: Any = loop
        self._children: dict[int, tuple[int, base_subprocess.BaseSubprocessTransport]] = {}

    def __len__(self) -> int:
        return len(self._children)

    def watch(self, transp: base_subprocess.BaseSubprocessTransport) -> None:
        """Watches the transport's child: its exit reaches ``transp._process_exited``."""
        pid = transp.get_pid()
        assert pid is not None  # the transport started its child
        pidfd = os.pidfd_open(pid)  # the child is not reaped yet: it is still ours
        try:
            self._loop._add_reader(pidfd, self._exited, pid)
        except BaseException:
            os.close(pidfd)
            raise
        self._children[pid] = (pidfd, transp)

    def _exited(self, pid: int) -> None:
        entry = self._children.get(pid)
        if entry is None:
            return
        pidfd, transp = entry
        try:
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            # Reaped elsewhere (``Popen.wait``/``poll`` on the transport's
            # ``subprocess`` object): Popen kept the status.
            popen = transp.get_extra_info("subprocess")
            code = getattr(popen, "returncode", None)
            if code is None:
                logger.warning(
                    "child process pid %d exit status already read: will report returncode 255",
                    pid,
                )
                code = 255
        else:
            if info is None:  # not exited after all: keep watching
                return
            code = _returncode(info)
        self._forget(pid)
        self._loop.call_soon(transp._process_exited, code)

    def _forget(self, pid: int) -> None:
        pidfd, _ = self._children.pop(pid)
        self._loop._remove_reader(pidfd)
        os.close(pidfd)

    def close(self) -> None:
        """Stops watching every child (the loop closes); their pidfds are closed.

        The watch then lets go of its loop: a closed loop is freed as soon as
        nothing refers to it, not at the next cycle collection.
        """
        for pid in list(self._children):
            self._forget(pid)
        self._loop = None


async def make_subprocess_transport(
    loop: Any,
    protocol: protocols.BaseProtocol,
    args: Any,
    shell: bool,
    stdin: Any,
    stdout: Any,
    stderr: Any,
    bufsize: int,
    extra: Any = None,
    **kwargs: Any,
) -> base_subprocess.BaseSubprocessTransport:
    """``loop._make_subprocess_transport`` with the child watched by ``loop``'s pidfds."""
    waiter = loop.create_future()
    transp = unix_events._UnixSubprocessTransport(  # type: ignore[attr-defined]
        loop,
        protocol,
        args,
        shell,
        stdin,
        stdout,
        stderr,
        bufsize,
        waiter=waiter,
        extra=extra,
        **kwargs,
    )
    watched = False
    try:
        loop._children.watch(transp)
        watched = True
        await waiter
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        transp.close()  # kills the child if it still runs
        if watched:
            await transp._wait()
        else:
            # No pidfd (out of descriptors): reap the killed child here.
            popen = transp.get_extra_info("subprocess")
            transp._process_exited(popen.wait())
        raise
    return transp  # type: ignore[no-any-return]
