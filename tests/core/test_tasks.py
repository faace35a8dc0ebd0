"""Background tasks stop at shutdown even when a library swallows one cancel."""

from __future__ import annotations

import asyncio

from agenthub.core.tasks import cancel_and_wait


async def _swallows_first_cancel(swallowed: list[int]) -> None:
    # What asyncio.wait_for on 3.11 can do to a caller: the cancel is lost, work goes on.
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        swallowed.append(1)
    await asyncio.sleep(3600)


async def test_a_swallowed_cancel_is_repeated() -> None:
    swallowed: list[int] = []
    task = asyncio.create_task(_swallows_first_cancel(swallowed))
    await asyncio.sleep(0)
    stuck = await cancel_and_wait([task], timeout_s=5)
    assert stuck == set()
    assert task.cancelled()
    assert swallowed == [1]


async def test_a_task_that_will_not_stop_is_returned() -> None:
    give_up = asyncio.Event()

    async def stubborn() -> None:
        while not give_up.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    stuck = await cancel_and_wait([task], timeout_s=0.3)
    assert stuck == {task}
    assert not task.done()
    assert task.cancelling() > 1  # it was asked more than once
    give_up.set()
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.done()


async def test_finished_tasks_are_left_alone() -> None:
    async def quick() -> int:
        return 7

    task = asyncio.create_task(quick())
    await task
    assert await cancel_and_wait([task], timeout_s=1) == set()
    assert task.result() == 7
