"""Helpers shared by every runtime's implementation of a workload."""

from __future__ import annotations

import os
import random
import socket
import time


class Progress:
    """Counts tasks starting and finishing, and notes when the last one did each.

    Every implementation calls ``start()`` when a task first runs and
    ``finish(units)`` when it is done, so the harness can check the totals and
    time the phase between "every task has started" and "every task is done".
    """

    def __init__(self, tasks: int) -> None:
        self.tasks = tasks
        self.started = 0
        self.finished = 0
        self.units = 0
        self.t_all_started = 0.0
        self.t_all_finished = 0.0

    def start(self) -> None:
        self.started += 1
        if self.started == self.tasks:
            self.t_all_started = time.perf_counter()

    def finish(self, units: int = 1) -> None:
        self.units += units
        self.finished += 1
        if self.finished == self.tasks:
            self.t_all_finished = time.perf_counter()


def durations(n: int, max_seconds: float, seed: int) -> list[float]:
    """``n`` sleep durations uniform in [0, max_seconds): the same for every runtime."""
    rng = random.Random(seed)
    return [rng.random() * max_seconds for _ in range(n)]


def rss_bytes() -> int:
    """The current resident set size of this process."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def nodelay(sock: socket.socket) -> None:
    """Disable Nagle's algorithm (asyncio, uvloop, rloop and trio do it by default)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
