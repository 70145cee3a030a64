"""
Structured logs: every line on stdout is one JSON object.

`log_config(level)` is the `logging.config.dictConfig` for Sanic's loggers and the gateway's
own. Fields passed as `extra={...}` become top-level keys, so the access log line of a request
is `{"time", "level", "logger", "message": "request", "request_id", "method", "path", "status",
"duration_ms", "route", "model", "client_ip", "upstream_status", "error"}` (`error`: the code of
the gateway's own error, if any, JSON or in-band). Nothing here ever logs
headers or bodies: API keys and prompts stay out of the logs.
"""

from __future__ import annotations

import asyncio
import logging
import select
import time
from typing import Any

import orjson

from gateway.observability.loop_step import AfterLoopStep

__all__ = ["AccessLog", "JSONFormatter", "log_config"]

# Writes of at most PIPE_BUF bytes to a pipe are atomic (POSIX: 512 at least, 4096 on Linux).
ATOMIC_WRITE_BYTES = getattr(select, "PIPE_BUF", 512)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# Sanic attaches these for its own formatters.
_DROPPED = frozenset({"host", "request", "byte", "right", "color_message"})


class JSONFormatter(logging.Formatter):
    """One JSON object per record. A record with a `fields` dict (the access log, one line per
    request) gets those fields as they are, without a scan of the record for extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record.created, record.msecs),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields is not None:
            line.update(fields)
        else:
            for key, value in vars(record).items():
                if key not in _STANDARD and key not in _DROPPED and not key.startswith("_"):
                    line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


_second: tuple[int, str] = (-1, "")


def _timestamp(created: float, msecs: float) -> str:
    """ISO 8601 UTC with milliseconds; the formatted second is reused while it lasts."""
    global _second
    whole = int(created)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int(msecs):03d}Z"


def log_config(level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JSONFormatter}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "loggers": {
            name: {"level": level, "handlers": ["stdout"], "propagate": False}
            for name in (
                "gateway",
                "gateway.access",  # a handler of its own: AccessLog writes to it directly
                "sanic.root",
                "sanic.error",
                "sanic.server",
                "sanic.access",
                "sanic.websockets",
            )
        },
    }


class AccessLog:
    """One JSON line per request, on the `gateway.access` logger's level and streams.

    It writes the line itself instead of going through `logger.info`: a LogRecord and a
    formatter pass per request were 5% of the CPU of a relayed request. Lines are the same as
    the formatter's. Without a stream handler of its own, the logger is used as usual.

    While a worker serves (`write_after_each_loop_step`), the lines of one step of its event loop
    go out together after it (after the responses they describe): one write per step instead of
    one per request. Each write holds whole lines and at most `ATOMIC_WRITE_BYTES`, so that the
    lines of several workers sharing one pipe never interleave. Otherwise a line goes out at once.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger("gateway.access")
        self._pending: list[bytes] = []
        self._flushes = AfterLoopStep(self._write_pending)
        # The start of a line, up to its fields: the same for every line of one millisecond.
        self._head: tuple[int, bytes] = (-1, b"")

    def write(self, fields: dict[str, Any]) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        if logger.propagate or not self._streams():
            logger.info("request", extra={"fields": fields})
            return
        # `{head, fields}`: the fields' own JSON object, its opening brace replaced by the head.
        body = orjson.dumps(fields, default=str)
        self._pending.append(self._line_head() + (b"," + body[1:] if len(body) > 2 else b"}") + b"\n")
        self._flushes.request()

    def _line_head(self) -> bytes:
        now = time.time()
        millisecond = int(now * 1000)
        if self._head[0] != millisecond:
            stamp = _timestamp(now, millisecond % 1000)
            head = {"time": stamp, "level": "INFO", "logger": self.logger.name, "message": "request"}
            self._head = (millisecond, orjson.dumps(head)[:-1])
        return self._head[1]

    def write_after_each_loop_step(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Batch the lines of each step of `loop`; None: write each line at once again."""
        self._flushes.bind(loop)

    def flush(self) -> None:
        """Write the pending lines now."""
        self._flushes.run()

    def _write_pending(self) -> None:
        pending, self._pending = self._pending, []
        batch: list[bytes] = []
        size = 0
        for line in pending:
            if batch and size + len(line) > ATOMIC_WRITE_BYTES:
                self._emit(b"".join(batch))
                batch, size = [], 0
            batch.append(line)
            size += len(line)
        if batch:
            self._emit(b"".join(batch))

    def _streams(self) -> list[Any]:
        return [handler.stream for handler in self.logger.handlers if isinstance(handler, logging.StreamHandler)]

    def _emit(self, data: bytes) -> None:
        text = data.decode()
        for stream in self._streams():
            stream.write(text)
            stream.flush()
