"""LLM mode of the commander: an Anthropic tool-use loop, bounded in turns and dollars.

The model sees the portfolio and the swarm's signals through tools and can trade only through
`place_guarded_order`, which is the same execution gate as rules mode. Every tool input is
validated; an invalid one is answered with an error result, never executed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Literal

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from data_lake import record_decisions, record_llm_calls, redact
from skills.execution_gate import GateVerdict, Holding
from skills.math_core import MathInputError, calculate_greeks, kelly_criterion
from skills.swarm_core import SwarmResult
from skills.swarm_models import MarketContext
from skills.swarm_providers import Usage, cost_usd, usage_from

from .config import Config
from .decision import Actor, Decision, decision_row

__all__ = [
    "TOOLS",
    "LlmCommander",
    "answer_tool",
    "invalid_input",
    "order_decision",
    "render_commander_prompt",
    "verdict_result",
]

log = logging.getLogger("runtime.llm_commander")
PROMPT = Path(__file__).resolve().parents[1] / "prompts" / "commander_system.md"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class KellyInput(_Strict):
    win_probability: float = Field(ge=0, le=1)
    payoff_ratio: float = Field(gt=0)
    price: float = Field(gt=0)
    multiplier: float = Field(1.0, gt=0)


class GreeksInput(_Strict):
    spot: float = Field(gt=0)
    strike: float = Field(gt=0)
    days: float = Field(ge=0)
    vol: float = Field(gt=0, le=5)
    right: Literal["C", "P"]


class OrderInput(_Strict):
    symbol: str
    sec_type: Literal["STK", "OPT"]
    action: Literal["BUY", "SELL"]
    quantity: int = Field(ge=1)
    order_type: Literal["LMT", "MKT"]
    limit_price: float | None = Field(None, gt=0)
    expiry: str = ""
    strike: float = 0.0
    right: Literal["", "C", "P"] = ""
    reason: str = Field(max_length=2000)


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    return schema


TOOLS: list[dict[str, Any]] = [
    {
        "name": "get_portfolio",
        "description": "Account values and positions.",
        "input_schema": {"type": "object", "properties": {}, "additionalProperties": False},
    },
    {
        "name": "get_swarm_signals",
        "description": "The swarm's merged, validated signals.",
        "input_schema": {"type": "object", "properties": {}, "additionalProperties": False},
    },
    {
        "name": "kelly_size",
        "description": "Fractional Kelly size for this account.",
        "input_schema": _schema(KellyInput),
    },
    {
        "name": "option_greeks",
        "description": "Black-Scholes price and Greeks.",
        "input_schema": _schema(GreeksInput),
    },
    {
        "name": "place_guarded_order",
        "description": "Send an order through the execution gate; returns its verdict.",
        "input_schema": _schema(OrderInput),
    },
]


def render_commander_prompt(commander: Actor | Config) -> str:
    """The commander's system prompt for this config (its limits and settings)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    cfg = commander if isinstance(commander, Config) else commander.cfg
    return env.from_string(PROMPT.read_text(encoding="utf-8")).render(
        mode=cfg.mode, risk=cfg.risk, commander=cfg.commander, max_turns=cfg.commander.max_turns
    )


def answer_tool(
    name: str,
    raw: Any,
    cfg: Config,
    merged: list[dict[str, Any]],
    holdings: dict[str, Holding],
    values: dict[str, float],
) -> tuple[Any, bool] | None:
    """Answer a tool that reads or computes (every tool but `place_guarded_order`, for which
    it returns None): (result, is_error). Pure: `replay` answers recorded calls with it.
    `merged` holds the swarm's merged signals as dicts (without their per-instance signals)."""
    try:
        if name == "get_portfolio":
            return {
                "account": values,
                "positions": {k: dataclasses.asdict(h) for k, h in holdings.items()},
            }, False
        if name == "get_swarm_signals":
            return merged, False
        if name == "kelly_size":
            k = KellyInput.model_validate(raw)
            c = cfg.commander
            f = kelly_criterion(k.win_probability, k.payoff_ratio, c.kelly_fraction, c.kelly_cap)
            units = math.floor(f * values.get("NetLiquidation", 0.0) / (k.price * k.multiplier))
            return {"fraction": f, "units": units}, False
        if name == "option_greeks":
            g = GreeksInput.model_validate(raw)
            return dataclasses.asdict(
                calculate_greeks(g.spot, g.strike, g.days / 365.0, g.vol, 0.045, 0.0, g.right)
            ), False
        if name == "place_guarded_order":
            return None
        return {"error": f"unknown tool {name!r}"}, True
    except ValidationError as exc:
        return invalid_input(exc)
    except MathInputError as exc:
        return {"error": str(exc)}, True


def invalid_input(exc: ValidationError) -> tuple[Any, bool]:
    """The tool result for an input that failed validation (never executed)."""
    return {"error": "invalid input", "details": [e["msg"] for e in exc.errors()]}, True


def order_decision(raw: Any) -> Decision:
    """The decision a `place_guarded_order` call asks for (ValidationError if invalid)."""
    o = OrderInput.model_validate(raw)
    return Decision(
        symbol=o.symbol,
        action=o.action,
        sec_type=o.sec_type,
        order_type=o.order_type,
        quantity=float(o.quantity),
        accepted=True,
        reason=f"llm: {o.reason}",
        sources=("commander_llm",),
        expiry=o.expiry,
        strike=o.strike,
        right=o.right,
        limit_price=o.limit_price,
    )


def verdict_result(verdict: GateVerdict) -> tuple[Any, bool]:
    """The tool result the model sees for a gate verdict."""
    return {
        "accepted": verdict.accepted,
        "order_ref": verdict.order_ref,
        "reasons": list(verdict.reasons),
    }, not verdict.accepted


class LlmCommander:
    def __init__(self, commander: Actor) -> None:
        self.c = commander
        if commander.llm_client is None:
            raise RuntimeError(
                "commander mode 'llm' needs an Anthropic client (provider "
                "'anthropic' and ANTHROPIC_API_KEY)"
            )
        self.client = commander.llm_client
        self.turns: list[dict[str, Any]] = []  # each call's model and usage (for replay)

    async def run(
        self,
        cycle_id: int,
        swarm: SwarmResult,
        context: MarketContext,
        holdings: dict[str, Holding],
        values: dict[str, float],
    ) -> tuple[list[Decision], list[GateVerdict], list[dict[str, Any]]]:

        cfg = self.c.cfg
        system = render_commander_prompt(self.c)
        messages: list[dict[str, Any]] = [
            {
                "role": "user",
                "content": (
                    f"Cycle {cycle_id} at {context.as_of}. Run Sense -> Think -> Decide -> Act."
                ),
            }
        ]
        decisions: list[Decision] = []
        verdicts: list[GateVerdict] = []
        spent = 0.0
        for turn in range(cfg.commander.max_turns):
            if spent >= cfg.swarm.max_usd_per_cycle:
                log.warning("cycle %s: commander budget spent after %d turns", cycle_id, turn)
                break
            t0 = time.perf_counter()
            create: Any = self.client.messages.create
            msg = await create(
                model=cfg.commander.model,
                max_tokens=1024,
                system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                messages=messages,
                tools=TOOLS,
                metadata={"user_id": "commander"},
                timeout=cfg.swarm.call_timeout_s,
            )
            usage = usage_from(msg.usage)
            self.turns.append({"model": cfg.commander.model, "usage": dataclasses.asdict(usage)})
            cost = cost_usd(cfg.commander.model, usage, cfg.swarm.prices)
            spent += cost
            self._record(cycle_id, usage, cost, (time.perf_counter() - t0) * 1000, msg.stop_reason)
            content = [b.model_dump(mode="json") for b in msg.content]
            messages.append({"role": "assistant", "content": content})
            calls = [b for b in content if b.get("type") == "tool_use"]
            if msg.stop_reason != "tool_use" or not calls:
                break
            results = []
            for call in calls:
                result, is_error = await self._tool(
                    call["name"],
                    call.get("input"),
                    cycle_id,
                    swarm,
                    holdings,
                    values,
                    decisions,
                    verdicts,
                )
                results.append(
                    {
                        "type": "tool_result",
                        "tool_use_id": call["id"],
                        "content": json.dumps(result, default=str),
                        "is_error": is_error,
                    }
                )
            messages.append({"role": "user", "content": results})
        return decisions, verdicts, redact(messages)

    async def _tool(
        self,
        name: str,
        raw: Any,
        cycle_id: int,
        swarm: SwarmResult,
        holdings: dict[str, Holding],
        values: dict[str, float],
        decisions: list[Decision],
        verdicts: list[GateVerdict],
    ) -> tuple[Any, bool]:
        merged = [
            {k: v for k, v in dataclasses.asdict(m).items() if k != "signals"} for m in swarm.merged
        ]
        answer = answer_tool(name, raw, self.c.cfg, merged, holdings, values)
        if answer is not None:
            return answer
        try:
            d = order_decision(raw)
        except ValidationError as exc:
            return invalid_input(exc)
        [decision_id] = await self.c.store.run(
            record_decisions,
            cycle_id,
            [decision_row(d)],
            timeout=self.c.cfg.data.write_timeout_s,
        )
        decisions.append(d)
        verdict = await self.c.act(d, cycle_id, decision_id)
        verdicts.append(verdict)
        return verdict_result(verdict)

    def _record(
        self, cycle_id: int, usage: Usage, cost: float, latency_ms: float, stop: str | None
    ) -> None:
        self.c.store.post(
            record_llm_calls,
            [
                {
                    "cycle_id": cycle_id,
                    "instance_id": "commander",
                    "provider": "anthropic",
                    "model": self.c.cfg.commander.model,
                    "status": "ok",
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_read_tokens": usage.cache_read_tokens,
                    "cache_write_tokens": usage.cache_write_tokens,
                    "cost_usd": cost,
                    "latency_ms": latency_ms,
                    "error": stop,
                }
            ],
        )
