"""The machine's prefix index: the longest known prefix, shared by processes, bounded, ageing out."""

from __future__ import annotations

import time

from gateway.shared import prefix_index
from gateway.shared.prefix_index import BUCKETS, PrefixIndex

ROUTES = {"b": ("http://h:2/v1",), "a": ("http://h:1/v1", "http://h:3/v1")}


def chain(n: int, salt: int = 0) -> list[int]:
    """Keys as prompt_chain makes them: a CRC above the block's number."""
    return [((salt * 7919 + i * 104_729 + 1) % 2**32) << 20 | i for i in range(n)]


def test_each_replica_has_a_bit_by_its_place_in_its_route() -> None:
    bits = prefix_index.replica_bits(ROUTES)
    assert bits == {("a", "http://h:1/v1"): 1, ("a", "http://h:3/v1"): 2, ("b", "http://h:2/v1"): 1}
    many = {"big": tuple(f"http://h:{port}/v1" for port in range(20))}
    assert prefix_index.replica_bits(many)[("big", "http://h:17/v1")] == 2  # beyond 16: bits shared


def test_the_longest_known_prefix_and_its_replica() -> None:
    index = PrefixIndex(None, ROUTES, 60)
    keys = chain(40)
    assert index.longest(keys) == (0, 0)
    index.learn(keys[:25], 2)
    assert index.longest(keys) == (25, 2)
    assert index.longest(keys[:10]) == (10, 2)
    index.learn(keys[:5], 4)  # another replica received a shorter prefix: both hold it
    assert index.longest(keys[:5]) == (5, 6) and index.longest(keys) == (25, 2)
    for n in range(1, 41):  # whatever the length of the known part, the search finds it
        fresh = PrefixIndex(None, ROUTES, 60)
        fresh.learn(keys[:n], 1)
        assert fresh.longest(keys) == (n, 1)
    assert index.longest([]) == (0, 0)


def test_entries_age_out() -> None:
    index = PrefixIndex(None, ROUTES, 0.05)
    keys = chain(3)
    index.learn(keys, 1)
    assert index.longest(keys) == (3, 1)
    time.sleep(0.08)
    assert index.longest(keys) == (0, 0)
    index.learn(keys, 2)  # received again: a new set, without the replica of the old entry
    assert index.longest(keys) == (3, 2)


def test_the_index_is_bounded_the_older_entry_giving_way() -> None:
    index = PrefixIndex(None, ROUTES, 60)
    # Three keys in one bucket (same CRC bits below the bucket mask): the oldest goes.
    crc = 12345
    keys = [(crc + n * BUCKETS) << 20 for n in range(3)]
    index.learn([keys[0]], 1)
    time.sleep(0.02)
    index.learn([keys[1]], 2)
    time.sleep(0.02)
    index.learn([keys[2]], 4)
    assert [index.longest([key])[1] for key in keys] == [0, 2, 4]


def test_workers_share_the_machine_table_and_a_table_for_other_routes_is_not_used() -> None:
    table = prefix_index.create_table(ROUTES)
    one, two = PrefixIndex(table, ROUTES, 60), PrefixIndex(table, ROUTES, 60)
    assert one.shared is table and one.machine == two.machine
    one.learn(chain(4), 2)
    assert two.longest(chain(4)) == (4, 2)
    other = PrefixIndex(table, {"a": ("http://h:1/v1",)}, 60)
    assert other.shared is None and other.longest(chain(4)) == (0, 0) and other.machine != one.machine


def test_one_worker_per_machine_holds_the_reading_lease() -> None:
    table = prefix_index.create_table(ROUTES)
    assert prefix_index.take_lease(table, 100, 0.5) and not prefix_index.take_lease(table, 200, 0.5)
