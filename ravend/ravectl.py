"""Console entry point `ravectl` (thin): see `ravend.ctl` for the tool itself."""

from __future__ import annotations

import sys

from ravend.ctl.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
