"""``tiffany.exec``: commands as native tasks that Python tasks await.

Deterministic: no test sleeps to wait for something or asserts on a
duration. A timeout test gives a short timeout to a child that would sleep far
longer; where a test must see a process die it waits on the process's pidfd
(a watchdog against hangs, not an assertion on time).
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import signal
import stat
import sys
from pathlib import Path

import pytest

import tiffany
import tiffany.lowlevel

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process tasks need Linux")

WATCHDOG_MS = 60_000


def run_exec(argv: list[str], **kwargs: object) -> tiffany.Completed:
    async def main() -> tiffany.Completed:
        done: tiffany.Completed = await tiffany.exec(argv, **kwargs)  # type: ignore[arg-type]
        return done

    return tiffany.run(main())


def assert_exits(pidfd: int, what: str) -> None:
    """Waits (within the watchdog) for the process behind ``pidfd`` to exit."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    assert poller.poll(WATCHDOG_MS), f"{what} is still running"


def pidfd_or_none(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def test_output_and_exit_code() -> None:
    done = run_exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert isinstance(done, tiffany.Completed)
    assert done.stdout == b"out\n"
    assert done.stderr == b"err\n"
    assert done.returncode == 3
    assert done.signal is None
    assert not done.timed_out
    assert not done.stdout_truncated and not done.stderr_truncated
    assert "returncode=3 stdout=4B stderr=4B" in repr(done)


def test_success_and_empty_output() -> None:
    done = run_exec(["true"])
    assert done.returncode == 0
    assert done.stdout == b"" and done.stderr == b""


def test_signal_death_is_a_negative_returncode() -> None:
    done = run_exec(["sh", "-c", "kill -KILL $$"])
    assert done.signal == signal.SIGKILL
    assert done.returncode == -signal.SIGKILL


def test_stdin_is_fed() -> None:
    data = bytes(range(256)) * 1000  # more than a pipe holds
    assert run_exec(["cat"], stdin=data).stdout == data
    assert run_exec(["cat"], stdin=bytearray(b"abc")).stdout == b"abc"
    assert run_exec(["cat"], stdin=memoryview(b"xyz")).stdout == b"xyz"
    assert run_exec(["cat"]).stdout == b""


def test_env_replaces_the_environment_and_cwd_applies(tmp_path: Path) -> None:
    done = run_exec(
        ["/usr/bin/env"],
        env={"ONLY": "this", b"RAW": b"bytes"},
        cwd=tmp_path,
    )
    assert sorted(done.stdout.splitlines()) == [b"ONLY=this", b"RAW=bytes"]
    here = run_exec(["pwd"], cwd=str(tmp_path))
    assert here.stdout.decode().strip() == str(tmp_path.resolve())


def test_capture_limit_truncates_without_blocking_the_child() -> None:
    done = run_exec(
        ["sh", "-c", "head -c 1000000 /dev/zero; echo done >&2"],
        capture_limit=1000,
    )
    assert done.returncode == 0
    assert len(done.stdout) == 1000
    assert done.stdout_truncated
    assert done.stdout_bytes == 1_000_000
    assert done.stderr == b"done\n"
    assert not done.stderr_truncated


def test_timeout_kills_the_process_group() -> None:
    done = run_exec(["sh", "-c", "sleep 100 & echo $!; wait"], timeout=1.0)
    assert done.timed_out
    assert done.signal == signal.SIGTERM
    grandchild = int(done.stdout.split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(done.pid, 0)  # reaped by the task
    fd = pidfd_or_none(grandchild)
    if fd is not None:  # an orphan not yet reaped by init: it must have exited
        try:
            assert_exits(fd, "the grandchild")
        finally:
            os.close(fd)


def test_cancel_kills_the_process_group(tmp_path: Path) -> None:
    fifo = tmp_path / "pids"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    pidfds: list[int] = []

    async def main() -> None:
        task = tiffany.exec(["sh", "-c", f"sleep 100 & echo $$ $! > '{fifo}'; wait"])
        text = b""
        while not text.endswith(b"\n"):
            await tiffany.lowlevel.wait_readable(reader)
            try:
                text += os.read(reader, 64)
            except BlockingIOError:
                pass
        pidfds.extend(os.pidfd_open(int(p)) for p in text.split())
        assert task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        tiffany.run(main())
        assert len(pidfds) == 2
        assert_exits(pidfds[0], "the child")
        assert_exits(pidfds[1], "the grandchild")
    finally:
        os.close(reader)
        for fd in pidfds:
            os.close(fd)


def test_command_not_found_raises_when_awaited() -> None:
    async def main() -> None:
        task = tiffany.exec(["tiffany-no-such-command", "x"])
        with pytest.raises(FileNotFoundError) as info:
            await task
        assert info.value.errno == errno.ENOENT
        assert info.value.filename == "tiffany-no-such-command"
        assert task.state == "failed"

    tiffany.run(main())


def test_not_executable_raises_permission_error(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(PermissionError):
        run_exec([str(script)])


def test_missing_cwd_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        run_exec(["true"], cwd=tmp_path / "missing")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"argv": "echo hi"}, TypeError),
        ({"argv": []}, ValueError),
        ({"argv": ["echo", "a\0b"]}, ValueError),
        ({"argv": ["echo", 3]}, TypeError),
        ({"argv": ["echo"], "env": {"A=B": "x"}}, ValueError),
        ({"argv": ["echo"], "stdin": "text"}, TypeError),
        ({"argv": ["echo"], "capture_limit": -1}, ValueError),
        ({"argv": ["echo"], "timeout": -1.0}, ValueError),
        ({"argv": ["echo"], "timeout": float("nan")}, ValueError),
    ],
)
def test_bad_arguments_raise_at_once(kwargs: dict[str, object], error: type[Exception]) -> None:
    async def main() -> None:
        with pytest.raises(error):
            tiffany.exec(**kwargs)  # type: ignore[arg-type]

    tiffany.run(main())


def test_exec_needs_a_running_scheduler() -> None:
    with pytest.raises(RuntimeError):
        tiffany.exec(["true"])


def test_many_commands_alongside_python_tasks() -> None:
    async def ticker() -> int:
        for _ in range(50):
            await tiffany.yield_now()
        return 50

    async def main() -> list[bytes]:
        tasks = [tiffany.exec(["sh", "-c", f"echo {i}"], name=f"echo-{i}") for i in range(10)]
        t = tiffany.spawn(ticker())
        outs = [(await task).stdout for task in tasks]
        assert await t == 50
        return outs

    assert tiffany.run(main()) == [f"{i}\n".encode() for i in range(10)]


def test_timeout_is_real_time_under_the_virtual_clock() -> None:
    async def main() -> tiffany.Completed:
        task = tiffany.exec(["sh", "-c", "echo fine"], timeout=600)
        await tiffany.sleep(3600)  # the virtual clock jumps an hour at once
        done: tiffany.Completed = await task
        return done

    done = tiffany.run(main(), clock="virtual")
    assert not done.timed_out
    assert done.stdout == b"fine\n"
