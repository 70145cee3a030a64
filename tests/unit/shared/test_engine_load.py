"""The machine's table of engine loads: a layout every worker agrees on, and one reader at a time."""

from __future__ import annotations

import time

from gateway.shared import engine_load

ROUTES = {"b": ("http://h:2/v1",), "a": ("http://h:1/v1", "http://h:3/v1")}


def test_each_replica_has_its_own_cells_in_every_process_view() -> None:
    table = engine_load.create_table(ROUTES)
    first, second = engine_load.replica_cells(table, ROUTES), engine_load.replica_cells(table, ROUTES)
    assert first is not None and second is not None
    assert [len(first[key]) for key in ("a", "b")] == [2, 1]
    first["a"][1][engine_load.WAITING] = 7.0
    assert second["a"][1][engine_load.WAITING] == 7.0 and second["a"][0][engine_load.WAITING] == 0.0
    assert engine_load.replica_cells(table, {"a": ("http://h:1/v1",)}) is None  # laid out for other routes


def test_one_worker_holds_the_lease_until_it_runs_out() -> None:
    table = engine_load.create_table(ROUTES)
    assert engine_load.take_lease(table, 100, 0.2)
    assert engine_load.take_lease(table, 100, 0.2)  # renewed by its holder
    assert not engine_load.take_lease(table, 200, 0.2)  # held by another
    time.sleep(0.25)  # the holder died: its lease runs out
    assert engine_load.take_lease(table, 200, 0.2)
    assert not engine_load.take_lease(table, 100, 0.2)
    assert engine_load.take_lease(None, 1, 0.2)  # a single process reads for itself
