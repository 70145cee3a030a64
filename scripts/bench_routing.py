"""
The routing benchmark's entry point: runs bench/routing.py with the same arguments.

    .venv/bin/python scripts/bench_routing.py --policies least_outstanding,prefix

Its usage is in bench/routing.py; this file starts it with bench/ first on sys.path, as
scripts/bench.py does for bench/bench.py.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROUTING = Path(__file__).resolve().parent.parent / "bench" / "routing.py"

if __name__ == "__main__":
    sys.argv[0] = str(ROUTING)
    sys.path.insert(0, str(ROUTING.parent))
    runpy.run_path(str(ROUTING), run_name="__main__")
