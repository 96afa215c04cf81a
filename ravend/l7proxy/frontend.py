"""The kubelet front ends of a cloud proxy node: HTTPS (10263) and plain HTTP (10264). I/O.

Per request: read the request head (bounded in size and time), decide the route (`routing`),
then relay. Bodies are never parsed or rewritten, so chunked log streams, large bodies,
WebSocket and SPDY/3.1 upgrades and port-forward sessions pass unchanged, both ways.

Keep-alive (the kube-apiserver keeps its kubelet connections): an HTTP/1.1 request whose body
framing is known (Content-Length, chunked, none) is relayed over a pooled upstream
(`front_exchange`, `front_pool`) with only the message boundaries counted (`front_framing`);
when the response ended at its own framing, the next request head on the same caller
connection is read and routed again, to whichever node it names. Later requests are served by
the connection's keep-alive lane from loop callbacks (`front_lane`) whenever they need no
await; the rest comes back to the connection's task, which serves them as the first one.
Every request is routed on its own head, and a boundary we are unsure of (an unframed body, a
close-delimited response, an error mid-body) ends the connection, so a request can neither be
smuggled past routing nor ride on another's upstream. Upgrades, HTTP/1.0 and requests with
other transfer codings keep the one-shot form: `Connection: close` upstream, a byte splice
(`front_splice`), then close. Idle callers are closed after `keepalive_idle_timeout`, busy ones
after `max_requests_per_connection` requests.

Refusals and upstream failures before the first response byte are answered with a plain-text
status (400/403/404/431/502/503/504); after that the caller's connection is dropped. When the
caller goes away, the upstream (socket or tunnel stream) is closed at once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from ravend.certs.tls import common_name_from_peercert, peer_subject
from ravend.l7proxy.front_caller import CallerConnection
from ravend.l7proxy.front_dial import Lease, Upstreams
from ravend.l7proxy.front_exchange import (
    READ_AHEAD,
    Caller,
    Settled,
    finish_exchange,
    framed_exchange,
)
from ravend.l7proxy.front_framing import request_body
from ravend.l7proxy.front_lane import Attempted, Lane, LaneLimits, ReadHead
from ravend.l7proxy.front_metrics import REQUESTS
from ravend.l7proxy.front_pods import PodLookup
from ravend.l7proxy.front_splice import refuse, relay_one_shot
from ravend.l7proxy.http_head import (
    DEFAULT_LIMITS,
    HeadError,
    HeadLimits,
    RequestHead,
    for_upstream,
    head_end,
    parse_request_head,
    render_request_head,
)
from ravend.l7proxy.routing import (
    PodRef,
    Refusal,
    Route,
    Wanted,
    authorise_caller,
    plan_route,
    wanted,
)
from ravend.model import ClusterView
from ravend.runtime import Latest

log = logging.getLogger(__name__)


_WANTED_MEMO = 2048
"""Most (Host, target) routing decisions a front end remembers (targets up to 512 bytes)."""


@dataclass(frozen=True)
class FrontSettings:
    """Limits and timeouts of one front end."""

    handshake_timeout: float = 10.0
    """Seconds allowed for the caller's TLS handshake."""
    head_timeout: float = 10.0
    """Seconds a caller has (after the handshake) to send its complete request head: a
    slowloris guard, answered with 408."""
    pod_lookup_timeout: float = 5.0
    """Seconds allowed for the Pod GET of a pod subresource request."""
    drain_timeout: float = 5.0
    """Seconds open exchanges may run after close() before they are cut (log follows never
    end by themselves, so this must be bounded)."""
    keepalive_idle_timeout: float = 60.0
    """Seconds a caller connection may wait between requests before we close it (Go's
    default IdleConnTimeout is 90 s; closing first is the server's right)."""
    max_requests_per_connection: int = 1000
    """Requests served on one caller connection before it is closed after a response, so a
    long-lived caller connection is re-dialled (and re-balanced) now and then."""
    limits: HeadLimits = DEFAULT_LIMITS
    allowed_callers: frozenset[str] = field(default_factory=frozenset)
    """TLS only: the client certificate CNs accepted (empty: any cluster-CA identity except
    node and tunnel identities, see routing.authorise_caller)."""


class FrontEnd:
    """One listening front end; `async with FrontEnd(...) as front:`."""

    def __init__(
        self,
        *,
        me: str,
        view: Latest[ClusterView],
        pods: PodLookup,
        upstreams: Upstreams,
        ssl_context: ssl.SSLContext | None,
        host: str | None = None,
        port: int = 0,
        settings: FrontSettings | None = None,
    ) -> None:
        if ssl_context is not None and ssl_context.verify_mode != ssl.CERT_REQUIRED:
            raise ValueError("the HTTPS front end must require client certificates")
        self.me = me
        self.tls = ssl_context is not None
        self.name = "https" if self.tls else "http"
        self.settings = settings or FrontSettings()
        self._view = view
        self._pods = pods
        self._upstreams = upstreams
        self._ssl = ssl_context
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._lanes: set[Lane] = set()
        """Keep-alive lanes serving; those waiting for a next request are closed first."""
        self.closing = False
        """close() was called: no new request is started."""
        self._tally = REQUESTS.front(self.name)
        self._wanted: dict[tuple[str | None, str], Wanted | Refusal] = {}
        """routing.wanted per (Host, target): a pure function of the two, asked per request."""
        self._routes: dict[tuple[str, int], Route | Refusal] = {}
        self._routes_view: ClusterView | None = None
        """plan_route results for the view they were computed from (the view is immutable; a
        new one empties the memo)."""
        s = self.settings
        self._lane_limits = LaneLimits(
            s.limits, s.keepalive_idle_timeout, s.max_requests_per_connection
        )

    @property
    def port(self) -> int:
        assert self._server is not None, "front end not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def active(self) -> int:
        """Exchanges in progress (connections being served)."""
        return len(self._handlers)

    async def __aenter__(self) -> FrontEnd:
        limit = max(self.settings.limits.max_head_bytes + 4, READ_AHEAD)
        self._server = await asyncio.get_running_loop().create_server(
            lambda: CallerConnection(self._start_handler, limit),
            self._host,
            self._port,
            ssl=self._ssl,
            ssl_handshake_timeout=self.settings.handshake_timeout if self._ssl else None,
        )
        log.info("L7 %s front end listening on port %d", self.name, self.port)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop accepting, close idle keep-alive callers, let open exchanges finish for
        `drain_timeout`, cut the rest, then close the pooled upstreams."""
        if self._server is None:
            return
        self._server.close()
        self.closing = True
        for lane in list(self._lanes):
            lane.abort_if_idle()  # between requests: nothing is lost; the lane sees the end
        handlers = set(self._handlers)
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=self.settings.drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.wait(handlers)
        await self._server.wait_closed()
        self._server = None
        self._upstreams.close_idle()

    def _start_handler(self, conn: CallerConnection) -> None:
        # The serving task of one caller connection; it is tracked in `_handlers`, and close()
        # drains then cancels every one (what asyncio.start_server would do, minus streams).
        task = asyncio.get_running_loop().create_task(self._on_connection(conn))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _on_connection(self, conn: CallerConnection) -> None:
        try:
            await self._serve(Caller(conn), conn)
        except Exception:
            log.exception("L7 %s front end: request failed", self.name)
            self.count("error")
            conn.abort()
        finally:
            conn.close()

    def count(self, outcome: str) -> None:
        """Count one request by outcome (also the lane's, front_lane.LaneHost)."""
        tally = self._tally
        tally[outcome] = tally.get(outcome, 0) + 1

    # ---- the lane's host (front_lane.LaneHost) ---------------------------------------------

    def take_idle(self, route: Route) -> Lease | None:
        return self._upstreams.take_idle(route)

    def release(self, lease: Lease) -> None:
        self._upstreams.release(lease)

    def lane_serving(self, lane: Lane, serving: bool) -> None:
        if serving:
            self._lanes.add(lane)
        else:
            self._lanes.discard(lane)

    # ---- serving ---------------------------------------------------------------------------

    async def _serve(self, caller: Caller, conn: CallerConnection) -> None:
        """Serve the requests of one caller connection: the first one here, the later ones in
        its keep-alive lane, which hands back to this task what needs awaiting."""
        refusal = self._authorise(caller.pipe.get_extra_info("peercert"))
        if refusal is not None:
            self.count(await refuse(caller.pipe, refusal))
            return
        if self.settings.max_requests_per_connection < 1:
            return
        lane = Lane(self, conn, caller, self._lane_limits)
        try:
            served = 0
            head: RequestHead | Refusal | Attempted | ReadHead | None = await self._next_head(
                caller
            )
            while head is not None:
                if isinstance(head, ReadHead):
                    head = await self._next_head(caller)
                    continue
                if isinstance(head, Refusal):
                    self.count(await refuse(caller.pipe, head))
                    return
                outcome, keep = await self._one(caller, head)
                self.count(outcome)
                served += 1
                if not keep or self.closing or served >= self.settings.max_requests_per_connection:
                    return
                served, head = await lane.serve(served)
        finally:
            lane.close()

    async def _next_head(self, caller: Caller) -> RequestHead | Refusal | None:
        """The next request head (the start of it may be buffered); None when the caller left
        before sending any of it."""
        try:
            limits = self.settings.limits
            end = head_end(caller.buf, limits)
            if end is not None:  # the whole head came with the first read: no timer needed
                raw = bytes(caller.buf[:end])
                del caller.buf[:end]
            else:
                async with asyncio.timeout(self.settings.head_timeout):
                    raw = await _read_head(caller, limits)
            return parse_request_head(raw, limits)
        except HeadError as exc:
            return Refusal(exc.status, exc.reason)
        except TimeoutError:
            return Refusal(408, "request head not received in time")
        except (EOFError, OSError):
            return None

    async def _one(self, caller: Caller, head: RequestHead | Attempted) -> tuple[str, bool]:
        """Route and relay one request: (outcome label, keep the caller connection)."""
        if isinstance(head, Attempted):  # the lane's attempt did not end cleanly: finish it
            return await self._settled(
                caller,
                await finish_exchange(caller, head.req, head.lease, head.run, self._upstreams),
            )
        route = await self._route(head)
        if isinstance(route, Refusal):
            return await refuse(caller.pipe, route), False
        body = request_body(head)
        if body is None or head.is_upgrade or head.version != "HTTP/1.1":
            upstream = await self._upstreams.open(route)
            if isinstance(upstream, Refusal):
                return await refuse(caller.pipe, upstream), False
            first = render_request_head(for_upstream(head)) + bytes(caller.buf)
            return await relay_one_shot(caller.pipe, upstream, first), False
        settled = await framed_exchange(caller, head, body, route, self._upstreams)
        return await self._settled(caller, settled)

    @staticmethod
    async def _settled(caller: Caller, settled: Settled | Refusal) -> tuple[str, bool]:
        if isinstance(settled, Refusal):
            return await refuse(caller.pipe, settled), False
        if settled.abort_caller:
            caller.pipe.abort()
        return settled.outcome, settled.keep_caller

    def _authorise(self, peercert: Any) -> Refusal | None:
        if not self.tls:
            return None
        _, orgs = peer_subject(peercert or {})
        cn = common_name_from_peercert(peercert)  # the single-CN rule lives there
        return authorise_caller(cn, frozenset(orgs), self.settings.allowed_callers)

    def route_now(self, head: RequestHead) -> Route | Refusal | None:
        """The route of `head` when it needs no pod lookup (None when it does)."""
        want = self._want(head)
        if isinstance(want, Refusal):
            return want
        if isinstance(want.node, PodRef):
            return None
        return self._planned(want.node, want.port)

    def _want(self, head: RequestHead) -> Wanted | Refusal:
        key = (head.host, head.target)
        want = self._wanted.get(key)
        if want is None:
            want = wanted(head, self.tls)
            if len(head.target) <= 512:  # bounded: at most _WANTED_MEMO keys of <= ~1 KiB
                if len(self._wanted) >= _WANTED_MEMO:
                    self._wanted.clear()
                self._wanted[key] = want
        return want

    async def _route(self, head: RequestHead) -> Route | Refusal:
        want = self._want(head)
        if isinstance(want, Refusal):
            return want
        node = want.node
        if isinstance(node, PodRef):
            found = await self._pod_node(node)
            if isinstance(found, Refusal):
                return found
            node = found
        return self._planned(node, want.port)

    def _planned(self, node: str, port: int) -> Route | Refusal:
        view = self._view.value
        if view is not self._routes_view or len(self._routes) > 4096:
            self._routes, self._routes_view = {}, view
        key = (node, port)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = plan_route(node, port, self.tls, view, self.me)
        return route

    async def _pod_node(self, pod: PodRef) -> str | Refusal:
        try:
            async with asyncio.timeout(self.settings.pod_lookup_timeout):
                node = await self._pods(pod.namespace, pod.name)
        except TimeoutError:
            return Refusal(504, f"looking up pod {pod.namespace}/{pod.name} timed out")
        except Exception as exc:  # any API error: the caller gets a status, not a hang
            return Refusal(503, f"cannot look up pod {pod.namespace}/{pod.name}: {exc}")
        if node is None:
            return Refusal(404, f"pod {pod.namespace}/{pod.name} not found or not scheduled")
        return node


async def _read_head(caller: Caller, limits: HeadLimits) -> bytes:
    """The next head from the caller's buffer and socket. Raises HeadError, EOFError, OSError."""
    while (end := head_end(caller.buf, limits)) is None:
        if not await caller.read_more():
            if caller.buf:
                raise HeadError(400, "connection closed inside the request head")
            raise EOFError
    raw = bytes(caller.buf[:end])
    del caller.buf[:end]
    return raw
