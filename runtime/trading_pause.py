"""Why no new orders may go right now, apart from the gate's own checks: the gateway's daily
restart window, and market data not yet proven after a reconnect. The commander skips its
cycle and the gate refuses on these reasons; each pause is recorded once, when it begins,
and its end once, when it ends."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Protocol

from data_lake import Store, log_safety_event

from .restart_window import RestartWindow

__all__ = ["DataProof", "TradingPause"]

log = logging.getLogger("runtime.trading_pause")


class DataProof(Protocol):
    def data_pause_reason(self) -> str | None: ...


class TradingPause:
    def __init__(
        self,
        window: RestartWindow | None,
        broker: DataProof,
        wall_now: Callable[[], dt.datetime],
        store: Store,
        source: str = "commander",
    ) -> None:
        self.window = window
        self.broker = broker
        self.wall_now = wall_now
        self.store = store
        self.source = source
        self._recorded: tuple[str, ...] = ()

    def reasons(self) -> tuple[str, ...]:
        """Every reason no new order may go now (empty: none)."""
        out = []
        if self.window is not None and self.window.current(self.wall_now()) is not None:
            out.append(self.window.reason)
        data = self.broker.data_pause_reason()
        if data:
            out.append(data)
        return tuple(out)

    def record(self, reasons: tuple[str, ...]) -> None:
        """Record a pause when it begins or changes, and its end (never once per cycle)."""
        if reasons == self._recorded:
            return
        if reasons:
            text = "; ".join(reasons)
            log.warning("trading paused: %s", text)
            self.store.post(log_safety_event, self.source, "trading_paused", text, "warning")
        else:
            log.info("trading resumed after: %s", "; ".join(self._recorded))
            self.store.post(
                log_safety_event,
                self.source,
                "trading_resumed",
                f"resumed after: {'; '.join(self._recorded)}",
                "info",
            )
        self._recorded = reasons
