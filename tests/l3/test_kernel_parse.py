"""Parsing of `ip -N -j route show` output into ravend's Route values (pure)."""

from __future__ import annotations

from ravend.l3.kernel import parse_routes_json
from ravend.l3.state import Route

V4 = (
    '[{"dst":"default","gateway":"240.0.1.5","dev":"raven0","table":"9027","flags":[],'
    '"metrics":[{"mtu":1420}]},{"dst":"10.9.0.7","dev":"raven-wg0","table":"9028",'
    '"scope":"link","flags":[]},{"dst":"10.5.0.0/24","dev":"eth0","scope":"253","flags":[]}]'
)
V6 = (
    '[{"dst":"default","gateway":"fd52::2","dev":"raven0","table":"9027","metric":1024,'
    '"flags":[],"metrics":[{"mtu":1400}],"pref":"medium"},'
    '{"dst":"fd00:20::/64","dev":"raven-wg0","table":"9028","metric":1024,"flags":[]}]'
)


def test_routes_are_normalised_like_the_planner_writes_them() -> None:
    assert parse_routes_json(V4, 4) == [
        Route(9027, "0.0.0.0/0", "raven0", "240.0.1.5", 1420),
        Route(9028, "10.9.0.7/32", "raven-wg0"),  # a bare address is a host route
        Route(254, "10.5.0.0/24", "eth0"),  # the main table carries no "table" key
    ]
    assert parse_routes_json(V6, 6) == [
        Route(9027, "::/0", "raven0", "fd52::2", 1400),
        Route(9028, "fd00:20::/64", "raven-wg0"),
    ]


def test_no_routes() -> None:
    assert parse_routes_json("[]", 4) == [] and parse_routes_json("", 6) == []
