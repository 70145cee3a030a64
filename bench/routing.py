"""
Routing policies against vLLM's prefix cache: multi-turn conversations over three replicas.

    .venv/bin/python scripts/bench_routing.py [--policies oracle,least_outstanding,session,prefix]

Three fake vLLM servers that behave like vLLM under load (`scripts/fakevllm/prefix_cache.py`: a
bounded LRU prefix cache of 64-byte blocks each, prefill serialised per server and costing
`--prefill-ms-per-token` for each uncached token, 16 tokens decoded 10 ms apart), two gateway
instances of two workers each sharing one Redis, and `--conversations` conversations (64) of
`--turns` turns (8) whose system prompts (about 2 KB) are shared by groups of 8, `--concurrency`
(16) of them at a time (the clients starting `--ramp-ms`, 100 ms, apart), each turn sent to the
other instance than the last and after a pause of `--think-ms` (a user reading and typing; 200 ms). For each policy: the replicas' prefix-cache
hit rate (vLLM's `prefix_cache_hits_total` / `prefix_cache_queries_total`), the time to the
first token (p50, p99) and the requests each replica served. `oracle` pins conversation i to
replica i mod 3 and sends it there directly, without a gateway: the hit rate to reach.

With `--upstreams URL,URL` the replicas are real vLLM servers instead (counters read before and
after each policy; requests per replica from `vllm:request_success_total`), for example the two
CPU replicas of `scripts/start_vllm.sh --cpu chat chat2`, on a smaller workload:

    .venv/bin/python scripts/bench_routing.py --upstreams http://127.0.0.1:8101/v1,http://127.0.0.1:8103/v1 \
        --model tiny-llama --conversations 8 --turns 4 --group 4 --concurrency 4 --max-tokens 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

import servers
from clients import pct

POLICIES = ("oracle", "least_outstanding", "session", "prefix")
MODEL = "bench-model"
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Result:
    policy: str
    ttft_ms: list[float] = field(default_factory=list)
    errors: int = 0
    hits: float = 0.0
    queries: float = 0.0
    per_replica: list[int] = field(default_factory=list)
    seconds: float = 0.0
    reasons: dict[str, float] = field(default_factory=dict)  # gateway_routing_decisions_total


def post_json(port: int, path: str, body: bytes) -> None:
    request = urllib.request.Request(f"http://{servers.HOST}:{port}{path}", data=body, method="POST",
                                     headers={"content-type": "application/json"})  # fmt: skip
    with _opener.open(request, timeout=5) as response:
        response.read()


def start_fakes(count: int) -> list[servers.Server]:
    fakes = []
    for _ in range(count):
        port = servers.free_port()
        argv = [sys.executable, str(servers.ROOT / "scripts" / "fake_vllm.py"), "--port", str(port), "--quiet",
                "--model", MODEL]  # fmt: skip
        fake = servers.Server("fake-vllm", argv, dict(os.environ), str(servers.ROOT))
        fake.port = port
        fake.wait_ready("/health")
        fakes.append(fake)
    return fakes


def configure(urls: list[str], args: argparse.Namespace) -> None:
    """The fakes' knobs, afresh (real vLLM servers are left as they are)."""
    if args.upstreams:
        return
    knobs = (f'{{"chunks":16,"chunk_interval":0.01,"prefix_cache_blocks":{args.cache_blocks},'
             f'"prefill_seconds_per_token":{args.prefill_ms_per_token / 1000},"prefill_base_seconds":0.002}}')  # fmt: skip
    for url in urls:
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        post_json(port, "/_fake/reset", b"{}")
        post_json(port, "/_fake/config", knobs.encode())


def scrape(url: str) -> str:
    with _opener.open(url, timeout=5) as response:
        return response.read().decode()  # type: ignore[no-any-return]


def counters(url: str) -> tuple[float, float, float]:
    """A replica's prefix-cache hits and queries (tokens) and the requests it finished, from its
    /metrics (vLLM's names; each summed over its label sets)."""
    text = scrape(url.removesuffix("/v1") + "/metrics")

    def total(name: str) -> float:
        return sum(float(value) for value in re.findall(rf"^vllm:{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))

    return total("prefix_cache_hits_total"), total("prefix_cache_queries_total"), total("request_success_total")


def decisions(gateway: servers.Server) -> dict[str, float]:
    text = scrape(f"http://{servers.HOST}:{gateway.port}/metrics")
    found = re.findall(r'^gateway_routing_decisions_total\{[^}]*reason="([^"]+)"[^}]*\} (\S+)$', text, re.MULTILINE)
    return {reason: float(value) for reason, value in found}


def chat_requests(url: str) -> float:
    """What the fake counted (it keeps no vllm:request_success_total)."""
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    return float(servers.get_json(port, "/_fake/stats")["requests"].get("/v1/chat/completions", 0))


def redis_url() -> tuple[str, servers.Server | None]:
    """Redis at 127.0.0.1:6379 if it answers, else a private redis-server (up within 10 s)."""
    import redis

    def answers(url: str) -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    if answers("redis://127.0.0.1:6379/0"):
        return "redis://127.0.0.1:6379/0", None
    port = servers.free_port()
    server = servers.Server("redis", ["redis-server", "--port", str(port), "--bind", servers.HOST, "--save", ""],
                            dict(os.environ), tempfile.gettempdir())  # fmt: skip
    url = f"redis://{servers.HOST}:{port}/0"
    deadline = time.monotonic() + 10
    while not answers(url):
        if time.monotonic() > deadline or server.popen.poll() is not None:
            raise RuntimeError(f"redis-server did not start (log: {server.log.name})")
        time.sleep(0.05)
    return url, server


def start_gateways(policy: str, urls: list[str], redis: str, args: argparse.Namespace) -> list[servers.Server]:
    gateways = []
    prefix = f"bench-routing-{uuid.uuid4().hex[:8]}:"
    for _ in range(2):
        port = servers.free_port()
        env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if key in os.environ}
        env.update(PYTHONPATH=str(servers.ROOT), API_HOST=servers.HOST, API_PORT=str(port), WORKERS="2",
                   MODEL_ROUTE_bench=",".join(urls),
                   ROUTING_POLICY=policy, USE_REDIS="true", REDIS_URL=redis, REDIS_PREFIX=prefix,
                   RATE_LIMIT_PER_MIN="0", LOG_LEVEL="WARNING")  # fmt: skip
        env.update(item.split("=", 1) for item in args.gateway_env)
        gateway = servers.Server("gateway", [sys.executable, "-m", "gateway"], env, tempfile.mkdtemp())
        gateway.port = port
        gateway.wait_ready("/health")
        gateways.append(gateway)
    time.sleep(1.5)  # every worker up, and the engines' metrics read once
    return gateways


def system_prompt(group: int) -> str:
    rng = random.Random(f"group-{group}")
    words = [rng.choice(("policy", "answer", "briefly", "customer", "account", "refund", "order", "ship", "always",
                         "never", "polite", "escalate", "summary", "ticket", "product", "warranty")) for _ in range(280)]  # fmt: skip
    return f"You are support assistant number {group}. " + " ".join(words)


def user_message(conversation: int, turn: int) -> str:
    rng = random.Random(f"{conversation}-{turn}")
    return f"Question {turn} from customer {conversation}: " + " ".join(
        rng.choice(("where", "is", "my", "parcel", "why", "late", "can", "you", "help", "refund", "now", "please"))
        for _ in range(50)
    )


async def conversation(client: httpx.AsyncClient, number: int, urls: list[str], result: Result,
                       args: argparse.Namespace) -> None:  # fmt: skip
    messages = [{"role": "system", "content": system_prompt(number // args.group)}]
    for turn in range(args.turns):
        messages.append({"role": "user", "content": user_message(number, turn)})
        url = urls[(number + turn) % len(urls)]
        body = {"model": args.model, "messages": messages, "stream": True, "max_tokens": args.max_tokens}
        headers = {"x-session-id": f"conversation-{number}"}
        started = time.perf_counter()
        reply, first = [], None
        try:
            async with client.stream("POST", f"{url}/chat/completions", json=body, headers=headers) as response:
                if response.status_code != 200:
                    result.errors += 1
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    piece = (choices[0].get("delta") or {}).get("content")
                    if piece:
                        first = first or time.perf_counter()
                        reply.append(piece)
        except httpx.HTTPError:
            result.errors += 1
            return
        if first is not None:
            result.ttft_ms.append((first - started) * 1000)
        messages.append({"role": "assistant", "content": "".join(reply)})
        await asyncio.sleep(args.think_ms / 1000)


async def workload(urls_for: Any, result: Result, args: argparse.Namespace) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(args.conversations):
        queue.put_nowait(number)
    limits = httpx.Limits(max_connections=args.concurrency * 2, max_keepalive_connections=args.concurrency * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False) as client:

        async def worker(place: int) -> None:
            await asyncio.sleep(place * args.ramp_ms / 1000)  # arrivals spread, not one burst of first turns
            while not queue.empty():
                number = queue.get_nowait()
                await conversation(client, number, urls_for(number), result, args)

        await asyncio.gather(*(worker(place) for place in range(args.concurrency)))


def run(policy: str, urls: list[str], redis: str, args: argparse.Namespace) -> Result:
    configure(urls, args)
    result = Result(policy)
    before = [counters(url) for url in urls]
    gateways: list[servers.Server] = []
    try:
        if policy == "oracle":

            def urls_for(number: int) -> list[str]:
                return [urls[number % len(urls)]]
        else:
            gateways = start_gateways(policy, urls, redis, args)
            through = [f"http://{servers.HOST}:{gateway.port}/v1" for gateway in gateways]

            def urls_for(number: int) -> list[str]:
                return through

        started = time.monotonic()
        asyncio.run(workload(urls_for, result, args))
        result.seconds = time.monotonic() - started
        for gateway in gateways:
            for reason, value in decisions(gateway).items():
                result.reasons[reason] = result.reasons.get(reason, 0.0) + value
    finally:
        for gateway in gateways:
            gateway.stop()
    for url, (hits, queries, finished) in zip(urls, before, strict=True):
        now_hits, now_queries, now_finished = counters(url)
        result.hits += now_hits - hits
        result.queries += now_queries - queries
        result.per_replica.append(int(now_finished - finished if args.upstreams else chat_requests(url)))
    return result


def report(results: list[Result]) -> str:
    oracle = next((r for r in results if r.policy == "oracle"), None)
    lines = ["| policy | prefix-cache hits / queries (tokens) | hit rate | of the oracle's | TTFT p50 | TTFT p99 | requests per replica | busiest / least busy | errors |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
    for r in results:
        rate = r.hits / r.queries if r.queries else 0.0
        of_oracle = f"{rate / (oracle.hits / oracle.queries):.0%}" if oracle and oracle.queries else "—"
        spread = max(r.per_replica) / max(min(r.per_replica), 1)
        lines.append(f"| {r.policy} | {r.hits:,.0f} / {r.queries:,.0f} | {rate:.1%} | {of_oracle} | {pct(r.ttft_ms, 50):.0f} ms | {pct(r.ttft_ms, 99):.0f} ms | "
                     f"{' / '.join(map(str, r.per_replica))} | {spread:.2f} | {r.errors} |")  # fmt: skip
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default=",".join(POLICIES), help=f"among {','.join(POLICIES)}")
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--group", type=int, default=8, help="conversations per shared system prompt")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--think-ms", type=float, default=200.0)
    parser.add_argument("--ramp-ms", type=float, default=100.0, help="between the starts of two clients")
    parser.add_argument("--prefill-ms-per-token", type=float, default=0.1)
    parser.add_argument("--cache-blocks", type=int, default=4096, help="each replica's prefix cache, in 64-byte blocks")
    parser.add_argument(
        "--upstreams",
        metavar="URL,URL",
        type=lambda v: [u.strip() for u in v.split(",") if u.strip()],
        default=[],
        help="real vLLM replicas (base URLs ending in /v1) instead of three fakes",
    )
    parser.add_argument("--model", default=MODEL, help="the model to ask for (the fakes serve bench-model)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--gateway-env", metavar="KEY=VAL", action="append", default=[], help="repeatable")
    args = parser.parse_args()
    args.policies = [name.strip() for name in args.policies.split(",") if name.strip()]
    if set(args.policies) - set(POLICIES):
        parser.error(f"unknown policies: {sorted(set(args.policies) - set(POLICIES))}")
    return args


def main() -> None:
    args = parse_args()
    redis, redis_server = redis_url()
    fakes = [] if args.upstreams else start_fakes(3)
    urls = args.upstreams or [f"http://{servers.HOST}:{fake.port}/v1" for fake in fakes]
    results = []
    try:
        for policy in args.policies:
            results.append(run(policy, urls, redis, args))
            r = results[-1]
            print(f"{policy}: {r.seconds:.1f} s, {len(r.ttft_ms)} turns, hit rate "
                  f"{r.hits / max(r.queries, 1):.1%}, per replica {r.per_replica}, choices {r.reasons}", flush=True)  # fmt: skip
    finally:
        for server in [*fakes, *([redis_server] if redis_server else [])]:
            server.stop()
    upstream = (f"the vLLM servers {', '.join(urls)}" if args.upstreams else
                f"3 fakes, prefill {args.prefill_ms_per_token:g} ms per uncached token, cache {args.cache_blocks} blocks each")  # fmt: skip
    print(f"\n{args.conversations} conversations x {args.turns} turns, system prompts shared by {args.group}, "
          f"concurrency {args.concurrency} (starts {args.ramp_ms:g} ms apart), think {args.think_ms:g} ms, "
          f"{args.max_tokens} tokens per answer; {upstream}; 2 gateway instances x 2 workers\n")  # fmt: skip
    print(report(results))


if __name__ == "__main__":
    main()
