"""The string hash that every process of a machine agrees on (the shared-memory tables' keys)."""

from __future__ import annotations

from gateway.shared.hashing import double_hash
from tests.procs import run_elsewhere


def test_the_hash_is_the_same_in_another_process_whatever_its_hash_seed() -> None:
    keys = ["127.0.0.1", "r|http://127.0.0.1:8001/v1", "é"]
    code = "import sys; from gateway.shared.hashing import double_hash; print([double_hash(k) for k in sys.argv[1:]])"
    assert run_elsewhere(code, *keys) == str([double_hash(key) for key in keys])


def test_a_double_holds_it_exactly_and_zero_stays_free() -> None:
    values = [double_hash(f"key-{i}") for i in range(2000)]
    assert all(value == int(value) and 0 < value < 2**52 for value in values)
    assert len(set(values)) == len(values)  # no collisions among these
