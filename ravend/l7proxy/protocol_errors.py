"""Exceptions of the L7 tunnel protocol. Pure, no I/O.

The split follows h11/h2: `LocalProtocolError` means our own code misused the API (a bug here),
`RemoteProtocolError` means the peer sent something invalid (its bug or an attack). Only the
latter can be caused by bytes from the network.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error raised by the sans-IO tunnel protocol."""


class LocalProtocolError(ProtocolError):
    """We asked the Connection for something the protocol state does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol; `code` is what we tell it (an ErrorCode)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
        self.events_before: list[object] = []
        """Events decoded by the same receive_data() call before the fault, in order."""
