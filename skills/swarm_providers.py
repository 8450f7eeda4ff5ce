"""Where the swarm's answers come from: the Anthropic API, or the deterministic offline evaluator.

Both return a `ProviderAnswer` whose `tool_input` is whatever was offered as the
`submit_signals` input; validating it is the caller's job (swarm_core), for both providers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from anthropic import AsyncAnthropic
from anthropic._middleware import AsyncCallNext, Middleware
from anthropic._request import APIRequest
from anthropic._response import AsyncAPIResponse

from data_lake import DiscardOutput

from .swarm_models import SIGNAL_TOOL, InstanceConfig, MarketContext

__all__ = [
    "CACHE_READ_MULTIPLIER",
    "CACHE_WRITE_1H_MULTIPLIER",
    "CACHE_WRITE_5M_MULTIPLIER",
    "PRICES_PER_MTOK",
    "AnthropicProvider",
    "OfflineProvider",
    "Provider",
    "ProviderAnswer",
    "ProviderError",
    "SharedPrompt",
    "SpendLimitReached",
    "SwarmBudget",
    "Usage",
    "cost_usd",
    "estimate_tokens",
    "min_cacheable_tokens",
    "usage_from",
]

# USD per million tokens: (input, output); `swarm.prices` in the config overrides or extends
# this table. Check against the provider's price list before trusting the dollar budget with a
# new model. Prompt caching is priced off the input price (Anthropic's "Prompt caching" and
# pricing pages): a cache write costs 1.25x input with the default 5-minute TTL and 2x with
# the 1-hour TTL, a cache read (hit or refresh) 0.1x.
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
}
UNKNOWN_MODEL_PRICE = (15.0, 75.0)  # price an unknown model as the dearest: fail expensive
CACHE_WRITE_5M_MULTIPLIER = 1.25
CACHE_WRITE_1H_MULTIPLIER = 2.0
CACHE_READ_MULTIPLIER = 0.1

# The API's minimum cacheable prompt length, by model prefix (first match wins): a shorter
# prefix is neither written nor read, silently. Used only to decide whether warming the
# cache before the swarm's fan-out can pay; billing always follows the usage returned.
MIN_CACHEABLE_TOKENS: tuple[tuple[str, int], ...] = (
    ("claude-opus-4-6", 4096),
    ("claude-opus-4-5", 4096),
    ("claude-haiku-4-5", 4096),
    ("claude-3-5-haiku", 2048),
    ("claude-3-haiku", 2048),
    ("claude-haiku-3", 2048),
)
DEFAULT_MIN_CACHEABLE_TOKENS = 1024  # Sonnet 4.6/4.5/4, Opus 4.1/4, Sonnet 3.7


def min_cacheable_tokens(model: str) -> int:
    return next(
        (n for prefix, n in MIN_CACHEABLE_TOKENS if model.startswith(prefix)),
        DEFAULT_MIN_CACHEABLE_TOKENS,
    )


@dataclass(frozen=True, slots=True)
class Usage:
    """What one call used, as the API reports it: `input_tokens` is the uncached input only
    (after the last cache breakpoint); `cache_write_tokens` counts every token written to the
    cache, of which `cache_write_1h_tokens` with the 1-hour TTL (billed at 2x, not 1.25x)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
        )


def usage_from(u: Any) -> Usage:
    """Convert the SDK's usage object (cache fields may be None) into Usage."""
    written = u.cache_creation_input_tokens or 0
    detail = getattr(u, "cache_creation", None)
    written_1h = (getattr(detail, "ephemeral_1h_input_tokens", 0) or 0) if detail else 0
    return Usage(
        u.input_tokens,
        u.output_tokens,
        u.cache_read_input_tokens or 0,
        written,
        min(written_1h, written),
    )


def price_of(
    model: str, prices: Mapping[str, tuple[float, float]] | None = None
) -> tuple[float, float]:
    """USD per million (input, output) tokens: the configured price, else the built-in one,
    else the dearest (an unknown model fails expensive)."""
    if prices and model in prices:
        return prices[model]
    return PRICES_PER_MTOK.get(model, UNKNOWN_MODEL_PRICE)


def cost_usd(
    model: str, usage: Usage, prices: Mapping[str, tuple[float, float]] | None = None
) -> float:
    price_in, price_out = price_of(model, prices)
    written_5m = usage.cache_write_tokens - usage.cache_write_1h_tokens
    return (
        usage.input_tokens * price_in
        + usage.output_tokens * price_out
        + usage.cache_read_tokens * price_in * CACHE_READ_MULTIPLIER
        + written_5m * price_in * CACHE_WRITE_5M_MULTIPLIER
        + usage.cache_write_1h_tokens * price_in * CACHE_WRITE_1H_MULTIPLIER
    ) / 1e6


def estimate_tokens(text: str) -> int:
    """A conservative local estimate (about 3.5 characters a token), made before each call."""
    return math.ceil(len(text) / 3.5) + 16


class SwarmBudget:
    """Token and dollar ceilings for one cycle and one day. Reserve before a call, settle after.

    Both are local: the reservation prices a local token estimate (no count_tokens request),
    the settlement the usage the answer reports, at the configured `prices`.
    """

    def __init__(
        self,
        max_tokens_per_cycle: int,
        max_usd_per_cycle: float,
        max_usd_per_day: float,
        spent_today_usd: float = 0.0,
        prices: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.max_tokens = max_tokens_per_cycle
        self.max_usd_cycle = max_usd_per_cycle
        self.max_usd_day = max_usd_per_day
        self.spent_today = spent_today_usd
        self.prices = dict(prices or {})
        self.tokens = 0
        self.usd = 0.0

    def cost(self, model: str, usage: Usage) -> float:
        return cost_usd(model, usage, self.prices)

    @staticmethod
    def _worst(input_tokens: int, max_output: int, cacheable_tokens: int) -> Usage:
        """The dearest a call can be: its cacheable prefix written (1.25x), the rest uncached."""
        cached = min(cacheable_tokens, input_tokens)
        return Usage(input_tokens - cached, max_output, 0, cached)

    def reserve(
        self, model: str, input_tokens: int, max_output: int, cacheable_tokens: int = 0
    ) -> str | None:
        """Reserve the worst case of one call; return a refusal reason or None."""
        usage = self._worst(input_tokens, max_output, cacheable_tokens)
        cost = self.cost(model, usage)
        if self.tokens + usage.total > self.max_tokens:
            return (
                f"token budget: {self.tokens + usage.total} would exceed "
                f"{self.max_tokens} this cycle"
            )
        if self.usd + cost > self.max_usd_cycle:
            return (
                f"cost budget: ${self.usd + cost:.4f} would exceed ${self.max_usd_cycle} this cycle"
            )
        if self.spent_today + self.usd + cost > self.max_usd_day:
            return (
                f"daily cost budget: ${self.spent_today + self.usd + cost:.4f} would exceed "
                f"${self.max_usd_day} today"
            )
        self.tokens += usage.total
        self.usd += cost
        return None

    def settle(
        self,
        model: str,
        reserved_input: int,
        max_output: int,
        actual: Usage,
        cacheable_tokens: int = 0,
    ) -> None:
        """Replace a reservation by what the call really used."""
        worst = self._worst(reserved_input, max_output, cacheable_tokens)
        self.tokens += actual.total - worst.total
        self.usd += self.cost(model, actual) - self.cost(model, worst)


@dataclass(frozen=True, slots=True)
class ProviderAnswer:
    tool_input: Any | None  # the submit_signals input, unvalidated; None: no such tool call
    raw: str  # the whole answer as JSON text, for the snapshot
    usage: Usage
    model: str
    provider: str


class ProviderError(DiscardOutput):
    """The provider produced no answer (the instance abstains with this reason)."""


class SpendLimitReached(ProviderError):
    """A 429 that says the account's spend limit is reached: retrying cannot help."""


@dataclass(frozen=True, slots=True)
class SharedPrompt:
    """The system prompt every instance shares, in two parts, most static first (prompt
    caching is by prefix: tools -> system -> messages)."""

    static: str  # the same for every instance and every cycle: the rules
    cycle: str  # the same for every instance this cycle: the market snapshot

    @property
    def text(self) -> str:
        return self.static + self.cycle

    def estimate_tokens(self) -> int:
        """The cacheable prefix (the tool definition and both parts), estimated locally."""
        return (
            estimate_tokens(json.dumps(SIGNAL_TOOL))
            + estimate_tokens(self.static)
            + estimate_tokens(self.cycle)
        )


class Provider(Protocol):
    name: str
    prompt_caching: bool  # its requests carry cache breakpoints

    async def answer(
        self, instance: InstanceConfig, shared: SharedPrompt, prompt: str, context: MarketContext
    ) -> ProviderAnswer: ...

    async def close(self) -> None: ...


_SPEND = re.compile(r"spend(ing)? limit|usage limit|credit balance|billing", re.IGNORECASE)


class SpendLimitGuard(Middleware):
    """Stop the SDK's retry loop on a spend-limit 429 (other 429/529/5xx are retried)."""

    async def handle_async(
        self, request: APIRequest, call_next: AsyncCallNext
    ) -> AsyncAPIResponse[Any]:
        response = await call_next(request)
        if response.status_code == 429:
            body = (await response.http_response.aread()).decode(errors="replace")
            if _SPEND.search(body):
                raise SpendLimitReached(f"spend limit reached (429): {body[:300]}")
        return response


class AnthropicProvider:
    """One shared AsyncAnthropic client for the whole swarm."""

    name = "anthropic"

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None = None,
        max_retries: int = 3,
        timeout_s: float = 30.0,
        prompt_caching: bool = True,
    ) -> None:
        self.prompt_caching = prompt_caching  # False: no cache_control (benchmarks compare)
        self.client = AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout_s,
            middleware=[SpendLimitGuard()],
        )

    def request(
        self, instance: InstanceConfig, shared: SharedPrompt, prompt: str
    ) -> dict[str, Any]:
        """The Messages request of one instance, laid out for prompt caching (prefix order:
        tools -> system -> messages). Two breakpoints (the API allows 4), default 5-minute TTL
        (a read refreshes it, and a cycle comes every minute or so):
        1. tools + the static rules: the same for every instance and every cycle;
        2. + this cycle's market snapshot: the same for every instance this cycle.
        The instance's own prompt comes last, uncached. A prefix shorter than the model's
        minimum cacheable length is simply not cached (no error, no surcharge)."""
        ephemeral = {"cache_control": {"type": "ephemeral"}} if self.prompt_caching else {}
        return {
            "model": instance.model,
            "max_tokens": instance.max_tokens,
            "tools": [SIGNAL_TOOL],
            "system": [
                {"type": "text", "text": shared.static, **ephemeral},
                {"type": "text", "text": shared.cycle, **ephemeral},
            ],
            "messages": [{"role": "user", "content": prompt}],
            "tool_choice": {"type": "tool", "name": "submit_signals"},
        }

    async def answer(
        self, instance: InstanceConfig, shared: SharedPrompt, prompt: str, context: MarketContext
    ) -> ProviderAnswer:
        create: Any = self.client.messages.create  # the request is plain JSON-shaped dicts
        msg = await create(
            **self.request(instance, shared, prompt),
            metadata={"user_id": instance.id},
            timeout=instance.timeout_s,
        )
        tool_input = None
        for block in msg.content:
            if (
                getattr(block, "type", "") == "tool_use"
                and getattr(block, "name", "") == "submit_signals"
            ):
                tool_input = getattr(block, "input", None)
                break
        usage = usage_from(msg.usage)
        raw = json.dumps([b.model_dump(mode="json") for b in msg.content], default=str)
        return ProviderAnswer(tool_input, raw, usage, msg.model, self.name)

    async def close(self) -> None:
        await self.client.close()


class OfflineProvider:
    """Deterministic evaluators that carry out each template's intent with no network."""

    name = "offline"
    prompt_caching = False

    async def answer(
        self, instance: InstanceConfig, shared: SharedPrompt, prompt: str, context: MarketContext
    ) -> ProviderAnswer:
        evaluator = {"vol_sniper.md": _vol_sniper, "trend_follower.md": _trend_follower}.get(
            instance.template
        )
        if evaluator is None:
            raise ProviderError(f"no offline evaluator for template {instance.template}")
        signals = evaluator(instance.parameters, context)
        tool_input = {"signals": signals}
        return ProviderAnswer(tool_input, json.dumps(tool_input), Usage(), "offline", self.name)

    async def close(self) -> None:
        return None


def _cents(x: float) -> float:
    return math.floor(x * 100 + 0.5) / 100


def _vol_sniper(p: dict[str, Any], ctx: MarketContext) -> list[dict[str, Any]]:
    out = []
    lo, hi = float(p["min_abs_delta"]), float(p["max_delta_exposure"])
    for symbol in p["symbols"]:
        s = ctx.symbol(symbol)
        if s is None or s.iv_rank * 100 < float(p["min_iv_rank"]):
            continue
        if any(o.symbol == symbol and o.position < 0 for o in ctx.options):
            continue  # already short premium here: one position per underlying
        candidates = [
            o
            for o in ctx.options
            if o.symbol == symbol
            and o.right == "P"
            and lo <= abs(o.delta) <= hi
            and p["min_dte"] <= o.dte <= p["max_dte"]
            and o.bid > 0
        ]
        if not candidates:
            continue
        target = 0.5 * (lo + hi)
        o = min(candidates, key=lambda c: (abs(abs(c.delta) - target), c.dte, c.strike))
        out.append(
            {
                "symbol": symbol,
                "action": "SELL",
                "sec_type": "OPT",
                "expiry": o.expiry,
                "strike": o.strike,
                "right": "P",
                "order_type": "LMT",
                "limit_price": _cents(max(o.mid, o.bid)),
                "quantity": int(p["max_contracts"]),
                "confidence": round(min(0.95, 0.6 + (s.iv_rank * 100 - p["min_iv_rank"]) / 50), 3),
                "win_probability": round(1 - abs(o.delta), 3),
                "payoff_ratio": 0.4,
                "rationale": (
                    f"IV rank {s.iv_rank * 100:.0f} >= {p['min_iv_rank']}: sell the "
                    f"{o.expiry} {o.strike:g} put (delta {o.delta:.2f}, {o.dte} DTE) "
                    f"at {max(o.mid, o.bid):.2f}."
                ),
            }
        )
    return out


def _trend_follower(p: dict[str, Any], ctx: MarketContext) -> list[dict[str, Any]]:
    out = []
    for symbol in p["symbols"]:
        s = ctx.symbol(symbol)
        if s is None or s.sma20 <= 0:
            continue
        trend = (s.last / s.sma20 - 1) * 100
        if s.position > 0 and s.last < s.sma20:
            out.append(
                {
                    "symbol": symbol,
                    "action": "SELL",
                    "sec_type": "STK",
                    "order_type": "LMT",
                    "limit_price": _cents(s.bid),
                    "quantity": int(s.position),
                    "confidence": 0.7,
                    "win_probability": 0.5,
                    "payoff_ratio": 1.0,
                    "rationale": f"Closed below its 20-day average ({trend:.1f}%): exit.",
                }
            )
        elif (
            s.position == 0 and trend >= p["min_trend_pct"] and s.iv_rank * 100 <= p["max_iv_rank"]
        ):
            out.append(
                {
                    "symbol": symbol,
                    "action": "BUY",
                    "sec_type": "STK",
                    "order_type": "LMT",
                    "limit_price": _cents(s.ask),
                    "quantity": int(p["max_shares"]),
                    "confidence": round(min(0.9, 0.6 + trend / 20), 3),
                    "win_probability": 0.55,
                    "payoff_ratio": 1.5,
                    "rationale": (
                        f"{trend:.1f}% above the 20-day average with IV rank "
                        f"{s.iv_rank * 100:.0f}: ride the trend."
                    ),
                }
            )
    return out
