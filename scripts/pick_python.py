"""
Rank the Python interpreters given on the command line by how fast they run Python code here.

    python3 scripts/pick_python.py python3.13 python3.12 /usr/bin/python3.11 ...

Prints the usable ones (3.11 or newer), each interpreter once under the first name it was given,
fastest first, one per line; a summary goes to standard error. Used by scripts/_env.sh to choose
the interpreter behind .venv. The name as given is kept (not the file it resolves to): a venv made
from `/usr/local/bin/python3.12` survives an upgrade that a versioned install folder would not.

Why measure: builds of the same Python version differ by up to a fifth in speed. Distribution
packages (Debian, Ubuntu, Fedora), python.org's installers and the official Docker images are
compiled with profile-guided and link-time optimisation; pyenv and asdf compile without it unless
told to. On the 2-vCPU benchmark machine the gateway spent 18% less CPU per request on Debian's
Python 3.11.2 than on a pyenv-built 3.11.7. Nothing in sysconfig reliably says how a build was
optimised, so each candidate runs the same small workload and the clock decides.
"""

from __future__ import annotations

import subprocess
import sys

ROUNDS = 3  # interleaved, best of each: a busy neighbour slows one round, not the ranking
TIMEOUT_S = 20.0
SAME_SPEED = 0.05  # within 5% of the fastest counts as just as fast: keep the caller's order

# A workload shaped like a request path: calls, attribute and dict access, small strings and
# objects. About 20-40 ms per round on a 2-vCPU VM.
PROBE = r"""
import os, sys, time
if sys.version_info < (3, 11):
    sys.exit(3)
class Item:
    __slots__ = ("key", "value")
    def __init__(self, key, value):
        self.key = key
        self.value = value
def step(index, table):
    item = Item(f"k{index % 512}", index)
    table[item.key] = table.get(item.key, 0) + item.value
    return len(item.key)
def run():
    table = {}
    total = 0
    for index in range(60_000):
        total += step(index, table)
    return total
run()
start = time.perf_counter()
run()
print(os.path.realpath(sys.executable), time.perf_counter() - start, sys.version.split()[0], sep="\n")
"""


def measure(candidate: str) -> tuple[str, float, str] | None:
    """(real executable, seconds, version) of one round on `candidate`; None if it is no usable Python."""
    try:
        done = subprocess.run([candidate, "-c", PROBE], check=False, capture_output=True, text=True, timeout=TIMEOUT_S)
        if done.returncode != 0:
            return None
        executable, seconds, version = done.stdout.splitlines()[-3:]  # after anything a site hook printed
        return executable, float(seconds), version
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def main(candidates: list[str]) -> int:
    best: dict[str, float] = {}  # real executable -> best round
    names: dict[str, str] = {}  # real executable -> the first name it was given, in the caller's order
    versions: dict[str, str] = {}  # real executable -> its Python version
    for _ in range(ROUNDS):
        for candidate in list(names.values()) or candidates:  # after the first round: each once
            result = measure(candidate)
            if result is None:
                continue
            executable, seconds, version = result
            names.setdefault(executable, candidate)
            versions[executable] = version
            best[executable] = min(seconds, best.get(executable, seconds))
    if not names:
        return 1
    order = list(names)
    fastest = min(best.values())

    def rank(executable: str) -> tuple[int, float]:
        if best[executable] <= fastest * (1 + SAME_SPEED):
            return 0, order.index(executable)  # as fast as the fastest: the caller's order
        return 1, best[executable]

    ranked = sorted(order, key=rank)
    for executable in ranked:
        print(names[executable])
    summary = ", ".join(f"{names[exe]} ({versions[exe]}): {best[exe] * 1000:.0f} ms" for exe in ranked)
    print(f"python interpreters, fastest first: {summary}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
