"""The prefix policy: the replica of the longest known prefix, unless it is loaded beyond the margin."""

from __future__ import annotations

import orjson

from gateway.routing.prefix_affinity import PrefixAffinity
from gateway.routing.replicas import Replica, Route
from gateway.shared.prefix_index import PrefixIndex, replica_bits

URLS = ("http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1", "http://10.0.0.3:8000/v1")
ROUTES = {"tiny": URLS, "other": ("http://10.0.0.9:8000/v1",)}
SYSTEM = {"role": "system", "content": "Be brief. " * 200}


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, list[int]]] = []

    def publish(self, route_key: str, url: str, keys: list[int]) -> None:
        self.published.append((route_key, url, list(keys)))


def policy(margin: float = 4, index: PrefixIndex | None = None, publisher: Recorder | None = None) -> PrefixAffinity:
    index = index or PrefixIndex(None, ROUTES, 60)
    return PrefixAffinity("tiny", index, replica_bits(ROUTES), margin, publisher)


def conversation(turns: int) -> bytes:
    messages = [SYSTEM]
    for turn in range(turns):
        messages += [
            {"role": "user", "content": f"question {turn} " * 40},
            {"role": "assistant", "content": "ok " * 60},
        ]
    return orjson.dumps({"model": "tiny", "messages": messages[:-1]})


def test_a_conversation_returns_to_the_replica_of_its_last_turn() -> None:
    pool = [Replica(url) for url in URLS]
    prefix = policy()
    first, reason = prefix.choose(pool, pool, prefix.affinity(None, conversation(1)))
    assert reason == "no_match"
    for turns in range(2, 6):
        first.in_flight += 1  # busier than the others, within the margin
        assert prefix.choose(pool, pool, prefix.affinity(None, conversation(turns))) == (first, "prefix_hit")


def test_a_replica_loaded_beyond_the_margin_gives_way_and_the_least_loaded_learns_the_prompt() -> None:
    pool = [Replica(url) for url in URLS]
    prefix = policy(margin=2)
    chain = prefix.affinity(None, conversation(3))
    own, _ = prefix.choose(pool, pool, chain)
    own.in_flight = 3
    others = [replica for replica in pool if replica is not own]
    others[0].in_flight = 1
    assert prefix.choose(pool, pool, chain) == (others[1], "load_override")
    # Both have received it now: the less loaded of the two takes it.
    own.in_flight, others[1].in_flight = 1, 0
    assert prefix.choose(pool, pool, chain) == (others[1], "prefix_hit")
    own.in_flight, others[1].in_flight = 0, 2
    assert prefix.choose(pool, pool, chain) == (own, "prefix_hit")


def test_a_replica_out_of_rotation_or_tried_already_is_passed_over() -> None:
    pool = [Replica(url) for url in URLS]
    prefix = policy()
    chain = prefix.affinity(None, conversation(2))
    own, _ = prefix.choose(pool, pool, chain)
    rest = [replica for replica in pool if replica is not own]
    replica, reason = prefix.choose(pool, rest, chain)
    assert replica in rest and reason == "no_match"


def test_prompts_without_a_whole_block_are_balanced_by_load() -> None:
    pool = [Replica(url) for url in URLS]
    pool[0].in_flight = 2
    prefix = policy()
    short = prefix.affinity(None, orjson.dumps({"messages": [{"role": "user", "content": "hi"}]}))
    replica, reason = prefix.choose(pool, pool, short)
    assert reason == "no_prompt" and replica is not pool[0]


def test_every_instance_agrees_through_what_is_published() -> None:
    pool = [Replica(url) for url in URLS]
    recorder = Recorder()
    here = policy(publisher=recorder)
    chain = here.affinity(None, conversation(2))
    own, _ = here.choose(pool, pool, chain)
    (route_key, url, keys), *_ = recorder.published
    assert (route_key, url, keys) == ("tiny", own.url, chain)
    elsewhere_index = PrefixIndex(None, ROUTES, 60)  # another machine, learning from Redis
    elsewhere_index.learn(keys, replica_bits(ROUTES)[("tiny", url)])
    there = policy(index=elsewhere_index)
    other_pool = [Replica(url) for url in URLS]
    replica, reason = there.choose(other_pool, other_pool, there.affinity(None, conversation(3)))
    assert (replica.url, reason) == (own.url, "prefix_hit")


def test_the_route_lets_the_policy_learn_even_without_a_choice() -> None:
    index = PrefixIndex(None, ROUTES, 60)
    route = Route("tiny", URLS, probe=None, probe_interval=1, cooldown_max=1, policy=policy(index=index))  # type: ignore[arg-type]
    chain = route.policy.affinity(None, conversation(2))
    only = route.replicas[2]
    assert route.choose({route.replicas[0], route.replicas[1]}, chain) is only
    assert route.choose(set(), chain) is only
