"""Requests the paper gateway does not serve, and the exact reply each one gets.

A request that carries a request id is answered with an error code that both ib_insync and
ib_async treat as an error (so the request ends at once instead of hanging): never 321 or a
2100-2199 warning, which ib_async only logs (requestFA/replaceFA carry no request id: they get
the real service's 321 for a non-FA account). Requests without a request id that a client
waits for get an empty answer; fire-and-forget requests get nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["UNSUPPORTED", "EmptyAnswer", "Ignored", "Refusal", "Unsupported"]

_NOT_SUBSCRIBED = (354, "Requested market data is not subscribed.")
_HMDS = (
    162,
    "Historical Market Data Service error message:"
    "HMDS query returned no data (not served by the paper gateway)",
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Answer with error `code` for the request id found at `req_id_index` (None: -1)."""

    name: str
    req_id_index: int | None
    code: int
    text: str


@dataclass(frozen=True, slots=True)
class EmptyAnswer:
    """Answer with a fixed message; the request's field `req_id_index` (if any) is copied to
    field `answer_index` of the answer."""

    name: str
    fields: tuple[str | int | float, ...]
    req_id_index: int | None = None
    answer_index: int = 1


@dataclass(frozen=True, slots=True)
class Ignored:
    """Accept silently: a cancel of something never started, or a fire-and-forget request."""

    name: str


Unsupported = Refusal | EmptyAnswer | Ignored

UNSUPPORTED: dict[int, Unsupported] = {
    10: Refusal("reqMktDepth", 2, *_NOT_SUBSCRIBED),
    11: Ignored("cancelMktDepth"),
    12: Ignored("reqNewsBulletins"),
    13: Ignored("cancelNewsBulletins"),
    18: Refusal(
        "requestFA",
        None,
        321,
        "Error validating request.-'vd' : cause - FA data operations ignored for non FA customers.",
    ),
    19: Refusal(
        "replaceFA",
        None,
        321,
        "Error validating request.-'vd' : cause - FA data operations ignored for non FA customers.",
    ),
    21: Refusal("exerciseOptions", 2, 200, "No security definition has been found for the request"),
    22: Refusal("reqScannerSubscription", 1, *_HMDS),
    23: Ignored("cancelScannerSubscription"),
    24: EmptyAnswer("reqScannerParameters", (19, 1, "<ScanParameterResponse/>")),
    50: Refusal("reqRealTimeBars", 2, 420, "Invalid Real-time Query:No market data permissions."),
    51: Ignored("cancelRealTimeBars"),
    52: Refusal(
        "reqFundamentalData",
        2,
        430,
        "We are sorry, but fundamentals data for the security specified is not available.",
    ),
    53: Ignored("cancelFundamentalData"),
    54: Refusal("calculateImpliedVolatility", 2, *_NOT_SUBSCRIBED),
    55: Refusal("calculateOptionPrice", 2, *_NOT_SUBSCRIBED),
    56: Ignored("cancelCalculateImpliedVolatility"),
    57: Ignored("cancelCalculateOptionPrice"),
    67: EmptyAnswer("queryDisplayGroups", (67, 1, 0, ""), req_id_index=2, answer_index=2),
    68: Ignored("subscribeToGroupEvents"),
    69: Ignored("updateDisplayGroup"),
    70: Ignored("unsubscribeFromGroupEvents"),
    79: EmptyAnswer("reqSoftDollarTiers", (77, 0, 0), req_id_index=1),
    80: EmptyAnswer("reqFamilyCodes", (78, 0)),
    82: EmptyAnswer("reqMktDepthExchanges", (80, 0)),
    83: EmptyAnswer("reqSmartComponents", (82, 0, 0), req_id_index=1),
    84: Refusal("reqNewsArticle", 1, *_NOT_SUBSCRIBED),
    85: EmptyAnswer("reqNewsProviders", (85, 0)),
    86: Refusal("reqHistoricalNews", 1, *_HMDS),
    88: Refusal("reqHistogramData", 1, *_HMDS),
    89: Ignored("cancelHistogramData"),
    90: Ignored("cancelHeadTimestamp"),
    91: EmptyAnswer("reqMarketRule", (93, 0, 1, 0, 0.01), req_id_index=1),
    96: Refusal("reqHistoricalTicks", 1, *_HMDS),
    97: Refusal("reqTickByTickData", 1, *_NOT_SUBSCRIBED),
    98: Ignored("cancelTickByTickData"),
    100: Refusal("reqWshMetaData", 1, *_NOT_SUBSCRIBED),
    101: Ignored("cancelWshMetaData"),
    102: Refusal("reqWshEventData", 1, *_NOT_SUBSCRIBED),
    103: Ignored("cancelWshEventData"),
    104: EmptyAnswer("reqUserInfo", (107, 0, ""), req_id_index=1),
}
