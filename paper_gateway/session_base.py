"""What the request handlers of a session share: its core, version, subscriptions and send."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .instruments import Contract
from .market import Quote
from .versions import ServerVersion
from .wire import Field

if TYPE_CHECKING:
    from .server import GatewayCore

__all__ = ["MarketSub", "SessionBase", "Subscriptions", "req_id_of"]


@dataclass(slots=True)
class MarketSub:
    """One market-data subscription and the last quote pushed for it."""

    contract: Contract
    generic: frozenset[str]
    last: Quote | None = None
    delayed: bool = False  # 10167: delayed tick types (66...), marketDataType 3


@dataclass(slots=True)
class Subscriptions:
    """Everything a client has subscribed to (pushed again when prices or the account move)."""

    market: dict[int, MarketSub] = field(default_factory=dict)
    account_updates: bool = False
    positions: bool = False
    pnl: set[int] = field(default_factory=set)
    pnl_single: dict[int, int] = field(default_factory=dict)
    account_summary: set[int] = field(default_factory=set)
    account_multi: set[int] = field(default_factory=set)


class SessionBase:
    """The state the request mixins read; `Session` provides it."""

    core: GatewayCore
    sv: ServerVersion
    subs: Subscriptions
    client_id: int | None
    md_type: int  # reqMarketDataType: 1 live, 2 frozen, 3 delayed, 4 delayed-frozen

    def send(self, fields: list[Field]) -> None:
        """Send one message to this client (implemented by Session)."""
        raise NotImplementedError


def req_id_of(fields: list[str], index: int) -> int:
    """Return the integer at `index` of a request, or -1 when it is missing or not a number."""
    try:
        return int(fields[index])
    except (IndexError, ValueError):
        return -1
