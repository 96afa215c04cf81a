"""The response half of a framed exchange: upstream bytes to the caller up to the framing's end.

`Run` records what one attempt did (pure data, judged by front_exchange.settle); `take_response`
is the one step both relays share (pure: count the bytes with the response framer, note
unsolicited bytes). `ResponseRelay` runs that step from loop callbacks for a `TunnelPipe`
(I/O through the pipes, no task, no future): the keep-alive lane uses it for every kept request,
and front_exchange.attempt awaits it through one future. Its rules are those of the awaiting
relay over a socket (front_exchange._relay_response): a framing error, an unasked 101 or an
early close is an upstream error; a caller that cannot be written to is gone; a TLS caller's
EOF while its response runs drops the upstream at once, a plain-TCP caller's half-close still
gets its response; while the caller's transport is full the upstream's window is held.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ravend.l7proxy.front_framing import FramingError, ResponseFramer, UntilClose
from ravend.l7proxy.front_splice import Pipe
from ravend.l7proxy.front_upstream import TunnelPipe
from ravend.l7proxy.tunnel_stream import TunnelError


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

    def write_nowait(self, data: bytes) -> bool:
        """Write without waiting; False (nothing written) when the connection is closed."""
        ...

    @property
    def writing_paused(self) -> bool:
        """The write buffer is full: stop feeding it until `on_writable`'s callback."""
        ...

    def on_writable(self, callback: Callable[[], None] | None) -> None: ...


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


@dataclass(slots=True)
class Run:
    """What one attempt did, recorded by both directions."""

    framer: ResponseFramer
    to_caller: int = 0
    """Response bytes written to the caller."""
    unsolicited: bool = False
    """The upstream sent bytes after the end of its response."""
    upstream_error: BaseException | None = None
    caller_error: BaseException | None = None


def take_response(run: Run, data: bytes) -> int:
    """How many leading bytes of `data` belong to the response (the rest is unsolicited).
    Raises FramingError, or ConnectionError for a 101 nobody asked for."""
    used = run.framer.feed(data)
    if run.framer.upgraded:
        raise ConnectionError("upstream switched protocols unasked")
    run.unsolicited = used < len(data)
    return used


class ResponseRelay:
    """One response from a `TunnelPipe` to the caller, driven by loop callbacks.

    `start(first)` sends the request bytes in hand and starts consuming; `on_done(run)` is
    called once, when the response ended at its framing or either side failed. `stop()` ends
    it without calling `on_done` (the attempt was abandoned).

    With `hooks` the relay sets the caller connection's callbacks itself (writable again, and
    with `watch_caller` EOF or loss); without, their owner (the keep-alive lane, which keeps
    them for the connection's life) calls `caller_writable` and `caller_ended`.
    """

    __slots__ = (
        "_caller",
        "_hooks",
        "_on_done",
        "_over",
        "_pending",
        "_upstream",
        "_watch",
        "run",
    )

    def __init__(
        self,
        caller: Caller,
        upstream: TunnelPipe,
        run: Run,
        on_done: Callable[[Run], None],
        *,
        watch_caller: bool = True,
        hooks: bool = True,
    ) -> None:
        self.run = run
        self._caller = caller
        self._upstream = upstream
        self._on_done = on_done
        self._watch = watch_caller and hooks
        self._hooks = hooks
        self._pending: memoryview | None = None
        self._over = False

    def start(self, first: bytes, caller_ended: bool = False) -> None:
        """Consume, then send `first`; `caller_ended` (without hooks): the caller's EOF or
        loss was already seen."""
        self._upstream.consume(self)
        if self._hooks:
            self._caller.pipe.on_writable(self._upstream.resume_receiving)
            if self._watch:
                self._caller.pipe.watch(self.caller_ended)
        elif caller_ended:
            self.caller_ended()
        if first and not self._over:
            self._send(memoryview(first))

    def stop(self) -> None:
        if not self._over:
            self._over = True
            self._detach()

    def fail_upstream(self, error: BaseException) -> None:
        """The request could not be sent (an awaited write failed)."""
        if self.run.upstream_error is None:
            self.run.upstream_error = error.with_traceback(None)  # no frame cycle
        self._finish()

    # ---- UpstreamConsumer ----------------------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        run = self.run
        try:
            used = take_response(run, data)
        except (OSError, FramingError) as exc:
            run.upstream_error = exc.with_traceback(None)  # no frame cycle
            self._finish()
            return
        pipe = self._caller.pipe
        if not pipe.write_nowait(data if used == len(data) else data[:used]):
            run.caller_error = ConnectionResetError("caller connection closed")
            self._finish()
            return
        run.to_caller += used
        if run.framer.done:
            self._finish()
        elif pipe.writing_paused:
            self._upstream.pause_receiving()

    def upstream_eof(self) -> None:
        if not isinstance(self.run.framer.body, UntilClose):
            self.run.upstream_error = ConnectionError("upstream closed before the response ended")
        self._finish()

    def upstream_failed(self, error: TunnelError) -> None:
        if self.run.upstream_error is None:
            self.run.upstream_error = error
        self._finish()

    def upstream_writable(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not self._over:
            self._send(pending)

    # ---- internals -----------------------------------------------------------------------

    def _send(self, data: memoryview) -> None:
        try:
            taken = self._upstream.send_nowait(data)
        except TunnelError as exc:
            self.fail_upstream(exc)
            return
        if taken < len(data):
            self._pending = data[taken:]  # the rest when the window grows

    def caller_writable(self) -> None:
        """The caller's transport takes writes again."""
        self._upstream.resume_receiving()

    def caller_ended(self) -> None:
        """The caller sent EOF or left while its response runs."""
        if self._caller.pipe.can_half_close():
            self._caller.ended = True  # plain TCP half-close: the response is still wanted
            return
        if self.run.caller_error is None:
            self.run.caller_error = ConnectionError("caller closed its connection")
            self._upstream.abort()  # the kubelet side is dropped at once (-> upstream_failed)
            self._finish()

    def _finish(self) -> None:
        if self._over:
            return
        self._over = True
        self._detach()
        self._on_done(self.run)

    def _detach(self) -> None:
        self._pending = None
        self._upstream.consume(None)
        if self._hooks:
            self._caller.pipe.on_writable(None)
        if self._watch:
            self._caller.pipe.watch(None)
