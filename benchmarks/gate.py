"""Execution gate throughput: full pre-trade evaluations per second on one core.

python -m benchmarks.gate [--n N]

Each evaluation runs every check (18) against a context with 10 holdings, alternating
accepted and refused requests, as the commander would present them. Target: >= 20,000/s.
"""

from __future__ import annotations

import argparse
import time
import tomllib
from pathlib import Path

from data_lake import Contract
from runtime.config import parse_config
from skills.execution_gate import (
    CHECKS,
    GateContext,
    GateState,
    Holding,
    OrderRequest,
    Quote,
    evaluate,
)

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=200_000)
    args = p.parse_args()
    limits = parse_config(tomllib.loads((ROOT / "config/paper.toml").read_text())).risk
    holdings = {
        s: Holding(contract=Contract.stock(s), quantity=20, mark=100.0)
        for s in ("AMD", "TSLA", "AAPL", "MSFT", "SPY", "JPM", "BAC", "GS", "QQQ", "META")
    }
    ctx = GateContext(
        breaker="ACTIVE",
        connected=True,
        watchdog_alive=True,
        market_open=True,
        quote=Quote(99.95, 100.05, 0.2),
        holdings=holdings,
        daily_pnl=-10.0,
        now=1e6,
    )
    requests = [
        OrderRequest(
            contract=Contract.stock("NVDA"),
            action="BUY",
            quantity=10,
            order_type="LMT",
            limit_price=100.0,
            cycle_id=1,
        ),
        OrderRequest(
            contract=Contract.stock("NVDA"),
            action="BUY",
            quantity=10,
            order_type="LMT",
            limit_price=130.0,
            cycle_id=1,
        ),  # collar refusal
        OrderRequest(
            contract=Contract.stock("AMD"),
            action="SELL",
            quantity=5,
            order_type="LMT",
            limit_price=99.9,
            cycle_id=1,
        ),  # reducing
        OrderRequest(
            contract=Contract.stock("GME"),
            action="BUY",
            quantity=1000,
            order_type="MKT",
            cycle_id=1,
        ),  # several refusals
    ]
    state = GateState()
    refused = 0
    t0 = time.perf_counter()
    for i in range(args.n):
        if evaluate(requests[i & 3], ctx, state, limits, "20261120"):
            refused += 1
    elapsed = time.perf_counter() - t0
    rate = args.n / elapsed
    print(
        f"{args.n:,} evaluations in {elapsed:.2f}s: {rate:,.0f} evaluations/s "
        f"({rate * len(CHECKS):,.0f} individual checks/s, {len(CHECKS)} checks each); "
        f"{refused:,} refused. Target >= 20,000 evaluations/s."
    )


if __name__ == "__main__":
    main()
