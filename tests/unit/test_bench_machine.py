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


def test_turns_count_per_microsecond_the_loop_ran() -> None:
    # 1.5 s of 2 ran: 3 million turns are 2 per µs, not 1.5.
    reading = summarize(2.0, [0.5], [0.0006] * 10, turns=3_000_000)
    assert reading.turns_per_us == pytest.approx(2.0)


def test_ping_pongs_give_the_wakeup_percentiles() -> None:
    pongs = [0.00002] * 98 + [0.0001, 0.002]
    reading = summarize(2.0, [], [0.0006] * 10, turns=1, pongs=pongs)
    assert reading.wakeup_p50_us == pytest.approx(20)
    assert reading.wakeup_p99_us == pytest.approx(2000)
    assert "ping-pong p50 20 µs p99 2000 µs" in reading.describe()


def test_no_ping_pong_leaves_the_wakeup_out() -> None:
    reading = summarize(2.0, [], [0.0006] * 10, turns=1)
    assert reading.wakeup_p50_us is None
    assert "ping-pong" not in reading.describe()


def test_the_probe_measures_this_machine() -> None:
    from benchmarks.machine import probe

    reading = probe(busy=0.05, sleeps=5, pongs=5)
    assert reading.turns_per_us > 0
    assert reading.wakeup_p50_us is not None and reading.wakeup_p50_us > 0
