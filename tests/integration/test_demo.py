"""``make demo`` runs examples/demo.py: it must keep working, end to end, on SQLite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_every_example_and_stops_the_worker_warmly() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=50, check=False)

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    expected = [
        "await add.delay(2, 2)                                      -> 4",
        "): REVOKED -> TaskRevokedError('expired at",
        "'4, then callback 20'",
        "raised exception: ValueError('the disk is full')",
        "PROGRESS {'progress': 50}",
        "PROGRESS {'progress': 90}",
        "hello world: 10",
        "group(add.s(i, j) for i, j in numbers)                     -> [4, 8, 16, 32]",
        "(add.s(2, 2) | add.s(4) | mul.s(10))                       -> 80",
        "serializer='yaml'",
        "pickle   skipped: not in accept_content",
        "compression='lzma')     -> '12000 chars back, equal: True'",
        "add.apply_async(..., producer=producer) x4                 -> [4, 8, 16, 32]",
        "worker stopped by SIGTERM with exit code 0",
    ]
    missing = [line for line in expected if line not in out]
    assert not missing, f"missing {missing} in:\n{out}"
    for case in ("retry_policy={'max_retries': 2, ...}", "retry=False"):
        [line] = [line for line in out.splitlines() if f"broker down, {case}" in line]
        assert line.endswith("-> 'OperationalError'")
    first = out.splitlines()[0]
    assert first.startswith("broker: sqlite:///")
    database = Path(first.removeprefix("broker: sqlite:///"))
    assert database.is_absolute() and not database.exists(), "the demo leaves no database"
