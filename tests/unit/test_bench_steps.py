"""benchmarks.amqp_steps: the events of caller and worker become round trips."""

from __future__ import annotations

from benchmarks.amqp_steps import FOLLOWS, per_round_trip


def trip_events(start: float) -> list[tuple[str, float]]:
    """One round trip's events, a millisecond apart in the order of the table."""
    steps = ["delay() called", *FOLLOWS]
    return [(step, start + index / 1000) for index, step in enumerate(steps)]


def test_events_of_both_processes_become_round_trips_in_ms_since_delay() -> None:
    first, second = trip_events(10.0), trip_events(20.0)
    worker = [event for event in first + second if event[0] in ("delivery read", "task started")]
    caller = [event for event in first + second if event not in worker]
    trips = per_round_trip(caller[::-1] + worker)  # the order they come in does not matter
    assert len(trips) == 2
    for trip in trips:
        assert trip["delay() called"] == 0.0
        assert round(trip["get() returned"], 6) == len(FOLLOWS)


def test_a_round_trip_missing_a_step_is_left_out_and_a_repeated_step_counts_once() -> None:
    incomplete = [event for event in trip_events(10.0) if event[0] != "confirm read"]
    repeated = [*trip_events(20.0), ("delivery read", 20.0095)]  # a later read of the trip
    [trip] = per_round_trip(incomplete + repeated)
    assert round(trip["delivery read"], 6) == 2.0
