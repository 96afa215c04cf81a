"""Shared fixtures of the L7 tunnel tests: a byte pipe between two sans-IO connections."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ravend.l7proxy.protocol import Connection, Role
from ravend.l7proxy.protocol_events import Event
from ravend.l7proxy.protocol_frames import ProtocolSettings

Pump = Callable[[Connection, Connection], tuple[list[Event], list[Event]]]
Pair = Callable[..., tuple[Connection, Connection]]


def pump_bytes(a: Connection, b: Connection) -> tuple[list[Event], list[Event]]:
    """Move bytes both ways until neither side has anything to send; return (a's, b's) events."""
    a_events: list[Event] = []
    b_events: list[Event] = []
    while True:
        to_b, to_a = a.data_to_send(), b.data_to_send()
        if not to_b and not to_a:
            return a_events, b_events
        if to_b:
            b_events += b.receive_data(to_b)
        if to_a:
            a_events += a.receive_data(to_a)


def make_pair(
    client_settings: ProtocolSettings | None = None,
    server_settings: ProtocolSettings | None = None,
) -> tuple[Connection, Connection]:
    """A client and a server that have already exchanged HELLOs."""
    client = Connection(Role.CLIENT, client_settings)
    server = Connection(Role.SERVER, server_settings)
    pump_bytes(client, server)
    return client, server


# Session scope: they are pure functions, and hypothesis refuses function-scoped fixtures.
@pytest.fixture(scope="session")
def pump() -> Pump:
    return pump_bytes


@pytest.fixture(scope="session")
def pair() -> Pair:
    return make_pair
