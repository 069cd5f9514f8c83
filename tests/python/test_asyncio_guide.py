"""The snippets of the guide "Using asyncio libraries" run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs/mdbook/src/guides/asyncio.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_snippet_runs(index: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SNIPPETS[index]], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
