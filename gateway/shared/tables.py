"""
Tables of doubles in shared memory, a few per replica, laid out alike in every process of a
machine: made by the main process before the workers start, which inherit them.

The first double is a fingerprint of the routes the table was laid out for: a worker whose settings
differ from the main process's (a `.env` edited before a worker restarted) finds it different and
keeps a view of its own rather than read other replicas' cells. A replica's cells are a
`memoryview` into the table, read and written without its lock (an aligned double is read whole).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import time
from collections.abc import Mapping
from typing import Any

from gateway.shared.hashing import double_hash

__all__ = ["create_table", "fingerprint", "replica_views", "take_lease"]

Routes = Mapping[str, tuple[str, ...]]


def fingerprint(kind: str, routes: Routes) -> float:
    return double_hash(kind + "\n".join(f"{key}={','.join(routes[key])}" for key in sorted(routes)))


def create_table(kind: str, routes: Routes, header: int, cells: int) -> Any:
    """A table of `header` doubles (the first the fingerprint), then `cells` per replica."""
    replicas = sum(len(urls) for urls in routes.values())
    table = multiprocessing.Array(ctypes.c_double, header + cells * replicas)
    table.get_obj()[0] = fingerprint(kind, routes)
    return table


def replica_views(table: Any, kind: str, routes: Routes, header: int, cells: int) -> dict[str, list[Any]] | None:
    """Each route's replicas' cells, in URL order; None if `table` was laid out for other routes."""
    values = table.get_obj()
    if values[0] != fingerprint(kind, routes):
        return None
    doubles = memoryview(values).cast("B").cast("d")
    views: dict[str, list[Any]] = {}
    start = header
    for key in sorted(routes):  # not the environment's order: every process must agree
        views[key] = []
        for _ in routes[key]:
            views[key].append(doubles[start : start + cells])
            start += cells
    return views


def take_lease(table: Any | None, holder: int, until: int, pid: int, seconds: float) -> bool:
    """Whether `pid` holds the lease kept in doubles `holder` and `until` of `table` for the next
    `seconds` (taken when free or run out, renewed by its holder): one worker per machine doing a
    job for all. No table: a single process, which holds it."""
    if table is None:
        return True
    with table.get_lock():
        values = table.get_obj()
        now = time.monotonic()
        if values[holder] in (0.0, float(pid)) or values[until] < now:
            values[holder] = float(pid)
            values[until] = now + seconds
            return True
        return False
