"""Tests' window on the data lake: read what a store has written so far."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from data_lake import Store, get_intent, open_readonly

T = TypeVar("T")


def read(store: Store, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Wait for the store's queued writes, then run a repository read on a read-only
    connection (read-your-writes for assertions)."""
    assert store.flush(10), f"store {store.name} did not drain: {store.last_error}"
    return fn(open_readonly(store.data_dir), *args, **kwargs)


def rows(store: Store, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """Run an ad-hoc query for a test's assertion (tests may write SQL; packages may not)."""
    assert store.flush(10), f"store {store.name} did not drain: {store.last_error}"
    return list(open_readonly(store.data_dir).query(sql, params or []))


def intent(store: Store, order_ref: str | None) -> dict[str, Any]:
    """The stored intent with this orderRef, which must exist (AssertionError otherwise)."""
    row = None if order_ref is None else read(store, get_intent, order_ref)
    if row is None:
        raise AssertionError(f"no intent {order_ref} stored")
    return row
