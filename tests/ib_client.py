"""The IB client library of this test run, so the same tests run on ib_insync and on ib_async.

`IB_CLIENT_LIBRARY=ib_async python -m pytest ...` runs them on ib_async; unset (or
`ib_insync`) on ib_insync. The `connect` fixture, the tests' broker configs and the daemons that
`procs.write_config` configures (`[broker] client_library`) all use it.
"""

from __future__ import annotations

import importlib
import os

NAME = os.environ.get("IB_CLIENT_LIBRARY") or "ib_insync"
if NAME not in ("ib_insync", "ib_async"):
    raise RuntimeError(f"IB_CLIENT_LIBRARY={NAME!r}: expected ib_insync or ib_async")
ON_IB_ASYNC = NAME == "ib_async"

lib = importlib.import_module(NAME)
IB = lib.IB
Contract = lib.Contract
ExecutionFilter = lib.ExecutionFilter
LimitOrder = lib.LimitOrder
MarketOrder = lib.MarketOrder
Option = lib.Option
Order = lib.Order
ScannerSubscription = lib.ScannerSubscription
Stock = lib.Stock
StopLimitOrder = lib.StopLimitOrder
StopOrder = lib.StopOrder
Trade = lib.Trade


def qualified(result: list) -> list:  # type: ignore[type-arg]
    """The contracts a qualifyContracts call qualified: ib_insync leaves a failure out of its
    answer, ib_async 2.x puts None (or, with returnAll, a list of candidates) in its place."""
    return [c for c in result if c is not None and not isinstance(c, list)]
