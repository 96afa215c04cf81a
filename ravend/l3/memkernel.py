"""An in-memory kernel that applies L3 ops to a `KernelSnapshot` (pure, no I/O).

It gives the same answers the netlink adapter does for ravend's own objects, so the reconcile
loop and `diff()` can be tested without root: apply the ops, read the snapshot back, diff again
and expect nothing. Tests can also damage it (`drop_route`, ...) to play "someone deleted it".
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from ravend.l3 import ops as o
from ravend.l3.state import KernelSnapshot, LinkState, WgDeviceState, WgPeerState

# Derived public key recorded for a device whose private key was set from a path; a real
# backend derives it from the key file, here the plan's public key is passed in.
PUBLIC_KEY_UNKNOWN = "?"


class MemoryKernel:
    """Mutable in-memory state; `snapshot()` returns an immutable copy."""

    def __init__(self, public_key: str = PUBLIC_KEY_UNKNOWN) -> None:
        self.public_key = public_key
        self.snap = KernelSnapshot()
        self.applied: list[o.Op] = []

    def snapshot(self) -> KernelSnapshot:
        return self.snap

    def apply(self, ops: list[o.Op]) -> None:
        for op in ops:
            self.applied.append(op)
            self._apply(op)

    def _links(self, **changes: LinkState | None) -> None:
        links = dict(self.snap.links)
        for name, link in changes.items():
            if link is None:
                links.pop(name, None)
            else:
                links[name] = link
        self.snap = replace(self.snap, links=MappingProxyType(links))

    def _link(self, name: str) -> LinkState:
        return self.snap.links[name]

    def _apply(self, op: o.Op) -> None:
        s = self.snap
        if isinstance(op, o.CreateVxlan):
            d = op.dev
            link = LinkState(d.name, "vxlan", d.mtu, d.mac, True, (), d.vni, d.port, d.local_ip)
            self._links(**{d.name: link})
        elif isinstance(op, o.DeleteLink | o.DeleteWireGuard):
            self._links(**{op.name: None})
            self.snap = replace(
                self.snap,
                routes=tuple(r for r in self.snap.routes if r.dev != op.name),
                fdb=() if isinstance(op, o.DeleteLink) else self.snap.fdb,
                neighbours=() if isinstance(op, o.DeleteLink) else self.snap.neighbours,
            )
            if isinstance(op, o.DeleteWireGuard):
                self.snap = replace(self.snap, wireguard=None)
        elif isinstance(op, o.SetLinkMtu):
            self._links(**{op.name: replace(self._link(op.name), mtu=op.mtu)})
        elif isinstance(op, o.SetLinkUp):
            self._links(**{op.name: replace(self._link(op.name), up=True)})
        elif isinstance(op, o.AddAddress | o.DelAddress):
            link = self._link(op.link)
            addrs = set(link.addresses) - {op.cidr}
            if isinstance(op, o.AddAddress):
                addrs.add(op.cidr)
            self._links(**{op.link: replace(link, addresses=tuple(sorted(addrs)))})
        elif isinstance(op, o.AddFdb):
            self.snap = replace(s, fdb=tuple(sorted({*s.fdb, op.entry})))
        elif isinstance(op, o.DelFdb):
            self.snap = replace(s, fdb=tuple(e for e in s.fdb if e != op.entry))
        elif isinstance(op, o.AddNeigh):
            self.snap = replace(s, neighbours=tuple(sorted({*s.neighbours, op.entry})))
        elif isinstance(op, o.DelNeigh):
            self.snap = replace(s, neighbours=tuple(n for n in s.neighbours if n != op.entry))
        elif isinstance(op, o.AddRoute):
            assert op.route.dev in s.links, f"route {op.route} via missing link"
            keep = [r for r in s.routes if (r.table, r.dst) != (op.route.table, op.route.dst)]
            self.snap = replace(s, routes=tuple(sorted({*keep, op.route})))
        elif isinstance(op, o.DelRoute):
            self.snap = replace(s, routes=tuple(r for r in s.routes if r != op.route))
        elif isinstance(op, o.AddRule):
            self.snap = replace(s, rules=tuple(sorted({*s.rules, op.rule})))
        elif isinstance(op, o.DelRule):
            self.snap = replace(s, rules=tuple(r for r in s.rules if r != op.rule))
        elif isinstance(op, o.SetSysctl):
            sysctls = {**s.sysctls, op.sysctl.path: op.sysctl.value}
            self.snap = replace(s, sysctls=MappingProxyType(sysctls))
        elif isinstance(op, o.ReplaceNft):
            self.snap = replace(s, nft_digest=op.ruleset.digest)
        elif isinstance(op, o.DeleteNft):
            self.snap = replace(s, nft_digest=None)
        elif isinstance(op, o.CreateWireGuard):
            if op.name not in s.links:
                self._links(**{op.name: LinkState(op.name, "wireguard", 1420)})
            if self.snap.wireguard is None:
                self.snap = replace(self.snap, wireguard=WgDeviceState())
        elif isinstance(op, o.ConfigureWireGuard):
            self._configure(op)

    def _configure(self, op: o.ConfigureWireGuard) -> None:
        dev = self.snap.wireguard or WgDeviceState()
        peers = {p.public_key: p for p in dev.peers}
        for key in op.remove:
            peers.pop(key, None)
        for p in op.upsert:
            old = peers.get(p.public_key)
            endpoint = p.endpoint or (old.endpoint if old else None)
            peers[p.public_key] = WgPeerState(p.public_key, endpoint, p.allowed_ips, p.keepalive_s)
        dev = replace(
            dev,
            public_key=self.public_key if op.private_key_path else dev.public_key,
            listen_port=dev.listen_port if op.listen_port is None else op.listen_port,
            peers=tuple(peers[k] for k in sorted(peers)),
        )
        self.snap = replace(self.snap, wireguard=dev)


__all__ = ["MemoryKernel"]
