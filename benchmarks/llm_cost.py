"""LLM cost per cycle: swarms of 10 and 50 instances against the local Anthropic server.

python -m benchmarks.llm_cost [--instances 10 50] [--cycles 3] [--latency S] [--config PATH]

The real SDK talks to tests/anthropic_server.py on 127.0.0.1, which honours cache_control
as the API does and reports usage from each request (tokens estimated at 4 characters a
token). Every cycle brings a fresh market snapshot (9 symbols, 8 puts each), and each
instance answers what the offline evaluator would propose, so output tokens are realistic.
Three ways per swarm size: without prompt caching; with caching but every instance fired
at once (each misses the cycle's new prefix and writes it); and as the daemon runs it,
with caching and the per-model warm-up. Prints tokens and dollars per cycle at the
configured prices (swarm.prices) and the cached/uncached cost ratio; the wall time per
cycle shows what the warm-up costs (one call's latency).
Target: cached <= 40% of uncached for 50 instances. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.config import load_config
from skills.swarm_core import consult_swarm, load_instances, render_template, shared_prompt
from skills.swarm_models import InstanceConfig, MarketContext, OptionView, SymbolView
from skills.swarm_providers import (
    AnthropicProvider,
    OfflineProvider,
    SwarmBudget,
    Usage,
    cost_usd,
    price_of,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the API server lives with the tests
from anthropic_server import AnthropicStub, Reply  # noqa: E402

IV_RANK = {  # rich premium in some names, calm trends in others: the swarm has work to do
    "NVDA": 0.91,
    "AMD": 0.84,
    "TSLA": 0.62,
    "JPM": 0.93,
    "BAC": 0.55,
    "GS": 0.88,
    "SPY": 0.28,
    "AAPL": 0.35,
    "MSFT": 0.42,
}
SYMBOLS = tuple(IV_RANK)
MODES = (
    ("uncached", False, False),
    ("cached, all at once", True, False),
    ("cached + warm-up", True, True),
)


def market(cycle: int) -> MarketContext:
    """Cycle `cycle`'s market: every quote moves, so the snapshot differs each cycle."""
    drift = 0.37 * cycle
    symbols = tuple(
        SymbolView(
            s,
            100.0 + drift + i,
            99.98 + drift + i,
            100.02 + drift + i,
            0.3 + 0.4 * IV_RANK[s],
            IV_RANK[s],
            97.0 + i,
        )
        for i, s in enumerate(SYMBOLS)
    )
    options = tuple(
        OptionView(
            s,
            "20261218",
            95.0 + i - 2.5 * k,
            "P",
            round(2.0 - 0.2 * k + 0.01 * cycle, 2),
            round(2.2 - 0.2 * k + 0.01 * cycle, 2),
            round(-0.32 + 0.03 * k, 2),
            27,
        )
        for i, s in enumerate(SYMBOLS)
        for k in range(8)
    )
    return MarketContext(f"2026-11-20T15:{cycle:02d}:00Z", symbols, options)


def write_instances(n: int, directory: Path) -> None:
    shipped = sorted((ROOT / "swarm_intelligence/active_instances").glob("*.json"))
    bases = [json.loads(p.read_text()) for p in shipped]
    for i in range(n):
        base = bases[i % len(bases)]
        (directory / f"bench_{i:03d}.json").write_text(json.dumps({**base, "id": f"bench_{i:03d}"}))


@dataclass
class CycleFigures:
    requests: int
    usage: Usage
    usd: float
    wall_s: float


async def script_answers(
    stub: Any,
    instances: Sequence[InstanceConfig],
    templates: Mapping[str, Any],
    context: MarketContext,
    limits: Mapping[str, Any],
) -> None:
    """Each instance answers what the offline evaluator proposes for this market."""
    offline = OfflineProvider()
    shared = shared_prompt(context)
    for inst in instances:
        prompt = render_template(templates[inst.template], inst, context, limits)
        answer = await offline.answer(inst, shared, prompt, context)
        signals = answer.tool_input["signals"] if isinstance(answer.tool_input, dict) else []
        stub.script(inst.id, Reply(body=stub.tool_answer(signals)))


async def run_mode(
    n: int,
    cycles: int,
    caching: bool,
    warmup: bool,
    latency: float,
    limits: Mapping[str, Any],
    prices: Mapping[str, tuple[float, float]],
    inst_dir: Path,
) -> list[CycleFigures]:
    instances, templates = load_instances(inst_dir, ROOT / "swarm_intelligence/templates", limits)
    stub = AnthropicStub(latency_s=latency).start()  # a fresh server: a cold cache
    provider = AnthropicProvider(
        "sk-bench", stub.base_url, max_retries=0, timeout_s=30, prompt_caching=caching
    )
    out: list[CycleFigures] = []
    try:
        for c in range(cycles):
            context = market(c)
            await script_answers(stub, instances, templates, context, limits)
            before = len(stub.requests)
            t0 = time.perf_counter()
            result = await consult_swarm(
                instances,
                templates,
                context,
                provider,
                limits=limits,
                max_concurrency=n,
                deadline_s=60,
                budget=SwarmBudget(100_000_000, 1000.0, 10_000.0, prices=prices),
                cache_warmup=warmup,
            )
            wall = time.perf_counter() - t0
            bad = [o for o in result.outcomes if o.status != "ok"]
            if bad:
                raise SystemExit(f"{len(bad)} instances failed: {bad[0].abstain}")
            usage = sum((o.usage for o in result.outcomes), Usage())
            usd = sum(cost_usd(o.model, o.usage, prices) for o in result.outcomes)
            out.append(CycleFigures(len(stub.requests) - before, usage, usd, wall))
    finally:
        await provider.close()
        stub.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--instances", type=int, nargs="+", default=[10, 50])
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--latency", type=float, default=0.2, help="simulated seconds per call")
    p.add_argument("--config", default=str(ROOT / "config/paper.toml"))
    args = p.parse_args()
    cfg = load_config(args.config)
    limits = cfg.risk.model_dump()
    prices = cfg.swarm.prices
    models = sorted(
        {
            json.loads(f.read_text())["model"]
            for f in (ROOT / "swarm_intelligence/active_instances").glob("*.json")
        }
    )
    print(
        "LLM cost per cycle through the real SDK against the local API server; "
        f"{args.cycles} cycles per run, a new market snapshot each cycle, "
        f"{args.latency * 1000:.0f} ms per call"
    )
    for m in models:
        pin, pout = price_of(m, prices)
        print(
            f"prices ({args.config}): {m} ${pin:g} in / ${pout:g} out per MTok; "
            "cache write 1.25x in, cache read 0.1x in"
        )
    header = (
        f"{'instances':>9} {'mode':<20} {'req':>4} {'input':>8} {'cache wr':>9} "
        f"{'cache rd':>9} {'output':>7} {'$/cycle':>9} {'wall s':>6}"
    )
    summary: list[str] = []
    for n in args.instances:
        tmp = Path(tempfile.mkdtemp(prefix="llm-cost-"))
        try:
            write_instances(n, tmp)
            print()
            print(header)
            means: dict[str, float] = {}
            for label, caching, warmup in MODES:
                figures = asyncio.run(
                    run_mode(n, args.cycles, caching, warmup, args.latency, limits, prices, tmp)
                )
                for f in figures:
                    u = f.usage
                    print(
                        f"{n:>9} {label:<20} {f.requests:>4} {u.input_tokens:>8} "
                        f"{u.cache_write_tokens:>9} {u.cache_read_tokens:>9} "
                        f"{u.output_tokens:>7} {f.usd:>9.4f} {f.wall_s:>6.2f}"
                    )
                means[label] = statistics.mean(f.usd for f in figures)
            base = means["uncached"]
            for label, _, _ in MODES[1:]:
                summary.append(
                    f"{n:>3} instances, {label}: ${means[label]:.4f} vs ${base:.4f} uncached per "
                    f"cycle = {means[label] / base:.1%} of uncached"
                )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("mean dollars per cycle, cached / uncached (target for 50 instances: <= 40%):")
    for line in summary:
        print("  " + line)


if __name__ == "__main__":
    main()
