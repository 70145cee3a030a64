"""
Each replica's engine load as vLLM last reported it, shared by the workers of a machine.

The main process makes the table before the workers start (`create_table`), as it does the
ejection table (`ejections.py`, whose conventions this follows: CLOCK_MONOTONIC times, a
fingerprint of the routes in the first double, cells read and written without the lock). Each
replica has four cells (`replica_cells`): `WAITING` and `RUNNING` (vLLM's
`vllm:num_requests_waiting` and `vllm:num_requests_running`), `KV_USAGE`
(`vllm:kv_cache_usage_perc`, 0 to 1) and `READ_AT` (when they were read; 0: never).

One worker reads every replica's `/metrics` for the whole machine: the holder of the table's
lease (`HOLDER`, a pid, until `LEASE_UNTIL`), which it renews at each reading; when it dies, the
lease runs out and another worker takes it (`take_lease`, under the table's lock).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.shared import tables

__all__ = [
    "KV_USAGE",
    "READ_AT",
    "RUNNING",
    "WAITING",
    "create_table",
    "local_cells",
    "replica_cells",
    "take_lease",
]

WAITING, RUNNING, KV_USAGE, READ_AT = 0, 1, 2, 3
_CELLS = 4  # per replica
_HOLDER, _LEASE_UNTIL = 1, 2  # after the fingerprint
_HEADER = 3


def create_table(routes: Mapping[str, tuple[str, ...]]) -> Any:
    """The shared table for `routes`; make it in the main process, before the workers start."""
    return tables.create_table("engine\n", routes, _HEADER, _CELLS)


def replica_cells(table: Any, routes: Mapping[str, tuple[str, ...]]) -> dict[str, list[Any]] | None:
    """Each route's replicas' cells in `table`, in URL order; None if it was laid out for other routes."""
    return tables.replica_views(table, "engine\n", routes, _HEADER, _CELLS)


def local_cells() -> list[float]:
    """A replica's cells when no table is shared: this process's view alone."""
    return [0.0] * _CELLS


def take_lease(table: Any | None, pid: int, seconds: float) -> bool:
    """Whether `pid` reads the engines' metrics for the machine for the next `seconds` (renewed)."""
    return tables.take_lease(table, _HOLDER, _LEASE_UNTIL, pid, seconds)
