"""`python -m ravend` runs the `ravend` command."""

import sys

from ravend.cli import main

sys.exit(main())
