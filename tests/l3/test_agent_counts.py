"""/debug/state peer counts: warm-standby peers count on both sides (planned vs present)."""

from ravend.l3.agent import _counts
from ravend.l3.state import (
    KernelSnapshot,
    L3State,
    Role,
    WgDevice,
    WgDeviceState,
    WgPeer,
    WgPeerState,
)


def test_standby_peers_are_counted_like_the_kernel_counts_them() -> None:
    active = WgPeer("A" * 43 + "=", "198.18.0.100:4500", ("10.244.0.0/24",), 5, "gw-cloud")
    standby = WgPeer("B" * 43 + "=", None, (), 5, "gw-qingdao")
    device = WgDevice("raven-wg0", "K" * 43 + "=", "/k", 4500, 1420, (active,), (standby,))
    planned = L3State(role=Role.GATEWAY, gateway="gw-hangzhou", wireguard=device)
    present = KernelSnapshot(
        wireguard=WgDeviceState(
            peers=(WgPeerState(active.public_key), WgPeerState(standby.public_key))
        )
    )
    assert _counts(planned)["peers"] == _counts(present)["peers"] == 2
