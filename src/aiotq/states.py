"""Task states, as Celery names them."""

from __future__ import annotations

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
RETRY = "RETRY"
REVOKED = "REVOKED"

#: States after which nothing more happens to a task.
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
#: States whose result is an exception.
EXCEPTION_STATES = frozenset({FAILURE, RETRY, REVOKED})
#: States in which the task has not been run to the end yet.
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY})
ALL_STATES = READY_STATES | UNREADY_STATES
