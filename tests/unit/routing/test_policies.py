"""How a route picks a replica: least outstanding, or a session's own replica under bounded load."""

from __future__ import annotations

from gateway.routing.policies import LeastOutstanding, SessionAffinity, rendezvous_score
from gateway.routing.replicas import Replica
from tests.procs import run_elsewhere

URLS = [f"http://10.0.0.{i}:8000/v1" for i in range(1, 5)]
SESSIONS = [f"conversation-{i}" for i in range(400)]


def replicas() -> list[Replica]:
    return [Replica(url) for url in URLS]


def placements(policy: SessionAffinity, pool: list[Replica], candidates: list[Replica]) -> dict[str, str]:
    return {session: policy.choose(pool, candidates, session)[0].url for session in SESSIONS}


def test_least_outstanding_takes_the_fewest_in_flight_and_spreads_ties() -> None:
    pool = replicas()
    pool[0].in_flight, pool[1].in_flight = 3, 1
    policy = LeastOutstanding()
    assert {policy.choose(pool, pool, None)[0].url for _ in range(4)} == {URLS[2], URLS[3]}
    pool[2].in_flight = pool[3].in_flight = 5
    assert policy.choose(pool, pool, None) == (pool[1], "least_loaded")


def test_a_session_goes_to_one_replica_and_sessions_spread_over_all() -> None:
    pool = replicas()
    policy = SessionAffinity()
    first = placements(policy, pool, pool)
    assert placements(SessionAffinity(), pool, pool) == first  # another worker, another instance: the same
    counts = {url: list(first.values()).count(url) for url in URLS}
    assert all(60 <= count <= 140 for count in counts.values()), counts


def test_the_choice_is_the_same_in_another_process() -> None:
    code = (
        "import sys; from gateway.routing.policies import rendezvous_score as s;"
        "print([s(k, u) for k in sys.argv[1:3] for u in sys.argv[3:]])"
    )
    assert run_elsewhere(code, "a", "b", *URLS[:2]) == str(
        [rendezvous_score(k, u) for k in ("a", "b") for u in URLS[:2]]
    )


def test_an_ejected_replica_moves_only_its_own_sessions() -> None:
    pool = replicas()
    before = placements(SessionAffinity(), pool, pool)
    after = placements(SessionAffinity(), pool, [r for r in pool if r.url != URLS[1]])
    moved = {session for session in SESSIONS if before[session] != after[session]}
    assert moved == {session for session in SESSIONS if before[session] == URLS[1]}
    assert moved  # some were there


def test_an_overloaded_replica_sheds_new_sessions_and_keeps_old_ones() -> None:
    pool = replicas()
    policy = SessionAffinity()
    by_replica: dict[str, list[str]] = {}
    for session in SESSIONS:
        by_replica.setdefault(policy.choose(pool, pool, session)[0].url, []).append(session)
    hot = pool[0]
    old, *_ = by_replica[hot.url]
    hot.in_flight = 3  # the others idle: the bound is ceil(1.25 * 4 / 4) = 2, twice that 4
    new = next(
        s for s in (f"new-{i}" for i in range(1000)) if max(URLS, key=lambda url: rendezvous_score(s, url)) == hot.url
    )
    replica, reason = policy.choose(pool, pool, new)
    assert replica is not hot and reason == "load_override"  # a session new to it goes elsewhere
    assert policy.choose(pool, pool, old) == (hot, "affinity")  # one it has stays, below twice the bound
    hot.in_flight = 8  # bound ceil(1.25 * 9 / 4) = 3: beyond twice that, even old sessions go
    assert policy.choose(pool, pool, old)[0] is not hot


def test_a_request_without_a_session_is_balanced_by_load() -> None:
    pool = replicas()
    pool[0].in_flight = 2
    replica, reason = SessionAffinity().choose(pool, pool, None)
    assert reason == "no_session" and replica is not pool[0]
