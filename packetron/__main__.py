"""`python -m packetron ...` is the same command line as `packetron ...`."""
from __future__ import annotations

from packetron.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
