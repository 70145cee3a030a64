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
from collections.abc import Mapping
from typing import Any

from gateway.shared.hashing import double_hash

__all__ = ["create_table", "replica_views"]

Routes = Mapping[str, tuple[str, ...]]


def _fingerprint(kind: str, routes: Routes) -> float:
    return double_hash(kind + "\n".join(f"{key}={','.join(routes[key])}" for key in sorted(routes)))


def create_table(kind: str, routes: Routes, header: int, cells: int) -> Any:
    """A table of `header` doubles (the first the fingerprint), then `cells` per replica."""
    replicas = sum(len(urls) for urls in routes.values())
    table = multiprocessing.Array(ctypes.c_double, header + cells * replicas)
    table.get_obj()[0] = _fingerprint(kind, routes)
    return table


def replica_views(table: Any, kind: str, routes: Routes, header: int, cells: int) -> dict[str, list[Any]] | None:
    """Each route's replicas' cells, in URL order; None if `table` was laid out for other routes."""
    values = table.get_obj()
    if values[0] != _fingerprint(kind, routes):
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
