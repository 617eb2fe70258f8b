"""Tasks shared by the web examples. The broker comes from AIOTQ_BROKER_URL (default: the
embedded SQLite file), so the same code runs on SQLite, Redis or RabbitMQ."""

from __future__ import annotations

from aiotq import App, Task

app = App("service")


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True)
async def report(self: Task[[int], str], pages: int) -> str:
    for page in range(1, pages + 1):
        await self.update_state(state="PROGRESS", meta={"current": page, "total": pages})
    return f"report of {pages} pages"
