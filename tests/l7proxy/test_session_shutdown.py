"""A tunnel session winding down: bytes its transport still delivers never raise into the
transport's callback (which the loop would report as a fatal protocol error), and a stream
the peer opens then is dropped or refused, never left with a handler nobody runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ravend.l7proxy.protocol import Connection, Role
from ravend.l7proxy.protocol_events import StreamReset
from ravend.l7proxy.protocol_frames import ErrorCode, Target
from ravend.l7proxy.settings import L7TunnelSettings
from ravend.l7proxy.tunnel_session import TunnelSession
from ravend.l7proxy.tunnel_stream import Stream
from ravend.l7proxy.tunnel_transport import Chunk

TARGET = Target("edge-2", 10250, True)


class FakeTransport:
    """A ByteTransport whose receive callback the test calls, as a socket protocol would."""

    def __init__(self) -> None:
        self.receive: Callable[[memoryview], None] | None = None
        self.written = bytearray()
        self._lost = asyncio.Event()

    async def run(self, receive: Callable[[memoryview], None]) -> None:
        self.receive = receive
        await self._lost.wait()

    def write(self, parts: list[Chunk]) -> None:
        self.written += b"".join(parts)

    async def drain(self) -> None:
        pass

    def abort(self) -> None:
        self._lost.set()

    async def aclose(self) -> None:
        self._lost.set()

    def deliver(self, data: bytes) -> None:
        assert self.receive is not None
        self.receive(memoryview(data))

    def take_written(self) -> bytes:
        data, self.written = bytes(self.written), bytearray()
        return data


class Handlers:
    def __init__(self) -> None:
        self.started: list[Target] = []

    async def __call__(self, target: Target, stream: Stream) -> None:
        self.started.append(target)
        await asyncio.Event().wait()  # a stream that runs until the session ends


async def test_a_stream_opened_while_run_is_cancelled_is_dropped_without_an_error() -> None:
    """The edge's tunnel client cancels a session (redial, shutdown) while the cloud opens a
    stream: the OPEN that arrives as the session's TaskGroup winds down is dropped (the
    connection is closing), where it used to raise "TaskGroup is shutting down" out of the
    transport's callback."""
    transport, handlers = FakeTransport(), Handlers()
    session = TunnelSession(
        Connection(Role.CLIENT), transport, L7TunnelSettings(port=0), name="cloud",
        handler=handlers,
    )  # fmt: skip
    cloud = Connection(Role.SERVER)
    task = asyncio.create_task(session.run())
    while transport.receive is None:
        await asyncio.sleep(0)
    cloud.receive_data(transport.take_written())  # the edge's HELLO
    cloud.open_stream(TARGET)
    transport.deliver(cloud.data_to_send())  # the cloud's HELLO and a first stream
    await asyncio.sleep(0)
    assert handlers.started == [TARGET]

    task.cancel()
    await asyncio.sleep(0)  # run() takes the cancellation: its TaskGroup is winding down
    cloud.open_stream(TARGET)
    transport.deliver(cloud.data_to_send())  # must not raise into the transport
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handlers.started == [TARGET]
    assert session.stream_count == 0


async def test_a_stream_opened_when_the_task_group_takes_no_tasks_is_refused() -> None:
    """If the session's TaskGroup stops taking tasks before the session is over (one of its
    tasks failed), a stream the peer opens gets REFUSED_STREAM rather than an exception in the
    transport's callback and a handler coroutine that never runs."""
    transport, handlers = FakeTransport(), Handlers()
    session = TunnelSession(
        Connection(Role.CLIENT), transport, L7TunnelSettings(port=0), name="cloud",
        handler=handlers,
    )  # fmt: skip
    async with asyncio.TaskGroup() as finished:
        pass
    session._group = finished  # white box: the state run() is in once a task has failed
    cloud = Connection(Role.SERVER)
    session._on_bytes(memoryview(cloud.data_to_send()))  # HELLO
    cloud.receive_data(transport.take_written())
    stream_id = cloud.open_stream(TARGET)
    session._on_bytes(memoryview(cloud.data_to_send()))
    events = cloud.receive_data(transport.take_written())
    refused = [e for e in events if isinstance(e, StreamReset)]
    assert [(e.stream_id, e.code) for e in refused] == [(stream_id, ErrorCode.REFUSED_STREAM)]
    assert session.stream_count == 0
    await asyncio.sleep(0)
    assert handlers.started == []
