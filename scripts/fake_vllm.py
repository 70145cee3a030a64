"""
A small, fast fake of vLLM's OpenAI-compatible server, for tests, benchmarks and development without a GPU.

    python scripts/fake_vllm.py --port 8001 [--host 127.0.0.1] [--model tiny-llama] [--model another]
        [--embedding-dim 384] [--chunks 8] [--chunk-interval 0.0] [--headers-delay 0.0] [--latency 0.0]
        [--prefix-cache-blocks 4096] [--prefill-seconds-per-token 0.0] [--prefill-base-seconds 0.0] [--quiet]

When ready it prints `fake-vllm listening on http://HOST:PORT/v1 models=[...]` on stdout (`--port 0` picks a
free port). SIGTERM and SIGINT exit with status 0. Without `--quiet`, each response is logged on stderr.

Endpoints: GET /v1/models, /health, /version, /metrics (vLLM's load gauges and prefix cache counters);
POST /v1/chat/completions, /v1/completions, /v1/embeddings.
Bodies, SSE framing, headers and errors copy vLLM 0.32.0 as captured in real-vllm-cpu.md. The text is
"tok0 tok1 ...", one token per SSE content event: `chunks` tokens ending with "stop", or `max_tokens` tokens
ending with "length" when max_tokens <= chunks. Token counts are word counts. Embeddings are unit vectors
derived from the text.

Prefix caching (scripts/fakevllm/prefix_cache.py): a chat's prompt is a chat template of its messages
(`<|role|>\\ncontent</s>\\n` each, then `<|assistant|>\\n`), a completion's its prompt; 4 bytes make a token,
16 tokens a block. The leading blocks found in an LRU of `prefix_cache_blocks` blocks are the cached part
(vllm:prefix_cache_queries_total and _hits_total count the tokens); after prefill the blocks of the prompt
and of the reply are cached, so the next turn of a conversation hits both. With `prefill_base_seconds` or
`prefill_seconds_per_token`, chats and completions take turns to prefill (those waiting are in
vllm:num_requests_waiting), each for base + uncached tokens * per-token seconds, before their first token
(streams) or their body.

Test knobs, global until reset; a request body's `"fake": {...}` applies them to that request alone:
    POST /_fake/config {...}  merge into the running config (GET shows it)
    POST /_fake/reset         restore the command-line config, zero the stats and empty the prefix cache
    GET  /_fake/stats         requests (path -> count), open_connections, connections (those that carried API requests), aborted, last_abort_at, dropped,
                              request_ids (last 200 X-Request-Id), last_headers (last POST), completed,
                              prefix_cache_queries, prefix_cache_hits (tokens)
The knobs are the fields of `Knobs` (scripts/fakevllm/common.py). Requests to /_fake/* are left out of
the stats, and those to /metrics are counted by path only. The parts are in scripts/fakevllm/:
common.py (knobs, stats, errors), wire.py (HTTP/1.1), app.py (the endpoints), bodies.py (reading
bodies, building answers), prefix_cache.py (the chat template, the prefix cache and prefill).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from fakevllm.app import FakeVLLM
from fakevllm.common import HTTPError, Knobs, dumps, loads
from fakevllm.wire import Connection


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A fake vLLM OpenAI-compatible server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--model", action="append", dest="models", help="a served model id; repeatable")
    parser.add_argument("--embedding-dim", type=int, default=384)
    parser.add_argument("--chunks", type=int, default=8, help="content events (tokens) per completion")
    parser.add_argument("--chunk-interval", type=float, default=0.0, help="seconds between SSE content events")
    parser.add_argument("--headers-delay", type=float, default=0.0, help="seconds before the headers of a POST")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before a non-streaming body")
    parser.add_argument("--prefix-cache-blocks", type=int, help="blocks of 16 tokens in the prefix cache; 0: none")
    parser.add_argument("--prefill-seconds-per-token", type=float, help="prefill seconds per uncached prompt token")
    parser.add_argument("--prefill-base-seconds", type=float, help="prefill seconds per request on top")
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    options = {k: v for k, v in vars(args).items() if k in Knobs.__dataclass_fields__ and v is not None}
    try:
        knobs = Knobs().merged(options)
    except HTTPError as exc:
        raise SystemExit(f"fake-vllm: {loads(exc.body)['error']['message']}") from None
    app = FakeVLLM(knobs, quiet=args.quiet)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(app), args.host, args.port, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    port = server.sockets[0].getsockname()[1]
    models = dumps(list(knobs.models)).decode()
    print(f"fake-vllm listening on http://{args.host}:{port}/v1 models={models}", flush=True)
    await stop.wait()
    server.close()
    for conn in list(app.connections):
        conn.transport.abort()


def main() -> None:
    args = parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
