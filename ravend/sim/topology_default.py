"""The embedded default topology (raven-reference section 8) and the colliding-IP variant (pure).

Kept as text identical to examples/topologies/default.yaml and collide.yaml (a test checks it),
so `ravend sim up` works from an installed package without the examples directory.
"""

from __future__ import annotations

from ravend.sim.topology import Topology, parse_topology

DEFAULT_TOPOLOGY_YAML = """\
# The example from Raven's user manual (raven-reference.md section 8): the demo's default.
# Six nodes in three regions: the cloud (public) and two edge regions behind NAT.
wan: {cidr: 198.18.0.0/24}
ravenCfg: {enable-l3-tunnel: "true", enable-l7-proxy: "true"}
regions:
- name: cloud
  behindNat: false
  lan: 192.168.0.0/24
  nodes:
  - name: izwz9dohcv74iegqecp4axz
    ip: 192.168.0.195
    podCIDR: 10.244.0.0/24
    gateway: gw-cloud
    labels: {node-role.kubernetes.io/control-plane: ""}
  - {name: izwz9ey0js5z7mornclpd6z, ip: 192.168.0.196, podCIDR: 10.244.1.0/24, gateway: gw-cloud}
- name: hangzhou
  behindNat: true
  lan: 172.16.2.0/24
  nodes:
  - {name: izbp15inok0kbfkg3in52rz, ip: 172.16.2.103, podCIDR: 10.244.2.0/24, gateway: gw-hangzhou}
  - {name: izbp15inok0kbfkg3in52sz, ip: 172.16.2.104, podCIDR: 10.244.3.0/24, gateway: gw-hangzhou}
- name: qingdao
  behindNat: true
  lan: 172.16.1.0/24
  nodes:
  - {name: izm5eb24dmjfimuaybpnqzz, ip: 172.16.1.89, podCIDR: 10.244.4.0/24, gateway: gw-qingdao}
  - {name: izm5eb24dmjfimuaybpnr0z, ip: 172.16.1.90, podCIDR: 10.244.5.0/24, gateway: gw-qingdao}
gateways:
- apiVersion: raven.openyurt.io/v1beta1
  kind: Gateway
  metadata: {name: gw-hangzhou}
  spec:
    proxyConfig: {Replicas: 1}
    tunnelConfig: {Replicas: 1}
    endpoints:
    - {nodeName: izbp15inok0kbfkg3in52rz, underNAT: true, port: 10262, type: proxy}
    - {nodeName: izbp15inok0kbfkg3in52rz, underNAT: true, port: 4500, type: tunnel}
- apiVersion: raven.openyurt.io/v1beta1
  kind: Gateway
  metadata: {name: gw-cloud}
  spec:
    exposeType: PublicIP
    proxyConfig: {Replicas: 1, proxyHTTPPort: "10255,9445", proxyHTTPSPort: "10250,9100"}
    tunnelConfig: {Replicas: 1}
    endpoints:
    # publicIP auto = the node's WAN address in the simulation
    - {nodeName: izwz9dohcv74iegqecp4axz, underNAT: false, port: 10262, type: proxy, publicIP: auto}
    - {nodeName: izwz9dohcv74iegqecp4axz, underNAT: false, port: 4500, type: tunnel, publicIP: auto}
- apiVersion: raven.openyurt.io/v1beta1
  kind: Gateway
  metadata: {name: gw-qingdao}
  spec:
    proxyConfig: {Replicas: 1}
    tunnelConfig: {Replicas: 1}
    endpoints:
    - {nodeName: izm5eb24dmjfimuaybpnqzz, underNAT: true, port: 10262, type: proxy}
    - {nodeName: izm5eb24dmjfimuaybpnr0z, underNAT: true, port: 4500, type: tunnel}
"""

_DEFAULT_HEADER = """\
# The example from Raven's user manual (raven-reference.md section 8): the demo's default.
# Six nodes in three regions: the cloud (public) and two edge regions behind NAT.
"""
_COLLIDE_HEADER = """\
# Two edge regions with the SAME LAN CIDR and node IPs (colliding addresses): L7 must still
# reach each kubelet by node name. Otherwise the same as default.yaml.
"""
# qingdao moves onto hangzhou's LAN and node addresses; nothing else changes.
_COLLIDE_EDITS = (
    (_DEFAULT_HEADER, _COLLIDE_HEADER),
    ("  lan: 172.16.1.0/24", "  lan: 172.16.2.0/24"),
    ("ip: 172.16.1.89,", "ip: 172.16.2.103,"),
    ("ip: 172.16.1.90,", "ip: 172.16.2.104,"),
)


def _derive_collide(text: str) -> str:
    for old, new in _COLLIDE_EDITS:
        if text.count(old) != 1:
            raise AssertionError(f"default topology changed: {old!r} must appear exactly once")
        text = text.replace(old, new)
    return text


COLLIDE_TOPOLOGY_YAML = _derive_collide(DEFAULT_TOPOLOGY_YAML)


def default_topology() -> Topology:
    """Raven's user-manual example: cloud (public, 2 nodes), hangzhou and qingdao (NAT, 2 each)."""
    return parse_topology(DEFAULT_TOPOLOGY_YAML)


def collide_topology() -> Topology:
    """Like the default, but hangzhou and qingdao share one LAN CIDR and the same node IPs."""
    return parse_topology(COLLIDE_TOPOLOGY_YAML)
