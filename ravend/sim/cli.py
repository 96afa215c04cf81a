"""`ravend sim ...` dispatcher (thin): the embedded API server, the simulated cluster, the demo."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

SIM_USAGE = """usage: ravend sim <command>

  apiserver --kubeconfig-out PATH   run the embedded API server alone
  up [--topology FILE]              build the simulated cluster and start one agent per node
  status [--json]                   show regions, nodes, pods, API server
  down                              remove everything `up` created (also after a crash)
  demo [--once]                     up + prove the mission + print a summary
"""


def sim_main(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(SIM_USAGE, end="")
        return 0 if argv else 2
    cmd, rest = argv[0], list(argv[1:])
    if cmd == "apiserver":
        from ravend.sim.apiserver import main as apiserver_main

        return asyncio.run(apiserver_main(rest))
    if cmd in ("up", "status", "down"):
        from ravend.sim import cluster

        entry = {"up": cluster.up_main, "status": cluster.status_main, "down": cluster.down_main}
        return asyncio.run(entry[cmd](rest))
    if cmd == "demo":
        from ravend.sim.demo import demo_main

        return asyncio.run(demo_main(rest))
    print(f"ravend sim: unknown command {cmd!r}\n{SIM_USAGE}", file=sys.stderr, end="")
    return 2
