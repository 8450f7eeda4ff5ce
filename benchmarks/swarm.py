"""Swarm concurrency: 50 instances against the local Anthropic server with 500 ms latency.

python -m benchmarks.swarm [--instances N] [--latency S]

Prints the swarm's wall time as a multiple of one call's latency, beside the same ratio for N
bare SDK calls fired at once in the same run (the floor this machine allows), and the peak RSS.
Target: the swarm within 10% of the bare-SDK ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from anthropic import AsyncAnthropic

from runtime.config import parse_config
from skills.swarm_core import consult_swarm, load_instances
from skills.swarm_models import MarketContext, OptionView, SymbolView
from skills.swarm_providers import AnthropicProvider, SwarmBudget

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the scripted API server lives with the tests
from anthropic_server import AnthropicStub  # noqa: E402

CONTEXT = MarketContext(
    "2026-11-20T15:00:00Z",
    tuple(
        SymbolView(s, 100.0, 99.98, 100.02, 0.5, 0.9, 97.0)
        for s in ("NVDA", "AMD", "TSLA", "JPM", "BAC", "GS", "SPY", "AAPL", "MSFT")
    ),
    (OptionView("NVDA", "20261218", 95.0, "P", 1.9, 2.1, -0.22, 27),),
)


def _instances(n: int, directory: Path) -> None:
    base = json.loads(
        (ROOT / "swarm_intelligence/active_instances/tech_aggressive.json").read_text()
    )
    for i in range(n):
        (directory / f"bench_{i:03d}.json").write_text(json.dumps({**base, "id": f"bench_{i:03d}"}))


async def _bare(url: str, n: int) -> tuple[float, float]:
    client = AsyncAnthropic(api_key="sk-bench", base_url=url, max_retries=0)
    kwargs: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "hello"}],
    }
    t0 = time.perf_counter()
    await client.messages.create(**kwargs)
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    await asyncio.gather(*(client.messages.create(**kwargs) for _ in range(n)))
    wall = time.perf_counter() - t0
    await client.close()
    return single, wall


async def _swarm(url: str, n: int, inst_dir: Path, limits: dict[str, Any]) -> tuple[float, int]:
    instances, templates = load_instances(inst_dir, ROOT / "swarm_intelligence/templates", limits)
    provider = AnthropicProvider("sk-bench", url, max_retries=0, timeout_s=30)
    budget = SwarmBudget(10_000_000, 1000.0, 1000.0)
    t0 = time.perf_counter()
    result = await consult_swarm(
        instances,
        templates,
        CONTEXT,
        provider,
        limits=limits,
        max_concurrency=n,
        deadline_s=60,
        budget=budget,
    )
    wall = time.perf_counter() - t0
    await provider.close()
    return wall, sum(1 for o in result.outcomes if o.status == "ok")


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--instances", type=int, default=50)
    p.add_argument("--latency", type=float, default=0.5)
    args = p.parse_args()
    limits = parse_config(tomllib.loads((ROOT / "config/paper.toml").read_text())).risk.model_dump()
    stub = AnthropicStub(latency_s=args.latency).start()
    tmp = Path(tempfile.mkdtemp(prefix="swarm-bench-"))
    try:
        _instances(args.instances, tmp)
        single, bare = asyncio.run(_bare(stub.base_url, args.instances))
        swarm, ok = asyncio.run(_swarm(stub.base_url, args.instances, tmp, limits))
    finally:
        stub.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"one call: {single * 1000:.0f} ms (simulated latency {args.latency * 1000:.0f} ms)")
    print(f"{args.instances} bare SDK calls at once: {bare:.2f} s = {bare / single:.2f}x one call")
    print(
        f"swarm of {args.instances} instances ({ok} answered): {swarm:.2f} s = "
        f"{swarm / single:.2f}x one call; {(swarm / bare - 1) * 100:+.1f}% vs bare "
        "(target within 10%)"
    )
    print(f"peak RSS: {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
