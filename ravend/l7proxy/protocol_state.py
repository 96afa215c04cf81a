"""Stream state machine of the L7 tunnel protocol: the one table of legal transitions. Pure.

A stream is born OPEN (by sending or receiving an OPEN frame). Each side ends its own direction
with HALF_CLOSE (FIN); a RESET from either side kills both directions at once. A pair missing from
the table is illegal: a LocalProtocolError when we tried it, a stream-level RemoteProtocolError
(answered with RESET STREAM_CLOSED) when the peer did.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from ravend.l7proxy.protocol_errors import LocalProtocolError, RemoteProtocolError
from ravend.l7proxy.protocol_frames import ErrorCode


class StreamState(Enum):
    OPEN = auto()
    HALF_CLOSED_LOCAL = auto()
    """We sent FIN; the peer may still send data."""
    HALF_CLOSED_REMOTE = auto()
    """The peer sent FIN; we may still send data."""
    CLOSED = auto()


class StreamInput(Enum):
    SEND_DATA = auto()
    RECV_DATA = auto()
    SEND_FIN = auto()
    RECV_FIN = auto()
    SEND_RESET = auto()
    RECV_RESET = auto()

    @property
    def is_local(self) -> bool:
        return self.name.startswith("SEND")


_S = StreamState
_I = StreamInput

TRANSITIONS: dict[tuple[StreamState, StreamInput], StreamState] = {
    (_S.OPEN, _I.SEND_DATA): _S.OPEN,
    (_S.OPEN, _I.RECV_DATA): _S.OPEN,
    (_S.OPEN, _I.SEND_FIN): _S.HALF_CLOSED_LOCAL,
    (_S.OPEN, _I.RECV_FIN): _S.HALF_CLOSED_REMOTE,
    (_S.OPEN, _I.SEND_RESET): _S.CLOSED,
    (_S.OPEN, _I.RECV_RESET): _S.CLOSED,
    (_S.HALF_CLOSED_LOCAL, _I.RECV_DATA): _S.HALF_CLOSED_LOCAL,
    (_S.HALF_CLOSED_LOCAL, _I.RECV_FIN): _S.CLOSED,
    (_S.HALF_CLOSED_LOCAL, _I.SEND_RESET): _S.CLOSED,
    (_S.HALF_CLOSED_LOCAL, _I.RECV_RESET): _S.CLOSED,
    (_S.HALF_CLOSED_REMOTE, _I.SEND_DATA): _S.HALF_CLOSED_REMOTE,
    (_S.HALF_CLOSED_REMOTE, _I.SEND_FIN): _S.CLOSED,
    (_S.HALF_CLOSED_REMOTE, _I.SEND_RESET): _S.CLOSED,
    (_S.HALF_CLOSED_REMOTE, _I.RECV_RESET): _S.CLOSED,
    # A RESET racing with our own close is harmless: the stream is already gone for us.
    (_S.CLOSED, _I.RECV_RESET): _S.CLOSED,
}


def next_state(stream_id: int, state: StreamState, event: StreamInput) -> StreamState:
    """Return the state after `event`, or raise the error the table implies."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        message = f"stream {stream_id}: {event.name} not allowed in {state.name}"
        if event.is_local:
            raise LocalProtocolError(message) from None
        raise RemoteProtocolError(message, ErrorCode.STREAM_CLOSED) from None


# Derived from the table once. Tuples, not sets: membership tests identity first, while
# hashing an Enum member runs Python code. Public so that the per-DATA-frame fast paths test
# `state in SENDING` inline instead of paying a call to can_send.
SENDING = tuple(s for s in StreamState if (s, _I.SEND_DATA) in TRANSITIONS)
RECEIVING = tuple(s for s in StreamState if (s, _I.RECV_DATA) in TRANSITIONS)


def can_send(state: StreamState) -> bool:
    return state in SENDING


def can_receive(state: StreamState) -> bool:
    return state in RECEIVING


class Role(Enum):
    """CLIENT streams get odd ids, SERVER streams even ones, so both sides can open streams."""

    CLIENT = 1
    SERVER = 2


@dataclass(slots=True)
class StreamRecord:
    """Per-stream bookkeeping of a Connection."""

    state: StreamState
    send_window: int
    recv_window: int
    """Bytes the peer may still send before we grant more."""
    unacked: int = 0
    """Received but not yet acknowledged as consumed: at most the initial window."""
    to_grant: int = 0
    """Consumed bytes not yet returned to the peer in a WINDOW_UPDATE (batched)."""
