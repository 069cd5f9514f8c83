"""The examples run and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(name: str) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout


def test_quickstart() -> None:
    assert run("quickstart.py").strip() == "2"


def test_echo_server() -> None:
    # 10 clients x 100 messages; "message 0\n" .. "message 99\n" is 1,090 bytes each.
    assert run("echo_server.py").strip() == "echoed 10900 bytes"


def test_pyos_generators() -> None:
    out = run("pyos_generators.py")
    assert "main returned 5 at 3.0 virtual seconds" in out
    assert out.count("(task 1)") == 3 and out.count("(task 2)") == 2


def test_structured_concurrency() -> None:
    # The deadline at 10 s cut the archive lookup short; its shielded
    # clean-up took 0.5 s more. The failing child cancelled the mirror
    # lookup at 12.5 s, whose clean-up ended at 13 s.
    assert run("structured.py").splitlines() == [
        "gave up on the rest: True at 10.5 s",
        "results: ['cache: found', 'search: found']",
        "group failed: ['mirror unreachable'] at 13.0 s",
    ]


@pytest.mark.parametrize("module", ["tiffany"])
def test_python_m_tiffany_demo(module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", module], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "supervisor: slow task is cancelled" in out
    assert "results: ['urgent done', 'normal done', 'batch done', 'report done']" in out
    assert "metrics:" in out
