"""Every diagnose check on plain facts: healthy passes, each breakage fails and says what to do."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from ravend.ctl.checks import (
    check_cert_expiry_days,
    check_certs,
    check_cluster,
    check_kernel,
    check_kubelets,
    check_probes,
    check_sysctls,
    probe_target,
    run_node_checks,
    worst,
)
from ravend.ctl.checks_l3 import check_handshakes, check_links, check_mtu_mss, check_routing
from ravend.ctl.collect import parse_wg_dump
from ravend.ctl.facts import (
    CertFact,
    CheckResult,
    ClusterFacts,
    KubeletFact,
    LinkFact,
    NodeFacts,
    ProbeFact,
    Status,
    WgPeerFact,
)

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
REMOTE = ("10.244.2.0/24", "10.244.4.0/24")

GATEWAY = NodeFacts(
    node="gw1",
    role="gateway",
    remote_subnets=REMOTE,
    has_members=True,
    wg_module=False,
    wg_go=True,
    vxlan=True,
    policy_routing=True,
    sysctls={
        "net.ipv4.ip_forward": "1",
        "net.ipv4.conf.all.rp_filter": "2",
        "net.ipv4.conf.all.send_redirects": "0",
    },
    links=(
        LinkFact("eth0", "veth", 1500, True),
        LinkFact("raven-wg0", "", 1420, True),
        LinkFact("raven0", "vxlan", 1370, True),
    ),
    underlay_mtu=1500,
    rules=("101: from all lookup 9028 proto 76",),
    routes={9027: (), 9028: ("10.244.2.0/24 dev raven-wg0", "10.244.4.0/24 dev raven-wg0")},
    nft="table inet ravend { tcp option maxseg size set 1380 }",
    wg_peers=(WgPeerFact("a" * 44, "198.18.0.3:4500", int(NOW.timestamp()) - 10),),
    probes=(ProbeFact("gw-b", REMOTE[0], "10.244.2.1", True, 1.2),),
    kubelets=(KubeletFact("edge1", True),),
    certs=(CertFact("tunnel-client", NOW + dt.timedelta(days=300)),),
    now=NOW,
)
MEMBER = replace(
    GATEWAY,
    node="m1",
    role="member",
    links=(LinkFact("eth0", "veth", 1500, True), LinkFact("raven0", "vxlan", 1450, True)),
    rules=("100: from all fwmark 0x40/0x40 lookup 9027 proto 76",),
    routes={9027: ("default via 240.2.0.103 dev raven0 onlink",), 9028: ()},
    wg_peers=None,
)


def statuses(results: list[CheckResult]) -> dict[str, Status]:
    return {r.check: r.status for r in results}


def failing(results: list[CheckResult]) -> list[CheckResult]:
    bad = [r for r in results if r.status == Status.FAIL]
    assert all(r.fix for r in bad), "every failure says what to do"
    return bad


@pytest.mark.parametrize("facts", [GATEWAY, MEMBER], ids=["gateway", "member"])
def test_healthy_node_has_no_failure(facts: NodeFacts) -> None:
    results = run_node_checks(facts)
    assert failing(results) == []
    assert worst(results) == Status.OK
    assert all(r.fix == "" for r in results if r.status == Status.OK)


def test_not_in_l3_skips_data_plane_checks() -> None:
    f = replace(GATEWAY, role=None, probes=None)
    for check in (check_kernel, check_sysctls, check_links, check_routing, check_mtu_mss):
        assert {r.status for r in check(f)} == {Status.SKIP}


def test_kernel_without_any_wireguard_fails_on_gateway_only() -> None:
    f = replace(GATEWAY, wg_go=False, wg_module=False)
    (bad,) = failing(check_kernel(f))
    assert bad.check == "kernel/wireguard" and "wireguard-go" in bad.fix
    assert failing(check_kernel(replace(MEMBER, wg_go=False))) == []
    assert "kernel module" in check_kernel(replace(GATEWAY, wg_module=True))[0].detail


def test_kernel_vxlan_and_policy_routing() -> None:
    assert statuses(check_kernel(replace(GATEWAY, vxlan=False)))["kernel/vxlan"] == Status.FAIL
    assert statuses(check_kernel(replace(GATEWAY, vxlan=None)))["kernel/vxlan"] == Status.WARN
    bad = failing(check_kernel(replace(MEMBER, policy_routing=False)))
    assert [r.check for r in bad] == ["kernel/policy-routing"]


@pytest.mark.parametrize(
    ("key", "value", "check", "status"),
    [
        ("net.ipv4.ip_forward", "0", "sysctl/ip_forward", Status.FAIL),
        ("net.ipv4.conf.all.rp_filter", "1", "sysctl/rp_filter", Status.FAIL),
        ("net.ipv4.conf.all.rp_filter", None, "sysctl/rp_filter", Status.FAIL),
        ("net.ipv4.conf.all.send_redirects", "1", "sysctl/send_redirects", Status.WARN),
    ],
)
def test_wrong_sysctl(key: str, value: str | None, check: str, status: Status) -> None:
    f = replace(GATEWAY, sysctls={**GATEWAY.sysctls, key: value})
    results = check_sysctls(f)
    assert statuses(results)[check] == status
    (r,) = [r for r in results if r.check == check]
    assert "sysctl -w" in r.fix and key in r.fix


def test_members_are_not_asked_about_redirects() -> None:
    f = replace(MEMBER, sysctls={**MEMBER.sysctls, "net.ipv4.conf.all.send_redirects": "1"})
    assert "sysctl/send_redirects" not in statuses(check_sysctls(f))


def test_missing_or_down_link() -> None:
    gone = replace(GATEWAY, links=tuple(x for x in GATEWAY.links or () if x.name != "raven-wg0"))
    (bad,) = failing(check_links(gone))
    assert bad.check == "links/raven-wg0" and "missing" in bad.detail
    down = replace(MEMBER, links=(LinkFact("raven0", "vxlan", 1450, False),))
    assert failing(check_links(down))[0].detail == "raven0 is down"
    # a lone gateway (no members) needs no raven0
    alone = replace(gone, has_members=False, links=(LinkFact("raven-wg0", "", 1420, True),))
    assert failing(check_links(alone)) == []


def test_stopped_wireguard_device_is_detected() -> None:
    (bad,) = failing(check_links(replace(GATEWAY, wg_peers=None)))
    assert bad.check == "links/wireguard-device" and "wireguard-go" in bad.fix


def test_deleted_route_and_rule() -> None:
    f = replace(GATEWAY, routes={9028: ("10.244.2.0/24 dev raven-wg0",)})
    (bad,) = failing(check_routing(f))
    assert "10.244.4.0/24" in bad.detail
    (rule,) = failing(check_routing(replace(GATEWAY, rules=())))
    assert rule.check == "routing/rule"
    member = failing(check_routing(replace(MEMBER, routes={9027: ()}, rules=())))
    assert [r.check for r in member] == ["routing/rule", "routing/routes"]


def test_agent_plan_diff_wins_over_heuristics() -> None:
    planned = {"routes": ("10.244.2.0/24 dev raven-wg0 table 9028",), "rules": ("r1",)}
    f = replace(GATEWAY, routes={}, rules=(), planned=planned, present={"rules": ("r1",)})
    (bad,) = failing(check_routing(f))
    assert bad.check == "routing/routes" and "10.244.2.0/24 dev raven-wg0" in bad.detail
    assert statuses(check_routing(f))["routing/rules"] == Status.OK


def test_unreadable_routing_is_a_warning_not_a_pass() -> None:
    assert statuses(check_routing(replace(MEMBER, rules=None))) == {"routing": Status.WARN}


def test_mtu_too_big_and_missing_mss_clamp() -> None:
    big = replace(GATEWAY, links=(LinkFact("raven-wg0", "", 1500, True),))
    (bad,) = failing(check_mtu_mss(big))
    assert bad.check == "mtu/raven-wg0" and "mtu 1420" in bad.fix
    (mss,) = failing(check_mtu_mss(replace(GATEWAY, nft="")))
    assert mss.check == "mtu/mss-clamp"
    assert statuses(check_mtu_mss(replace(GATEWAY, nft=None)))["mtu/mss-clamp"] == Status.WARN


def test_stale_or_missing_handshake() -> None:
    old = WgPeerFact("b" * 44, "198.18.0.9:4500", int(NOW.timestamp()) - 600)
    never = WgPeerFact("c" * 44, "", 0)
    bad = failing(check_handshakes(replace(GATEWAY, wg_peers=(old, never))))
    assert [("600 s ago" in r.detail, "never" in r.detail) for r in bad] == [
        (True, False),
        (False, True),
    ]
    assert failing(check_handshakes(replace(GATEWAY, wg_peers=())))[0].check == "tunnels"
    assert statuses(check_handshakes(MEMBER)) == {"tunnels": Status.SKIP}


def test_standby_peer_without_handshake_is_a_warning_not_a_failure() -> None:
    # The hub lists another pool's warm standby with no AllowedIPs: no traffic, no outage.
    standby = WgPeerFact("d" * 44, "", 0, ())
    stale_active = WgPeerFact("e" * 44, "198.18.0.9:4500", 0, ("10.244.2.0/24",))
    results = check_handshakes(replace(GATEWAY, wg_peers=(standby, stale_active)))
    by_check = {r.check: r for r in results}
    warn = by_check["tunnels/" + "d" * 8]
    assert warn.status == Status.WARN and "standby" in warn.detail and "failover" in warn.fix
    (bad,) = failing(results)
    assert bad.check == "tunnels/" + "e" * 8


def test_standby_member_needs_its_warm_wireguard_device() -> None:
    wg = LinkFact("raven-wg0", "", 1420, True)
    standby = replace(MEMBER, standby=True, links=(*(MEMBER.links or ()), wg), wg_peers=())
    assert statuses(check_links(standby))["links/raven-wg0"] == Status.OK
    (missing,) = failing(check_links(replace(standby, links=MEMBER.links)))
    assert missing.check == "links/raven-wg0"
    (dead,) = failing(check_links(replace(standby, wg_peers=None)))
    assert dead.check == "links/wireguard-device"
    # A member that is no candidate keeps no WireGuard device.
    assert "links/raven-wg0" not in statuses(check_links(MEMBER))


def test_failed_probe_names_target() -> None:
    f = replace(GATEWAY, probes=(ProbeFact("gw-b", "10.244.2.0/24", "10.244.2.1", False),))
    (bad,) = failing(check_probes(f))
    assert "10.244.2.1" in bad.detail and "ip route get 10.244.2.1" in bad.fix
    assert statuses(check_probes(replace(GATEWAY, probes=None))) == {"probe": Status.SKIP}


def test_unreachable_kubelet() -> None:
    f = replace(GATEWAY, kubelets=(KubeletFact("edge1", False, "502 Bad Gateway"),))
    (bad,) = failing(check_kubelets(f))
    assert bad.check == "l7/edge1" and "502" in bad.detail


def test_expired_and_expiring_certificates() -> None:
    certs = (
        CertFact("old", NOW - dt.timedelta(days=2)),
        CertFact("soon", NOW + dt.timedelta(days=3)),
    )
    results = check_certs(replace(GATEWAY, certs=certs))
    assert statuses(results) == {"certs/old": Status.FAIL, "certs/soon": Status.WARN}
    assert "expired 2.0 days ago" in results[0].detail
    assert check_cert_expiry_days(NOW + dt.timedelta(days=1), NOW) == pytest.approx(1.0)


def test_cluster_api_and_clock_skew() -> None:
    down = check_cluster(ClusterFacts(api_ok=False, api_detail="connection refused"))
    assert down[0].status == Status.FAIL and "connection refused" in down[0].detail
    assert down[1].status == Status.SKIP
    skews = {s: check_cluster(ClusterFacts(True, clock_skew_s=s))[1].status for s in (0.3, -5, 90)}
    assert skews == {0.3: Status.OK, -5: Status.WARN, 90: Status.FAIL}


def test_probe_target_and_wg_dump() -> None:
    assert probe_target("10.244.2.0/24") == "10.244.2.1"
    assert probe_target("10.244.2.64/26") == "10.244.2.65"
    assert probe_target("fd00::/64") is None
    dump = (
        "priv\tpub\t4500\toff\n"
        "peerkey\t(none)\t198.18.0.3:4500\t10.244.0.0/24,10.244.1.0/24\t1700000000\t1\t2\t5\n"
        "standbykey\t(none)\t(none)\t(none)\t0\t0\t0\t5\n"
    )
    peer, standby = parse_wg_dump(dump)
    cidrs = ("10.244.0.0/24", "10.244.1.0/24")
    assert peer == WgPeerFact("peerkey", "198.18.0.3:4500", 1700000000, cidrs)
    assert standby == WgPeerFact("standbykey", "", 0, ())
