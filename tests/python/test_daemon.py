"""``tiffany.Client`` against a real ``tiffanyd``, started from the package
(``tiffany._cli.daemon``, what the ``tiffanyd`` console script runs) on a
temporary socket and data directory. Every wait is bounded; readiness is read
from the daemon's log."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import tiffany

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="tiffanyd needs Linux")

START = "from tiffany._cli import daemon; daemon()"


class Daemon:
    """A daemon in a subprocess: ``start`` (a ``python -c`` script, by default
    ``tiffanyd``) with ``--socket``, ``--data-dir`` and ``extra`` as its
    arguments; returns once it logged that it is ready (the lines it logged
    until then are in ``startup``)."""

    def __init__(self, tmp: Path, *extra: str, start: str = START) -> None:
        self.socket = tmp / "run" / "tiffanyd.sock"
        self.startup: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                start,
                "--socket",
                str(self.socket),
                "--data-dir",
                str(tmp / "data"),
                *extra,
            ],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RUST_LOG": "info", "XDG_CONFIG_HOME": str(tmp / "none")},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        while True:
            line = self.lines.get(timeout=30)
            assert line is not None, "tiffanyd exited before it was ready"
            self.startup.append(line)
            if "tiffanyd ready" in line:
                break

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    yield d
    d.stop()


def test_submit_exec_wait_logs(daemon: Daemon) -> None:
    c = tiffany.Client(daemon.socket)
    job = c.exec(["sh", "-c", "echo hello; echo oops >&2; exit 3"])
    assert isinstance(job, tiffany.Job) and job.state in ("queued", "running")
    done = c.wait(job.id, timeout=30)
    assert done.state == "failed" and done.exit_code == 3 and done.done
    logs = c.logs(job.id)
    assert logs.stdout == b"hello\n" and logs.stderr == b"oops\n"
    with pytest.raises(AttributeError):
        done.state = "succeeded"  # type: ignore[misc]

    s = c.submit("sleep", {"seconds": 0}, priority=3, key="k")
    assert c.submit("sleep", {"seconds": 9}, key="k").id == s.id
    assert c.wait(s.id, timeout=30).succeeded
    after = c.exec(["true"], after=[job.id])
    assert c.wait(after.id, timeout=30).state == "cancelled"
    assert [j.id for j in c.list("failed")] == [job.id]
    assert c.get(s.id).priority == 3
    assert c.health()["status"] == "serving"


def test_cancel_timeout_and_watch(daemon: Daemon) -> None:
    c = tiffany.Client(daemon.socket)
    long = c.exec(["sleep", "30"])
    events = c.watch(long.id)
    c.cancel(long.id)
    states = []
    for j in events:
        assert j.id == long.id
        states.append(j.state)
        if j.done:
            break
    assert states[-1] == "cancelled"
    t = c.exec(["sleep", "30"], timeout=0.2)
    assert c.wait(t.id, timeout=30).state == "timed_out"


def test_errors_are_exceptions(daemon: Daemon, tmp_path: Path) -> None:
    c = tiffany.Client(daemon.socket)
    with pytest.raises(tiffany.JobNotFound):
        c.get(424242)
    with pytest.raises(ValueError, match="unknown kind"):
        c.submit("teleport")
    with pytest.raises(ValueError, match="priority"):
        c.submit("sleep", {"seconds": 0}, priority=300)
    with pytest.raises(tiffany.DaemonUnavailable):
        tiffany.Client(tmp_path / "nobody.sock")
    assert issubclass(tiffany.Unauthenticated, PermissionError)


def test_overloaded(tmp_path: Path) -> None:
    d = Daemon(tmp_path, "--max-running", "1", "--max-queued", "1", "--grace", "0.2")
    try:
        c = tiffany.Client(d.socket)
        c.submit("sleep", {"seconds": 30})
        c.submit("sleep", {"seconds": 30})
        with pytest.raises(tiffany.Overloaded):
            c.submit("sleep", {"seconds": 0})
    finally:
        assert d.stop() == 0


def test_shutdown_and_console_script(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tiffany._cli import cli; cli()",
            "--socket",
            str(d.socket),
            "exec",
            "--",
            "echo",
            "hi",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    job_id = int(out.stdout)
    c = tiffany.Client(d.socket)
    assert c.wait(job_id, timeout=30).succeeded
    c.shutdown(grace=1)
    assert d.proc.wait(timeout=30) == 0


def test_client_vsock_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one of socket, tcp and vsock"):
        tiffany.Client(tcp="127.0.0.1:1", vsock=(3, 7070))
    with pytest.raises(ValueError, match="one of socket, tcp and vsock"):
        tiffany.Client(tmp_path / "x.sock", vsock=(3, 7070))
    for bad in [(3,), (3, -1), (3, 2**32), ("3", 7070), [3, 7070], (3, True)]:
        with pytest.raises(ValueError, match=r"\(cid, port\)"):
            tiffany.Client(vsock=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tls_ca is for TCP"):
        tiffany.Client(vsock=(3, 7070), tls_ca=tmp_path / "ca.pem")
