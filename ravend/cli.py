"""Command line entry point `ravend` (agent, sim ...): parses argv and hands over (thin)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from ravend import __version__
from ravend.settings import SettingsError, build_settings

log = logging.getLogger("ravend")

USAGE = """usage: ravend <command> [flags]

commands:
  agent            run the node agent (flags: ravend agent --help)
  sim apiserver    run the embedded API server alone (--kubeconfig-out PATH)
  sim up|status|down|demo
                   the simulated multi-region cluster in network namespaces
  version          print the version
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    cmd, rest = args[0], args[1:]
    if cmd == "version":
        print(__version__)
        return 0
    if cmd == "agent":
        return agent_main(rest)
    if cmd == "sim":
        from ravend.sim.cli import sim_main

        return sim_main(rest)
    print(f"ravend: unknown command {cmd!r}\n{USAGE}", file=sys.stderr, end="")
    return 2


def agent_main(argv: Sequence[str]) -> int:
    from ravend.app import run, run_blocking
    from ravend.observe.logs import setup_logging

    try:
        settings = build_settings(argv, os.environ)
    except SettingsError as exc:
        print(f"ravend agent: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log.format, settings.log.level)
    log.info("ravend %s starting on node %s", __version__, settings.node_name)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Signals only set a flag; the shutdown itself runs in app.run (house style).
            loop.add_signal_handler(sig, _on_signal, stop, settings.runtime.shutdown_deadline)
        await run(settings, stop)

    run_blocking(_main(), settings.runtime.event_loop)
    log.info("ravend stopped")
    return 0


def _on_signal(stop: asyncio.Event, deadline: float) -> None:
    if stop.is_set():
        return
    log.info("signal received: stopping (hard deadline %.0fs)", deadline)
    stop.set()
    # A thread, not a loop timer: it fires even when the event loop is wedged.
    timer = threading.Timer(deadline, _hard_exit, args=(deadline,))
    timer.daemon = True
    timer.start()


def _hard_exit(deadline: float) -> None:
    sys.stderr.write(f"ravend: shutdown exceeded its {deadline:.0f}s deadline; exiting now\n")
    sys.stderr.flush()
    os._exit(3)
