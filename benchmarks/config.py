"""Where the services are and how big each scenario is (environment overrides for URLs)."""

from __future__ import annotations

import os
from dataclasses import dataclass

#: A database number of its own, so cleaning up never touches anyone else's keys.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BROKERS = ("redis", "amqp", "sqlite")

#: Publisher confirms on RabbitMQ for the peers that default to none (Celery, dramatiq);
#: aiotq, taskiq-aio-pika and the raw aio-pika client always wait for confirms.
AMQP_CONFIRMS = os.environ.get("BENCH_AMQP_CONFIRMS", "") == "1"

#: Publishes are grouped in gathers of this many calls (scenario A).
BATCH = 100
#: Worker concurrency of every async framework.
CONCURRENCY = 100


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each scenario is, and how long any one measurement may take."""

    enqueue: int = 10_000
    drain: int = 10_000
    round_trips: int = 500
    warmup: int = 10
    etas: int = 100_000
    due: int = 10_000
    repeats: int = 3
    #: Round trips stop after this many seconds (default polling of 0.5 s needs it).
    round_trip_budget: float = 20.0
    #: Longest any single measurement (one driver process) may run.
    timeout: float = 300.0


FULL = Sizes()
QUICK = Sizes(enqueue=2_000, drain=2_000, round_trips=200, warmup=10, etas=10_000,
              due=2_000, repeats=1, round_trip_budget=10.0, timeout=120.0)
