"""Shared fixtures of the Python suite."""

from __future__ import annotations

import pytest

import tiffany


@pytest.fixture
def sched() -> tiffany.Scheduler:
    """A fresh scheduler on the virtual clock: deterministic, and an hour of
    sleeping takes no wall time."""
    return tiffany.Scheduler(clock="virtual")
