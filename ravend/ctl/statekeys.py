"""The agent's /debug/state contract read by `ravectl` (pure constants and tolerant getters).

Plane owners register providers with `ObserveServer.add_state(name, provider)`; the JSON served
at /debug/state is `{name: provider()}` plus "readiness". These are the names and fields ravectl
reads. Every field is optional: a missing key shows as "-" and never breaks the tool, so a plane
can start with a subset and grow.

    "l3": {
        "role": "gateway" | "member" | "none",
        "backend": "kernel" | "userspace",
        "peers": [{"gateway", "node", "endpoint", "rtt_ms", "loss", "handshake_age_s"}],
        "links": [{"name", "kind", "mtu", "up"}],
        "planned": {"links": [str], "routes": [str], "rules": [str]},
        "present": {"links": [str], "routes": [str], "rules": [str]},
    },
    "l7": {
        "role": "server" | "client" | "none",
        "edges": [{"node", "gateway", "remote", "since_s", "streams"}],   # server side
        "sessions": [{"server", "state", "rtt_ms", "streams"}],         # client side
    },
    "certs": [{"name", "not_after"}],          # not_after: RFC 3339 UTC
    "kernel": {"wireguard_module": bool, "wireguard_go": bool, "vxlan": bool,
               "policy_routing": bool},
    "readiness": {"ready": bool, "conditions": {...}},   # added by the observe server itself

"planned"/"present" entries are canonical one-line strings (as `ip route show` prints them,
without volatile fields) so ravectl can diff them without knowing the planner's types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

L3 = "l3"
L7 = "l7"
CERTS = "certs"
KERNEL = "kernel"
READINESS = "readiness"

L3_ROLE = "role"
L3_BACKEND = "backend"
L3_PEERS = "peers"
L3_LINKS = "links"
L3_PLANNED = "planned"
L3_PRESENT = "present"
PLAN_KINDS = ("links", "routes", "rules")

PEER_GATEWAY = "gateway"
PEER_NODE = "node"
PEER_ENDPOINT = "endpoint"
PEER_RTT_MS = "rtt_ms"
PEER_LOSS = "loss"
PEER_HANDSHAKE_AGE_S = "handshake_age_s"

L7_ROLE = "role"
L7_EDGES = "edges"
L7_SESSIONS = "sessions"
EDGE_NODE = "node"
EDGE_GATEWAY = "gateway"
EDGE_REMOTE = "remote"
EDGE_SINCE_S = "since_s"
EDGE_STREAMS = "streams"
SESSION_SERVER = "server"
SESSION_STATE = "state"

CERT_NAME = "name"
CERT_NOT_AFTER = "not_after"

KERNEL_WG_MODULE = "wireguard_module"
KERNEL_WG_GO = "wireguard_go"
KERNEL_VXLAN = "vxlan"
KERNEL_POLICY_ROUTING = "policy_routing"

MISSING = "-"
"""What tables show for a value the agent did not provide."""


def dig(state: object, *path: str) -> Any:
    """`state[path[0]][path[1]]...`, or None as soon as a level is missing or not a mapping."""
    cur: Any = state
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def dig_list(state: object, *path: str) -> list[Mapping[str, Any]]:
    """The list at `path` keeping only mapping items; [] when absent or of the wrong type."""
    value = dig(state, *path)
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def dig_str_list(state: object, *path: str) -> list[str] | None:
    """A list of strings at `path`, or None when the agent does not provide it."""
    value = dig(state, *path)
    if not isinstance(value, Sequence) or isinstance(value, str):
        return None
    return [str(v) for v in value]


def number(value: object) -> float | None:
    """A JSON number as float; None for anything else (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
