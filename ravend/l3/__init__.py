"""ravend.l3: cross-pool routing (WireGuard between gateways, VXLAN from members to them).

Pure: settings, state, ops, addressing, topology, plan, nftgen, diff, memkernel, uapi codec.
I/O: netlink (reads, the only pyroute2 user), kernel (applies ops), wireguard (backends), keys.
"""
