"""What the broker's error codes say about trading right now.

The broker adapter feeds this from the policy table (`runtime/ib_errors.py`); the gate's
context reads it. Three kinds of condition:
- per contract, for the rest of the cycle (REFUSE_SYMBOL: 354, 10089, 10168): that contract
  is untradable; every other contract trades. A refusal made before the first cycle (the
  warm-up) counts for the first cycle.
- refuse all (REFUSE_ALL, e.g. 10197): no new orders until cleared (by a clearing code, or
  by proof such as live market data flowing again).
- broken data farms (2103/2105/2157, cleared by 2104/2106/2158): data from them is suspect;
  not an outage.

Each condition is reported once: `refuse`/`note` answer True only the first time in a cycle
for a (code, contract), `refuse_all` only when the condition starts, `farm_broken` only when
the farm goes from OK to broken.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Condition", "MarketConditions"]


@dataclass(frozen=True, slots=True)
class Condition:
    code: int
    reason: str


class MarketConditions:
    """Per-session state driven by IB's error codes (one per Broker)."""

    def __init__(self) -> None:
        self._cycle: int | None = None  # None: before the first cycle (warm-up)
        self._refused: dict[str, tuple[Condition, int | None]] = {}  # key -> (why, cycle)
        self._noted: dict[tuple[int, str], int | None] = {}  # (code, key) -> cycle recorded
        self._all: dict[int, Condition] = {}
        self._farms: dict[tuple[str, str], Condition] = {}  # (kind, farm name) -> why

    # --- cycles ---------------------------------------------------------------------------
    def begin_cycle(self, cycle_id: int) -> tuple[str, ...]:
        """Start a cycle: refusals of earlier cycles end (their contracts are tried again);
        those made before the first cycle count for this one. Return the keys released."""
        self._cycle = cycle_id
        released = tuple(k for k, (_, c) in self._refused.items() if c is not None)
        for key in released:
            del self._refused[key]
        self._refused = {k: (why, cycle_id) for k, (why, _) in self._refused.items()}
        self._noted = {k: cycle_id for k, c in self._noted.items() if c is None}
        return released

    def note(self, code: int, key: str) -> bool:
        """True the first time this cycle that `code` is seen for `key` (record it once)."""
        if (code, key) in self._noted:
            return False
        self._noted[(code, key)] = self._cycle
        return True

    # --- per contract ---------------------------------------------------------------------
    def refuse(self, key: str, code: int, reason: str) -> bool:
        """Make `key` untradable for the rest of the cycle; True when first this cycle."""
        self._refused.setdefault(key, (Condition(code, reason), self._cycle))
        return self.note(code, key)

    def refusal(self, key: str) -> Condition | None:
        found = self._refused.get(key)
        return None if found is None else found[0]

    def refusals(self) -> dict[str, Condition]:
        return {k: why for k, (why, _) in self._refused.items()}

    # --- everything -----------------------------------------------------------------------
    def refuse_all(self, code: int, reason: str) -> bool:
        """Refuse every new order until `clear(code)`; True when the condition starts."""
        if code in self._all:
            return False
        self._all[code] = Condition(code, reason)
        return True

    def clear(self, code: int) -> Condition | None:
        """End a refuse-all condition; return it (None: it was not raised)."""
        return self._all.pop(code, None)

    def refusing_all(self) -> Condition | None:
        """The first refuse-all condition in force (None: none)."""
        return next(iter(self._all.values()), None)

    def raised(self, code: int) -> bool:
        return code in self._all

    # --- data farms -----------------------------------------------------------------------
    def farm_broken(self, kind: str, name: str, code: int, reason: str) -> bool:
        """Mark a farm broken; True when it was not already."""
        if (kind, name) in self._farms:
            return False
        self._farms[(kind, name)] = Condition(code, reason)
        return True

    def farm_ok(self, kind: str, name: str) -> list[str]:
        """Mark a farm OK (an unnamed OK message: every farm of that kind); return the farms
        that were broken."""
        gone = [k for k in self._farms if k[0] == kind and (not name or k[1] == name)]
        for k in gone:
            del self._farms[k]
        return [n for _, n in gone]

    def suspect(self, kind: str) -> str:
        """Why data of this kind is suspect now ('' = it is not)."""
        broken = sorted(n or "?" for k, n in self._farms if k == kind)
        if not broken:
            return ""
        code = next(c.code for (k, _), c in self._farms.items() if k == kind)
        return f"{kind} data farm broken ({code}: {', '.join(broken)})"

    # --- status -----------------------------------------------------------------------------
    def lines(self) -> list[str]:
        """One line per condition in force, for `python -m runtime status`."""
        out = [f"refusing all new orders: {c.reason} ({c.code})" for c in self._all.values()]
        for kind in sorted({k for k, _ in self._farms}):
            out.append(f"{self.suspect(kind)}: its data is suspect")
        for key, (why, _) in sorted(self._refused.items()):
            out.append(f"{key} untradable this cycle: {why.reason} ({why.code})")
        return out
