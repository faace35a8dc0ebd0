"""Stopping background tasks reliably.

A single ``Task.cancel()`` is not always enough on Python 3.11: a library awaiting
``asyncio.wait_for`` (asyncpg's connect does) can swallow the cancel when its inner await
finishes at the same moment, and the task then carries on as if nothing happened. Shutdown
therefore cancels again until the tasks are done, within a bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any

RECANCEL_EVERY_S = 0.1


async def cancel_and_wait(
    tasks: Collection[asyncio.Task[Any]], timeout_s: float
) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` (again every 100 ms while any is running) and wait for them to end;
    returns the tasks still running after ``timeout_s``."""
    pending = {task for task in tasks if not task.done()}
    deadline = time.monotonic() + timeout_s
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - time.monotonic()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY_S, left))
    return pending
