"""Events a tunnel `Connection` reports to its user. Pure value types, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from ravend.l7proxy.protocol_frames import ProtocolSettings, Target


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of everything `Connection.receive_data` returns."""


@dataclass(frozen=True, slots=True)
class SettingsReceived(Event):
    """The peer's HELLO arrived; sending data is possible from now on."""

    settings: ProtocolSettings


@dataclass(frozen=True, slots=True)
class StreamOpened(Event):
    """The peer opened a stream towards `target`."""

    stream_id: int
    target: Target


@dataclass(frozen=True, slots=True)
class DataReceived(Event):
    """Bytes for a stream; call `acknowledge_received` once they are consumed."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamHalfClosed(Event):
    """The peer will send no more data on the stream (end of file)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset(Event):
    """The stream is dead. `remote` is False when we reset it because the peer misbehaved."""

    stream_id: int
    code: int
    reason: str
    remote: bool = True


@dataclass(frozen=True, slots=True)
class WindowUpdated(Event):
    """More send window on a stream (or on the whole connection when stream_id is 0)."""

    stream_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class PingReceived(Event):
    """The peer pinged us; the PONG is already queued."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class PongReceived(Event):
    """Answer to one of our pings."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class GoAwayReceived(Event):
    """The peer accepts no new streams; ours above `last_stream_id` were not processed."""

    last_stream_id: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionTerminated(Event):
    """The connection is over (the peer went away with an error); all streams are reset."""

    code: int
    reason: str
