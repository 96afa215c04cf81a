"""Text of ravend's nftables table: fwmark, MSS clamping, no-masquerade exemption (pure, no I/O).

One `inet` table owned by ravend, replaced atomically when its digest changes, so ravend never
edits chains that belong to the CNI or kube-proxy (the cause of raven#136 and raven#184).
"""

from __future__ import annotations

from collections.abc import Iterable

from ravend.l3.addressing import family, sort_cidrs
from ravend.l3.state import NftRuleset

_TCP_V4_HEADERS = 40
_TCP_V6_HEADERS = 60


def _set(name: str, fam: int, cidrs: Iterable[str]) -> str:
    kind = "ipv4_addr" if fam == 4 else "ipv6_addr"
    elems = [c for c in sort_cidrs(cidrs) if family(c) == fam]
    # auto-merge: a node IP may fall inside a pod CIDR, and interval sets reject overlaps.
    text = f"  set {name} {{\n    type {kind}\n    flags interval\n    auto-merge\n"
    if elems:
        text += f"    elements = {{ {', '.join(elems)} }}\n"
    return text + "  }\n"


def _clamp(match: str, mss: int) -> str:
    # The SYN test comes first: every packet crossing the node (the tunnel's UDP included)
    # traverses these chains, and a protocol/flag compare rejects a data packet far cheaper
    # than the interval-set lookup, which then only runs for SYNs.
    return (
        f"    tcp flags syn / syn,rst {match} tcp option maxseg size > {mss} "
        f"tcp option maxseg size set {mss}\n"
    )


def _chain(name: str, hook: str, lines: list[str]) -> str:
    return f"  chain {name} {{\n    {hook}; policy accept;\n{''.join(lines)}  }}\n"


def ruleset(
    table: str,
    remote: Iterable[str],
    local: Iterable[str],
    path_mtu: int,
    mark: int | None,
    *,
    node_ip: str = "",
) -> NftRuleset:
    """Build the table for a node whose cross-domain path has `path_mtu`.

    - `mark`: set this bit on packets to remote subnets (members steer them to raven0 with an
      fwmark rule) and clear it again in postrouting; None on the gateway, whose tunnel rule
      needs no mark.
    - MSS is clamped on SYN and SYN-ACK in both directions: the node's own SYNs were sized
      from the main-table route before the mark rerouted them, and remote hosts that do not run
      ravend do not know our path MTU either (peers.md item 7).
    - Traffic between local and remote subnets gets an identity SNAT in a chain that runs
      before the CNI's (srcnat - 10): once a NAT binding exists, later nat chains are skipped,
      so the CNI cannot masquerade pod IPs that the far side must see unchanged.
    - `node_ip`: traffic this host originates towards a remote subnet from an address outside
      the cluster is SNATed to the node's InternalIP. A multi-homed node (e.g. with a public
      uplink) picks its source from the main-table route *before* the output-chain mark reroutes
      the packet into the tunnel, and the far side has no route back to that address.
    """
    remote, local = sort_cidrs(remote), sort_cidrs(local)
    body = _set("remote4", 4, remote) + _set("remote6", 6, remote)
    body += _set("cluster4", 4, (*remote, *local)) + _set("cluster6", 6, (*remote, *local))
    mss4, mss6 = path_mtu - _TCP_V4_HEADERS, path_mtu - _TCP_V6_HEADERS
    pre = [_clamp("ip saddr @remote4", mss4), _clamp("ip6 saddr @remote6", mss6)]
    post = [_clamp("ip daddr @remote4", mss4), _clamp("ip6 daddr @remote6", mss6)]
    out: list[str] = []
    if mark is not None:
        marking = [
            f"    ip daddr @remote4 meta mark set meta mark | {mark:#x}\n",
            f"    ip6 daddr @remote6 meta mark set meta mark | {mark:#x}\n",
        ]
        pre = marking + pre
        out = marking
        # The mark has done its job once the route is chosen. Cleared here, before the packet
        # reaches raven0: the VXLAN driver routes the outer packet with the inner skb's mark,
        # which would match the fwmark rule again and loop back into raven0 ("circular route").
        # Tested on the mark bit itself rather than on the destination sets: only ravend sets
        # the bit, and only for remote destinations, so this clears the same packets while
        # sparing every packet leaving the node an interval-set lookup.
        clear = (~mark) & 0xFFFFFFFF
        post = [f"    meta mark & {mark:#x} != 0 meta mark set meta mark & {clear:#x}\n", *post]
    body += _chain("prerouting", "type filter hook prerouting priority mangle", pre)
    if out:
        # A `route` chain: the kernel re-routes locally generated packets whose mark changed.
        body += _chain("output", "type route hook output priority mangle", out)
    body += _chain("postrouting", "type filter hook postrouting priority mangle", post)
    nat = [
        "    ip daddr @remote4 ip saddr @cluster4 snat ip to ip saddr\n",
        "    ip6 daddr @remote6 ip6 saddr @cluster6 snat ip6 to ip6 saddr\n",
    ]
    if node_ip:
        family = "ip6" if ":" in node_ip else "ip"
        sets = ("remote6", "cluster6") if family == "ip6" else ("remote4", "cluster4")
        nat.append(
            f"    {family} daddr @{sets[0]} {family} saddr != @{sets[1]} "
            f"snat {family} to {node_ip}\n"
        )
    body += _chain("nat", "type nat hook postrouting priority srcnat - 10", nat)
    return NftRuleset(table=table, body=body)
