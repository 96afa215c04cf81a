"""`Claims`: which owner first claimed an IP range overlapping a given CIDR (pure, no I/O).

An IP range can belong to one WireGuard peer only, so the tunnel planner (`ravend.l3.topology`)
gives each range to the first pool by name and reports later overlapping ones instead.
"""

from __future__ import annotations

import bisect

from ravend.l3.addressing import cidr_key


class Claims:
    """IP ranges already given to an owner; finds the first-claimed one overlapping a CIDR.

    Two CIDRs overlap only if one contains the other, so a query looks up its supernets by
    exact key (one per prefix length) and its subnets by a bisect on start addresses: about
    O(prefix length + log n) per query instead of comparing against every claim (which made
    4,000 subnets take minutes).
    """

    def __init__(self) -> None:
        self._exact: dict[tuple[int, int, int], tuple[int, str]] = {}
        self._starts: dict[int, list[tuple[int, int, int, str]]] = {4: [], 6: []}
        # Only prefix lengths that were claimed can hold a supernet: a handful, not 33 or 129.
        self._plens: dict[int, set[int]] = {4: set(), 6: set()}
        self._n = 0

    def add(self, cidr: str, owner: str) -> None:
        fam, start, plen, _ = cidr_key(cidr)
        self._exact.setdefault((fam, start, plen), (self._n, owner))
        bisect.insort(self._starts[fam], (start, plen, self._n, owner))
        self._plens[fam].add(plen)
        self._n += 1

    def owner_of_overlap(self, cidr: str) -> str | None:
        fam, start, prefixlen, _ = cidr_key(cidr)
        bits = 32 if fam == 4 else 128
        end = start | ((1 << (bits - prefixlen)) - 1)
        found: list[tuple[int, str]] = []
        for plen in self._plens[fam]:
            if plen <= prefixlen:
                mask = ((1 << plen) - 1) << (bits - plen)
                hit = self._exact.get((fam, start & mask, plen))
                if hit is not None:
                    found.append(hit)
        starts = self._starts[fam]
        i = bisect.bisect_left(starts, (start, -1, -1, ""))
        while i < len(starts) and starts[i][0] <= end:
            found.append((starts[i][2], starts[i][3]))
            i += 1
        return min(found)[1] if found else None


__all__ = ["Claims"]
