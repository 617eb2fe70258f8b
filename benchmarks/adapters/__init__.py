"""Adapters by framework name, imported lazily: a peer that is not installed only fails its
own measurements."""

from __future__ import annotations

import importlib

from .base import Adapter, Context, NotSupported

#: name -> (module, brokers it runs on). Kept here, not on the classes, so the planner
#: knows the brokers without importing any framework.
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "aiotq": ("aiotq_", ("redis", "amqp", "sqlite")),
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


def load(name: str) -> type[Adapter]:
    module = importlib.import_module(f".{MODULES[name][0]}", __package__)
    adapter: type[Adapter] = module.ADAPTER
    return adapter


__all__ = ["MODULES", "Adapter", "Context", "NotSupported", "load"]
