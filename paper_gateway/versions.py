"""Server versions: the negotiation rule and the one table of thresholds every layout reads.

The constants carry the names and values of IB's `MIN_SERVER_VER_*` (its `server_versions.py`,
mirrored by ib_insync's and ib_async's decoders). A message builder never compares version
numbers itself: it asks the `ServerVersion` of its session, built once per connection from
`THRESHOLDS`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MAX_SERVER_VERSION",
    "MIN_SERVER_VERSION",
    "THRESHOLDS",
    "ServerVersion",
    "VersionRefused",
    "negotiate",
]

MIN_SERVER_VER_REPLACE_FA_END = 157
MIN_SERVER_VER_DURATION = 158
MIN_SERVER_VER_POST_TO_ATS = 160
MIN_SERVER_VER_AUTO_CANCEL_PARENT = 162
MIN_SERVER_VER_FRACTIONAL_SIZE_SUPPORT = 163
MIN_SERVER_VER_SIZE_RULES = 164
MIN_SERVER_VER_ADVANCED_ORDER_REJECT = 166
MIN_SERVER_VER_PEGBEST_PEGMID_OFFSETS = 170
MIN_SERVER_VER_INSTRUMENT_TIMEZONE = 174
MIN_SERVER_VER_BOND_ISSUERID = 176

MIN_SERVER_VERSION = MIN_SERVER_VER_REPLACE_FA_END  # oldest layout set the gateway can build
MAX_SERVER_VERSION = MIN_SERVER_VER_BOND_ISSUERID  # at 177 faProfile leaves openOrder

# feature -> first server version that has it; every version-dependent layout reads this table
THRESHOLDS: dict[str, int] = {
    "duration": MIN_SERVER_VER_DURATION,  # openOrder: duration
    "post_to_ats": MIN_SERVER_VER_POST_TO_ATS,  # openOrder: postToAts
    "auto_cancel_parent": MIN_SERVER_VER_AUTO_CANCEL_PARENT,  # openOrder: autoCancelParent
    # tickPrice/tickSize sizes, historicalData volume, pnlSingle position become decimals
    "fractional_sizes": MIN_SERVER_VER_FRACTIONAL_SIZE_SUPPORT,
    # contractData: no version field, no mdSizeMultiplier, minSize/sizeIncrement/suggested...
    "size_rules": MIN_SERVER_VER_SIZE_RULES,
    "advanced_reject": MIN_SERVER_VER_ADVANCED_ORDER_REJECT,  # error: advancedOrderRejectJson
    # openOrder/completedOrder: minTradeQty .. midOffsetAtHalf
    "peg_best_offsets": MIN_SERVER_VER_PEGBEST_PEGMID_OFFSETS,
    # intraday bar times carry the instrument's time zone
    "instrument_timezone": MIN_SERVER_VER_INSTRUMENT_TIMEZONE,
    # symbolSamples: description and issuerId per contract
    "issuer_id": MIN_SERVER_VER_BOND_ISSUERID,
}


class VersionRefused(Exception):
    """The client's version range does not overlap the gateway's."""


def negotiate(offer: str) -> int:
    """Return the highest version both sides support for a client's `vMIN..MAX [options]`."""
    text = offer.strip("\0").split(" ", 1)[0]
    if not text.startswith("v"):
        raise ValueError(f"bad version range {text!r}")
    lo_s, _, hi_s = text[1:].partition("..")
    lo = int(lo_s)
    hi = int(hi_s) if hi_s else lo
    if lo > hi or lo < 100:
        raise ValueError(f"bad version range {text!r}")
    version = min(hi, MAX_SERVER_VERSION)
    if version < MIN_SERVER_VERSION or version < lo:
        raise VersionRefused(
            f"client versions {lo}..{hi} do not overlap the paper gateway's "
            f"{MIN_SERVER_VERSION}..{MAX_SERVER_VERSION}"
        )
    return version


@dataclass(frozen=True, slots=True)
class ServerVersion:
    """What one negotiated server version means for the layouts of the messages it sends."""

    version: int
    duration: bool
    post_to_ats: bool
    auto_cancel_parent: bool
    fractional_sizes: bool
    size_rules: bool
    advanced_reject: bool
    peg_best_offsets: bool
    instrument_timezone: bool
    issuer_id: bool

    @classmethod
    def at(cls, version: int) -> ServerVersion:
        """Build the feature set of `version` from THRESHOLDS."""
        if not MIN_SERVER_VERSION <= version <= MAX_SERVER_VERSION:
            raise ValueError(f"server version {version} is not supported")
        return cls(version, **{name: version >= v for name, v in THRESHOLDS.items()})

    @property
    def contract_data_has_version(self) -> bool:
        """contractData carries a version field (and mdSizeMultiplier) before SIZE_RULES."""
        return not self.size_rules

    @property
    def contract_data_163_increment(self) -> bool:
        """Between FRACTIONAL_SIZE_SUPPORT and SIZE_RULES (that is, at 163) contractData ends
        with one size field (IB's decoder: sizeMinTick; ib_insync: suggestedSizeIncrement)."""
        return self.fractional_sizes and not self.size_rules

    def size(self, value: float) -> float | int:
        """Encode a size: decimal from FRACTIONAL_SIZE_SUPPORT on, a whole number before."""
        return float(value) if self.fractional_sizes else round(value)
