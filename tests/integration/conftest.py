import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

#: An async test still running this long (pytest-timeout stops it at 300 s) prints the stack of
#: every asyncio task: the thread dumps show only the event loop waiting, not on what.
TASKS_DUMPED_AFTER_S = 200.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
async def _tasks_dumped_when_slow() -> AsyncIterator[None]:
    handle = asyncio.get_running_loop().call_later(TASKS_DUMPED_AFTER_S, _dump_tasks)
    yield
    handle.cancel()


def _dump_tasks() -> None:
    tasks = asyncio.all_tasks()
    print(f"--- {len(tasks)} asyncio task(s) after {TASKS_DUMPED_AFTER_S:g}s ---", file=sys.stderr)
    for task in tasks:
        task.print_stack(file=sys.stderr)
