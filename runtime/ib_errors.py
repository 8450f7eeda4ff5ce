"""IB error codes as one policy table: what each code means and what the daemon does about it.

Every code IB (or the paper gateway) sends through `error()` has exactly one row here: its
severity, whether it ends the request (or order) it names, and the daemon's action. The
broker adapter (`runtime/broker.py`) and, through it, the watchdog's own session act on the
table and nothing else; the order-error sets the reject accounting uses are derived from it,
so every code exists once. A code without a row gets `UNKNOWN` (a warning: logged, and one
safety event per code per process), never silence.

Actions (`Action`):
- INFO: recorded in the log (warnings: one safety event per contract per cycle); nothing else.
- RESUBSCRIBE: a subscription was lost; request it again.
- REFUSE_SYMBOL: the contract has no usable market data: no orders for it this cycle.
- REFUSE_ALL: no new orders at all until the condition clears (a row's `clears`, or proof).
- RECONNECT: the session is unusable: drop it; the supervisor reconnects and reconciles.
- TRIP_BREAKER: trip the circuit breaker (no row uses it today: the consecutive-reject
  trip counts ORDER_REJECT rows with `counts_as_reject`).
- ORDER_REJECT: the order it names gets the reject accounting (stored on the order; an
  ending code rejects its intent; `counts_as_reject` codes count towards the breaker's trip).
- DELAY: pacing: retry later; never trips anything.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "ORDER_ENDING_CODES",
    "ORDER_ERROR_CODES",
    "POLICIES",
    "REJECT_CODES",
    "UNKNOWN",
    "Action",
    "ErrorPolicy",
    "Severity",
    "first_sighting",
    "is_global_cancel",
    "markdown_table",
    "policy_for",
]


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Action(StrEnum):
    INFO = "INFO"
    RESUBSCRIBE = "RESUBSCRIBE"
    REFUSE_SYMBOL = "REFUSE_SYMBOL"
    REFUSE_ALL = "REFUSE_ALL"
    RECONNECT = "RECONNECT"
    TRIP_BREAKER = "TRIP_BREAKER"
    ORDER_REJECT = "ORDER_REJECT"
    DELAY = "DELAY"


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorPolicy:
    """One row of the table."""

    code: int
    severity: Severity
    ends_request: bool  # the request, subscription or order it names is over
    action: Action
    meaning: str  # what it means and what the daemon does, for people (README table)
    counts_as_reject: bool = False  # ORDER_REJECT: counts towards the consecutive-reject trip
    clears: tuple[int, ...] = ()  # codes whose condition this one ends (1101 ends 1100)
    farm: str = ""  # farm status rows: "market" | "historical" | "secdef"
    known: bool = True  # False only for UNKNOWN (a code without a row)


IN, W, C = Severity.INFO, Severity.WARNING, Severity.CRITICAL
A = Action


def _row(
    code: int, severity: Severity, ends: bool, action: Action, meaning: str, **more: object
) -> ErrorPolicy:
    return ErrorPolicy(
        code=code,
        severity=severity,
        ends_request=ends,
        action=action,
        meaning=meaning,
        **more,  # type: ignore[arg-type]
    )


_ROWS = (
    # --- pacing and request limits ---------------------------------------------------------
    _row(
        100, W, True, A.DELAY, "max messages per second exceeded: pacing, send later; never trips"
    ),
    _row(
        101,
        W,
        True,
        A.DELAY,
        "max market-data lines reached: the line is given up, the least recently used one "
        "freed after a backoff, asked again; never trips",
    ),
    _row(
        162,
        W,
        True,
        A.DELAY,
        "historical data error or pacing violation: asked again after a backoff; never trips",
    ),
    _row(322, W, True, A.INFO, "error processing the request: the request fails, logged"),
    _row(366, IN, False, A.INFO, "no historical query for this id (a cancel after the end)"),
    _row(420, W, True, A.INFO, "invalid real-time bars query (no permission): the request fails"),
    _row(430, W, True, A.INFO, "fundamental data not available: the request fails"),
    # --- orders ----------------------------------------------------------------------------
    _row(103, W, True, A.ORDER_REJECT, "duplicate order id: the order is rejected"),
    _row(104, W, True, A.ORDER_REJECT, "cannot modify a filled order"),
    _row(105, W, True, A.ORDER_REJECT, "modification does not match the original order"),
    _row(110, W, True, A.ORDER_REJECT, "price does not fit the minimum tick: rejected"),
    _row(135, W, True, A.ORDER_REJECT, "order id not found"),
    _row(161, W, True, A.ORDER_REJECT, "cancel of an order in a state that cannot be cancelled"),
    _row(200, W, True, A.ORDER_REJECT, "no security definition: the request or order ends"),
    _row(
        201, W, True, A.ORDER_REJECT, "order rejected (reason in the text)", counts_as_reject=True
    ),
    _row(
        202,
        W,
        False,
        A.ORDER_REJECT,
        "order cancelled: counts as a reject unless the daemon asked for the cancel or its "
        "text names a global cancel",
        counts_as_reject=True,
    ),
    _row(
        203,
        W,
        True,
        A.ORDER_REJECT,
        "security not available or not allowed for this account",
        counts_as_reject=True,
    ),
    _row(321, W, True, A.ORDER_REJECT, "request failed validation (e.g. no exchange)"),
    _row(387, W, True, A.ORDER_REJECT, "unsupported order type"),
    _row(399, W, False, A.ORDER_REJECT, "order warning (recorded on the order; it stays live)"),
    _row(404, W, False, A.INFO, "order held while shares to sell short are located"),
    _row(434, W, True, A.INFO, "order size zero: not placed (the gate never sends one)"),
    _row(2137, W, False, A.INFO, "order warning from the gateway's precautions; order stands"),
    _row(
        10147,
        W,
        False,
        A.ORDER_REJECT,
        "order to cancel not found (final answer to the cancel)",
        counts_as_reject=True,
    ),
    _row(10148, W, False, A.ORDER_REJECT, "order to cancel is already done (final answer)"),
    # --- session and connectivity ----------------------------------------------------------
    _row(
        326, C, True, A.RECONNECT, "client id already in use: back off and retry (fatal at start)"
    ),
    _row(504, C, True, A.RECONNECT, "not connected: drop the session, reconnect and reconcile"),
    _row(506, C, True, A.RECONNECT, "unsupported client version: the connect fails, retried"),
    _row(1100, C, False, A.REFUSE_ALL, "connectivity IB-gateway lost: no orders until restored"),
    _row(
        1101,
        W,
        False,
        A.RESUBSCRIBE,
        "connectivity restored, market data lost: resubscribe, reconcile, prove fresh data",
        clears=(1100,),
    ),
    _row(
        1102,
        W,
        False,
        A.INFO,
        "connectivity restored, data kept: resubscribe, reconcile, prove fresh data",
        clears=(1100,),
    ),
    _row(1300, C, True, A.RECONNECT, "socket port reset: reconnect"),
    _row(2100, W, False, A.RESUBSCRIBE, "unsubscribed from account data: request it again"),
    # --- data farms (reqId -1; never a disconnect) ------------------------------------------
    _row(
        2103,
        W,
        False,
        A.INFO,
        "market data farm broken: its quotes are suspect (not priced) until 2104; no outage",
        farm="market",
    ),
    _row(2104, IN, False, A.INFO, "market data farm OK", farm="market", clears=(2103,)),
    _row(
        2105,
        W,
        False,
        A.INFO,
        "historical data farm broken: history suspect until 2106; no outage",
        farm="historical",
    ),
    _row(2106, IN, False, A.INFO, "historical data farm OK", farm="historical", clears=(2105,)),
    _row(2107, IN, False, A.INFO, "historical data farm inactive but available on demand"),
    _row(2108, IN, False, A.INFO, "market data farm inactive but available on demand"),
    _row(2119, IN, False, A.INFO, "market data farm connecting"),
    _row(
        2157,
        W,
        False,
        A.INFO,
        "security definition farm broken: contract lookups suspect until 2158; no outage",
        farm="secdef",
    ),
    _row(2158, IN, False, A.INFO, "security definition farm OK", farm="secdef", clears=(2157,)),
    # --- market-data entitlements ----------------------------------------------------------
    _row(
        354,
        W,
        True,
        A.REFUSE_SYMBOL,
        "market data not subscribed: the contract is untradable this cycle",
    ),
    _row(
        10089,
        W,
        True,
        A.REFUSE_SYMBOL,
        "market data needs an additional API subscription: untradable this cycle",
    ),
    _row(
        10090,
        W,
        False,
        A.INFO,
        "part of the market data not subscribed: the ticks that come are live",
    ),
    _row(
        10091,
        W,
        False,
        A.INFO,
        "part of the market data needs an additional subscription: the rest is live",
    ),
    _row(
        10167,
        W,
        False,
        A.INFO,
        "delayed market data shown (marketDataType 3): never prices an order",
    ),
    _row(
        10168,
        W,
        True,
        A.REFUSE_SYMBOL,
        "not subscribed and no delayed data: the contract is untradable this cycle",
    ),
    _row(
        10197,
        C,
        True,
        A.REFUSE_ALL,
        "competing live session, no market data: no new orders until live data flows",
    ),
    _row(10182, W, True, A.RESUBSCRIBE, "live updates of historical bars failed: request again"),
    _row(10225, W, True, A.RESUBSCRIBE, "bust event ended the bars subscription: request again"),
)

POLICIES: MappingProxyType[int, ErrorPolicy] = MappingProxyType({r.code: r for r in _ROWS})
if len(POLICIES) != len(_ROWS):  # checked at import, also under python -O
    raise RuntimeError("runtime.ib_errors: a code has two rows in the policy table")

UNKNOWN = ErrorPolicy(
    code=0,
    severity=Severity.WARNING,
    ends_request=False,
    action=Action.INFO,
    meaning="a code without a row: logged, one safety event per code per process",
    known=False,
)

# The reject accounting's sets, derived from the table (they exist nowhere else).
ORDER_ERROR_CODES = frozenset(r.code for r in _ROWS if r.action is Action.ORDER_REJECT)
REJECT_CODES = frozenset(r.code for r in _ROWS if r.counts_as_reject and r.code != 202)
# Errors that end the order they name: its intent becomes `rejected` with the code.
ORDER_ENDING_CODES = frozenset(
    r.code for r in _ROWS if r.action is Action.ORDER_REJECT and r.ends_request
)


# A 202 whose text names a global cancel (reqGlobalCancel: the watchdog's or the panic's, or a
# person's in TWS) is a cancel, not a broker refusal. IB's 202 text is "Order Canceled -
# reason:" with a suffix that varies; the paper gateway's suffix for reqGlobalCancel is
# "Cancelled by global cancel". Matched case-insensitively anywhere in the text.
GLOBAL_CANCEL_TEXT = "global cancel"


def is_global_cancel(code: int, msg: str) -> bool:
    """True for a 202 that says its order went in a global cancel (not a reject)."""
    return code == 202 and GLOBAL_CANCEL_TEXT in (msg or "").lower()


def policy_for(code: int) -> ErrorPolicy:
    """Return the code's row, or UNKNOWN (with the code filled in) for a code without one."""
    row = POLICIES.get(code)
    if row is not None:
        return row
    return ErrorPolicy(
        code=code,
        severity=UNKNOWN.severity,
        ends_request=UNKNOWN.ends_request,
        action=UNKNOWN.action,
        meaning=UNKNOWN.meaning,
        known=False,
    )


_seen_lock = threading.Lock()
_seen: set[int] = set()


def first_sighting(code: int) -> bool:
    """True the first time this process sees an unknown `code` (one safety event per code)."""
    with _seen_lock:
        if code in _seen:
            return False
        _seen.add(code)
        return True


def markdown_table() -> str:
    """The table as Markdown, one line per code in code order (the README shows exactly this)."""
    lines = [
        "| code | severity | ends request | action | meaning |",
        "|---|---|---|---|---|",
    ]
    for code in sorted(POLICIES):
        r = POLICIES[code]
        lines.append(
            f"| {code} | {r.severity.value} | {'yes' if r.ends_request else 'no'} | "
            f"{r.action.value} | {r.meaning} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # python -m runtime.ib_errors: print the README's table
    print(markdown_table())
