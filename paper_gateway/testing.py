"""Helpers for tests, drills and benchmarks that drive the gateway through ib_insync."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar, overload

__all__ = ["eventually", "eventually_async"]

T = TypeVar("T")


def eventually(
    cond: Callable[[], T | Literal[False] | None],
    timeout: float = 5.0,
    pump: Any = None,
    what: str = "",
) -> T:
    """Return cond()'s first truthy value, polling until `timeout` seconds pass.

    `pump` is an ib_insync IB (or anything with `sleep(seconds)`) whose event loop must run
    while waiting; without it the wait yields the thread briefly. Raises AssertionError at
    the deadline, naming `what`. A ConnectionError raised by the pump (ib_insync reports a
    lost socket from whatever call is waiting) does not end the wait.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {what or cond}")
        if pump is not None:
            # ib_insync raises a socket loss from any wait; the condition decides
            with contextlib.suppress(ConnectionError):
                pump.sleep(0.005)
        else:
            time.sleep(0.005)


@overload
async def eventually_async(
    cond: Callable[[], Awaitable[T | Literal[False] | None]],
    timeout: float = ...,
    what: str = ...,
    interval: float = ...,
) -> T: ...


@overload
async def eventually_async(
    cond: Callable[[], T | Literal[False] | None],
    timeout: float = ...,
    what: str = ...,
    interval: float = ...,
) -> T: ...


async def eventually_async(
    cond: Callable[[], Any],
    timeout: float = 5.0,
    what: str = "",
    interval: float = 0.01,
) -> Any:
    """Return cond()'s first truthy value (awaited when cond is a coroutine function), polling
    every `interval` seconds of the running event loop until `timeout` seconds pass; the
    loop runs between polls. Raises AssertionError at the deadline, naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {what or cond}")
        await asyncio.sleep(interval)
