"""``tiffany.serve``: the daemon hosted in this Python process, running
``python`` jobs (named ``async def`` functions) on its kernel.

The daemon is ``tiffanyd`` itself (compiled into the extension), on a thread
of its own; the kernel runs on the thread that called :func:`serve`, which
runs each ``python`` job's coroutine as a task like any other. See the book's
"Operating tiffanyd" chapter, section "Hosting the daemon in Python".
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from tiffany import _native
from tiffany._native import Cancelled

__all__ = ["serve"]

_log = logging.getLogger("tiffany.serve")


async def _run_job(
    job: int, name: str, fn: Callable[..., Awaitable[Any]], args: Any, kwargs: Any
) -> tuple[bool, str]:
    """Runs one ``python`` job: ``(True, result as JSON)`` or ``(False, why it failed)``.

    A cancel (the client's, or the job's timeout) propagates as
    ``Cancelled``: the job ends cancelled or timed out.
    """
    try:
        value = await fn(*args, **kwargs)
    except (Cancelled, GeneratorExit):
        raise
    except BaseException as e:
        _log.warning("python job %d (%s) failed", job, name, exc_info=True)
        text = str(e)
        return False, f"{type(e).__name__}: {text}" if text else type(e).__name__
    try:
        return True, json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        return False, f"the result of {name}() is not JSON-serialisable: {e}"


def _signature(fn: Callable[..., Any]) -> dict[str, Any] | None:
    """The shape of ``fn``'s signature that the daemon checks a job's args
    against at submit (see ``_native.serve_daemon``), or ``None`` when
    ``inspect`` cannot read one (the call is then checked when the job runs).
    """
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    kind = inspect.Parameter
    return {
        "positional": [
            (p.name, p.default is kind.empty)
            for p in params
            if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)
        ],
        "positional_only": sum(p.kind is kind.POSITIONAL_ONLY for p in params),
        "var_positional": any(p.kind is kind.VAR_POSITIONAL for p in params),
        "keyword_only": [
            (p.name, p.default is kind.empty) for p in params if p.kind is kind.KEYWORD_ONLY
        ],
        "var_keyword": any(p.kind is kind.VAR_KEYWORD for p in params),
    }


def _setting_args(settings: Mapping[str, Any]) -> list[str]:
    """``tiffanyd``'s command line for ``settings`` (snake-case keys)."""
    known = dict(_native.daemon_settings())
    argv: list[str] = []
    for key, value in settings.items():
        if key not in known or key in ("socket", "data_dir"):
            raise TypeError(f"serve() got an unexpected keyword argument {key!r}")
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if known[key]:
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be True or False, got {value!r}")
            if value:
                argv.append(flag)
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float, os.PathLike)):
            raise ValueError(f"{key}={value!r}: expected a string, a number or a path")
        argv.append(f"{flag}={os.fspath(value) if isinstance(value, os.PathLike) else value}")
    return argv


def serve(
    functions: Mapping[str, Callable[..., Awaitable[Any]]],
    *,
    socket: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    **settings: Any,
) -> None:
    """Runs the daemon in this process until it is shut down, serving the
    ``async def`` functions in ``functions`` (name → function) as ``python``
    jobs.

    A client submits ``kind="python"`` with args ``{"function": name,
    "args": [...], "kwargs": {...}}`` (JSON); the job runs
    ``await functions[name](*args, **kwargs)`` as a task on the daemon's
    kernel, which runs on this thread, with the job's priority, timeout,
    cancellation and dependencies like any other job. Its result, as JSON, is
    the job's ``result``; an exception fails the job with ``error`` naming its
    type and message; a result that JSON cannot encode fails the job too.
    A job whose args do not fit the function's signature (a missing or
    unexpected argument, too many positional ones) is refused at submit with
    the message Python's call would give, and never logged.
    The functions await Tiffany's awaitables (``tiffany.sleep``,
    ``tiffany.exec``, tasks), not asyncio's.

    ``socket`` and ``data_dir`` are as for ``tiffanyd``; ``settings`` are its
    other settings by their snake-case names (``max_running=8``,
    ``tcp_addr="127.0.0.1:7070"``, ``token_file=...``, ``grace=5``,
    ``insecure_tcp=True``, …); ``TIFFANY_*`` variables and the config file
    apply as they do to ``tiffanyd``. An unknown setting is a ``TypeError``,
    a bad value a ``ValueError``; a daemon that cannot start (another one on
    the socket, a corrupt log) raises ``RuntimeError``.

    Blocks until SIGTERM or SIGINT (which drain, as they do ``tiffanyd``), or
    a client's ``shutdown()``; then returns. Jobs that had not ended run again
    on the next start.
    """
    if not isinstance(functions, Mapping):
        raise TypeError(
            f"functions must be a mapping of name to async function, got {type(functions).__name__}"
        )
    table: dict[str, Callable[..., Awaitable[Any]]] = {}
    for name, fn in functions.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"function names must be non-empty strings, got {name!r}")
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"functions[{name!r}] must be an async def function, got {fn!r}")
        table[name] = fn
    argv = ["tiffanyd"]
    if socket is not None:
        argv.append(f"--socket={os.fspath(socket)}")
    if data_dir is not None:
        argv.append(f"--data-dir={os.fspath(data_dir)}")
    argv += _setting_args(settings)

    def start(job: int, args_json: str) -> Any:
        spec = json.loads(args_json)
        name = spec["function"]
        return _run_job(job, name, table[name], spec.get("args", []), spec.get("kwargs", {}))

    # The daemon handles SIGINT and SIGTERM (drain); Python's SIGINT handler
    # would also raise KeyboardInterrupt inside whatever job runs.
    main = threading.current_thread() is threading.main_thread()
    saved = signal.signal(signal.SIGINT, signal.SIG_DFL) if main else None
    try:
        _native.serve_daemon(argv, {name: _signature(fn) for name, fn in table.items()}, start)
    finally:
        if saved is not None:
            signal.signal(signal.SIGINT, saved)
