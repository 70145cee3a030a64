from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest
from sanic.server.socket import bind_socket

from gateway.process.listener import SOCKET_PER_WORKER, bind_port, listen_alone

pytestmark = pytest.mark.skipif(not SOCKET_PER_WORKER, reason="one socket per worker is Linux's")

HOST = "127.0.0.1"


@pytest.fixture
def reserved() -> Iterator[socket.socket]:
    sock = bind_port(HOST, 0, backlog=100)
    yield sock
    sock.close()


def handed_to_a_worker(reserved: socket.socket) -> socket.socket:
    """The worker's copy of the main process's socket, as Sanic passes it (another descriptor)."""
    return socket.socket(fileno=os.dup(reserved.fileno()))


def accepted(sockets: list[socket.socket]) -> list[int]:
    counts = []
    for sock in sockets:
        sock.setblocking(False)
        count = 0
        while True:
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                break
            conn.close()
            count += 1
        counts.append(count)
    return counts


def test_the_port_is_reserved_but_nothing_listens_before_the_workers(reserved: socket.socket) -> None:
    port = reserved.getsockname()[1]
    assert port != 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, port), timeout=1)


def test_each_worker_listens_alone_and_the_kernel_spreads_the_connections(reserved: socket.socket) -> None:
    port = reserved.getsockname()[1]
    workers = [handed_to_a_worker(reserved) for _ in range(2)]
    try:
        for sock in workers:
            fd = sock.fileno()
            assert listen_alone(sock) is True
            assert sock.fileno() == fd  # Sanic's socket object, now on a socket of its own
            sock.listen(100)
        clients = [socket.create_connection((HOST, port), timeout=1) for _ in range(64)]
        counts = accepted(workers)
        for client in clients:
            client.close()
        assert sum(counts) == 64
        assert min(counts) >= 12  # by address hash: 32 ± 4 each; one shared socket gives no such spread
        assert not reserved.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    finally:
        for sock in workers:
            sock.close()
    # Workers that stopped leave nothing listening: new connections are refused at once.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, port), timeout=1)


def test_a_port_that_another_process_listens_on_is_not_shared() -> None:
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as another gateway's worker
    other.bind((HOST, 0))
    other.listen()
    try:
        with pytest.raises(OSError) as raised:
            bind_port(HOST, other.getsockname()[1], backlog=100)
        assert raised.value.errno == errno.EADDRINUSE
    finally:
        other.close()


def test_other_sockets_are_left_as_they_are() -> None:
    assert listen_alone(None) is False
    shared = bind_socket(HOST, 0, backlog=100)  # Sanic's own listening socket
    try:
        address = shared.getsockname()
        assert listen_alone(shared) is False
        assert shared.getsockname() == address
        assert shared.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    finally:
        shared.close()


def test_an_ipv6_reservation_gives_ipv6_worker_sockets() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        reserved = bind_port("::1", 0, backlog=100)
    except OSError:
        pytest.skip("no IPv6 loopback")
    worker = handed_to_a_worker(reserved)
    try:
        assert listen_alone(worker) is True
        worker.listen(10)
        assert worker.family == socket.AF_INET6
        socket.create_connection(("::1", reserved.getsockname()[1]), timeout=1).close()
        assert accepted([worker]) == [1]
    finally:
        worker.close()
        reserved.close()
