"""@app.task keeps the function's signature: wrong arguments are type errors under mypy."""

from __future__ import annotations

from pathlib import Path

from mypy import api

SNIPPET = '''
from aiotq import App, Task

app = App("proj", broker="memory://")


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True)
async def hello(self: Task[[int], str], a: int) -> str:
    return str(a)


@app.task
def resize(path: str) -> bytes:
    return b""


async def main() -> None:
    ok = await add.delay(2, 2)
    value: int = await ok.get()
    await hello.delay(1)
    await resize.delay("a.png")
    await add.delay(2, "x")          # expect-error: wrong type
    await hello.delay("a")           # expect-error: wrong type
    await resize.delay()             # expect-error: missing argument
    text: str = await ok.get()       # expect-error: result is an int
'''


def test_wrong_arguments_are_type_errors(tmp_path: Path) -> None:
    target = tmp_path / "snippet.py"
    target.write_text(SNIPPET)
    out, _, status = api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path),
                              str(target)])
    lines = sorted({int(line.split(":")[1]) for line in out.splitlines()
                    if line.startswith(str(target)) and ": error:" in line})
    assert status == 1, out
    expected = [n for n, line in enumerate(SNIPPET.splitlines(), start=1)
                if "# expect-error" in line]
    assert len(expected) == 4 and lines == expected, out
