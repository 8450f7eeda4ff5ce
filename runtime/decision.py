"""The commander's decisions and what acts on them, shared by rules mode and LLM mode.

Rules mode (`runtime.commander`) and LLM mode (`runtime.llm_commander`) both produce
`Decision`s and send them through an `Actor` (the commander's gate path); neither imports the
other's module for them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from data_lake import Contract, Store
from skills.execution_gate import GateVerdict, OrderRequest

from .config import Config

__all__ = ["Actor", "Decision", "decision_row"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The commander's decision for one merged signal: sized and accepted, or refused with
    the reason (rules mode and LLM mode alike)."""

    contract: Contract
    action: str
    order_type: str
    quantity: float
    accepted: bool
    reason: str
    sources: tuple[str, ...] = ()
    limit_price: float | None = None
    kelly_fraction: float | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)  # what the sizing saw (for `why`)

    def request(self, cycle_id: int, decision_id: int | None) -> OrderRequest:
        return OrderRequest(
            contract=self.contract,
            action=self.action,
            quantity=self.quantity,
            order_type=self.order_type,
            limit_price=self.limit_price,
            tif="DAY",
            source="commander",
            cycle_id=cycle_id,
            decision_id=decision_id,
        )


def decision_row(d: Decision) -> dict[str, Any]:
    """The decision as the data lake stores it (reason prefixed accepted/refused)."""
    row = {f.name: getattr(d, f.name) for f in dataclasses.fields(d)}
    row["reason"] = ("accepted: " if d.accepted else "refused: ") + d.reason
    row["inputs"] = dict(d.inputs)
    return row


class Actor(Protocol):
    """What LLM mode needs from the commander: its config, store, client, and the gate path."""

    cfg: Config
    store: Store
    llm_client: Any

    async def act(
        self, d: Decision, cycle_id: int, decision_id: int | None = None
    ) -> GateVerdict: ...
