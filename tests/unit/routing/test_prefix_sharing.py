"""The prefix index shared through a Redis stream: what one machine places, the others learn."""

from __future__ import annotations

import uuid

from gateway.routing.prefix_sharing import PrefixSharing
from gateway.shared.prefix_index import PrefixIndex, replica_bits
from gateway.shared.redis_store import RedisStore, connect_redis

REDIS_URL = "redis://127.0.0.1:6379/0"
ROUTES = {"tiny": ("http://h:1/v1", "http://h:2/v1")}
BITS = replica_bits(ROUTES)
KEYS = [(1000 + i) << 20 | i for i in range(6)]


def machine(prefix: str, url: str = REDIS_URL) -> tuple[PrefixIndex, PrefixSharing, RedisStore]:
    store = RedisStore(connect_redis(url), prefix)
    index = PrefixIndex(None, ROUTES, 60)
    return index, PrefixSharing(store, index, BITS, None), store


async def test_another_machine_learns_the_placements_and_its_own_are_not_read_back() -> None:
    prefix = f"test-prefix-{uuid.uuid4().hex}:"
    here_index, here, here_store = machine(prefix)
    there_index, there, there_store = machine(prefix)
    try:
        await here.read()
        await there.read()  # from now on
        here.publish("tiny", "http://h:2/v1", KEYS)
        here.publish("elsewhere", "http://h:9/v1", KEYS)  # a route the other does not have: skipped
        await here.flush()
        await there.read()
        assert there_index.longest(KEYS) == (6, BITS[("tiny", "http://h:2/v1")])
        there.publish("tiny", "http://h:1/v1", KEYS[:2])
        await there.flush()
        await there.read()  # its own entry: its index has it already, nothing read back
        await here.read()
        # Here learned what the other placed, and not its own placement of all six back.
        assert here_index.longest(KEYS) == (2, BITS[("tiny", "http://h:1/v1")])
    finally:
        await here_store.client.delete(f"{prefix}prefix:{{index}}")
        await here_store.aclose()
        await there_store.aclose()


async def test_with_redis_down_placements_stay_local_and_nothing_fails() -> None:
    index, sharing, store = machine("test-prefix-down:", "redis://127.0.0.1:1/0")
    try:
        index.learn(KEYS, 1)
        sharing.publish("tiny", "http://h:1/v1", KEYS)
        await sharing.flush()
        await sharing.read()
        assert store.is_down and index.longest(KEYS) == (6, 1)
    finally:
        await store.aclose()
