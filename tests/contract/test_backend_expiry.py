"""result_expires, for the backends that keep results for other processes to read."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from aiotq.results.base import ResultBackend
from tests.conftest import REDIS_URL
from tests.contract.test_backend import backend, meta

__all__ = ["backend"]

pytestmark = pytest.mark.parametrize(
    "urls",
    [
        pytest.param(("memory://", "memory://"), id="memory"),
        pytest.param(("sqlite", "sqlite"), id="sqlite"),
        pytest.param((REDIS_URL, REDIS_URL), id="redis", marks=pytest.mark.redis),
    ],
)


async def test_results_expire(backend: ResultBackend) -> None:
    task_id = str(uuid.uuid4())
    await backend.store(meta(task_id, "SUCCESS", 1))
    assert await backend.get(task_id) is not None
    await asyncio.sleep(2.2)
    assert await backend.get(task_id) is None
