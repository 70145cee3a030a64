"""
Sanic's HTTP/1.1 protocol, with a deadline for the request head and an idle limit for its body.

Sanic's `REQUEST_TIMEOUT` counts from the last byte received, not the first, and it stops at the
end of the head. So a client that trickles its head (a byte every few seconds) held a connection
and its worker's slot for as long as it liked, and a body that stalls half-way was bounded only by
the response timeout (minutes, since that one also bounds the upstream's answer). Here:

- the whole head must arrive within `REQUEST_HEAD_TIMEOUT_SECONDS` of its first byte;
- the body may pause at most `REQUEST_BODY_TIMEOUT_SECONDS` between two reads, however long it is
  in all (a 4 MiB upload over a slow link is fine, a stalled one is not).

Either answers 408 in the gateway's JSON envelope and closes the connection. Only the slow paths
pay for it: a head or a body that is already in the buffer (nearly every request) starts no timer.

This is Sanic's documented extension point (`app.run(protocol=...)`), used by `python -m gateway`
through `gateway_protocol()`, which checks first that the Sanic it runs on still has the methods
and fields overridden here (Sanic 25.12; requirements.txt bounds it below 26) and otherwise logs a
warning and serves with Sanic's own protocol. `sanic gateway.app:create_app` runs Sanic's own
protocol too; there `REQUEST_TIMEOUT` (set to the head's timeout) still bounds each pause of the head.
"""

from __future__ import annotations

import asyncio
import logging

from sanic.exceptions import RequestTimeout
from sanic.http import Http, Stage
from sanic.server.protocols.http_protocol import HttpProtocol

__all__ = ["GatewayHttpProtocol", "gateway_protocol"]

logger = logging.getLogger("gateway")


class _Http(Http):
    __slots__ = ()

    async def http1_request_header(self) -> None:
        if b"\r\n\r\n" in self.recv_buffer:  # the whole head is here: nothing to wait for
            return await super().http1_request_header()
        timeout = self.protocol.app.ctx.settings.request_head_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                return await super().http1_request_header()
        except TimeoutError:
            self.keep_alive = False
            raise RequestTimeout(
                f"the request head did not arrive within REQUEST_HEAD_TIMEOUT_SECONDS ({timeout:g} s)"
            ) from None


class GatewayHttpProtocol(HttpProtocol):
    """Sanic's `HttpProtocol` with the request's own timeouts (see the module's docstring)."""

    __slots__ = ()
    HTTP_CLASS = _Http

    async def receive_more(self) -> None:
        http = self._http
        # While the handler runs, the only reads are of the request body.
        if http is None or http.stage is not Stage.HANDLER:
            return await super().receive_more()
        timeout = self.app.ctx.settings.request_body_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                return await super().receive_more()
        except TimeoutError:
            # The rest of the body will not be read: the connection closes after the 408.
            http.keep_alive = False
            http.request_body = None
            raise RequestTimeout(f"the request body stalled for REQUEST_BODY_TIMEOUT_SECONDS ({timeout:g} s)") from None


def gateway_protocol() -> type[HttpProtocol]:
    """`GatewayHttpProtocol`, or Sanic's own where the internals it builds on have changed."""
    missing = [
        name
        for owner, names in (
            (Http, ("http1_request_header", "recv_buffer", "keep_alive", "request_body", "stage", "protocol")),
            (HttpProtocol, ("HTTP_CLASS", "receive_more", "_http", "app")),
        )
        for name in names
        if not hasattr(owner, name)
    ]
    if missing or not hasattr(Stage, "HANDLER"):
        logger.warning(
            "this Sanic lacks %s: serving with its own protocol, without REQUEST_HEAD_TIMEOUT_SECONDS's deadline "
            "and REQUEST_BODY_TIMEOUT_SECONDS",
            ", ".join(missing) or "Stage.HANDLER",
        )
        return HttpProtocol
    return GatewayHttpProtocol
