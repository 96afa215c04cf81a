"""`python -m ravend.sim.apiserver ...`: the same as `ravend sim apiserver ...`."""

from __future__ import annotations

import asyncio
import sys

from ravend.sim.apiserver import main

if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
