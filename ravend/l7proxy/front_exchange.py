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

Over a tunnel stream (`TunnelPipe`) the response is relayed from callbacks (front_relay), the
same rules; the keep-alive lane (front_lane) runs such attempts without any await and hands
the ones that did not end cleanly to `finish_exchange`.

A reused upstream may have been closed by the kubelet just before our write. When it fails
before the first response byte, an idempotent request whose body is already in hand is sent once
more on a new connection (what Go's transport does); otherwise the caller gets a 502.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from ravend.l7proxy.front_dial import Lease
from ravend.l7proxy.front_framing import Body, FramingError, ResponseFramer, UntilClose
from ravend.l7proxy.front_relay import Caller, CallerPipe, ResponseRelay, Run, take_response
from ravend.l7proxy.front_splice import Pipe
from ravend.l7proxy.front_upstream import TunnelPipe
from ravend.l7proxy.http_head import RequestHead, for_upstream, render_request_head
from ravend.l7proxy.routing import Refusal, Route
from ravend.l7proxy.tunnel_stream import TunnelError

__all__ = ["Caller", "CallerPipe", "Run", "Settled", "attempt", "framed_exchange", "settle"]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
READ_AHEAD = 256 * 1024
"""Most bytes of later (pipelined) requests read from the caller while a response runs."""


class Leases(Protocol):
    async def lease(self, route: Route, fresh: bool = False) -> Lease | Refusal: ...

    def release(self, lease: Lease) -> None: ...


Upstream = Pipe | TunnelPipe


class _Stop(Exception):
    """Ends both directions of an attempt (the reason is already recorded)."""


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
    return _OK[reuse, reuse and not caller_ended and caller_persists]


_OK = {(r, k): Settled("ok", r, k) for r in (False, True) for k in (False, True)}
"""The clean outcomes, built once: settle() runs per request, a frozen dataclass costs ~2 us."""


async def _send_body(caller: Caller, body: Body, upstream: Upstream, run: Run) -> None:
    """Relay the rest of the request body, then read ahead from the caller until cancelled."""
    while not body.done:
        try:
            data = await caller.pipe.read()
            if not data:
                raise ConnectionError("caller closed inside the request body")
            used = body.feed(data)
        except (OSError, FramingError) as exc:
            run.caller_error = exc.with_traceback(None)  # no frame cycle
            raise _Stop from exc
        caller.buf += data[used:]
        try:
            await upstream.write(data[:used] if used < len(data) else data)
        except (OSError, TunnelError) as exc:
            run.upstream_error = exc.with_traceback(None)  # no frame cycle
            raise _Stop from exc
    while len(caller.buf) < READ_AHEAD:
        try:
            more = await caller.read_more()
        except OSError as exc:
            run.caller_error = exc.with_traceback(None)  # no frame cycle
            raise _Stop from exc
        if not more:
            if caller.pipe.can_half_close():
                caller.ended = True  # plain TCP half-close: the response is still wanted
                return
            run.caller_error = ConnectionError("caller closed its TLS connection")
            raise _Stop


async def _relay_response(upstream: Pipe, caller: Pipe, run: Run) -> None:
    """Upstream -> caller until the response's framing says it ended (or the upstream closed a
    close-delimited one). Records errors instead of raising them. (A `TunnelPipe` upstream is
    relayed from callbacks instead: front_relay.ResponseRelay, same rules.)"""
    framer = run.framer
    while not framer.done:
        try:
            data = await upstream.read()
            if not data:
                if isinstance(framer.body, UntilClose):
                    return
                raise ConnectionError("upstream closed before the response ended")
            used = take_response(run, data)
        except (OSError, TunnelError, FramingError) as exc:
            run.upstream_error = exc.with_traceback(None)  # no frame cycle
            return
        try:
            await caller.write(data if used == len(data) else data[:used])
        except OSError as exc:
            run.caller_error = exc.with_traceback(None)  # no frame cycle
            return
        run.to_caller += used


async def attempt(caller: Caller, upstream: Upstream, first: bytes, body: Body, method: str) -> Run:
    """Send `first` (head + body bytes in hand), then both directions at once."""
    run = Run(ResponseFramer(method))
    if isinstance(upstream, TunnelPipe):
        await _attempt_tunnel(caller, upstream, first, body, run)
        return run
    try:
        await upstream.write(first)
    except (OSError, TunnelError) as exc:
        run.upstream_error = exc.with_traceback(None)  # no frame cycle
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


async def _attempt_tunnel(
    caller: Caller, upstream: TunnelPipe, first: bytes, body: Body, run: Run
) -> None:
    """`attempt` over a tunnel stream: the response is relayed by callbacks (one future)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    relay = ResponseRelay(caller, upstream, run, lambda _: _resolve(done), watch_caller=body.done)
    relay.start(b"")  # consuming before the write: no response byte may arrive unconsumed
    try:
        try:
            await upstream.write(first)
        except (OSError, TunnelError) as exc:
            relay.fail_upstream(exc)
            return
        if body.done:
            await done
            return
        try:
            async with asyncio.TaskGroup() as tg:
                up = tg.create_task(_send_body(caller, body, upstream, run))
                try:
                    await done
                finally:
                    up.cancel()  # the response is over: stop reading ahead
        except* _Stop:
            pass  # the side that stopped recorded why
    finally:
        relay.stop()


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def _caller_ended(caller: Caller, upstream: Pipe, run: Run) -> None:
    """The caller sent EOF or left while its response runs (see `_send_body` for the rules)."""
    if caller.pipe.can_half_close():
        caller.ended = True  # plain TCP half-close: the response is still wanted
        return
    if run.caller_error is None:
        run.caller_error = ConnectionError("caller closed its connection")
        upstream.abort()  # ends _relay_response's read; the kubelet side is dropped at once


@dataclass(slots=True)
class Prepared:
    """A routed request with known body framing, ready to be sent (and sent again)."""

    route: Route
    method: str
    first: bytes
    """The upstream head and the body bytes that were in hand."""
    body: Body
    retryable: bool
    persists: bool
    """The caller allows another request after this one."""


def prepare(caller: Caller, head: RequestHead, body: Body, route: Route) -> Prepared:
    """The bytes to send for `head`; body bytes in `caller.buf` are taken from it."""
    first = render_request_head(for_upstream(head, keep_alive=True))
    used = body.feed(caller.buf)
    if used:
        first += bytes(caller.buf[:used])
        del caller.buf[:used]
    retryable = head.method in IDEMPOTENT and body.done
    persists = head.version == "HTTP/1.1" and "close" not in head.tokens("connection")
    return Prepared(route, head.method, first, body, retryable, persists)


async def framed_exchange(
    caller: Caller, head: RequestHead, body: Body, route: Route, leases: Leases
) -> Settled | Refusal:
    """Relay one request whose body framing is known; the caller's bytes past the head are in
    `caller.buf`. Returns what happened (the caller side is left for the front end to finish)."""
    req = prepare(caller, head, body, route)
    return await finish_exchange(caller, req, await leases.lease(route), None, leases)


async def finish_exchange(
    caller: Caller, req: Prepared, lease: Lease | Refusal, run: Run | None, leases: Leases
) -> Settled | Refusal:
    """Attempt `req` on `lease` (unless `run` says how that went already), settle, and retry an
    idempotent request once on a fresh upstream when a reused one failed before answering."""
    for tries_left in (1, 0):
        if isinstance(lease, Refusal):
            return lease
        if run is None:
            run = await attempt(caller, lease.pipe, req.first, req.body, req.method)
        settled = settle(run, req.body.done, caller.ended, req.persists)
        if settled.reuse_upstream:
            leases.release(lease)
        elif settled.outcome == "ok":
            lease.pipe.close()
        else:
            lease.pipe.abort()
        if settled.answer_502 and lease.reused and req.retryable and tries_left:
            lease, run = await leases.lease(req.route, fresh=True), None
            continue
        if settled.answer_502:
            return Refusal(502, f"upstream failed: {run.upstream_error}")
        return settled
    raise AssertionError("unreachable")
