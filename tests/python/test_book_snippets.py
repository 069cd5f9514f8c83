"""The Python snippets of the book's pages that promise runnable examples run
as written: each ```python block of these pages is a whole program, run in a
fresh interpreter, and must exit with status 0 (the snippets assert what they
show)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[2] / "docs/mdbook/src"
PAGES = [
    "guides/asyncio.md",
    "concepts/cancellation.md",
    "concepts/structured-concurrency.md",
]
SNIPPETS = [
    pytest.param(code, id=f"{page}#{index}")
    for page in PAGES
    for index, code in enumerate(
        re.findall(r"```python\n(.*?)```", (BOOK / page).read_text(), re.S)
    )
]


def test_every_page_has_snippets() -> None:
    for page in PAGES:
        assert "```python\n" in (BOOK / page).read_text(), page


@pytest.mark.parametrize("code", SNIPPETS)
def test_snippet_runs(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
