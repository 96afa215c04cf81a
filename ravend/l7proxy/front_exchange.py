"""One framed request/response on a kept-alive caller connection, over a pooled upstream. I/O.

The request head was routed; the body (Content-Length or chunked) is relayed to the upstream
while the response is relayed back, each only counted by its framing tracker (front_framing),
never copied into a parser or rewritten. Both directions run at once, so `Expect: 100-continue`,
early responses and large uploads behave as through a plain splice. While the response runs, the
caller's side is read ahead (bounded): bytes there are the next pipelined request, and an EOF
means a TLS caller is gone (the upstream is dropped at once, as the kubelet itself does).

After the response, `settle` decides (pure) what may be reused: the upstream only if the request
and the response both ended exactly at their framing, nothing unsolicited came after, and the
kubelet allows persistence; the caller only if, in addition, it did not ask to close and did not
leave. Anything else (upgrade, close-delimited body, error mid-body) closes, never reuses.

A reused upstream may have been closed by the kubelet just before our write. When it fails
before the first response byte, an idempotent request whose body is already in hand is sent once
more on a new connection (what Go's transport does); otherwise the caller gets a 502.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ravend.l7proxy.front_dial import Lease
from ravend.l7proxy.front_framing import Body, FramingError, ResponseFramer, UntilClose
from ravend.l7proxy.front_splice import Pipe
from ravend.l7proxy.http_head import RequestHead, for_upstream, render_request_head
from ravend.l7proxy.routing import Refusal, Route
from ravend.l7proxy.tunnel_stream import TunnelError

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
READ_AHEAD = 256 * 1024
"""Most bytes of later (pipelined) requests read from the caller while a response runs."""


class Leases(Protocol):
    async def lease(self, route: Route, fresh: bool = False) -> Lease | Refusal: ...

    def release(self, lease: Lease) -> None: ...


class CallerPipe(Pipe, Protocol):
    """The caller's side (front_caller.CallerConnection)."""

    def can_half_close(self) -> bool:
        """A caller's EOF may still want its response (plain TCP, not TLS)."""
        ...

    def watch(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` on the caller's EOF or loss (at once if it already happened)."""
        ...

    def get_extra_info(self, name: str) -> object:
        """The transport's (e.g. "peercert")."""
        ...


class _Stop(Exception):
    """Ends both directions of an attempt (the reason is already recorded)."""


@dataclass
class Caller:
    """A caller connection across its requests: the pipe and the bytes read past the last
    request (the start of the next one)."""

    pipe: CallerPipe
    buf: bytearray = field(default_factory=bytearray)
    ended: bool = False
    """A plain-TCP caller half-closed: answer what it sent, then close."""

    async def read_more(self) -> bool:
        """Append one read to `buf`; False at EOF."""
        data = await self.pipe.read()
        self.buf += data
        return bool(data)


@dataclass
class Run:
    """What one attempt did, recorded by both directions."""

    framer: ResponseFramer
    to_caller: int = 0
    """Response bytes written to the caller."""
    unsolicited: bool = False
    """The upstream sent bytes after the end of its response."""
    upstream_error: BaseException | None = None
    caller_error: BaseException | None = None


@dataclass(frozen=True)
class Settled:
    """What to do after an attempt: the counter label and what may be reused."""

    outcome: str
    reuse_upstream: bool
    keep_caller: bool
    abort_caller: bool = False
    answer_502: bool = False


def settle(run: Run, body_done: bool, caller_ended: bool, caller_persists: bool) -> Settled:
    """Pure decision over an attempt's record (see the module docstring)."""
    if run.caller_error is not None:
        return Settled("caller-gone", False, False, abort_caller=True)
    if run.upstream_error is not None:
        if run.to_caller == 0:
            return Settled("502", False, False, answer_502=True)
        return Settled("upstream-error", False, False, abort_caller=True)
    framer = run.framer
    framed = framer.done and not isinstance(framer.body, UntilClose)
    reuse = framed and framer.reusable and body_done and not run.unsolicited
    keep = reuse and not caller_ended and caller_persists
    return Settled("ok", reuse, keep)


async def _send_body(caller: Caller, body: Body, upstream: Pipe, run: Run) -> None:
    """Relay the rest of the request body, then read ahead from the caller until cancelled."""
    while not body.done:
        try:
            data = await caller.pipe.read()
            if not data:
                raise ConnectionError("caller closed inside the request body")
            used = body.feed(data)
        except (OSError, FramingError) as exc:
            run.caller_error = exc
            raise _Stop from exc
        caller.buf += data[used:]
        try:
            await upstream.write(data[:used] if used < len(data) else data)
        except (OSError, TunnelError) as exc:
            run.upstream_error = exc
            raise _Stop from exc
    while len(caller.buf) < READ_AHEAD:
        try:
            more = await caller.read_more()
        except OSError as exc:
            run.caller_error = exc
            raise _Stop from exc
        if not more:
            if caller.pipe.can_half_close():
                caller.ended = True  # plain TCP half-close: the response is still wanted
                return
            run.caller_error = ConnectionError("caller closed its TLS connection")
            raise _Stop


async def _relay_response(upstream: Pipe, caller: Pipe, run: Run) -> None:
    """Upstream -> caller until the response's framing says it ended (or the upstream closed a
    close-delimited one). Records errors instead of raising them."""
    framer = run.framer
    while not framer.done:
        try:
            data = await upstream.read()
            if not data:
                if isinstance(framer.body, UntilClose):
                    return
                raise ConnectionError("upstream closed before the response ended")
            used = framer.feed(data)
            if framer.upgraded:
                raise ConnectionError("upstream switched protocols unasked")
        except (OSError, TunnelError, FramingError) as exc:
            run.upstream_error = exc
            return
        run.unsolicited = used < len(data)
        try:
            await caller.write(data if used == len(data) else data[:used])
        except OSError as exc:
            run.caller_error = exc
            return
        run.to_caller += used


async def attempt(caller: Caller, upstream: Pipe, first: bytes, body: Body, method: str) -> Run:
    """Send `first` (head + body bytes in hand), then both directions at once."""
    run = Run(ResponseFramer(method))
    try:
        await upstream.write(first)
    except (OSError, TunnelError) as exc:
        run.upstream_error = exc
        return run
    if body.done:
        # The common case (GET): nothing left to send, so no task: the caller connection's
        # callbacks watch for its EOF while the response runs, and its buffer keeps any
        # pipelined bytes (bounded) for the next request.
        caller.pipe.watch(lambda: _caller_ended(caller, upstream, run))
        try:
            await _relay_response(upstream, caller.pipe, run)
        finally:
            caller.pipe.watch(None)
        return run
    try:
        async with asyncio.TaskGroup() as tg:
            up = tg.create_task(_send_body(caller, body, upstream, run))
            try:
                await _relay_response(upstream, caller.pipe, run)
            finally:
                up.cancel()  # the response is over: stop reading ahead
    except* _Stop:
        pass  # the side that stopped recorded why
    return run


def _caller_ended(caller: Caller, upstream: Pipe, run: Run) -> None:
    """The caller sent EOF or left while its response runs (see `_send_body` for the rules)."""
    if caller.pipe.can_half_close():
        caller.ended = True  # plain TCP half-close: the response is still wanted
        return
    if run.caller_error is None:
        run.caller_error = ConnectionError("caller closed its connection")
        upstream.abort()  # ends _relay_response's read; the kubelet side is dropped at once


async def framed_exchange(
    caller: Caller, head: RequestHead, body: Body, route: Route, leases: Leases
) -> Settled | Refusal:
    """Relay one request whose body framing is known; the caller's bytes past the head are in
    `caller.buf`. Returns what happened (the caller side is left for the front end to finish)."""
    first = render_request_head(for_upstream(head, keep_alive=True))
    used = body.feed(caller.buf)
    first += bytes(caller.buf[:used])
    del caller.buf[:used]
    retryable = head.method in IDEMPOTENT and body.done
    persists = head.version == "HTTP/1.1" and "close" not in head.tokens("connection")
    lease = await leases.lease(route)
    for tries_left in (1, 0):
        if isinstance(lease, Refusal):
            return lease
        run = await attempt(caller, lease.pipe, first, body, head.method)
        settled = settle(run, body.done, caller.ended, persists)
        if settled.reuse_upstream:
            leases.release(lease)
        elif settled.outcome == "ok":
            lease.pipe.close()
        else:
            lease.pipe.abort()
        if settled.answer_502 and lease.reused and retryable and tries_left:
            lease = await leases.lease(route, fresh=True)
            continue
        if settled.answer_502:
            return Refusal(502, f"upstream failed: {run.upstream_error}")
        return settled
    raise AssertionError("unreachable")
