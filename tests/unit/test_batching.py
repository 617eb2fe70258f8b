"""Group commit: concurrent items share a flush; an eager batcher flushes a lone item at once."""

from __future__ import annotations

import asyncio

import pytest

from aiotq._batching import Batcher


class Recorder:
    """A flush that records its batches and the task that ran each, failing item "bad"."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.tasks: list[asyncio.Task[object] | None] = []
        self.release = asyncio.Event()
        self.release.set()

    async def flush(self, items: list[str]) -> list[str | Exception]:
        self.batches.append(items)
        self.tasks.append(asyncio.current_task())
        await self.release.wait()
        return [ValueError(item) if item == "bad" else item.upper() for item in items]


async def test_items_submitted_together_share_one_flush() -> None:
    recorder = Recorder()
    batcher: Batcher[str, str] = Batcher(recorder.flush)
    assert await asyncio.gather(*(batcher.submit(x) for x in "abc")) == ["A", "B", "C"]
    assert recorder.batches == [["a", "b", "c"]]


async def test_eager_flushes_a_lone_item_in_its_callers_task_and_batches_the_rest() -> None:
    recorder = Recorder()
    batcher: Batcher[str, str] = Batcher(recorder.flush, eager=True)
    recorder.release.clear()
    first = asyncio.create_task(batcher.submit("a"))
    await asyncio.sleep(0)
    # Sent by the submitting task itself, before it yielded.
    assert recorder.batches == [["a"]] and recorder.tasks == [first]
    later = [asyncio.create_task(batcher.submit(x)) for x in ("b", "bad", "c")]
    await asyncio.sleep(0)
    assert recorder.batches == [["a"]]  # waiting for the flush in flight
    recorder.release.set()
    assert await first == "A"
    results = await asyncio.gather(*later, return_exceptions=True)
    assert results[0] == "B" and results[2] == "C" and isinstance(results[1], ValueError)
    assert recorder.batches == [["a"], ["b", "bad", "c"]]
    await batcher.close()


async def test_a_cancelled_eager_caller_leaves_the_others_flushed() -> None:
    recorder = Recorder()
    batcher: Batcher[str, str] = Batcher(recorder.flush, eager=True)
    recorder.release.clear()
    first = asyncio.create_task(batcher.submit("a"))
    await asyncio.sleep(0)
    second = asyncio.create_task(batcher.submit("b"))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    recorder.release.set()
    assert await asyncio.wait_for(second, 1) == "B"
    await batcher.close()


async def test_an_eager_callers_error_is_its_own() -> None:
    recorder = Recorder()
    batcher: Batcher[str, str] = Batcher(recorder.flush, eager=True)
    with pytest.raises(ValueError, match="bad"):
        await batcher.submit("bad")
    assert await batcher.submit("ok") == "OK"
