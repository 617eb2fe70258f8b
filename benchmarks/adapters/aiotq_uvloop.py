"""aiotq with uvloop as the event loop of the caller and the worker (``aiotq worker --loop
uvloop``): an optional speed-up, reported as a row of its own, never as aiotq's headline."""

from __future__ import annotations

import asyncio

import uvloop

from .aiotq_ import AiotqAdapter


class AiotqUvloopAdapter(AiotqAdapter):
    name = "aiotq-uvloop"
    pool = "asyncio on uvloop, concurrency 100"

    @classmethod
    def new_loop(cls) -> asyncio.AbstractEventLoop:
        return uvloop.new_event_loop()


ADAPTER = AiotqUvloopAdapter
