"""Shared-memory tables: one layout for every process, refused when laid out for other routes."""

from __future__ import annotations

from gateway.shared import tables

ROUTES = {"z": ("http://h:9/v1",), "a": ("http://h:1/v1", "http://h:2/v1")}


def test_the_layout_follows_the_sorted_route_keys_and_each_kind_has_its_own_fingerprint() -> None:
    table = tables.create_table("kind\n", ROUTES, header=2, cells=3)
    assert len(table.get_obj()) == 2 + 3 * 3
    views = tables.replica_views(table, "kind\n", ROUTES, header=2, cells=3)
    assert views is not None
    views["a"][0][0], views["z"][0][2] = 1.0, 2.0
    assert list(table.get_obj())[2] == 1.0 and list(table.get_obj())[-1] == 2.0
    assert tables.replica_views(table, "other\n", ROUTES, header=2, cells=3) is None
    assert tables.replica_views(table, "kind\n", {"a": ROUTES["a"]}, header=2, cells=3) is None
