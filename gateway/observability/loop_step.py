"""
Work batched per event-loop step: asked for any number of times during one step of the worker's
event loop, done once right after it (after the responses of that step have been written).

The loop is bound once, when the worker starts, rather than looked up on each request: on
Python 3.11, `asyncio.get_running_loop()` makes a `getpid()` system call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["AfterLoopStep"]


class AfterLoopStep:
    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Defer the work to the end of each step of `loop`; None: do it at each request again.

        What is pending is done now either way.
        """
        self.run()
        self._loop = loop

    def request(self) -> None:
        """Have the work done after the current step (at once when no loop is bound)."""
        if self._loop is None:
            self.run()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.run)

    def run(self) -> None:
        """Do the work now."""
        self._scheduled = False
        self._work()
