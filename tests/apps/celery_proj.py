"""A Celery 5 app for the interoperability tests (tests/integration/test_celery_interop.py).

A real Celery worker runs it: ``python -m celery -A tests.apps.celery_proj worker -Q <queue>``,
configured by the environment: ``CELERY_PROJ_BROKER``, ``CELERY_PROJ_BACKEND`` (a
``redis://`` URL or ``rpc://``), ``CELERY_PROJ_QUEUE`` (the default queue, where callbacks
without a queue go), ``CELERY_PROJ_QUEUE_ARGUMENTS`` (JSON: the arguments that queue is
declared with; unset: a plain queue, Celery's default) and ``CELERY_PROJ_RUNS`` (a file each
run of ``proj.record`` appends its value to, so a test sees the order the worker ran them
in). Tests also call tasks through it as a Celery client.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery
from kombu import Queue

app = Celery(
    "proj",
    broker=os.environ.get("CELERY_PROJ_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("CELERY_PROJ_BACKEND", "redis://127.0.0.1:6379/0"),
)
_queue = os.environ.get("CELERY_PROJ_QUEUE", "celery")
_arguments = os.environ.get("CELERY_PROJ_QUEUE_ARGUMENTS")
app.conf.update(
    task_default_queue=_queue,
    task_queues=[Queue(_queue, queue_arguments=json.loads(_arguments))] if _arguments else None,
    broker_connection_retry_on_startup=True,
    # Results of these tests are deleted by the tests; this bounds what a failed run leaves.
    result_expires=300,
    # No pidbox exchange left behind on the shared RabbitMQ.
    worker_enable_remote_control=False,
    worker_hijack_root_logger=False,
)


@app.task(name="proj.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="proj.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="proj.record")
def record(value: Any) -> Any:
    path = os.environ.get("CELERY_PROJ_RUNS")
    if path:
        with open(path, "a", encoding="utf-8") as runs:
            runs.write(f"{value}\n")
    return value
