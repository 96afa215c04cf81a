"""An in-memory cluster implementing `ElectionApi`, with faults (no network I/O).

For tests and benchmarks of the election loops without an API server: it keeps Gateways, Nodes,
Leases and raven-cfg with resourceVersion semantics (conditional writes raise Conflict), and
delivers a fresh ClusterView to every subscriber after each change, in commit order, as the
informers would. Faults: a client can be cut off (its calls raise Unavailable) and a
subscriber's view can be frozen (its watch stalls), independently.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from ravend.election.pickup import PickupEvent
from ravend.election.settings import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from ravend.kube import errors
from ravend.model import ClusterView, Gateway, Lease, Node, RavenConfig
from ravend.runtime import Latest


@dataclass
class _Subscriber:
    view: Latest[ClusterView]
    frozen: bool = False


@dataclass
class MemoryCluster:
    gateways: dict[str, Gateway] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    raven_cfg: RavenConfig = field(default_factory=RavenConfig)
    events: list[tuple[str, PickupEvent]] = field(default_factory=list)
    status_writes: list[Gateway] = field(default_factory=list)
    """Every committed status write, in order (for the split-brain checks)."""
    _rv: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _revision: int = 0
    _subs: dict[str, _Subscriber] = field(default_factory=dict)
    _cut: set[str] = field(default_factory=set)

    def client(self, who: str) -> MemoryElectionApi:
        return MemoryElectionApi(self, who)

    def subscribe(self, who: str) -> Latest[ClusterView]:
        sub = _Subscriber(Latest(self.snapshot()))
        self._subs[who] = sub
        return sub.view

    def cut(self, who: str, *, api: bool = True, watch: bool = True) -> None:
        """Partition `who`: its API calls fail and/or its view stops updating."""
        if api:
            self._cut.add(who)
        if watch and who in self._subs:
            self._subs[who].frozen = True

    def heal(self, who: str) -> None:
        self._cut.discard(who)
        if who in self._subs:
            self._subs[who].frozen = False
            self._subs[who].view.publish(self.snapshot())

    def check(self, who: str) -> None:
        """Raise Unavailable for a process whose API link is cut."""
        if who in self._cut:
            raise errors.Unavailable(f"{who} is cut off")

    def is_cut(self, who: str) -> bool:
        return who in self._cut

    def next_rv(self) -> str:
        return str(next(self._rv))

    def put_gateway(self, gw: Gateway) -> None:
        self.gateways[gw.name] = replace(gw, meta=replace(gw.meta, resource_version=self.next_rv()))
        self.changed()

    def put_node(self, node: Node) -> None:
        self.nodes[node.name] = node
        self.changed()

    def set_cfg(self, cfg: RavenConfig) -> None:
        self.raven_cfg = cfg
        self.changed()

    def snapshot(self) -> ClusterView:
        leases = {
            n: lease
            for n, lease in self.leases.items()
            if lease.meta.labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE
        }
        return ClusterView(
            gateways=MappingProxyType(dict(self.gateways)),
            nodes=MappingProxyType(dict(self.nodes)),
            raven_cfg=self.raven_cfg,
            leases=MappingProxyType(leases),
            synced=True,
            revision=self._revision,
        )

    def changed(self) -> None:
        self._revision += 1
        snap = self.snapshot()
        for sub in self._subs.values():
            if not sub.frozen:
                sub.view.publish(snap)


class MemoryElectionApi:
    """One process's handle on the MemoryCluster (so faults can be per process)."""

    def __init__(self, cluster: MemoryCluster, who: str) -> None:
        self._c = cluster
        self.who = who

    async def get_lease(self, namespace: str, name: str) -> Lease | None:
        self._c.check(self.who)
        return self._c.leases.get(name)

    async def create_lease(self, lease: Lease) -> Lease:
        self._c.check(self.who)
        if lease.meta.name in self._c.leases:
            raise errors.AlreadyExists(lease.meta.name, status=409)
        return self._store(lease)

    async def replace_lease(self, lease: Lease) -> Lease:
        self._c.check(self.who)
        current = self._c.leases.get(lease.meta.name)
        if current is None:
            raise errors.NotFound(lease.meta.name, status=404)
        if lease.meta.resource_version != current.meta.resource_version:
            raise errors.Conflict(lease.meta.name, status=409)
        return self._store(lease)

    def _store(self, lease: Lease) -> Lease:
        stored = replace(lease, meta=replace(lease.meta, resource_version=self._c.next_rv()))
        self._c.leases[lease.meta.name] = stored
        self._c.changed()
        return stored

    async def write_gateway_status(self, gw: Gateway) -> Gateway:
        self._c.check(self.who)
        current = self._c.gateways.get(gw.name)
        if current is None:
            raise errors.NotFound(gw.name, status=404)
        if gw.meta.resource_version != current.meta.resource_version:
            raise errors.Conflict(gw.name, status=409)
        stored = replace(
            current,
            status=gw.status,
            meta=replace(current.meta, resource_version=self._c.next_rv()),
        )
        self._c.gateways[gw.name] = stored
        self._c.status_writes.append(stored)
        self._c.changed()
        return stored

    async def emit_event(self, gw: Gateway, event: PickupEvent) -> None:
        if not self._c.is_cut(self.who):
            self._c.events.append((self.who, event))
