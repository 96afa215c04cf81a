"""The checks of `ravectl diagnose`: pure functions from collected facts to results (no I/O).

Each check looks at one concern and says, when it is not ok, what to do. Missing facts give
SKIP (not applicable, or nothing to look at) or WARN (should have been collectable), never OK,
so a diagnose that could not see something does not claim it is fine.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Sequence

from ravend.ctl.checks_l3 import check_handshakes, check_links, check_mtu_mss, check_routing
from ravend.ctl.facts import (
    CheckResult,
    ClusterFacts,
    NodeFacts,
    Status,
)
from ravend.ctl.facts import result as _r

CERT_WARN_DAYS = 7
SKEW_WARN_S = 2.0
SKEW_FAIL_S = 30.0

SYSCTL_FORWARD = "net.ipv4.ip_forward"
SYSCTL_RP_ALL = "net.ipv4.conf.all.rp_filter"
SYSCTL_REDIRECTS = "net.ipv4.conf.all.send_redirects"
SYSCTLS = (SYSCTL_FORWARD, SYSCTL_RP_ALL, SYSCTL_REDIRECTS)


def check_kernel(f: NodeFacts) -> list[CheckResult]:
    """WireGuard (module or wireguard-go) on gateways, VXLAN when a pool has members, policy
    routing wherever L3 runs."""
    if f.role is None:
        return [_r(f, "kernel", Status.SKIP, "L3 does not run on this node")]
    out = []
    if f.role == "gateway":
        if f.wg_module or f.wg_go:
            which = "kernel module" if f.wg_module else "wireguard-go"
            out.append(_r(f, "kernel/wireguard", Status.OK, f"WireGuard via {which}"))
        else:
            out.append(
                _r(
                    f,
                    "kernel/wireguard",
                    Status.FAIL,
                    "no WireGuard: no kernel module and no wireguard-go binary",
                    "load the module (modprobe wireguard) or "
                    "install wireguard-go (apt-get install wireguard-go) on the node",
                )
            )
    if f.vxlan is False:
        out.append(
            _r(
                f,
                "kernel/vxlan",
                Status.FAIL,
                "the kernel cannot create VXLAN links",
                "enable CONFIG_VXLAN or load the module (modprobe vxlan)",
            )
        )
    else:
        known = f.vxlan is not None
        out.append(
            _r(
                f,
                "kernel/vxlan",
                Status.OK if known else Status.WARN,
                "VXLAN available" if known else "VXLAN support unknown",
                "check `modinfo vxlan` or /sys/module/vxlan on the node",
            )
        )
    ok = f.policy_routing is True
    out.append(
        _r(
            f,
            "kernel/policy-routing",
            Status.OK if ok else Status.FAIL,
            "ip rule works" if ok else "policy routing (ip rule) unavailable",
            "enable CONFIG_IP_MULTIPLE_TABLES in the kernel",
        )
    )
    return out


def check_sysctls(f: NodeFacts) -> list[CheckResult]:
    """ip_forward on, rp_filter not strict, no ICMP redirects from a relaying gateway."""
    if f.role is None:
        return [_r(f, "sysctl", Status.SKIP, "L3 does not run on this node")]
    out = []
    fwd = f.sysctls.get(SYSCTL_FORWARD)
    out.append(
        _r(
            f,
            "sysctl/ip_forward",
            Status.OK if fwd == "1" else Status.FAIL,
            f"{SYSCTL_FORWARD}={fwd}",
            f"sysctl -w {SYSCTL_FORWARD}=1 (cross-domain traffic is forwarded)",
        )
    )
    rp = f.sysctls.get(SYSCTL_RP_ALL)
    out.append(
        _r(
            f,
            "sysctl/rp_filter",
            Status.OK if rp in ("0", "2") else Status.FAIL,
            f"{SYSCTL_RP_ALL}={rp}",
            f"sysctl -w {SYSCTL_RP_ALL}=2 (strict mode drops "
            "tunnel traffic once policy routing is in use)",
        )
    )
    if f.role == "gateway":
        red = f.sysctls.get(SYSCTL_REDIRECTS)
        out.append(
            _r(
                f,
                "sysctl/send_redirects",
                Status.OK if red == "0" else Status.WARN,
                f"{SYSCTL_REDIRECTS}={red}",
                f"sysctl -w {SYSCTL_REDIRECTS}=0 (a relaying "
                "gateway would tell peers to bypass it)",
            )
        )
    return out


def check_probes(f: NodeFacts) -> list[CheckResult]:
    """A ping through the real data path to every remote pod subnet's gateway address."""
    if f.probes is None:
        return [_r(f, "probe", Status.SKIP, "no probes run (L3 off or not on the node)")]
    if not f.probes:
        return [_r(f, "probe", Status.SKIP, "no remote subnets to probe")]
    out = []
    for p in f.probes:
        rtt = f", {p.rtt_ms:.1f} ms" if p.rtt_ms is not None else ""
        out.append(
            _r(
                f,
                f"probe/{p.subnet}",
                Status.OK if p.ok else Status.FAIL,
                f"{p.target} in {p.gateway} " + ("answers" + rtt if p.ok else "unreachable"),
                f"trace it: ip route get {p.target}; check the tunnels and routing checks "
                "above and the remote node",
            )
        )
    return out


def check_kubelets(f: NodeFacts) -> list[CheckResult]:
    if f.kubelets is None:
        return [_r(f, "l7", Status.SKIP, "L7 not checked from here")]
    return [
        _r(
            f,
            f"l7/{k.node}",
            Status.OK if k.ok else Status.FAIL,
            f"kubelet of {k.node} " + ("reachable" if k.ok else f"unreachable: {k.detail}"),
            "check the edge's proxy client is connected (ravectl status, L7 EDGES) and the "
            "proxy server's front end",
        )
        for k in f.kubelets
    ]


def check_certs(f: NodeFacts) -> list[CheckResult]:
    if f.certs is None or f.now is None:
        return [_r(f, "certs", Status.SKIP, "certificates not readable from here")]
    out = []
    for c in f.certs:
        days = check_cert_expiry_days(c.not_after, f.now)
        if days <= 0:
            status, detail = Status.FAIL, f"{c.name} expired {-days:.1f} days ago"
        elif days < CERT_WARN_DAYS:
            status, detail = Status.WARN, f"{c.name} expires in {days:.1f} days"
        else:
            status, detail = Status.OK, f"{c.name} valid for {days:.0f} days"
        fix = (
            f"delete {c.name}.crt/.key in the state dir and restart the agent: it requests "
            "a new certificate (rotation should have renewed it at 80 % of its life)"
        )
        out.append(_r(f, f"certs/{c.name}", status, detail, fix))
    return out


def check_cert_expiry_days(not_after: dt.datetime, now: dt.datetime) -> float:
    """Days until `not_after` (negative once expired)."""
    return (not_after - now).total_seconds() / 86400


def check_cluster(c: ClusterFacts) -> list[CheckResult]:
    """API server reachability and clock skew against its Date header."""
    api = CheckResult(
        "api",
        Status.OK if c.api_ok else Status.FAIL,
        "API server " + ("reachable" if c.api_ok else f"unreachable: {c.api_detail}"),
        "" if c.api_ok else "check the kubeconfig/server address, network path and credentials",
    )
    if c.clock_skew_s is None:
        skew = CheckResult("clock", Status.SKIP, "clock skew not measured")
    else:
        s = abs(c.clock_skew_s)
        status = Status.FAIL if s > SKEW_FAIL_S else Status.WARN if s > SKEW_WARN_S else Status.OK
        skew = CheckResult(
            "clock",
            status,
            f"clock skew vs API server {c.clock_skew_s:+.1f} s",
            ""
            if status == Status.OK
            else "run NTP (chrony/timesyncd): certificates and Lease expiry depend on clocks",
        )
    return [api, skew]


NODE_CHECKS: tuple[Callable[[NodeFacts], list[CheckResult]], ...] = (
    check_kernel,
    check_sysctls,
    check_links,
    check_routing,
    check_mtu_mss,
    check_handshakes,
    check_probes,
    check_kubelets,
    check_certs,
)


def run_node_checks(f: NodeFacts) -> list[CheckResult]:
    return [r for check in NODE_CHECKS for r in check(f)]


def probe_target(subnet: str) -> str | None:
    """First host of an IPv4 pod subnet: the CNI bridge address on most CNIs (cni0 .1)."""
    net = ipaddress.ip_network(subnet, strict=False)
    if net.version != 4 or net.num_addresses < 4:
        return None
    return str(net.network_address + 1)


def worst(results: Sequence[CheckResult]) -> Status:
    statuses = {r.status for r in results}
    for s in (Status.FAIL, Status.WARN, Status.OK):
        if s in statuses:
            return s
    return Status.SKIP
