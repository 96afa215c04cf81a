"""The small HTTP/1.1-style upgrade that starts a tunnel connection after TLS. Pure, no I/O.

Speaking HTTP first means an HTTP-aware middlebox or a curl probe gets a meaningful answer, and
the protocol name carries the version, so a later version can be negotiated without guessing.
"""

from __future__ import annotations

UPGRADE_TOKEN = "ravend-tunnel/1"
PATH = "/v1/tunnel"
MAX_HEAD = 8192


class HandshakeError(Exception):
    """The other side did not complete the upgrade (or refused us)."""


def build_request(host: str) -> bytes:
    return (
        f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
        f"Upgrade: {UPGRADE_TOKEN}\r\n\r\n"
    ).encode()


def _headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def check_request(head: bytes) -> str | None:
    """Return None if `head` asks for our upgrade, else the reason to refuse it."""
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    path = rest.partition(" ")[0]
    if method != "GET" or path != PATH:
        return "unknown request"
    if _headers(lines[1:]).get("upgrade", "").lower() != UPGRADE_TOKEN:
        return f"expected Upgrade: {UPGRADE_TOKEN}"
    return None


def build_response(status: int, reason: str) -> bytes:
    if status == 101:
        return (
            f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            f"Upgrade: {UPGRADE_TOKEN}\r\n\r\n"
        ).encode()
    body = reason.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def check_response(head: bytes) -> None:
    """Raise HandshakeError unless `head` accepts our upgrade."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[1] != "101":
        raise HandshakeError(f"tunnel upgrade refused: {lines[0]!r}")
    if _headers(lines[1:]).get("upgrade", "").lower() != UPGRADE_TOKEN:
        raise HandshakeError("server upgraded to another protocol")
