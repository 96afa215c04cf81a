"""The keep-alive lane: a caller connection's later requests served from loop callbacks. I/O.

After the first request of a caller connection, the serving task hands the connection to its
`Lane` and sleeps on one future. The lane owns the caller connection's callbacks (received
bytes, EOF or loss, writable again) for as long as it serves, and passes each to where it
belongs now: the wait for the next request, or the response in flight. It waits for the next
request head (idle timeout: one timer per connection, re-armed only when it fires), parses it,
routes it, and when the request is the common kind (HTTP/1.1, no upgrade, body
absent or already in hand, a node routed without a lookup, a pooled tunnel stream idle for its
route) relays it with `ResponseRelay`. When the response ended at its framing and everything may
be reused, the next request follows the same way: no task wake-up, no future, no timeout object
per request.

Everything else goes back to the task, which runs exactly the awaiting code it runs for a first
request: a head that is incomplete (read on under the head timeout), refused, or not of the
common kind; an attempt that did not end cleanly (settled, retried or refused by
front_exchange.finish_exchange); the end of the connection (EOF, idle timeout, closing, the
request limit). Every request is still routed on its own head, and the decisions (settle, the
framing, the limits) are the same functions as on the awaiting path.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from ravend.l7proxy.front_caller import CallerConnection
from ravend.l7proxy.front_dial import Lease
from ravend.l7proxy.front_exchange import Prepared, prepare, settle
from ravend.l7proxy.front_framing import LengthBody, ResponseFramer, request_body
from ravend.l7proxy.front_relay import Caller, ResponseRelay, Run
from ravend.l7proxy.front_upstream import TunnelPipe
from ravend.l7proxy.http_head import HeadError, HeadLimits, RequestHead, head_end
from ravend.l7proxy.http_head import parse_request_head as parse_head
from ravend.l7proxy.routing import Refusal, Route


class LaneHost(Protocol):
    """What the lane needs of its front end."""

    @property
    def closing(self) -> bool: ...

    def route_now(self, head: RequestHead) -> Route | Refusal | None:
        """The route when it needs no await (None: a pod lookup is needed)."""
        ...

    def take_idle(self, route: Route) -> Lease | None: ...

    def release(self, lease: Lease) -> None: ...

    def count(self, outcome: str) -> None: ...

    def lane_serving(self, lane: Lane, serving: bool) -> None:
        """Register (or unregister) a lane serving its connection, so that closing the front
        end can drop the callers waiting between requests (`abort_if_idle`)."""
        ...


class ReadHead:
    """Handback: part of a head is buffered; read the rest under the head timeout."""


@dataclass(frozen=True, slots=True)
class Attempted:
    """Handback: an attempt that did not end in a clean keep-alive; finish it by awaiting."""

    req: Prepared
    lease: Lease
    run: Run


READ_HEAD = ReadHead()
Handback = RequestHead | Refusal | Attempted | ReadHead | None
"""What the task does next; None: the connection is over (close it)."""


@dataclass(frozen=True, slots=True)
class LaneLimits:
    head: HeadLimits
    idle_timeout: float
    """Seconds a caller may wait between requests (FrontSettings.keepalive_idle_timeout)."""
    max_requests: int


class Lane:
    """Serves the kept requests of one caller connection; `await serve(n)` until handback."""

    def __init__(
        self, host: LaneHost, conn: CallerConnection, caller: Caller, limits: LaneLimits
    ) -> None:
        self._host = host
        self._conn = conn
        self._caller = caller
        self._limits = limits
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[tuple[int, Handback]] | None = None
        self._served = 0
        self._idle_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._exchange: tuple[Prepared, Lease, ResponseRelay] | None = None

    async def serve(self, served: int) -> tuple[int, Handback]:
        """Serve requests from callbacks until the task is needed: (requests served so far on
        the connection, what to do next)."""
        self._served = served
        done: asyncio.Future[tuple[int, Handback]] = self._loop.create_future()
        self._done = done
        self._hook(True)
        self._guarded(self._next)
        try:
            return await done
        except BaseException:
            self._quiesce(abort=True)  # cancelled (shutdown): drop an exchange in flight
            raise
        finally:
            self._done = None
            # The task takes the connection back: its callbacks are the awaiting path's now.
            # (Between the handback and here, the hooks find neither a wait nor an exchange.)
            self._hook(False)

    def abort_if_idle(self) -> None:
        """Drop the caller if it is waiting between requests (the front end is closing);
        nothing is lost, and the lane sees the end through its hooks."""
        if self._idle_since is not None:
            self._conn.abort()

    def close(self) -> None:
        """The connection is over: no more timer."""
        self._quiesce(abort=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ---- between requests ----------------------------------------------------------------

    def _next(self) -> None:
        if self._served >= self._limits.max_requests or self._host.closing:
            self._hand(None)
            return
        caller = self._caller
        if not caller.buf:
            caller.buf += self._conn.take()
            if not caller.buf:
                if self._conn.ended:
                    self._hand(None)  # the caller left between requests
                else:
                    self._wait_idle()
                return
        self._request()

    def _wait_idle(self) -> None:
        self._idle_since = self._loop.time()
        if self._timer is None:
            self._arm(self._idle_since + self._limits.idle_timeout)

    # ---- the caller connection's callbacks, while the lane serves ------------------------
    # Set once per serve() rather than per request: a request costs no re-registration.

    def _hook(self, on: bool) -> None:
        conn = self._conn
        conn.listen(self._on_caller_data if on else None)
        conn.on_writable(self._on_caller_writable if on else None)
        conn.watch(self._on_caller_end if on else None)  # last: it may call at once
        self._host.lane_serving(self, on)

    def _on_caller_data(self) -> None:
        # The next request's bytes: `_guarded(self._wake)` written out, as it runs per request.
        if self._idle_since is not None:
            self._idle_since = None
            try:
                self._next()
            except Exception as exc:
                self._failed(exc)
        # else: a request is in flight; later bytes stay buffered for the next one

    def _on_caller_end(self) -> None:
        """EOF or loss: ends the wait, or goes to the response in flight."""
        if self._idle_since is not None:
            self._guarded(self._wake)
        elif self._exchange is not None:
            self._exchange[2].caller_ended()

    def _on_caller_writable(self) -> None:
        if self._exchange is not None:
            self._exchange[2].caller_writable()

    def _wake(self) -> None:
        self._idle_since = None
        self._next()

    def _stop_waiting(self) -> None:
        self._idle_since = None

    def _arm(self, when: float) -> None:
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        # One timer per connection: it is not moved per request; when it fires early (the
        # caller was busy meanwhile) it is set again for the current idle period's deadline.
        self._timer = None
        if self._idle_since is None:
            return  # busy, or handed back: the next idle period arms it again
        deadline = self._idle_since + self._limits.idle_timeout
        if self._loop.time() >= deadline:
            self._guarded(self._idle_timeout)
        else:
            self._arm(deadline)

    def _idle_timeout(self) -> None:
        self._stop_waiting()
        self._hand(None)  # idle keep-alive connection: close quietly, as Go servers do

    # ---- one request ---------------------------------------------------------------------

    def _request(self) -> None:
        caller = self._caller
        try:
            end = head_end(caller.buf, self._limits.head)
            if end is None:
                self._hand(READ_HEAD)
                return
            raw = bytes(caller.buf[:end])
            del caller.buf[:end]
            head = parse_head(raw, self._limits.head)
        except HeadError as exc:
            self._hand(Refusal(exc.status, exc.reason))
            return
        ready = self._ready(head)
        lease = None if ready is None else self._host.take_idle(ready[0])
        if ready is None or lease is None:
            self._hand(head)  # not the common kind, or no idle stream: the task serves it
            return
        assert isinstance(lease.pipe, TunnelPipe)
        req = prepare(caller, head, ready[1], ready[0])
        run = Run(ResponseFramer(req.method))
        relay = ResponseRelay(caller, lease.pipe, run, self._on_response, hooks=False)
        self._exchange = (req, lease, relay)
        # An EOF that came with the request is reported now, as watch() would at once.
        relay.start(req.first, caller_ended=self._conn.ended)

    def _ready(self, head: RequestHead) -> tuple[Route, LengthBody] | None:
        """The route and body of a request this lane can relay, else None."""
        if head.version != "HTTP/1.1" or head.is_upgrade:
            return None
        body = request_body(head)
        if not isinstance(body, LengthBody) or body.remaining > len(self._caller.buf):
            return None  # chunked or not all in hand: the awaiting path streams it
        route = self._host.route_now(head)
        if route is None or isinstance(route, Refusal):
            return None
        return route, body

    def _on_response(self, run: Run) -> None:
        try:  # `_guarded`, written out: this runs per request
            self._settle(run)
        except Exception as exc:
            self._failed(exc)

    def _settle(self, run: Run) -> None:
        assert self._exchange is not None
        req, lease, _ = self._exchange
        self._exchange = None
        settled = settle(run, req.body.done, self._caller.ended, req.persists)
        if not settled.keep_caller:
            self._hand(Attempted(req, lease, run))
            return
        self._host.release(lease)
        self._host.count(settled.outcome)
        self._served += 1
        self._next()

    # ---- handing back ----------------------------------------------------------------------

    def _hand(self, what: Handback) -> None:
        self._stop_waiting()
        if self._done is not None and not self._done.done():
            self._done.set_result((self._served, what))

    def _guarded(self, step: Any) -> None:
        """Run a callback step; an unexpected error goes to the task (logged and counted
        there, as on the awaiting path), never into the tunnel's or the loop's callbacks."""
        try:
            step()
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self._quiesce(abort=True)
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)

    def _quiesce(self, abort: bool) -> None:
        self._stop_waiting()
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            exchange[2].stop()
            if abort:
                exchange[1].pipe.abort()
