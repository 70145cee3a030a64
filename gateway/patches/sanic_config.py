"""
Sanic's configuration, with the settings its connection code reads all the time made cheap to read.

Sanic's `Config` is a dict whose keys are read as attributes through `__getattr__`. Python looks
for a real attribute first, and builds an `AttributeError` (message formatted) before it falls
back to `__getattr__`: 1.7 µs a read here, against 0.4 µs for a property. Sanic's HTTP/1.1 code
reads eight settings that way on every connection and request (five when a connection opens, one
per read of the socket, one per request, one when it closes). Here those eight are properties
that read the dict in C: the values, and everything that writes them (`update`,
`config.X = ...`, the `SANIC_` environment), stay Sanic's. Measured with
bench/count_instructions.py: 710,828 user-space instructions per /v1 stream with Sanic's stock
`Config`, 686,340 with this one (3.4% less).
"""

from __future__ import annotations

import logging
import operator
from typing import Any

from sanic.config import Config

__all__ = ["HOT_SETTINGS", "ServerConfig", "server_config"]

logger = logging.getLogger("gateway")


def _dict_entry(key: str) -> property:
    """An attribute that is the dict's entry `key`, for reading and writing.

    The setter matters: Sanic's `Config.update` hands every key that has a property to that
    property's setter (and drops it from the dict update), as it does for its own
    `FALLBACK_ERROR_FORMAT`.
    """

    def write(config: Config, value: Any) -> None:
        dict.__setitem__(config, key, value)

    return property(operator.itemgetter(key), write, doc=f"`config[{key!r}]`")


class ServerConfig(Config):
    """`sanic.config.Config`, with `HOT_SETTINGS` read without an `AttributeError` each time."""

    ACCESS_LOG = _dict_entry("ACCESS_LOG")  # type: ignore[assignment]
    GRACEFUL_TCP_CLOSE_TIMEOUT = _dict_entry("GRACEFUL_TCP_CLOSE_TIMEOUT")  # type: ignore[assignment]
    KEEP_ALIVE = _dict_entry("KEEP_ALIVE")  # type: ignore[assignment]
    KEEP_ALIVE_TIMEOUT = _dict_entry("KEEP_ALIVE_TIMEOUT")  # type: ignore[assignment]
    REQUEST_BUFFER_SIZE = _dict_entry("REQUEST_BUFFER_SIZE")  # type: ignore[assignment]
    REQUEST_MAX_SIZE = _dict_entry("REQUEST_MAX_SIZE")  # type: ignore[assignment]
    REQUEST_TIMEOUT = _dict_entry("REQUEST_TIMEOUT")  # type: ignore[assignment]
    RESPONSE_TIMEOUT = _dict_entry("RESPONSE_TIMEOUT")  # type: ignore[assignment]


# The settings read as properties, as the class lists them.
HOT_SETTINGS = tuple(name for name, member in vars(ServerConfig).items() if isinstance(member, property))


def self_check() -> str | None:
    """None if `ServerConfig` reads and writes the hot settings as Sanic's `Config` does; else why not."""
    try:
        ours, sanics = ServerConfig(), Config()
        if {key: getattr(ours, key) for key in HOT_SETTINGS} != {key: getattr(sanics, key) for key in HOT_SETTINGS}:
            return "its defaults differ from Sanic's"
        changed = {key: 12345 for key in HOT_SETTINGS}
        ours.update(changed)
        sanics.update(changed)
        ours.KEEP_ALIVE = sanics.KEEP_ALIVE = False
        for key in HOT_SETTINGS:
            if (getattr(ours, key), ours.get(key)) != (getattr(sanics, key), sanics.get(key)):
                return f"{key} reads back differently after update()"
    except Exception as exc:  # noqa: BLE001 (any change in how Sanic's Config stores settings)
        return f"{type(exc).__name__}: {exc}"
    return None


def server_config() -> Config:
    """The config to give Sanic: `ServerConfig`, or Sanic's own if this release breaks it."""
    problem = self_check()
    if problem is None:
        return ServerConfig()
    logger.warning(
        "Sanic's Config differs from what gateway/patches/sanic_config.py expects (%s): using Sanic's own", problem
    )
    return Config()
