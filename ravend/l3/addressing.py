"""Address arithmetic of the L3 plane: overlay IPs, link MACs, CIDR helpers (pure, no I/O).

Every node derives the overlay address and the MAC of every other node from its node IP alone,
so static FDB and neighbour entries need no coordination and survive restarts unchanged.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


_CACHE = 1 << 16
"""Parsed CIDRs kept: a pass over 4,000 remote subnets re-sorts the same strings many times,
and `ipaddress` parsing was most of the planner's time (bench/l3_plan.py)."""


@lru_cache(maxsize=_CACHE)
def cidr_key(cidr: str) -> tuple[int, int, int, str]:
    """(family, network as int, prefix length, normalised text) of a CIDR or bare IP; the
    first three sort like `ipaddress` networks. Raises ValueError for garbage (pure, cached)."""
    net = ipaddress.ip_network(cidr, strict=False)
    return net.version, int(net.network_address), net.prefixlen, str(net)


def family(cidr_or_ip: str) -> int:
    """4 or 6."""
    return cidr_key(cidr_or_ip)[0]


def normalise(cidr: str) -> str:
    """Canonical text of a CIDR or bare IP ("10.0.0.1" -> "10.0.0.1/32", host bits cleared)."""
    return cidr_key(cidr)[3]


def host_cidr(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    return f"{addr}/{addr.max_prefixlen}"


def is_valid_cidr(text: str) -> bool:
    try:
        cidr_key(text)
    except ValueError:
        return False
    return True


def sort_cidrs(cidrs: Iterable[str]) -> tuple[str, ...]:
    """Unique, normalised, sorted by (family, network, prefix) for deterministic output."""
    return tuple(k[3] for k in sorted({cidr_key(c) for c in cidrs}))


def overlaps(a: str, b: str) -> bool:
    na, nb = ipaddress.ip_network(a, strict=False), ipaddress.ip_network(b, strict=False)
    return na.version == nb.version and na.overlaps(nb)


def overlay_v4(node_ip: str, prefix: str = "240.0.0.0/8") -> str:
    """IPv4 overlay address with prefix length, from the low host bits of the node IP.

    Raven's scheme: 240.b.c.d for node a.b.c.d. Two nodes of one pool collide only if their
    IPs share the low 24 bits, which cannot happen inside one /8 LAN.
    """
    net = ipaddress.IPv4Network(prefix)
    host = int(ipaddress.ip_address(node_ip)) & int(net.hostmask)
    return f"{ipaddress.IPv4Address(int(net.network_address) | host)}/{net.prefixlen}"


def overlay_v6(node_ip: str, prefix: str = "fd52:6176:656e:3030::/64") -> str:
    """IPv6 overlay address with prefix length: the prefix plus the node IP's low host bits."""
    net = ipaddress.IPv6Network(prefix)
    host = int(ipaddress.ip_address(node_ip)) & int(net.hostmask)
    return f"{ipaddress.IPv6Address(int(net.network_address) | host)}/{net.prefixlen}"


def bare(cidr: str) -> str:
    """The address part of "addr/len"."""
    return cidr.split("/", 1)[0]


def mac_for(node_ip: str) -> str:
    """Locally administered unicast MAC of a node's VXLAN link (0e:72 + IPv4, or a hash).

    Deriving it from the node IP lets every peer write a permanent neighbour entry for it
    without learning; 0x0e has the local bit set and the multicast bit clear.
    """
    addr = ipaddress.ip_address(node_ip)
    tail = addr.packed if addr.version == 4 else hashlib.sha256(addr.packed).digest()[:4]
    return ":".join(f"{b:02x}" for b in (0x0E, 0x72, *tail))


def endpoint_text(host: str, port: int) -> str:
    """WireGuard endpoint syntax: "1.2.3.4:4500" or "[2001:db8::1]:4500"."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
