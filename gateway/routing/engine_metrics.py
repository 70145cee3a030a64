"""
Reading each replica's engine load from vLLM's own `/metrics`, in the background.

vLLM serves Prometheus metrics at its server's root (`http://host:port/metrics`, beside `/v1`).
Every `ENGINE_METRICS_INTERVAL_SECONDS` the worker that holds the machine's lease
(`gateway/shared/engine_load.py`) reads every replica's `vllm:num_requests_waiting`,
`vllm:num_requests_running` and `vllm:kv_cache_usage_perc` (summed over their label sets: one per
engine) and writes them to the machine's table, where every worker's balancing reads them
(`Replica.load` in replicas.py). A replica whose metrics cannot be read (down, slow, no such
gauges) keeps its last reading, which goes stale after three intervals: it is then balanced on
the gateway's own in-flight counts alone, never stuck on an old figure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.routing.replicas import Replica
from gateway.shared.engine_load import KV_USAGE, READ_AT, RUNNING, WAITING, take_lease
from gateway.upstream.client import Upstream

__all__ = ["EngineMetricsReader", "metrics_url", "parse_engine_load"]

logger = logging.getLogger("gateway")

_GAUGES = {
    "vllm:num_requests_waiting": WAITING,
    "vllm:num_requests_running": RUNNING,
    "vllm:kv_cache_usage_perc": KV_USAGE,
}
STALE_AFTER_INTERVALS = 3


def metrics_url(base_url: str) -> str:
    """`http://host:port/v1` -> `http://host:port/metrics`: vLLM serves them at its root."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}/metrics"


def parse_engine_load(text: str) -> list[float] | None:
    """[waiting, running, kv usage] from a Prometheus text page; None if it has neither queue gauge."""
    found: list[float | None] = [None, None, None]
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name, _, rest = line.partition("{")
        if not rest:
            name = line.split(" ", 1)[0]
        cell = _GAUGES.get(name)
        if cell is None:
            continue
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        found[cell] = (found[cell] or 0.0) + value
    if found[WAITING] is None and found[RUNNING] is None:
        return None
    return [found[WAITING] or 0.0, found[RUNNING] or 0.0, found[KV_USAGE] or 0.0]


class EngineMetricsReader:
    """This worker's part: take the machine's lease when it is free, and then read for everyone."""

    def __init__(self, replicas: Iterable[Replica], upstream: Upstream, interval: float, table: Any | None) -> None:
        # One reading per URL, however many routes list it.
        self._replicas: dict[str, list[Replica]] = {}
        for replica in replicas:
            self._replicas.setdefault(replica.url, []).append(replica)
        self._upstream = upstream
        self._interval = interval
        self._table = table
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and self._replicas:
            self._task = asyncio.ensure_future(self._run())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        pid = os.getpid()
        while True:
            if take_lease(self._table, pid, STALE_AFTER_INTERVALS * self._interval):
                await self.read_all()
            await asyncio.sleep(self._interval)

    async def read_all(self) -> None:
        await asyncio.gather(*(self._read(url, replicas) for url, replicas in self._replicas.items()))

    async def _read(self, url: str, replicas: list[Replica]) -> None:
        try:
            response = await self._upstream.get(metrics_url(url), self._interval)
        except (httpx.HTTPError, TimeoutError, ValueError):
            return  # the last reading goes stale: in-flight counts alone, then
        if response.status != 200:
            return
        load = parse_engine_load(response.content.decode("utf-8", "replace"))
        if load is None:
            return
        now = time.monotonic()
        for replica in replicas:
            cells = replica.engine
            cells[WAITING], cells[RUNNING], cells[KV_USAGE] = load
            cells[READ_AT] = now
