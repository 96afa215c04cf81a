"""HTTP/1.1 responses the proxy writes itself: refusals and errors (and the fake kubelet's
replies). Pure, no I/O; the parsing side is http_head."""

from __future__ import annotations

from ravend.l7proxy.http_head import Headers

REASONS = {
    101: "Switching Protocols",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def render_response_head(status: int, headers: Headers = (), reason: str | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason or REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def simple_response(status: int, message: str, headers: Headers = ()) -> bytes:
    """A complete short text response that closes the connection (errors and refusals)."""
    body = (message.rstrip("\n") + "\n").encode()
    base: Headers = (
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    )
    return render_response_head(status, base + headers) + body
