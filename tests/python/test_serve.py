"""``tiffany.serve``: the daemon hosted in a Python process, running ``python``
jobs, driven through ``tiffany.Client`` and the ``tiffany`` command. Each
daemon runs in a subprocess (a script of this file) on a temporary socket and
data directory; every wait is bounded."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_daemon import Daemon

import tiffany

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="tiffanyd needs Linux")

# argv: --socket PATH --data-dir DIR [settings as JSON]
SERVE = """
import json, os, sys
import tiffany

async def add(a, b):
    return a + b

async def greet(name, *, punct="!"):
    return {"greeting": f"hello {name}{punct}"}

async def boom(message):
    raise ValueError(message)

async def opaque():
    return {1, 2}

async def nap(seconds):
    await tiffany.sleep(seconds)
    return "rested"

async def once(marker):
    # The first attempt leaves a mark and naps; a later one returns at once.
    if os.path.exists(marker):
        return "again"
    open(marker, "w").close()
    await tiffany.sleep(60)
    return "first"

settings = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
tiffany.serve(
    {"add": add, "greet": greet, "boom": boom, "opaque": opaque, "nap": nap, "once": once},
    socket=sys.argv[2],
    data_dir=sys.argv[4],
    **settings,
)
"""

CLI = "from tiffany._cli import cli; cli()"


def serve(tmp: Path, **settings: Any) -> Daemon:
    extra = (json.dumps(settings),) if settings else ()
    return Daemon(tmp, *extra, start=SERVE)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Daemon]:
    d = serve(tmp_path)
    yield d
    assert d.stop() == 0


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=60
    )


def python_job(function: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"function": function, "args": list(args), "kwargs": kwargs}


def wait_until_running(c: tiffany.Client, job: int) -> None:
    events = c.watch(job)  # subscribed from here on: no change is missed
    if c.get(job).state == "running":
        return
    for j in events:
        if j.state != "queued":
            assert j.state == "running", j
            return


def test_a_python_function_job_through_the_client(host: Daemon) -> None:
    c = tiffany.Client(host.socket)
    job = c.submit("python", python_job("add", 2, 40))
    assert job.kind == "python" and job.args == python_job("add", 2, 40)
    done = c.wait(job.id, timeout=30)
    assert done.state == "succeeded", done
    assert done.result == 42 and done.error is None and done.attempts == 1
    kw = c.wait(c.submit("python", python_job("greet", "ada", punct="?")).id, timeout=30)
    assert kw.result == {"greeting": "hello ada?"}


def test_failures_are_job_failures(host: Daemon) -> None:
    c = tiffany.Client(host.socket)
    failed = c.wait(c.submit("python", python_job("boom", "no luck")).id, timeout=30)
    assert failed.state == "failed" and failed.error == "ValueError: no luck"
    assert failed.result is None
    opaque = c.wait(c.submit("python", python_job("opaque")).id, timeout=30)
    assert opaque.state == "failed"
    assert opaque.error is not None and "not JSON-serialisable" in opaque.error
    # A call that fits the signature but fails inside is a job failure.
    wrong = c.wait(c.submit("python", python_job("add", 1, "x")).id, timeout=30)
    assert wrong.state == "failed" and wrong.error is not None
    assert wrong.error.startswith("TypeError: ")
    # The host keeps serving after its functions failed.
    assert c.wait(c.submit("python", python_job("add", 1, 1)).id, timeout=30).result == 2


def test_bad_python_jobs_are_refused_at_submit(host: Daemon) -> None:
    c = tiffany.Client(host.socket)
    with pytest.raises(ValueError, match='unknown function "nope"'):
        c.submit("python", python_job("nope"))
    with pytest.raises(ValueError, match="python args"):
        c.submit("python", {"function": "add", "args": {"a": 1}})
    with pytest.raises(ValueError, match="python args"):
        c.submit("python", {"args": [1, 2]})
    # Args that do not fit the function's signature: Python's message.
    misfits = {
        "add() missing 1 required positional argument: 'b'": python_job("add", 1),
        "add() takes 2 positional arguments but 3 were given": python_job("add", 1, 2, 3),
        "add() got multiple values for argument 'a'": python_job("add", 1, 2, a=3),
        "greet() got an unexpected keyword argument 'loud'": python_job("greet", "x", loud=1),
        "greet() takes 1 positional argument but 2 were given": python_job("greet", "x", "?"),
        "opaque() takes 0 positional arguments but 1 was given": python_job("opaque", 1),
    }
    for message, job in misfits.items():
        with pytest.raises(ValueError, match=re.escape(f"python args: {message}")):
            c.submit("python", job)
    assert c.list() == []
    # What fits is accepted: a keyword for a positional parameter, a keyword-only one.
    fits = [
        python_job("add", 1, b=2),
        python_job("add", a=1, b=2),
        python_job("greet", "x", punct="?"),
    ]
    assert [c.wait(c.submit("python", j).id, timeout=30).state for j in fits] == ["succeeded"] * 3


def test_timeout_and_cancel(host: Daemon) -> None:
    c = tiffany.Client(host.socket)
    slow = c.submit("python", python_job("nap", 60), timeout=0.2)
    done = c.wait(slow.id, timeout=30)
    assert done.state == "timed_out" and done.error is not None and "timed out" in done.error
    long = c.submit("python", python_job("nap", 60))
    wait_until_running(c, long.id)
    c.cancel(long.id)
    assert c.wait(long.id, timeout=30).state == "cancelled"
    quick = c.submit("python", python_job("nap", 0.01))
    assert c.wait(quick.id, timeout=30).result == "rested"


def test_dependencies_on_exec_jobs(host: Daemon) -> None:
    c = tiffany.Client(host.socket)
    first = c.exec(["sh", "-c", "exit 0"])
    then = c.submit("python", python_job("add", 1, 2), after=[first.id])
    assert c.wait(then.id, timeout=30).result == 3
    assert c.get(first.id).state == "succeeded"
    bad = c.exec(["sh", "-c", "exit 7"])
    never = c.submit("python", python_job("add", 1, 2), after=[bad.id])
    ended = c.wait(never.id, timeout=30)
    assert ended.state == "cancelled" and ended.error == f"dependency {bad.id} ended failed"
    # And the other way round: an exec job after a python one.
    py = c.submit("python", python_job("add", 0, 0))
    after = c.exec(["sh", "-c", "echo ran"], after=[py.id])
    assert c.wait(after.id, timeout=30).succeeded
    assert c.logs(after.id).stdout == b"ran\n"


def test_python_jobs_through_the_cli(host: Daemon) -> None:
    sock = ("--socket", str(host.socket))
    out = cli(*sock, "submit", "python", "--args", json.dumps(python_job("add", 20, 22)))
    assert out.returncode == 0, out.stderr
    job = int(out.stdout)
    waited = cli(*sock, "--json", "wait", str(job), "--timeout", "30")
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["result"] == 42
    boom = cli(*sock, "submit", "python", "--args", json.dumps(python_job("boom", "x")))
    failed = cli(*sock, "--json", "wait", boom.stdout.strip(), "--timeout", "30")
    assert failed.returncode == 1 and json.loads(failed.stdout)["error"] == "ValueError: x"
    unknown = cli(*sock, "submit", "python", "--args", '{"function": "nope"}')
    assert unknown.returncode == 2 and "unknown function" in unknown.stderr
    slow = cli(
        *sock, "submit", "python", "--timeout", "0.2", "--args", json.dumps(python_job("nap", 60))
    )
    timed = cli(*sock, "--json", "wait", slow.stdout.strip(), "--timeout", "30")
    assert timed.returncode == 1 and json.loads(timed.stdout)["state"] == "timed_out"
    long = cli(*sock, "submit", "python", "--args", json.dumps(python_job("nap", 60)))
    wait_until_running(tiffany.Client(host.socket), int(long.stdout))
    assert cli(*sock, "cancel", long.stdout.strip()).returncode == 0
    cancelled = cli(*sock, "--json", "wait", long.stdout.strip(), "--timeout", "30")
    assert json.loads(cancelled.stdout)["state"] == "cancelled"
    first = cli(*sock, "exec", "--", "true")
    dep = cli(
        *sock,
        "submit",
        "python",
        "--after",
        first.stdout.strip(),
        "--args",
        json.dumps(python_job("add", 1, 1)),
    )
    assert cli(*sock, "wait", dep.stdout.strip(), "--timeout", "30").returncode == 0


def test_shutdown_returns_cleanly_and_jobs_run_again(tmp_path: Path) -> None:
    d = serve(tmp_path, grace=0)
    c = tiffany.Client(d.socket)
    marker = tmp_path / "marker"
    job = c.submit("python", python_job("once", str(marker)))
    wait_until_running(c, job.id)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0
    assert marker.exists()
    # Restarted on the same log: the interrupted job runs again on the new host.
    d = serve(tmp_path, grace=0)
    c = tiffany.Client(d.socket)
    again = c.wait(job.id, timeout=30)
    assert again.state == "succeeded" and again.result == "again" and again.attempts == 2
    c.shutdown()
    assert d.proc.wait(timeout=30) == 0
    assert not d.socket.exists()


def test_a_second_host_on_a_live_socket_is_refused(host: Daemon) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE,
            "--socket",
            str(host.socket),
            "--data-dir",
            str(host.socket.parent / "other"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "RuntimeError: tiffanyd: another tiffanyd is serving on" in out.stderr
    assert tiffany.Client(host.socket).health()["status"] == "serving"


def test_plain_tiffanyd_refuses_python_jobs(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    try:
        with pytest.raises(ValueError, match=r"needs a daemon hosted by Python \(tiffany.serve\)"):
            tiffany.Client(d.socket).submit("python", python_job("add", 1, 2))
    finally:
        assert d.stop() == 0


async def _f() -> None:
    pass


async def _nap() -> None:
    await tiffany.sleep(10)


def test_serve_checks_its_arguments(tmp_path: Path) -> None:
    where = {"socket": tmp_path / "s.sock", "data_dir": tmp_path / "data"}
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_runing'"):
        tiffany.serve({"f": _f}, max_runing=3, **where)
    with pytest.raises(ValueError, match="max-running"):
        tiffany.serve({"f": _f}, max_running="many", **where)
    with pytest.raises(ValueError, match="max-running must be at least 1"):
        tiffany.serve({"f": _f}, max_running=0, **where)
    with pytest.raises(ValueError, match="repair must be True or False"):
        tiffany.serve({"f": _f}, repair="yes", **where)
    with pytest.raises(ValueError, match="needs --token-file"):
        tiffany.serve({"f": _f}, tcp_addr="127.0.0.1:0", **where)
    with pytest.raises(TypeError, match="must be an async def function"):
        tiffany.serve({"f": print}, **where)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="mapping"):
        tiffany.serve([_f], **where)  # type: ignore[arg-type]
    assert not (tmp_path / "s.sock").exists()


def test_sigint_drains_instead_of_interrupting_a_job(tmp_path: Path) -> None:
    d = serve(tmp_path, grace=30)
    c = tiffany.Client(d.socket)
    job = c.submit("python", python_job("nap", 0.3))
    wait_until_running(c, job.id)
    d.proc.send_signal(signal.SIGINT)
    assert d.proc.wait(timeout=30) == 0
    logged = []
    while (line := d.lines.get(timeout=30)) is not None:
        logged.append(line)
    assert any("SIGINT: draining" in line for line in logged), logged
    assert not any("KeyboardInterrupt" in line for line in logged), logged
    # The running job finished within the grace: ended, not interrupted.
    d = serve(tmp_path)
    c = tiffany.Client(d.socket)
    ended = c.get(job.id)
    assert ended.state == "succeeded" and ended.result == "rested" and ended.attempts == 1
    assert d.stop() == 0


def test_a_refused_start_leaves_the_callers_process_as_it_was(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="needs --token-file"):
        tiffany.serve({"f": _f}, socket=tmp_path / "s.sock", tcp_addr="127.0.0.1:0")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # No logger was installed: a scheduler's shutdown (which the kernel
    # traces) writes nothing.
    sched = tiffany.Scheduler(clock="virtual")
    sched.spawn(_nap())
    assert sched.shutdown(0) == "timeout"
    assert capfd.readouterr().err == ""


# argv: --socket PATH --data-dir DIR; serves twice, then waits for a signal.
SERVE_TWICE = """
import signal, sys
import tiffany

async def add(a, b):
    return a + b

for n in (1, 2):
    tiffany.serve({"add": add}, socket=sys.argv[2], data_dir=sys.argv[4])
    print(f"served {n}", file=sys.stderr, flush=True)
print("pausing", file=sys.stderr, flush=True)
signal.pause()
print("a SIGTERM was swallowed", file=sys.stderr, flush=True)
"""


def test_serve_lends_the_signals_and_gives_them_back(tmp_path: Path) -> None:
    d = Daemon(tmp_path, start=SERVE_TWICE)

    def until(text: str) -> None:
        while (line := d.lines.get(timeout=30)) is not None:
            if text in line:
                return
        raise AssertionError(f"exited before {text!r}: {d.proc.wait(timeout=30)}")

    c = tiffany.Client(d.socket)
    assert c.submit("python", python_job("add", 1, 2)).id == 1
    d.proc.send_signal(signal.SIGINT)
    until("served 1")
    # The second daemon drains on SIGINT too (its handler is tokio's again,
    # not the default that would kill the process).
    until("tiffanyd ready")
    assert tiffany.Client(d.socket).wait(1, timeout=30).result == 3
    d.proc.send_signal(signal.SIGINT)
    until("served 2")
    until("pausing")
    # After the daemon, SIGTERM is the process's again: it ends it.
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == -signal.SIGTERM


def test_a_hosted_daemon_takes_the_retention_settings(tmp_path: Path) -> None:
    d = serve(tmp_path, retain_jobs=1)
    c = tiffany.Client(d.socket)
    first = c.submit("python", python_job("add", 1, 1))
    assert c.wait(first.id, timeout=30).result == 2
    second = c.submit("python", python_job("add", 2, 2))
    assert c.wait(second.id, timeout=30).result == 4
    with pytest.raises(tiffany.JobNotFound, match="dropped by the retention policy"):
        c.get(first.id)
    assert c.get(second.id).result == 4
    assert d.stop() == 0
