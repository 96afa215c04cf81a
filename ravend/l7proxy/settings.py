"""Settings of the L7 reverse tunnel (server on the cloud side, client on the edge). Pure."""

from __future__ import annotations

from dataclasses import dataclass

from ravend.l7proxy.protocol_frames import ProtocolSettings


@dataclass(frozen=True)
class L7TunnelSettings:
    """How the tunnel listens, dials, multiplexes and detects dead peers."""

    port: int = 10262
    """TCP port of the tunnel server (Raven's port, so edge firewalls need no change)."""
    max_frame_size: int = 64 * 1024
    """Largest frame payload in bytes we accept. 64 KiB keeps per-frame Python costs low in
    bulk transfers while a frame still takes well under a millisecond on a 1 Gbit/s link."""
    stream_window: int = 1024 * 1024
    """Per-stream flow-control window in bytes: the most one stream can have in flight or
    buffered unread. A stalled reader holds at most this much; 1 MiB covers ~80 Mbit/s at
    100 ms RTT per stream."""
    connection_window: int = 16 * 1024 * 1024
    """Window over all streams of one tunnel connection, in bytes."""
    max_concurrent_streams: int = 1024
    """Streams the peer may open at once; more are refused one by one (REFUSED_STREAM)."""
    keepalive_interval: float = 2.0
    """Seconds between PINGs. They also measure the tunnel round-trip time."""
    keepalive_timeout: float = 6.0
    """Seconds without any byte from the peer after which it is declared dead and the
    connection dropped (konnectivity needs an hour by default; a few seconds is the goal)."""
    handshake_timeout: float = 10.0
    """Seconds allowed for TCP connect + TLS + upgrade handshake."""
    drain_timeout: float = 30.0
    """Seconds streams may keep running on a connection after a GOAWAY before it is cut."""
    reconnect_initial_delay: float = 0.2
    """First redial delay in seconds; doubled per failed attempt, with jitter."""
    reconnect_max_delay: float = 10.0
    """Upper bound of the redial delay in seconds."""
    read_chunk_size: int = 256 * 1024
    """Size in bytes of the tunnel socket's receive buffer (one per connection, reused for
    every read; TLS decrypts straight into it): bigger reads mean fewer loop iterations in
    bulk."""
    write_high_water: int = 1024 * 1024
    """Bytes the tunnel socket may hold unsent before stream writers wait (asyncio's default
    is 64 KiB). Above one TLS record batch, so bulk writers pause and resume rarely; memory
    stays bounded by it plus the flow-control windows."""

    def protocol_settings(self) -> ProtocolSettings:
        return ProtocolSettings(
            max_frame_size=self.max_frame_size,
            initial_window=self.stream_window,
            connection_window=self.connection_window,
            max_concurrent_streams=self.max_concurrent_streams,
        )
