"""Find an App from a ``-A`` string such as ``proj.tasks:app`` (what the CLI is given)."""

from __future__ import annotations

import importlib
import os
import sys

from .app import App
from .exceptions import ImproperlyConfigured


class AppNotFound(ImproperlyConfigured):
    """``-A`` names no importable App; the message is one line meant for a terminal."""


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (or ``module``, whose ``app`` is taken) and return the App.

    The working directory is put on ``sys.path`` first, as Celery does, so ``-A proj`` finds
    ``./proj.py``. Any failure becomes one :class:`AppNotFound` line naming what went wrong.
    """
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise AppNotFound(f"{spec!r} is not 'module' or 'module:attribute'")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and f"{module_name}.".startswith(f"{exc.name}."):
            raise AppNotFound(f"cannot import {module_name!r}: no module named {exc.name!r} "
                              f"(from {cwd})") from None
        raise AppNotFound(f"importing {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise AppNotFound(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    found = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise AppNotFound(f"module {module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not isinstance(found, App):
        raise AppNotFound(
            f"{module_name}:{attribute} is a {type(found).__name__}, not an aiotq.App"
        )
    return found
