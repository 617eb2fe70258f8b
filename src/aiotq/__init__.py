"""aiotq: an asyncio-native distributed task framework with Celery's calling API."""

from . import states
from .app import App
from .canvas import Signature, chain, group, signature
from .clock import ManualClock
from .exceptions import (
    AiotqError,
    ImproperlyConfigured,
    MaxRetriesExceededError,
    OperationalError,
    Reject,
    Retry,
    TaskRevokedError,
)
from .result import AsyncResult, GroupResult
from .task import Task
from .worker import Worker

__all__ = [
    "AiotqError",
    "App",
    "AsyncResult",
    "GroupResult",
    "ImproperlyConfigured",
    "ManualClock",
    "MaxRetriesExceededError",
    "OperationalError",
    "Reject",
    "Retry",
    "Signature",
    "Task",
    "TaskRevokedError",
    "Worker",
    "chain",
    "group",
    "signature",
    "states",
]
__version__ = "0.1.0"
