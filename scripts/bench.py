"""
The benchmark's documented entry point: runs bench/bench.py with the same arguments.

    .venv/bin/python scripts/bench.py --quick --scenarios latency

The benchmark itself, and its usage, are in bench/bench.py; this file only starts it as a
script, with bench/ first on sys.path so that its modules import each other by name.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench.py"

if __name__ == "__main__":
    sys.argv[0] = str(BENCH)
    sys.path.insert(0, str(BENCH.parent))
    runpy.run_path(str(BENCH), run_name="__main__")
