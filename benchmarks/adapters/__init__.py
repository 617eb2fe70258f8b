"""Adapters by framework name, imported lazily: a peer that is not installed only fails its
own measurements."""

from __future__ import annotations

import importlib

from .base import Adapter, Context, NotSupported

#: name -> (module, or module:class when it is not the module's ADAPTER; brokers it runs
#: on). Kept here, not on the classes, so the planner knows the brokers without importing
#: any framework.
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "aiotq": ("aiotq_", ("redis", "amqp", "sqlite")),
    "aiotq-redis-results": ("aiotq_:AiotqRedisResultsAdapter", ("amqp",)),
    "aiotq-v2-lazy": ("aiotq_:AiotqV2LazyAdapter", ("amqp",)),
    "aiotq-uvloop": ("aiotq_uvloop", ("redis", "amqp", "sqlite")),
    "celery": ("celery_", ("redis", "amqp")),
    "taskiq": ("taskiq_", ("redis", "amqp")),
    "arq": ("arq_", ("redis",)),
    "saq": ("saq_", ("redis",)),
    "streaq": ("streaq_", ("redis",)),
    "dramatiq": ("dramatiq_", ("redis", "amqp")),
    "huey": ("huey_", ("redis", "sqlite")),
    "raw-redis": ("raw_redis", ("redis",)),
    "raw-aiopika": ("raw_aiopika", ("amqp",)),
}

#: Adapters measured only in some scenarios: a variant of aiotq's setup runs where it
#: differs from the default and tells something the headline rows do not (results in Redis
#: change only B2 and C; the queue kind is a trade between the confirmed enqueue and the
#: round trip; uvloop is measured on one enqueue mode, the drains and C).
SCENARIOS: dict[str, tuple[str, ...]] = {
    "aiotq-redis-results": ("B2", "C"),
    "aiotq-v2-lazy": ("A:delay", "C"),
    "aiotq-uvloop": ("A:delay", "B1", "B2", "C"),
}


def load(name: str) -> type[Adapter]:
    module_name, _, class_name = MODULES[name][0].partition(":")
    module = importlib.import_module(f".{module_name}", __package__)
    adapter: type[Adapter] = getattr(module, class_name or "ADAPTER")
    return adapter


__all__ = ["MODULES", "SCENARIOS", "Adapter", "Context", "NotSupported", "load"]
