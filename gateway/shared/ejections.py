"""
Which replicas are out of rotation, shared by the workers of a machine.

The main process makes a table in shared memory before the workers start (`create_table`). Each
replica has three cells in it, the same for every worker (`replica_cells`):

- `HELD_UNTIL`: out of every worker's rotation until then (0: in rotation);
- `EJECTIONS`: its consecutive ejections, which make a flapping replica's cool-down grow;
- `RETURNED_AT`: when it last came back into rotation.

Times are CLOCK_MONOTONIC (`time.monotonic()`), one clock for every process of a machine. A
replica's cells are a `memoryview` into the table, or a plain list where no table is shared (a
single process, as in tests); `Route` uses either the same way. Cells are read and written
without the table's lock: an aligned double is read whole, and a lost update between two workers
can only shorten one hold, until the next probe writes it again.

The first double holds a fingerprint of the routes the table was laid out for (`tables.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.shared import tables

__all__ = ["EJECTIONS", "HELD_UNTIL", "RETURNED_AT", "create_table", "local_cells", "replica_cells"]

HELD_UNTIL, EJECTIONS, RETURNED_AT = 0, 1, 2
_CELLS = 3  # per replica
_HEADER = 1  # the layout's fingerprint


def create_table(routes: Mapping[str, tuple[str, ...]]) -> Any:
    """The shared table for `routes`; make it in the main process, before the workers start."""
    return tables.create_table("", routes, _HEADER, _CELLS)


def replica_cells(table: Any, routes: Mapping[str, tuple[str, ...]]) -> dict[str, list[Any]] | None:
    """Each route's replicas' cells in `table`, in URL order; None if it was laid out for other routes."""
    return tables.replica_views(table, "", routes, _HEADER, _CELLS)


def local_cells() -> list[float]:
    """A replica's cells when no table is shared: this process's view alone."""
    return [0.0] * _CELLS
