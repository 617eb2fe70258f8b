"""Every python block of docs/calling.md runs, in order, against an in-process worker."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

from aiotq import App
from aiotq.clock import SystemClock
from aiotq.testing import run_in_process

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def python_blocks(name: str) -> list[str]:
    return BLOCK.findall((DOCS / name).read_text())


async def run_block(source: str, namespace: dict[str, Any], label: str) -> None:
    code = compile(source, label, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    outcome = eval(code, namespace)  # the docs' own code, as a reader would paste it
    if inspect.isawaitable(outcome):
        await outcome


async def test_calling_guide_examples_run() -> None:
    setup, *examples = python_blocks("calling.md")
    namespace: dict[str, Any] = {"__name__": "__main__"}
    await run_block(setup, namespace, "calling.md[0]")
    app = namespace["app"]
    assert isinstance(app, App)
    async with run_in_process(app, clock=SystemClock(), queues=["celery", "math"]) as running:
        for index, source in enumerate(examples, start=1):
            await run_block(source, namespace, f"calling.md[{index}]")
        await running.join(timeout=10)
    assert len(examples) >= 15
