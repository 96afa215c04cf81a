"""Builds and tears down the simulated network with the `ip`, `sysctl` and `nft` CLIs (I/O, thin).

The decisions live in `netns_plan`; this module only runs them: one `ip -batch` for all
namespaces, one for all veth pairs (created directly inside their namespaces), then per
namespace in parallel sysctls, an `ip -batch` and an nftables ruleset. Teardown kills recorded
processes first, then anything still inside our namespaces (`ip netns pids`), then deletes the
namespaces: deleting a namespace with a live process in it leaves a ghost with its links alive.

pyroute2 is reserved to ravend.l3.netlink (house style 5), hence the CLIs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from ravend.sim.netns_plan import UPLINKS, HostLink, NetPlan
from ravend.sim.netns_state import RunState, kill_pids, stop_processes

log = logging.getLogger(__name__)

HOST_POOL = ipaddress.ip_network("198.19.0.0/16")
"""Pool of the root<->API /30s: second half of RFC 2544's 198.18.0.0/15, never routed."""

CUT_TABLE = "ravensim_cut"
_CUT_RULESET = f"""\
table inet {CUT_TABLE} {{
  chain pre {{ type filter hook prerouting priority -400; policy accept;
    iifname {{ {", ".join(f'"{u}"' for u in UPLINKS)} }} drop;
  }}
  chain post {{ type filter hook postrouting priority 400; policy accept;
    oifname {{ {", ".join(f'"{u}"' for u in UPLINKS)} }} drop;
  }}
}}
"""


class CommandError(RuntimeError):
    """A command of the network build failed (message holds argv and stderr)."""


@dataclass(frozen=True)
class CmdResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def new_prefix() -> str:
    """A unique name prefix for one run: "rv" + 6 hex + "-" (9 chars, leaves room in IFNAMSIZ)."""
    return f"rv{secrets.token_hex(3)}-"


async def run(
    argv: Sequence[str], *, stdin: str | None = None, check: bool = True, timeout: float = 30.0
) -> CmdResult:
    """Run a short command to completion; raise CommandError on failure when `check`."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout
        )
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise CommandError(f"{' '.join(argv)}: timed out after {timeout} s") from None
    res = CmdResult(
        proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
    )
    if check and not res.ok:
        raise CommandError(f"{' '.join(argv)}: exit {res.rc}: {res.stderr.strip()}")
    return res


async def exec_in(
    netns: str,
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    check: bool = False,
    timeout: float = 30.0,
) -> CmdResult:
    """Run a command inside a namespace (`ip netns exec`)."""
    return await run(
        ["ip", "netns", "exec", netns, *argv], stdin=stdin, check=check, timeout=timeout
    )


async def choose_host_link(prefix: str) -> HostLink:
    """A /30 in HOST_POOL that no root-namespace address overlaps, seeded by the run prefix."""
    res = await run(["ip", "-j", "-4", "addr", "show"])
    used = [
        ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
        for link in json.loads(res.stdout or "[]")
        for a in link.get("addr_info", [])
    ]
    slots = HOST_POOL.num_addresses // 4
    start = int(prefix[2:8], 16) % slots
    for i in range(slots):
        net = ipaddress.ip_network(f"{HOST_POOL.network_address + ((start + i) % slots) * 4}/30")
        if not any(net.overlaps(u) for u in used):
            return HostLink(root_name=f"{prefix}h", network=str(net))
    raise CommandError(f"no free /30 left in {HOST_POOL}")


async def build(plan: NetPlan, state: RunState) -> None:
    """Create every namespace and link of `plan`; records them in `state` before creating."""
    state.namespaces = list(plan.namespaces)
    state.root_links = [plan.host.root_name]
    state.save()
    await run(["ip", "-batch", "-"], stdin="".join(f"netns add {ns}\n" for ns in plan.namespaces))
    # sysctls first: `default` values only apply to links created afterwards
    await asyncio.gather(
        *(
            exec_in(ns, ["sysctl", "-q", "-e", "-w", *kv], check=True)
            for ns, kv in plan.sysctls.items()
        )
    )
    await run(["ip", "-batch", "-"], stdin="".join(f"{line}\n" for line in plan.root_batch))
    await asyncio.gather(
        *(
            run(["ip", "-n", ns, "-batch", "-"], stdin="".join(f"{ln}\n" for ln in lines))
            for ns, lines in plan.ns_batches.items()
        )
    )
    await asyncio.gather(
        *(
            exec_in(ns, ["nft", "-f", "-"], stdin=rules, check=True)
            for ns, rules in plan.nft.items()
        )
    )
    await wait_links_up(plan.namespaces)


async def wait_links_up(namespaces: Sequence[str], timeout: float = 5.0) -> None:
    """Wait until every link but lo is operationally up (a new veth takes a moment)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = list(namespaces)
    while pending:
        results = await asyncio.gather(*(_links_down(ns) for ns in pending))
        pending = [ns for ns, down in zip(pending, results, strict=True) if down]
        if not pending:
            return
        if loop.time() > deadline:
            raise CommandError(f"links not up after {timeout} s in {pending}")
        await asyncio.sleep(0.02)


async def _links_down(ns: str) -> list[str]:
    res = await run(["ip", "-n", ns, "-j", "link", "show"])
    return [
        link["ifname"]
        for link in json.loads(res.stdout or "[]")
        if link["ifname"] != "lo" and link.get("operstate") != "UP"
    ]


async def existing_namespaces() -> set[str]:
    res = await run(["ip", "-j", "netns", "list"], check=False)
    return {entry["name"] for entry in json.loads(res.stdout or "[]")} if res.ok else set()


async def teardown(state: RunState, last: Sequence[str] = ()) -> None:
    """Kill processes (recorded, then any left in our namespaces), delete namespaces and links.
    The processes named in `last` are stopped after all others: the API server, so agents
    shut down as on a real cluster (heartbeats and lease releases still reach it)."""
    recs = list(state.procs.values())
    await stop_processes([r for r in recs if r.name not in last])
    await stop_processes([r for r in recs if r.name in last])
    mine = [ns for ns in state.namespaces if ns in await existing_namespaces()]
    strays: list[int] = []
    for ns in mine:
        res = await run(["ip", "netns", "pids", ns], check=False)
        strays += [int(p) for p in res.stdout.split()]
    if strays:
        log.info("killing %d stray processes in %s* namespaces", len(strays), state.prefix)
        await kill_pids(strays)
    if mine:
        await run(
            ["ip", "-force", "-batch", "-"],
            stdin="".join(f"netns del {n}\n" for n in mine),
            check=False,
        )
    for link in state.root_links:
        # normally gone with its peer's namespace; a leftover means the build failed half-way
        await run(["ip", "link", "del", link], check=False)
    left = set(state.namespaces) & await existing_namespaces()
    if left:
        raise CommandError(f"namespaces still present after teardown: {sorted(left)}")


async def cut_links(netns: str) -> None:
    """Silently drop everything on a node's uplinks; routes and tunnel state stay in place."""
    await exec_in(netns, ["nft", "-f", "-"], stdin=_CUT_RULESET, check=True)


async def restore_links(netns: str) -> None:
    await exec_in(netns, ["nft", "delete", "table", "inet", CUT_TABLE], check=False)
