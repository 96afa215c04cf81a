"""The Linux adapter of the L3 plane: read a `KernelSnapshot`, apply `Op`s (I/O).

Reads go through rtnetlink (`ravend.l3.netlink`), except routes: a hub holds one route per
remote subnet, and decoding 4,000 of them with pyroute2 took ~0.4 s per pass where
`ip -j route show proto <ours>` (filtered and printed in C) takes ~15 ms per family
(bench/l3_plan.py). Writes of links, addresses, neighbours,
routes and rules are sent as one `ip -force -batch -` per run of ops (and FDB entries as one
`bridge -batch`): one process and one netlink burst instead of ~1 ms per pyroute2 request
(1,000 routes: see bench figures in the report). nftables and sysctls are applied with their
own tools; WireGuard ops go to the chosen backend. Each failed op is reported, the rest still
applied; "already exists" on add and "not found" on delete count as success.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from ravend.l3 import ops as o
from ravend.l3.addressing import normalise
from ravend.l3.netlink import read_objects
from ravend.l3.settings import L3Settings
from ravend.l3.state import KernelSnapshot, L3State, Route, route_order
from ravend.l3.wireguard import WireGuard

log = logging.getLogger(__name__)

_BENIGN_ADD = ("File exists",)
_BENIGN_DEL = (
    "No such file or directory",
    "No such process",
    "Cannot find device",
    "Cannot assign requested address",
    "does not exist",
)
_DELETES = (o.DeleteLink, o.DelAddress, o.DelNeigh, o.DelRoute, o.DelRule, o.DelFdb)
_FAILED = re.compile(r"^Command failed -:(\d+)$")
_READBACK_ONLY: frozenset[type[o.Op]] = frozenset(
    {o.ConfigureWireGuard, o.ReplaceNft, o.DeleteNft, o.SetSysctl}
)
"""Ops whose effect a targeted read-back can confirm (each writes one kind of object)."""


@dataclass(frozen=True)
class OpFailure:
    op: o.Op
    error: str


def ip_line(op: o.Op, s: L3Settings) -> str | None:
    """The `ip -batch` line for an op, or None if `ip` does not handle it (pure)."""
    match op:
        case o.CreateVxlan(dev=d):
            return (
                f"link add {d.name} type vxlan id {d.vni} dstport {d.port} local {d.local_ip} "
                f"nolearning\nlink set dev {d.name} address {d.mac} mtu {d.mtu} up"
            )
        case o.DeleteLink(name=n):
            return f"link del dev {n}"
        case o.SetLinkMtu(name=n, mtu=m):
            return f"link set dev {n} mtu {m}"
        case o.SetLinkUp(name=n):
            return f"link set dev {n} up"
        case o.AddAddress(link=n, cidr=c):
            return f"addr replace {c} dev {n}"
        case o.DelAddress(link=n, cidr=c):
            return f"addr del {c} dev {n}"
        case o.AddNeigh(link=n, entry=e):
            return f"neigh replace {e.ip} lladdr {e.mac} dev {n} nud permanent"
        case o.DelNeigh(link=n, entry=e):
            return f"neigh del {e.ip} dev {n}"
        case o.AddRoute(route=r) | o.DelRoute(route=r):
            verb = "replace" if isinstance(op, o.AddRoute) else "del"
            via = f" via {r.via}" if r.via else ""
            mtu = f" mtu {r.mtu}" if r.mtu and verb == "replace" else ""
            return (
                f"route {verb} {r.dst}{via} dev {r.dev} table {r.table} proto {s.route_proto}{mtu}"
            )
        case o.AddRule(rule=r) | o.DelRule(rule=r):
            verb = "add" if isinstance(op, o.AddRule) else "del"
            # A batch line cannot carry -6 (nor does `from ::/0` select it): IPv6 rules go to
            # a separate `ip -6 -batch` (see `needs_v6_flag`).
            src = "from all"
            iif = f" iif {r.iif}" if r.iif else ""
            mark = f" fwmark {r.fwmark:#x}/{r.fwmask:#x}" if r.fwmark else ""
            return (
                f"rule {verb} {src}{iif}{mark} lookup {r.table} prio {r.priority} "
                f"proto {s.route_proto}"
            )
    return None


def needs_v6_flag(op: o.Op) -> bool:
    return isinstance(op, o.AddRule | o.DelRule) and op.rule.family == 6


def bridge_line(op: o.Op) -> str | None:
    match op:
        case o.AddFdb(link=n, entry=e):
            return f"fdb replace {e.mac} dev {n} dst {e.dst} self permanent"
        case o.DelFdb(link=n, entry=e):
            return f"fdb del {e.mac} dev {n} dst {e.dst} self"
    return None


class LinuxKernel:
    """Snapshot and apply for one network namespace (None = the one ravend runs in)."""

    def __init__(
        self,
        settings: L3Settings,
        wireguard: WireGuard,
        netns: str | None = None,
        *,
        node_ip: str = "",
    ):
        self.s = settings
        self.wg = wireguard
        self.netns = netns
        self.node_ip = node_ip
        """Snapshots report the MTU of the link holding it ("": not read)."""
        self._parsed: dict[int, tuple[str, list[Route]]] = {}
        """Per family, the last `ip -j` route text and its parse: a hub's routes rarely change,
        and decoding 4,000 of them costs as much as dumping them (~15 ms)."""
        self._routes_sorted: tuple[list[Route], list[Route], tuple[Route, ...]] | None = None

    def _in_ns(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    async def snapshot(self, desired: L3State) -> KernelSnapshot:
        # The reads are independent and mostly wait on other processes (ip, nft, wireguard-go):
        # run concurrently, a pass waits for the slowest one instead of the sum.
        objs, v4, v6, sysctls, nft, wg = await asyncio.gather(
            read_objects(self.s, self.netns, routes=False, node_ip=self.node_ip),
            self._routes(4),
            self._routes(6),
            self._read_sysctls([x.path for x in desired.sysctls]),
            self._nft_digest(),
            self.wg.state(self.s.wireguard_link),
        )
        return KernelSnapshot(
            links=MappingProxyType(objs.links),
            routes=self._sorted_routes(v4, v6),
            rules=objs.rules,
            fdb=objs.fdb,
            neighbours=objs.neighbours,
            sysctls=MappingProxyType(sysctls),
            nft_digest=nft,
            wireguard=wg,
            underlay_mtu=objs.underlay_mtu,
        )

    def _sorted_routes(self, v4: list[Route], v6: list[Route]) -> tuple[Route, ...]:
        # Unchanged route texts give the very same parsed lists (`_routes`): same order too.
        last = self._routes_sorted
        if last is not None and last[0] is v4 and last[1] is v6:
            return last[2]
        out = tuple(sorted((*v4, *v6), key=route_order))
        self._routes_sorted = (v4, v6, out)
        return out

    async def readback(
        self, desired: L3State, before: KernelSnapshot, ops: Sequence[o.Op]
    ) -> KernelSnapshot:
        """The kernel after `ops` were applied to `before`: only the kinds of object the ops
        write are read again (a gateway switch is one WireGuard op; re-reading 4,000 routes to
        confirm it doubled the pass). Anything else the ops touch means a full snapshot."""
        kinds = {type(op) for op in ops}
        if not kinds <= _READBACK_ONLY:
            return await self.snapshot(desired)
        out = before
        if o.ConfigureWireGuard in kinds:
            out = replace(out, wireguard=await self.wg.state(self.s.wireguard_link))
        if kinds & {o.ReplaceNft, o.DeleteNft}:
            out = replace(out, nft_digest=await self._nft_digest())
        if o.SetSysctl in kinds:
            sysctls = await self._read_sysctls([x.path for x in desired.sysctls])
            out = replace(out, sysctls=MappingProxyType(sysctls))
        return out

    async def apply(self, ops: Sequence[o.Op]) -> list[OpFailure]:
        failures: list[OpFailure] = []
        i = 0
        while i < len(ops):
            for tool, line_of in (("ip", lambda op: ip_line(op, self.s)), ("bridge", bridge_line)):
                j = i
                while j < len(ops) and line_of(ops[j]) is not None:
                    j += 1
                if j > i:
                    failures += await self._batch(
                        tool, ops[i:j], [line_of(op) or "" for op in ops[i:j]]
                    )
                    i = j
                    break
            else:
                failures += await self._other(ops[i])
                i += 1
        for f in failures:
            log.warning("L3 op failed: %s: %s", f.op, f.error)
        return failures

    async def _batch(self, tool: str, ops: Sequence[o.Op], lines: list[str]) -> list[OpFailure]:
        # One op may span several lines (CreateVxlan); map each batch line back to its op.
        owner: list[o.Op] = []
        text: list[str] = []
        for op, line in zip(ops, lines, strict=True):
            for part in line.splitlines():
                owner.append(op)
                text.append(part)
        ns = ["-n", self.netns] if self.netns else []
        failures: list[OpFailure] = []
        for v6 in (False, True):
            idx = [i for i, op in enumerate(owner) if needs_v6_flag(op) == v6]
            if not idx:
                continue
            argv = [tool, *ns, *(["-6"] if v6 else []), "-force", "-batch", "-"]
            rc, _, err = await _run(argv, "\n".join(text[i] for i in idx) + "\n")
            if rc != 0:
                failures += _batch_failures(err, [owner[i] for i in idx])
        return failures

    async def _other(self, op: o.Op) -> list[OpFailure]:
        try:
            await self._apply_other(op)
        except Exception as e:  # reported per op; the pass goes on (house style 2)
            return [OpFailure(op, str(e) or type(e).__name__)]
        return []

    async def _apply_other(self, op: o.Op) -> None:
        match op:
            case o.CreateWireGuard(name=n):
                await self.wg.ensure(n)
            case o.DeleteWireGuard(name=n):
                await self.wg.delete(n)
            case o.ConfigureWireGuard():
                await self.wg.configure(op)
            case o.ReplaceNft(ruleset=r):
                await _check(self._in_ns(["nft", "-f", "-"]), r.script())
            case o.DeleteNft(table=t):
                rc, _, err = await _run(self._in_ns(["nft", "delete", "table", "inet", t]))
                if rc != 0 and "No such file" not in err:
                    raise RuntimeError(err.strip())
            case o.SetSysctl(sysctl=x):
                await self._write_sysctl(x.path, x.value)
            case _:
                raise NotImplementedError(type(op).__name__)

    async def _routes(self, fam: int) -> list[Route]:
        ns = ["-n", self.netns] if self.netns else []
        argv = ["ip", *ns, f"-{fam}", "-N", "-j", "route", "show", "table", "all"]
        rc, out, err = await _run([*argv, "proto", str(self.s.route_proto)])
        if rc != 0:
            raise RuntimeError(f"reading routes: {err.strip()}")
        last = self._parsed.get(fam)
        if last is not None and last[0] == out:
            return last[1]
        routes = parse_routes_json(out, fam)
        self._parsed[fam] = (out, routes)
        return routes

    async def _nft_digest(self) -> str | None:
        # -t (terse): the set elements, thousands on a hub, are not needed to read the comment.
        argv = ["nft", "-t", "list", "table", "inet", self.s.nft_table]
        rc, out, _ = await _run(self._in_ns(argv))
        if rc != 0:
            return None
        m = re.search(r'comment "ravend ([0-9a-f]+)"', out)
        return m.group(1) if m else ""

    async def _read_sysctls(self, paths: list[str]) -> dict[str, str]:
        if not paths:
            return {}
        if self.netns is None:
            out = {}
            for p in paths:
                with contextlib.suppress(OSError):  # a link not created yet
                    out[p] = Path("/proc/sys", p).read_text().strip()  # noqa: ASYNC240 - procfs
            return out
        script = 'cd /proc/sys; for p in "$@"; do [ -e "$p" ] && echo "$p=$(cat "$p")"; done; true'
        _, text, _ = await _run(self._in_ns(["sh", "-c", script, "sh", *paths]))
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    async def _write_sysctl(self, path: str, value: str) -> None:
        if self.netns is None:
            Path("/proc/sys", path).write_text(value)  # noqa: ASYNC240 - procfs, no disk
            return
        await _check(self._in_ns(["sysctl", "-q", "-w", f"{path}={value}"]))


def parse_routes_json(text: str, fam: int) -> list[Route]:
    """Routes from `ip -N -j route show` output (pure). The main table carries no "table" key;
    "default" is the all-zero prefix of the family; a bare address is a host route."""
    out = []
    for r in json.loads(text or "[]"):
        dst = r.get("dst", "default")
        mtu = next((m["mtu"] for m in r.get("metrics", ()) if "mtu" in m), 0)
        out.append(
            Route(
                table=int(r.get("table", 254)),
                dst=("0.0.0.0/0" if fam == 4 else "::/0") if dst == "default" else normalise(dst),
                dev=r.get("dev", ""),
                via=r.get("gateway"),
                mtu=int(mtu),
            )
        )
    return out


def _batch_failures(stderr: str, owner: list[o.Op]) -> list[OpFailure]:
    """Map `ip -force -batch` errors ("<message>" then "Command failed -:N") to ops."""
    failures: dict[int, str] = {}
    pending: list[str] = []
    for line in stderr.splitlines():
        m = _FAILED.match(line.strip())
        if m is None:
            pending.append(line.strip())
            continue
        msg, pending, idx = " ".join(pending), [], int(m.group(1)) - 1
        if not 0 <= idx < len(owner):
            continue
        benign = _BENIGN_DEL if isinstance(owner[idx], _DELETES) else _BENIGN_ADD
        if not any(b in msg for b in benign):
            failures.setdefault(idx, msg)
    out: list[OpFailure] = []
    for idx, msg in sorted(failures.items()):
        if not out or out[-1].op is not owner[idx]:
            out.append(OpFailure(owner[idx], msg))
    return out


async def _run(argv: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    return proc.returncode or 0, out.decode(), err.decode()


async def _check(argv: list[str], stdin: str | None = None) -> None:
    rc, _, err = await _run(argv, stdin)
    if rc != 0:
        raise RuntimeError(f"{argv[-3:] if len(argv) > 3 else argv}: {err.strip()}")


__all__ = ["LinuxKernel", "OpFailure", "bridge_line", "ip_line", "parse_routes_json"]
