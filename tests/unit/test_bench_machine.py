"""The benchmarks' machine probe: what its reading says about stalls and sleeps."""

from __future__ import annotations

import pytest

from benchmarks.machine import summarize


def test_stalls_count_against_the_busy_threads_share() -> None:
    reading = summarize(2.0, [0.1, 0.3, 0.2], [0.0006] * 99 + [0.05])
    assert reading.cpu_share == pytest.approx(0.7)
    assert reading.longest_stall_ms == pytest.approx(300)
    assert reading.sleep_p99_ms == pytest.approx(50)


def test_a_thread_never_stalled_ran_all_the_time() -> None:
    reading = summarize(2.0, [], [0.0006] * 200)
    assert reading.cpu_share == 1.0
    assert reading.longest_stall_ms == 0.0
    assert reading.sleep_p99_ms == pytest.approx(0.6)
    assert "100% of the time" in reading.describe()
