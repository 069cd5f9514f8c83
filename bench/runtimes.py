"""The runtimes compared: what each is, which package brings it, and its version.

The asyncio family (asyncio, uvloop, rloop) shares one implementation of each
workload and differs only in the event loop factory given to
``asyncio.Runner``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Runtime:
    name: str
    #: The implementation family a workload module provides: "tiffany",
    #: "asyncio", "trio" or "gevent".
    family: str
    #: The module to import (also the distribution name on PyPI), None for the stdlib.
    module: str | None
    #: The PyPI package the harness installs (None: not installed by the harness).
    pip_name: str | None


RUNTIMES: list[Runtime] = [
    Runtime("tiffany", "tiffany", "tiffany", None),  # built by maturin, not from PyPI
    Runtime("asyncio", "asyncio", None, None),
    Runtime("uvloop", "asyncio", "uvloop", "uvloop"),
    Runtime("rloop", "asyncio", "rloop", "rloop"),
    Runtime("trio", "trio", "trio", "trio"),
    Runtime("gevent", "gevent", "gevent", "gevent"),
]
BY_NAME = {r.name: r for r in RUNTIMES}
PEERS = [r.name for r in RUNTIMES if r.name != "tiffany"]


def loop_factory(name: str) -> Callable[[], Any]:
    """The event loop factory of an asyncio-family runtime."""
    import asyncio

    if name == "asyncio":
        return asyncio.new_event_loop
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop  # type: ignore[no-any-return, unused-ignore]
    if name == "rloop":
        import rloop  # type: ignore[import-not-found, unused-ignore]

        return rloop.new_event_loop  # type: ignore[no-any-return, unused-ignore]
    raise ValueError(f"{name} is not an asyncio-family runtime")


def install_peers(python: str = sys.executable) -> dict[str, str]:
    """``pip install`` each peer separately; returns {name: error} for the failures."""
    failures: dict[str, str] = {}
    for r in RUNTIMES:
        if r.pip_name is None:
            continue
        proc = subprocess.run(
            [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", r.pip_name],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            failures[r.name] = lines[-1] if lines else f"pip exited {proc.returncode}"
    return failures


def probe(env: dict[str, str], python: str = sys.executable) -> dict[str, dict[str, str | None]]:
    """For each runtime: its version and location, or why it is unavailable.

    Probed in a subprocess (with the workers' environment) so the harness
    process imports none of them.
    """
    code = (
        "import importlib, importlib.metadata, json, platform, sys\n"
        "out = {}\n"
        f"for name, module in {[(r.name, r.module) for r in RUNTIMES]!r}:\n"
        "    try:\n"
        "        if module is None:\n"
        "            out[name] = {'version': platform.python_version(), 'error': None}\n"
        "            continue\n"
        "        m = importlib.import_module(module)\n"
        "        out[name] = {'version': importlib.metadata.version(module), 'error': None,\n"
        "                     'path': m.__file__}\n"
        "    except Exception as e:\n"
        "        out[name] = {'version': None, 'error': f'{type(e).__name__}: {e}'}\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, check=True)
    import json

    result: dict[str, dict[str, str | None]] = json.loads(proc.stdout)
    return result
