"""Latest: waiters see only newer values; bursts collapse."""

import asyncio

from ravend.runtime import Latest, Trigger


async def test_latest_collapses_bursts() -> None:
    cell: Latest[int] = Latest(0)
    seen: list[int] = []

    async def consume() -> None:
        async for value in cell.updates():
            seen.append(value)
            if value == 3:
                return

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0)
    cell.publish(1)
    cell.publish(2)
    cell.publish(3)
    await asyncio.wait_for(task, 1)
    assert seen[0] == 0 and seen[-1] == 3
    assert len(seen) < 4  # 1 and 2 published before the consumer ran: not all delivered


async def test_wait_newer_returns_immediately_when_behind() -> None:
    cell: Latest[str] = Latest("a")
    cell.publish("b")
    assert await asyncio.wait_for(cell.wait_newer(0), 0.1) == (1, "b")


async def test_trigger_timeout_and_set() -> None:
    trig = Trigger()
    assert await trig.wait(0.01) is False
    trig.set()
    trig.set()
    assert await trig.wait(0.01) is True
    assert await trig.wait(0.01) is False
