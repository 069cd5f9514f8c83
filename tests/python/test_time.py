"""Time: the virtual clock and sleeps."""

from __future__ import annotations

import pytest

import tiffany
import tiffany.lowlevel
import tiffany.testing


def test_virtual_hour_is_instant_and_now_advances() -> None:
    async def main() -> float:
        await tiffany.sleep(3600)
        return tiffany.now()

    sched = tiffany.Scheduler(clock="virtual")
    assert sched.now() == 0.0
    assert sched.run(main()) == 3600.0


def test_sleep_accepts_ints_floats_and_refuses_bad_values() -> None:
    async def main() -> list[float]:
        times = []
        for d in (1, 0.5, True, 0, 0.0):
            await tiffany.sleep(d)
            times.append(tiffany.now())
        return times

    assert tiffany.run(main(), clock="virtual") == [1.0, 1.5, 2.5, 2.5, 2.5]
    with pytest.raises(ValueError, match="finite number of seconds"):
        tiffany.sleep(-1)
    with pytest.raises(ValueError, match="finite number of seconds"):
        tiffany.sleep(float("nan"))
    with pytest.raises(TypeError):
        tiffany.sleep("1")  # type: ignore[arg-type]
    # sleep(0) is a yield: the shared object, no allocation.
    assert tiffany.sleep(0) is tiffany.yield_now()
