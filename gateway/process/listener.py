"""
The listening port, and how its new connections are spread over the workers.

Sanic binds one socket in the main process and every worker accepts from it. Whichever worker
wakes first then accepts every connection pending at that moment, so a burst lands mostly on one
worker: 50 streams opened at once went 41 to one worker and 9 to the other (all 50, at times),
and the busy worker's clients waited for each other (+3 ms to the first chunk at the median).

On Linux, each worker listens on a socket of its own instead, all bound to the port with
SO_REUSEPORT, and the kernel spreads new connections over them by their addresses (the same
bursts came 25 ± 4 to each worker, and the first chunk +1.1 ms). The main process binds the
port's first socket, which reserves the port and says at once when it cannot be had, but never
listens on it: a listening socket there would get a share of the connections and nobody to
accept them. Each worker swaps the socket Sanic hands it for one of its own before Sanic starts
to listen (`listen_alone`), and closes it when it stops serving, as Sanic does with any.
Elsewhere, and whenever the swap cannot be made, the one shared socket stays, as Sanic has it.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from ipaddress import ip_address

from sanic.server.socket import bind_socket

from gateway.patches.sanic_manager import close_first_at_shutdown

__all__ = ["SOCKET_PER_WORKER", "bind_port", "listen_alone", "stop_listening_at_shutdown"]

logger = logging.getLogger("gateway")

# macOS and the BSDs accept SO_REUSEPORT, but send every connection to one of the sockets.
SOCKET_PER_WORKER = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def bind_port(host: str, port: int, backlog: int) -> socket.socket:
    """The main process's socket on `host:port`: Sanic's shared listening socket, or with
    `SOCKET_PER_WORKER` the port's reservation (bound, never listening). Raises `OSError` if
    the address cannot be had."""
    if not SOCKET_PER_WORKER:
        return bind_socket(host, port, backlog=backlog)
    # A listener without SO_REUSEPORT cannot share the port, so this bind fails if anything
    # listens there already, including another gateway: it would otherwise share the port
    # (SO_REUSEPORT admits any socket of the same user) and take half of the connections.
    with _socket_for(host) as probe:
        probe.bind((host, port))
        address = probe.getsockname()
    reserved = _socket_for(host)
    try:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind(address)  # the probe's port: the one asked for, or the one given for 0
    except OSError:
        reserved.close()
        raise
    reserved.set_inheritable(True)
    return reserved


def _socket_for(host: str) -> socket.socket:
    """A TCP socket of the family `host` needs, with SO_REUSEADDR, as Sanic's `bind_socket`."""
    try:
        family = socket.AF_INET6 if ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a host name: IPv4, as Sanic binds one
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def listen_alone(inherited: socket.socket | None) -> bool:
    """In a worker, before Sanic listens: turn the port's reservation this worker was handed
    into a socket of the worker's own, on the same address, in place (same file descriptor,
    so Sanic listens on the new one). False, and nothing changed, for any other socket."""
    if inherited is None or not _is_reservation(inherited):
        return False
    own = socket.socket(inherited.family, inherited.type)
    try:
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if inherited.family == socket.AF_INET6:
            v6only = inherited.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            own.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        own.bind(inherited.getsockname())
        os.dup2(own.fileno(), inherited.fileno(), inheritable=False)
    except OSError as exc:  # the shared socket still works: Sanic will listen on it
        logger.warning("worker %d accepts from the shared socket: %s", os.getpid(), exc)
        return False
    finally:
        own.close()
    return True


def _is_reservation(sock: socket.socket) -> bool:
    try:
        return (
            sock.family in (socket.AF_INET, socket.AF_INET6)
            and sock.type == socket.SOCK_STREAM
            and bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
            and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        )
    except OSError:  # closed, or not a socket after all
        return False


def stop_listening_at_shutdown(listener: socket.socket) -> None:
    """Close the main process's copy of the port's socket as soon as a shutdown starts.

    Each worker stops accepting when it begins its graceful stop, but the main process keeps the
    socket open until every worker has finished (in-flight streams may run for
    `GRACEFUL_SHUTDOWN_SECONDS`). Where that socket is the shared listening one, the kernel went
    on completing new connections into its backlog, where nobody accepted them, and reset them at
    exit. With the main process's copy closed first, the socket closes when the workers close
    theirs: new connections are refused at once, and a load balancer or client retries elsewhere.
    (A reservation is released early too, which changes nothing.)
    """
    close_first_at_shutdown(listener)
