"""Benchmark: how a pool member steers cross-pool traffic to raven0, measured at scale (issue 4).

Mechanisms, each on the same "member node" (router namespace) between a sender and a sink:

- `none`: no steering at all (the baseline for per-packet figures).
- `fwmark`: what ravend does today, steering part only: an nft interval set of the N remote
  prefixes, a prerouting rule marking packets to it (cleared in postrouting) and one
  `ip rule fwmark 0x40 lookup 9027`.
- `rules`: one `ip rule to <prefix> lookup 9027` per remote prefix (Raven/Submariner style).
- `routes`: N routes in the main table via the steering link.
- `full-fwmark` / `full-rules`: ravend's whole nft table (`nftgen.ruleset`: the same sets also
  drive MSS clamping and the no-masquerade SNAT, so they exist under either mechanism) with the
  mark, or without it plus the N per-prefix rules: the real-world comparison.

Remote prefixes are /24 pod CIDRs interleaved with the local pool's (every other /24 of the
cluster CIDR, so the interval set cannot merge them). The probed destinations are the LAST
remote prefix (worst case for an ordered rule list) and an intra-pool address that matches
nothing (every packet still walks the whole rule list). Measured per N in {10, 100, 1000, 4000}:
programming (install all N; change one prefix; read back what a resync compares), a
small-packet UDP flood from one Python sender (CPU ns per packet, which includes the router's
forwarding: see `Lab.blast`; delivered packets/s, which also depends on the machine's load),
ping RTT median. Mechanisms are interleaved within each round; medians of ROUNDS. Per-packet
figures carry `none` as their baseline, programming figures `fwmark` (the current design).

Does I/O: creates and deletes network namespaces (unique prefix), runs ip, nft, ping, python.
`python -m bench.l3_steering [--sizes 10 100]` prints JSON lines and a table.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from bench.common import Record, emit, table
from ravend.l3.nftgen import ruleset
from ravend.l3.state import NftRuleset

SIZES = (10, 100, 1000, 4000)
MECHANISMS = ("none", "fwmark", "rules", "routes", "full-fwmark", "full-rules")
ROUNDS = 5
BLAST_S = 0.3
"""Duration of one UDP flood."""
PINGS = 30
TABLE, PRIO, MARK, NFT_TABLE, PATH_MTU = 9027, 100, 0x40, "ravend", 1380
CLUSTER = ipaddress.ip_network("10.64.0.0/10")
"""Cluster pod CIDR: remote /24s are the even ones, local (intra-pool) ones the odd ones
(4,000 remote /24s interleaved with local ones need 8,000 /24s: a /11 at least)."""
SENDER, ROUTER_IN, ROUTER_MAIN, SINK_MAIN = "100.64.0.2", "100.64.0.1", "100.64.1.1", "100.64.1.2"
ROUTER_STEER, SINK_STEER = "100.64.2.1", "100.64.2.2"
BLASTER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((sys.argv[1], 9))
send, data, n = s.send, b"x" * 18, 0
t0 = time.monotonic(); end = t0 + float(sys.argv[2])
while time.monotonic() < end:
    for _ in range(500):
        try: send(data)
        except OSError: pass
    n += 500
print(n, time.monotonic() - t0, time.process_time())
"""


def prefix(i: int) -> str:
    """The i-th /24 of the cluster CIDR (i even: remote pool, odd: the local pool)."""
    return str(ipaddress.ip_network((int(CLUSTER.network_address) + (i << 8), 24)))


def remote_prefixes(n: int) -> list[str]:
    return [prefix(2 * i) for i in range(n)]


def probes(n: int) -> tuple[str, str]:
    """(matched, unmatched): .1 of the last remote prefix and of the first local one."""
    last = ipaddress.ip_network(remote_prefixes(n)[-1])
    return str(last.network_address + 1), str(ipaddress.ip_network(prefix(1)).network_address + 1)


def rule_batch(op: str, prefixes: Sequence[str]) -> str:
    """`ip -batch` text adding/deleting one `to PREFIX lookup 9027` rule per prefix, in order
    (same priority: the kernel keeps insertion order, so the last prefix is scanned last)."""
    return "".join(f"rule {op} to {p} lookup {TABLE} pref {PRIO}\n" for p in prefixes)


def route_batch(op: str, prefixes: Sequence[str]) -> str:
    return "".join(f"route {op} {p} via {SINK_STEER}\n" for p in prefixes)


def mark_ruleset(prefixes: Sequence[str]) -> NftRuleset:
    """The steering half of ravend's table: the remote set, mark in prerouting, clear after."""
    elems = ", ".join(prefixes)
    clear = (~MARK) & 0xFFFFFFFF
    body = (
        "  set remote4 {\n    type ipv4_addr\n    flags interval\n    auto-merge\n"
        f"    elements = {{ {elems} }}\n  }}\n"
        "  chain prerouting {\n    type filter hook prerouting priority mangle; policy accept;\n"
        f"    ip daddr @remote4 meta mark set meta mark | {MARK:#x}\n  }}\n"
        "  chain postrouting {\n    type filter hook postrouting priority mangle; policy accept;\n"
        f"    ip daddr @remote4 meta mark set meta mark & {clear:#x}\n  }}\n"
    )
    return NftRuleset(table=NFT_TABLE, body=body)


def full_ruleset(prefixes: Sequence[str], marked: bool) -> NftRuleset:
    local = [prefix(2 * i + 1) for i in range(min(len(prefixes), 64))]
    return ruleset(NFT_TABLE, prefixes, local, PATH_MTU, MARK if marked else None)


def element_delta(old: str, new: str) -> str:
    """`nft -f` text moving one prefix out of / into the set (a delta, not a table replace)."""
    return (
        f"delete element inet {NFT_TABLE} remote4 {{ {old} }}\n"
        f"add element inet {NFT_TABLE} remote4 {{ {new} }}\n"
    )


def parse_rtts(ping_output: str) -> list[float]:
    """RTTs in ms from `ping` per-reply lines (`... time=0.052 ms`)."""
    return [float(w[5:]) for w in ping_output.split() if w.startswith("time=")]


def sh(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        argv, check=False, input=stdin, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def timed(*argv: str, stdin: str | None = None) -> float:
    t0 = time.perf_counter()
    sh(*argv, stdin=stdin)
    return time.perf_counter() - t0


@dataclass(frozen=True)
class Lab:
    """sender --(a)--> router ("member node") --(b: main path | c: steering path)--> sink."""

    sender: str
    router: str
    sink: str

    def ns(self, name: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", name, *argv]

    def ip(self, name: str, *argv: str) -> str:
        return sh("ip", "-n", name, *argv)

    def counter(self, name: str, link: str, way: str) -> int:
        stats = json.loads(self.ip(name, "-s", "-j", "link", "show", "dev", link))
        return int(stats[0]["stats64"][way]["packets"])

    def steered(self) -> int:
        """Packets the router sent out its steering link (raven0's stand-in)."""
        return self.counter(self.router, "c0", "tx")

    def delivered(self) -> int:
        return self.counter(self.sink, "b1", "rx") + self.counter(self.sink, "c1", "rx")

    def blast(self, dst: str, seconds: float) -> tuple[float, float]:
        """(delivered packets/s, sender CPU ns per packet) of a UDP flood to dst.

        veth hands a packet to the next namespace inside the sender's own softirq, and this
        kernel charges softirq time to the running task (no IRQ_TIME_ACCOUNTING), so the
        sender's CPU time holds the router's forwarding work; unlike the rate, it does not
        depend on how much CPU the other benchmarks on this machine leave us."""
        before = self.delivered()
        out = sh(*self.ns(self.sender, sys.executable, "-c", BLASTER, dst, str(seconds)))
        sent, wall, cpu = int(out.split()[0]), float(out.split()[1]), float(out.split()[2])
        got = self.delivered() - before
        if got < sent * 0.99:
            raise RuntimeError(f"flood to {dst}: {got} of {sent} packets delivered")
        return got / wall, cpu / sent * 1e9

    def rtts(self, dst: str, count: int = PINGS) -> list[float]:
        return parse_rtts(
            sh(*self.ns(self.sender, "ping", "-n", "-c", str(count), "-i", "0.002", dst))
        )

    def is_steered(self, dst: str) -> bool:
        """Whether dst's packets leave through the steering link (3 pings, all answered)."""
        before = self.steered()
        assert len(self.rtts(dst, 3)) == 3, f"{dst} unreachable"
        return self.steered() - before >= 3


def _wire(lab: Lab) -> None:
    for a, la, b, lb in [
        (lab.sender, "a0", lab.router, "a1"),
        (lab.router, "b0", lab.sink, "b1"),
        (lab.router, "c0", lab.sink, "c1"),
    ]:
        sh("ip", "-n", a, "link", "add", la, "type", "veth", "peer", "name", lb, "netns", b)
    for name, link, addr in [
        (lab.sender, "a0", SENDER + "/30"),
        (lab.router, "a1", ROUTER_IN + "/30"),
        (lab.router, "b0", ROUTER_MAIN + "/30"),
        (lab.sink, "b1", SINK_MAIN + "/30"),
        (lab.router, "c0", ROUTER_STEER + "/30"),
        (lab.sink, "c1", SINK_STEER + "/30"),
    ]:
        lab.ip(name, "addr", "add", addr, "dev", link)
        lab.ip(name, "link", "set", link, "up")


def _route(lab: Lab, n: int) -> None:
    lab.ip(lab.sender, "route", "add", "default", "via", ROUTER_IN)
    lab.ip(lab.sink, "route", "add", "default", "via", ROUTER_MAIN)
    # Without steering every pod CIDR goes the main path (the CNI's route); table 9027 is
    # raven0's, and only the mechanism under test sends packets there.
    lab.ip(lab.router, "route", "add", str(CLUSTER), "via", SINK_MAIN)
    lab.ip(lab.router, "route", "add", "default", "via", SINK_STEER, "table", str(TABLE))
    sh(*lab.ns(lab.router, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
    # Steered packets arrive on c1 while the sink's route back is via b1.
    for conf in ("all", "default", "b1", "c1"):
        sh(*lab.ns(lab.sink, "sysctl", "-qw", f"net.ipv4.conf.{conf}.rp_filter=0"))
    for dst in probes(n):
        lab.ip(lab.sink, "addr", "add", dst + "/32", "dev", "lo")
    # The flood ends at the sink's first hook: no socket or ICMP work muddies the rate.
    drop = (
        "table ip sink {\n chain pre {\n"
        "  type filter hook prerouting priority raw; policy accept;\n  udp dport 9 drop\n }\n}\n"
    )
    sh(*lab.ns(lab.sink, "nft", "-f", "-"), stdin=drop)


@contextlib.contextmanager
def lab(n: int) -> Iterator[Lab]:
    """Three fresh namespaces wired and routed for probes(n); always deleted afterwards."""
    run = f"rst{secrets.token_hex(3)}"
    made = Lab(f"{run}-s", f"{run}-r", f"{run}-k")
    created: list[str] = []
    try:
        for name in (made.sender, made.router, made.sink):
            sh("ip", "netns", "add", name)
            created.append(name)
            made.ip(name, "link", "set", "lo", "up")
        _wire(made)
        _route(made, n)
        yield made
    finally:
        # Only synchronous children ran inside (subprocess.run): nothing left to kill.
        for name in created:
            subprocess.run(["ip", "netns", "del", name], check=False)


def install(lab: Lab, mech: str, prefixes: Sequence[str]) -> float:
    """Program mechanism `mech` for `prefixes`; returns the seconds it took."""
    nft = [*lab.ns(lab.router, "nft", "-f", "-")]
    batch = ["ip", "-n", lab.router, "-batch", "-"]
    fwmark_rule = ["ip", "-n", lab.router, "rule", "add", "fwmark", f"{MARK:#x}/{MARK:#x}"]
    fwmark_rule += ["lookup", str(TABLE), "pref", str(PRIO)]
    if mech == "fwmark":
        return timed(*nft, stdin=mark_ruleset(prefixes).script()) + timed(*fwmark_rule)
    if mech == "full-fwmark":
        return timed(*nft, stdin=full_ruleset(prefixes, True).script()) + timed(*fwmark_rule)
    if mech == "rules":
        return timed(*batch, stdin=rule_batch("add", prefixes))
    if mech == "full-rules":
        t = timed(*nft, stdin=full_ruleset(prefixes, False).script())
        return t + timed(*batch, stdin=rule_batch("add", prefixes))
    if mech == "routes":
        return timed(*batch, stdin=route_batch("add", prefixes))
    return 0.0


def change_one(lab: Lab, mech: str, prefixes: list[str], new: str) -> float:
    """Replace prefixes[0] by `new` the way the mechanism would; updates `prefixes` in place."""
    old, nft = prefixes[0], lab.ns(lab.router, "nft", "-f", "-")
    batch = ["ip", "-n", lab.router, "-batch", "-"]
    prefixes[:] = [*prefixes[1:], new]
    if mech == "fwmark":
        return timed(*nft, stdin=element_delta(old, new))
    if mech == "full-fwmark":
        # ravend today: the table is replaced as a whole when its digest changes.
        return timed(*nft, stdin=full_ruleset(prefixes, True).script())
    if mech in ("rules", "full-rules"):
        t = timed(*batch, stdin=rule_batch("del", [old]) + rule_batch("add", [new]))
        # The clamp/SNAT sets still hold the prefixes: they change too.
        extra = full_ruleset(prefixes, False).script() if mech == "full-rules" else None
        return t + (timed(*nft, stdin=extra) if extra else 0.0)
    if mech == "routes":
        return timed(*batch, stdin=route_batch("del", [old]) + route_batch("add", [new]))
    return 0.0


def uninstall(lab: Lab, mech: str, prefixes: Sequence[str]) -> None:
    if mech in ("fwmark", "full-fwmark", "full-rules"):
        sh(*lab.ns(lab.router, "nft", "delete", "table", "inet", NFT_TABLE))
    if mech in ("fwmark", "full-fwmark"):
        lab.ip(lab.router, "rule", "del", "pref", str(PRIO))
    if mech in ("rules", "full-rules"):
        sh("ip", "-n", lab.router, "-batch", "-", stdin=rule_batch("del", prefixes))
    if mech == "routes":
        sh("ip", "-n", lab.router, "-batch", "-", stdin=route_batch("del", prefixes))


def read_back(lab: Lab, mech: str) -> float:
    """Seconds to dump what a reconciler must compare for this mechanism on every resync
    (ravend reads its nft table tersely: the digest is in the table's comment)."""
    t = 0.0
    if mech in ("fwmark", "full-fwmark", "full-rules"):
        t += timed(*lab.ns(lab.router, "nft", "-t", "list", "table", "inet", NFT_TABLE))
    if mech != "routes":
        t += timed("ip", "-n", lab.router, "-j", "rule", "show")
    else:
        t += timed("ip", "-n", lab.router, "-j", "route", "show", "table", "main")
    return t


def trial(lab: Lab, mech: str, n: int) -> dict[str, float]:
    """One interleaved measurement of `mech` at size n; raises if it does not steer."""
    prefixes = remote_prefixes(n)
    matched, unmatched = probes(n)
    seconds = install(lab, mech, prefixes)
    fig: dict[str, float] = {}
    if mech != "none":
        fig = {"install_ms": seconds * 1e3, "read_back_ms": read_back(lab, mech) * 1e3}
    try:
        if lab.is_steered(matched) != (mech != "none") or lab.is_steered(unmatched):
            raise RuntimeError(f"{mech} at N={n} does not steer as intended")
        for where, dst in (("matched", matched), ("unmatched", unmatched)):
            pps, cpu_ns = lab.blast(dst, BLAST_S)
            fig[f"{where}_cpu_ns_per_pkt"] = cpu_ns
            if where == "matched":
                fig[f"{where}_kpps"] = pps / 1e3
            fig[f"{where}_rtt_ms"] = statistics.median(lab.rtts(dst))
        if mech != "none":
            fig["change_one_ms"] = change_one(lab, mech, prefixes, prefix(2 * n)) * 1e3
    finally:
        uninstall(lab, mech, prefixes)
    return fig


def measure(n: int, rounds: int = ROUNDS, mechs: Sequence[str] = MECHANISMS) -> list[Record]:
    """Every mechanism at size n, interleaved within each round; records of the medians."""
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in mechs}
    with lab(n) as made:
        for _ in range(rounds):
            for mech in mechs:
                runs[mech].append(trial(made, mech, n))
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    return records(n, med)


UNITS = (("kpps", "kpps"), ("cpu_ns_per_pkt", "ns"), ("_ms", "ms"))


def records(n: int, med: dict[str, dict[str, float]]) -> list[Record]:
    """Per-packet figures against `none`; programming figures against `fwmark` (today's)."""
    out: list[Record] = []
    for mech, fig in med.items():
        for key, value in fig.items():
            per_packet = key.startswith(("matched", "unmatched"))
            ref_mech = "none" if per_packet else "fwmark"
            unit = next(u for suffix, u in UNITS if key.endswith(suffix))
            rec: Record = {"bench": "l3_steering", "metric": f"N={n} {mech} {key}"}
            rec |= {"value": round(value, 4), "unit": unit}
            ref = med.get(ref_mech, {}).get(key)
            if mech != ref_mech and ref:
                rec["baseline"] = round(ref, 4)
            out.append(rec)
    return out


def main(sizes: Sequence[int] = SIZES, rounds: int = ROUNDS) -> list[Record]:
    out: list[Record] = []
    for n in sizes:
        out += measure(n, rounds)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.l3_steering")
    p.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    p.add_argument("--rounds", type=int, default=ROUNDS)
    args = p.parse_args()
    recs: list[Record] = []
    for size in args.sizes:  # printed per size: a later failure keeps the earlier figures
        batch = measure(size, args.rounds)
        emit(batch)
        recs += batch
    print("\n" + table(recs))
