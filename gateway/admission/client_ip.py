"""
The client's IP address, the key of its rate limit.

By default it is the socket peer, and `X-Forwarded-For` is ignored: believing it from anyone
would let every client choose its own address, and with it a fresh rate limit. Operators who run
the gateway behind their own proxies list them in `TRUSTED_PROXIES` (addresses or CIDR
networks). Then, when the peer is one of them, `X-Forwarded-For` is read from the right, past
every trusted hop, and the first address that is not a trusted proxy is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from sanic import Request

__all__ = ["ClientIP", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Parse `TRUSTED_PROXIES` entries; raises ValueError naming a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(value) from None
    return tuple(networks)


def _normalise(address: str) -> str:
    address = address.strip()
    if address.startswith("[") and "]" in address:  # [v6]:port or [v6]
        return address[1 : address.index("]")]
    if address.count(":") == 1:  # v4:port
        return address.split(":", 1)[0]
    return address


class ClientIP:
    def __init__(self, trusted: tuple[Network, ...]) -> None:
        self._trusted = trusted

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def of(self, request: Request) -> str:
        peer = request.ip or "unknown"
        if not self._trusted or not self._is_trusted(peer):
            return peer
        forwarded = request.headers.getall("x-forwarded-for", [])
        hops = [_normalise(hop) for header in forwarded for hop in header.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer
