"""Collectors for ravectl: the cluster view, agents' state and node facts (I/O, thin).

Everything here only gathers; decisions are in `status`, `checks` and `checks_l3`. Commands
that cannot run (not on the node, tool missing) leave the fact at None.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509

from ravend.ctl import statekeys as k
from ravend.ctl.checks import SYSCTLS, probe_target
from ravend.ctl.facts import (
    MEMBER_TABLE,
    TUNNEL_TABLE,
    WG_LINK,
    CertFact,
    ClusterFacts,
    LinkFact,
    NodeFacts,
    ProbeFact,
    WgPeerFact,
)
from ravend.ctl.status import l3_role
from ravend.ctl.target import Target
from ravend.kube import errors
from ravend.kube.client import KubeClient
from ravend.kube.codec import gateway_from_json, node_from_json, raven_config_from_configmap
from ravend.kube.resources import CONFIGMAPS, GATEWAYS, NODES
from ravend.model import RAVEN_CFG_NAME, RAVEN_NAMESPACE, ClusterView, EndpointType, Gateway

_RTT = re.compile(r"time=([0-9.]+) ms")


async def fetch_view(client: KubeClient) -> ClusterView:
    """One consistent-enough snapshot from three lists (ravectl does not watch)."""
    gws, _ = await client.list(GATEWAYS)
    nodes, _ = await client.list(NODES)
    try:
        cfg: Mapping[str, Any] | None = await client.get(
            CONFIGMAPS, RAVEN_CFG_NAME, RAVEN_NAMESPACE
        )
    except errors.NotFound:
        cfg = None
    gateways: dict[str, Gateway] = {}
    for raw in gws:
        gw = gateway_from_json(raw)
        gateways[gw.name] = gw
    node_map = {n.name: n for n in (node_from_json(raw) for raw in nodes)}
    return ClusterView(
        gateways=gateways, nodes=node_map, raven_cfg=raven_config_from_configmap(cfg), synced=True
    )


async def fetch_states(
    target: Target, view: ClusterView, nodes: Sequence[str]
) -> dict[str, Mapping[str, Any] | None]:
    names = list(nodes)
    results = await asyncio.gather(
        *(target.agent_state(n, view.nodes[n].private_ip) for n in names)
    )
    return dict(zip(names, results, strict=True))


async def collect_cluster(client: KubeClient) -> ClusterFacts:
    """API reachability (a real list call) and clock skew (the server's Date header)."""
    try:
        await client.list(NODES)
    except errors.KubeError as exc:
        return ClusterFacts(api_ok=False, api_detail=str(exc))
    return ClusterFacts(api_ok=True, clock_skew_s=await _clock_skew(client.host))


async def _clock_skew(host: str) -> float | None:
    # Unauthenticated and unverified on purpose: only the Date header is read (any status
    # carries it) and nothing is sent, so no credential is exposed to a wrong server.
    timeout = aiohttp.ClientTimeout(total=5)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{host}/version", ssl=False) as resp,
        ):
            date = resp.headers.get("Date")
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None
    if not date:
        return None
    server = email.utils.parsedate_to_datetime(date)
    # Date has one-second resolution: compare against the middle of that second.
    return (dt.datetime.now(dt.UTC) - server).total_seconds() - 0.5


def remote_subnets(view: ClusterView, node: str) -> tuple[str, ...]:
    mine = view.gateway_of(node)
    return tuple(
        s
        for name in sorted(view.gateways)
        if mine is None or name != mine.name
        for info in view.gateways[name].status.nodes
        for s in info.subnets
    )


async def collect_node(target: Target, view: ClusterView, node: str) -> NodeFacts:
    """Facts about `node`; runs the commands concurrently."""
    gw = view.gateway_of(node)
    role = l3_role(view, node)
    state = await target.agent_state(node, view.nodes[node].private_ip)
    # A TaskGroup rather than gather(): keeps each result's type (gather's overloads stop at 6).
    async with asyncio.TaskGroup() as tg:
        kernel_t = tg.create_task(_kernel(target, node))
        sysctls_t = tg.create_task(_sysctls(target, node))
        links_t = tg.create_task(_links(target, node))
        rules_t = tg.create_task(_lines(target, node, ["ip", "rule", "show"]))
        routes_t = tg.create_task(_routes(target, node))
        nft_t = tg.create_task(_nft(target, node))
        wg_t = tg.create_task(_wg_peers(target, node))
        certs_t = tg.create_task(asyncio.to_thread(read_certs, target.cert_dir(node)))
    kernel, links, rules = kernel_t.result(), links_t.result(), rules_t.result()
    probes = await _probes(target, view, node) if role is not None else None
    link_facts, underlay = links if links is not None else (None, None)
    return NodeFacts(
        node=node,
        role=role,
        remote_subnets=remote_subnets(view, node),
        has_members=gw is not None and sum(n.gateway == gw.name for n in view.nodes.values()) > 1,
        standby=role == "member" and gw is not None and node in _tunnel_candidates(gw),
        wg_module=kernel.get("wgmod"),
        wg_go=kernel.get("wggo"),
        vxlan=kernel.get("vxlan") or any(x.kind == "vxlan" for x in link_facts or ()) or None,
        policy_routing=rules is not None,
        sysctls=sysctls_t.result(),
        links=link_facts,
        underlay_mtu=underlay,
        rules=rules,
        routes=routes_t.result(),
        planned=_plan_lines(state, k.L3_PLANNED),
        present=_plan_lines(state, k.L3_PRESENT),
        nft=nft_t.result(),
        wg_peers=wg_t.result(),
        probes=probes,
        certs=certs_t.result(),
        now=dt.datetime.now(dt.UTC),
    )


def _tunnel_candidates(gw: Gateway) -> set[str]:
    return {e.node_name for e in gw.spec.endpoints if e.type == EndpointType.TUNNEL}


def _plan_lines(state: Mapping[str, Any] | None, key: str) -> dict[str, tuple[str, ...]] | None:
    out = {}
    for kind in k.PLAN_KINDS:
        lines = k.dig_str_list(state, k.L3, key, kind)
        if lines is not None:
            out[kind] = tuple(lines)
    return out or None


_KERNEL_SCRIPT = (
    "test -d /sys/module/wireguard && echo wgmod; "
    "command -v wireguard-go >/dev/null 2>&1 && echo wggo; "
    "test -d /sys/module/vxlan && echo vxlan; true"
)


async def _kernel(target: Target, node: str) -> dict[str, bool]:
    res = await target.run_on(node, ["sh", "-c", _KERNEL_SCRIPT])
    if res is None:
        return {}
    words = set(res.stdout.split())
    out: dict[str, bool] = {w: w in words for w in ("wgmod", "wggo")}
    if "vxlan" in words:
        # Absent from /sys/module proves nothing (built-ins without parameters): leave unknown.
        out["vxlan"] = True
    return out


async def _sysctls(target: Target, node: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key in SYSCTLS:
        res = await target.run_on(node, ["sysctl", "-n", key])
        out[key] = res.stdout.strip() if res is not None and res.ok else None
    return out


async def _links(target: Target, node: str) -> tuple[tuple[LinkFact, ...], int | None] | None:
    res = await target.run_on(node, ["ip", "-j", "-d", "link", "show"])
    if res is None or not res.ok:
        return None
    facts, underlay = [], None
    for link in json.loads(res.stdout or "[]"):
        kind = str((link.get("linkinfo") or {}).get("info_kind") or "")
        up = "UP" in link.get("flags", [])
        facts.append(LinkFact(link["ifname"], kind, int(link.get("mtu", 0)), up))
        if link.get("ifname") == "eth0" or (underlay is None and kind == "" and up):
            underlay = int(link.get("mtu", 0)) if link["ifname"] != "lo" else underlay
    return tuple(facts), underlay


async def _lines(target: Target, node: str, argv: list[str]) -> tuple[str, ...] | None:
    res = await target.run_on(node, argv)
    if res is None or not res.ok:
        return None
    return tuple(line.strip() for line in res.stdout.splitlines() if line.strip())


async def _routes(target: Target, node: str) -> dict[int, tuple[str, ...]] | None:
    out = {}
    for table in (MEMBER_TABLE, TUNNEL_TABLE):
        lines = await _lines(target, node, ["ip", "route", "show", "table", str(table)])
        if lines is None:
            # A table that was never created reads as an error: empty, not unknown.
            lines = ()
        out[table] = lines
    return out


async def _nft(target: Target, node: str) -> str | None:
    res = await target.run_on(node, ["nft", "list", "table", "inet", "ravend"])
    if res is None:
        return None
    return res.stdout if res.ok else ""


async def _wg_peers(target: Target, node: str) -> tuple[WgPeerFact, ...] | None:
    res = await target.run_on(node, ["wg", "show", WG_LINK, "dump"])
    if res is None or not res.ok:
        return None
    return parse_wg_dump(res.stdout)


def parse_wg_dump(text: str) -> tuple[WgPeerFact, ...]:
    """Peers from `wg show IF dump` (first line is the interface itself)."""
    peers = []
    for line in text.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 5:
            endpoint = "" if cols[2] == "(none)" else cols[2]
            allowed = () if cols[3] in ("", "(none)") else tuple(cols[3].split(","))
            peers.append(WgPeerFact(cols[0], endpoint, int(cols[4] or 0), allowed))
    return tuple(peers)


async def _probes(target: Target, view: ClusterView, node: str) -> tuple[ProbeFact, ...] | None:
    mine = view.gateway_of(node)
    jobs = []
    for name in sorted(view.gateways):
        if mine is not None and name == mine.name:
            continue
        for info in view.gateways[name].status.nodes:
            for subnet in info.subnets:
                dst = probe_target(subnet)
                if dst is not None:
                    jobs.append((name, subnet, dst))
    results = await asyncio.gather(*(_ping(target, node, dst) for _, _, dst in jobs))
    if any(r is None for r in results):
        return None
    return tuple(
        ProbeFact(gw, subnet, dst, r is not None and r[0], r[1] if r else None)
        for (gw, subnet, dst), r in zip(jobs, results, strict=True)
    )


async def _ping(target: Target, node: str, dst: str) -> tuple[bool, float | None] | None:
    res = await target.run_on(node, ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", dst])
    if res is None:
        return None
    m = _RTT.search(res.stdout)
    return res.ok, float(m.group(1)) if m else None


def read_certs(cert_dir: Path | None) -> tuple[CertFact, ...] | None:
    """Expiry of every `*.crt` leaf in the agent's certificate store."""
    if cert_dir is None or not cert_dir.is_dir():
        return None
    out = []
    for path in sorted(cert_dir.glob("*.crt")):
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except ValueError:
            continue
        out.append(CertFact(path.stem, cert.not_valid_after_utc))
    return tuple(out)
