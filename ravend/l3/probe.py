"""Link health between gateways: probe packet codec, per-peer statistics, targets (pure, no I/O).

Every gateway sends a small UDP echo request through the tunnel to every WireGuard peer gateway
once per interval and answers the requests it receives (`ravend.l3.probe_io` does the socket
work). The request goes from this gateway's node IP to the peer gateway's node IP, both on
`ProbeSettings.port`: with `forward_node_ip` (the default) those /32s are in the peers'
AllowedIPs, so the probe takes exactly the path pod traffic takes (routing table 9028, the
WireGuard session, the peer's NAT mapping) and needs no extra address or plan entry. A peer whose
node IP is not routed through the tunnel (forward_node_ip off, or the IP collides with another
pool's and was dropped by the planner) is reported as "not probed" rather than guessed at.

Sans-IO in the h11 sense: `encode`/`decode` turn `Probe` values into bytes and back,
`LinkStats` turns "sent seq at t", "reply for seq at t" and "time passed" into RTT (last and
EWMA), loss over a sliding window and an up/down verdict. Times are the caller's monotonic
seconds.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import deque
from dataclasses import dataclass
from enum import IntEnum

from ravend.l3.state import L3State, Role

MAGIC = b"RVP1"
_WIRE = struct.Struct("!4sBIQ")
SIZE = _WIRE.size
"""Bytes of one probe packet (magic, kind, seq, timestamp): 17."""


class Kind(IntEnum):
    REQUEST = 1
    REPLY = 2


class ProbeDecodeError(ValueError):
    """The datagram is not a probe of ours (the peer, or someone else, sent garbage)."""


@dataclass(frozen=True)
class Probe:
    kind: Kind
    seq: int
    """Sender's sequence number, 0..2**32-1 (wraps)."""
    timestamp_ns: int
    """Sender's monotonic clock in ns, echoed back unchanged (only the sender reads it)."""


def encode(p: Probe) -> bytes:
    """Bytes of a probe; raises ValueError for out-of-range fields (our bug, not the peer's)."""
    if not 0 <= p.seq < 2**32 or not 0 <= p.timestamp_ns < 2**64:
        raise ValueError(f"probe field out of range: {p}")
    return _WIRE.pack(MAGIC, p.kind, p.seq, p.timestamp_ns)


def decode(data: bytes) -> Probe:
    """The probe in `data`; raises ProbeDecodeError for anything else (never another error)."""
    if len(data) != SIZE:
        raise ProbeDecodeError(f"{len(data)} bytes, want {SIZE}")
    magic, kind, seq, ts = _WIRE.unpack(data)
    if magic != MAGIC:
        raise ProbeDecodeError("bad magic")
    try:
        return Probe(Kind(kind), seq, ts)
    except ValueError as e:
        raise ProbeDecodeError(f"unknown kind {kind}") from e


def reply_to(request: Probe) -> Probe:
    """The echo for a request: same seq and timestamp, so the sender alone computes the RTT."""
    return Probe(Kind.REPLY, request.seq, request.timestamp_ns)


@dataclass(frozen=True)
class ProbeSettings:
    """Link-probe tuning; the interval itself is `L3Settings.probe_interval_s`."""

    port: int = 10267
    """UDP port of the probe socket on every gateway's node IP (next to ravend's TCP ports
    10262-10266; UDP, so it cannot clash with them)."""
    timeout_s: float = 1.0
    """A request without a reply after this long counts as lost (RTTs here are < 300 ms)."""
    window: int = 30
    """Loss is the share of lost probes among the last `window` decided ones."""
    down_after_s: float = 3.0
    """A peer is down when no reply arrived for this long (about three missed probes)."""
    ewma_alpha: float = 0.2
    """Weight of the newest RTT sample in the moving average."""
    evidence_after: int = 10
    """Probes sent to a peer before its silence counts as "down" evidence for the election
    (`probe_verdict`): a freshly elected peer needs a WireGuard handshake first."""
    evidence_hold_s: float = 30.0
    """How long a peer node stays reported as failed after it was last seen down. It stops
    being probed once it loses its slot; without the hold it would look eligible again at once
    and two unreachable candidates would swap every few seconds."""


@dataclass(frozen=True)
class PeerHealth:
    """What this gateway knows about the path to one peer gateway."""

    gateway: str
    node: str
    target: str
    """Address probed ("" when the peer cannot be probed, see `note`)."""
    up: bool
    rtt_s: float | None = None
    """Last measured round trip, seconds."""
    rtt_ewma_s: float | None = None
    loss: float = 0.0
    """Share of lost probes in the window, 0..1."""
    handshake_age_s: float | None = None
    """Seconds since the last WireGuard handshake with this peer (None: never)."""
    sent: int = 0
    received: int = 0
    note: str = ""


class LinkStats:
    """Probe bookkeeping for one peer (sans-IO; the caller passes monotonic seconds)."""

    def __init__(self, settings: ProbeSettings) -> None:
        self.s = settings
        self.outstanding: dict[int, float] = {}
        self.outcomes: deque[bool] = deque(maxlen=settings.window)
        """True = answered, False = lost, oldest first."""
        self.rtt_s: float | None = None
        self.rtt_ewma_s: float | None = None
        self.last_reply: float | None = None
        self.sent = 0
        self.received = 0
        self._seq = 0

    def next_request(self, now: float) -> Probe:
        seq = self._seq
        self._seq = (self._seq + 1) % 2**32
        self.outstanding[seq] = now
        self.sent += 1
        return Probe(Kind.REQUEST, seq, int(now * 1e9) % 2**64)

    def on_reply(self, p: Probe, now: float) -> float | None:
        """Record a reply; returns its RTT, or None if it was unknown, duplicate or late."""
        sent_at = self.outstanding.pop(p.seq, None)
        if sent_at is None or now - sent_at > self.s.timeout_s:
            return None
        rtt = max(0.0, now - sent_at)
        self.rtt_s = rtt
        a = self.s.ewma_alpha
        self.rtt_ewma_s = rtt if self.rtt_ewma_s is None else a * rtt + (1 - a) * self.rtt_ewma_s
        self.last_reply = now
        self.received += 1
        self.outcomes.append(True)
        return rtt

    def expire(self, now: float) -> int:
        """Count requests older than the timeout as lost; returns how many."""
        late = [q for q, t in self.outstanding.items() if now - t > self.s.timeout_s]
        for q in late:
            del self.outstanding[q]
            self.outcomes.append(False)
        return len(late)

    @property
    def loss(self) -> float:
        return self.outcomes.count(False) / len(self.outcomes) if self.outcomes else 0.0

    def up(self, now: float) -> bool:
        return self.last_reply is not None and now - self.last_reply <= self.s.down_after_s


@dataclass(frozen=True)
class ProbeTarget:
    gateway: str
    node: str
    address: str
    """Peer gateway node IP to probe ("" = cannot be probed, `note` says why)."""
    public_key: str
    """The peer's WireGuard key, to find its handshake time."""
    note: str = ""


def _routed(ip: str, cidrs: tuple[str, ...]) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr in ipaddress.ip_network(c, strict=False) for c in cidrs)


def probe_targets(state: L3State, node_ips: dict[str, tuple[str, str]]) -> tuple[ProbeTarget, ...]:
    """One target per WireGuard peer of a gateway plan (empty for other roles).

    `node_ips`: peer gateway name -> (its tunnel node's name, that node's IP).
    """
    if state.role != Role.GATEWAY or state.wireguard is None:
        return ()
    out = []
    for peer in state.wireguard.peers:
        node, ip = node_ips.get(peer.gateway, ("", ""))
        if not ip:
            out.append(ProbeTarget(peer.gateway, node, "", peer.public_key, "node IP unknown"))
        elif not _routed(ip, peer.allowed_ips):
            why = "node IP not routed through the tunnel"
            out.append(ProbeTarget(peer.gateway, node, "", peer.public_key, why))
        else:
            out.append(ProbeTarget(peer.gateway, node, ip, peer.public_key))
    return tuple(sorted(out, key=lambda t: t.gateway))
