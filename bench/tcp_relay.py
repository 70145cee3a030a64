"""
The cheapest relay there is in Python: bytes copied between a client and the upstream as they
come, no HTTP. `bench/burst_pairs.py --relay` measures it beside the gateway, as the machine's
floor: what any Python relay on uvloop pays for the extra hop (a socket pair, two more wake-ups
per message), before it does any work of its own.

    .venv/bin/python bench/tcp_relay.py --port 5060 --upstream-port 8000 [--processes 2]

Each process listens on its own socket (SO_REUSEPORT) and is pinned to a CPU, as the gateway's
workers are by default; each client connection gets an upstream connection of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys

import uvloop

HOST = "127.0.0.1"


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.upstream: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        try:
            upstream, _ = await asyncio.get_running_loop().create_connection(
                lambda: _Upstream(self.transport), HOST, self.upstream_port
            )
        except OSError:
            self.transport.close()
            return
        if self.closed:
            upstream.close()
            return
        for data in self.pending:
            upstream.write(data)
        self.upstream, self.pending = upstream, []

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.upstream is not None:
            self.upstream.close()


def serve(port: int, upstream_port: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((HOST, port))
    sock.listen(4096)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        server = await loop.create_server(lambda: _Client(upstream_port), sock=sock)
        async with server:
            await stop

    uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    pinned = args.processes == len(cpus)  # as the gateway's PIN_WORKERS=auto
    for number in range(1, args.processes):
        if os.fork() == 0:
            serve(args.port, args.upstream_port, cpus[number] if pinned else None)
            sys.exit(0)
    serve(args.port, args.upstream_port, cpus[0] if pinned else None)


if __name__ == "__main__":
    main()
