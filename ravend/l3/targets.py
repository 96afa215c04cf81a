"""Which peer gateway node each link probe aims at, for the current plan (pure, no I/O).

`ravend.l3.probe.probe_targets` checks every AllowedIP of every peer (~4,000 on a hub) with
uncached `ipaddress` parsing: ~20-50 ms, more than the rest of a gateway-switch pass. A switch
changes one or two peers, so targets are kept per peer in the plan's `Memo` and only peers
whose plan or node IP changed are looked at again; the result equals `probe_targets()`.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from ravend.l3.plancache import Memo
from ravend.l3.probe import ProbeTarget, probe_targets
from ravend.l3.settings import L3Settings
from ravend.l3.state import L3State, Role, WgPeer
from ravend.l3.topology import pools
from ravend.model import ClusterView


def gateway_nodes(view: ClusterView, s: L3Settings, memo: Memo) -> dict[str, tuple[str, str]]:
    """Gateway name -> (elected tunnel node, its IP), as the planner sees them (the pools
    come from the plan's memo: the plan just built them from the same view)."""
    found, _ = pools(view, s, memo)
    out = {}
    for name, pool in found.items():
        ip = next((n.ip for n in pool.nodes if n.name == pool.gateway_node), "")
        if not ip and pool.gateway_node in view.nodes:
            ip = view.nodes[pool.gateway_node].private_ip
        out[name] = (pool.gateway_node, ip)
    return out


def targets(
    state: L3State, node_ips: dict[str, tuple[str, str]], memo: Memo
) -> tuple[ProbeTarget, ...]:
    """`probe_targets(state, node_ips)`, recomputed only for peers that changed."""
    if state.role != Role.GATEWAY or state.wireguard is None:
        return ()
    out: list[ProbeTarget] = []
    for peer in state.wireguard.peers:
        node = node_ips.get(peer.gateway, ("", ""))
        out += memo.get(f"probe/{peer.gateway}", (peer, node), partial(_one, state, peer, node))
    return tuple(sorted(out, key=lambda t: t.gateway))


def _one(state: L3State, peer: WgPeer, node: tuple[str, str]) -> tuple[ProbeTarget, ...]:
    assert state.wireguard is not None
    alone = replace(state, wireguard=replace(state.wireguard, peers=(peer,), standby_peers=()))
    return probe_targets(alone, {peer.gateway: node})


__all__ = ["gateway_nodes", "targets"]
