"""Order round trip through the paper gateway, and its highest sustained order rate.

python -m benchmarks.gateway [--orders N] [--rate R] [--burst M]

1. Round trip: ib_insync places market orders at R per second (under IB's 50 msg/s pacing,
   which the gateway enforces) and times placeOrder -> Filled status seen by the client.
2. Throughput: pacing switched off on both sides, M orders fired at once; orders per second
   until the client has seen every fill.
The gateway runs as its own process, as IB Gateway would.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from ib_insync import IB, MarketOrder, Stock, Trade

from paper_gateway.process import gateway_process


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _round_trips(port: int, n: int, rate: float) -> tuple[list[float], float]:
    ib = IB()
    t0 = time.perf_counter()
    await ib.connectAsync("127.0.0.1", port, clientId=1, timeout=10)
    connect_s = time.perf_counter() - t0
    contract = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(contract)
    # ib_insync throttles itself to 45 requests per rolling second, counting the ~8 connect
    # requests: start the timed run once they have left its window, or orders 37..39 are
    # queued by the client itself and the figure measures ib_insync, not the gateway.
    await asyncio.sleep(1.1)
    rtts: list[float] = []
    pending: list[asyncio.Future[None]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        sent = time.perf_counter()
        done: asyncio.Future[None] = loop.create_future()

        def on_fill(trade: Trade, sent: float = sent, done: asyncio.Future[None] = done) -> None:
            if trade.orderStatus.status == "Filled" and not done.done():
                rtts.append(time.perf_counter() - sent)
                done.set_result(None)

        trade = ib.placeOrder(contract, MarketOrder("BUY" if i % 2 == 0 else "SELL", 1))
        trade.statusEvent += on_fill
        pending.append(done)
    await asyncio.wait_for(asyncio.gather(*pending), 30)
    ib.disconnect()
    return rtts, connect_s


async def _throughput(port: int, n: int) -> float:
    ib = IB()
    ib.client.MaxRequests = 0
    await ib.connectAsync("127.0.0.1", port, clientId=2, timeout=10)
    contract = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(contract)
    loop = asyncio.get_running_loop()
    remaining = n
    all_done: asyncio.Future[None] = loop.create_future()

    def on_status(trade: Trade) -> None:
        nonlocal remaining
        if trade.orderStatus.status == "Filled":
            remaining -= 1
            if remaining == 0 and not all_done.done():
                all_done.set_result(None)

    ib.orderStatusEvent += on_status
    t0 = time.perf_counter()
    for i in range(n):
        ib.placeOrder(contract, MarketOrder("BUY" if i % 2 == 0 else "SELL", 1))
    await asyncio.wait_for(all_done, 120)
    elapsed = time.perf_counter() - t0
    ib.disconnect()
    return n / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=400)
    p.add_argument("--rate", type=float, default=40.0)
    p.add_argument("--burst", type=int, default=5000)
    args = p.parse_args()
    with gateway_process("--tick-interval", "0") as gw:
        rtts, connect_s = asyncio.run(_round_trips(gw["port"], args.orders, args.rate))
    ms = [r * 1000 for r in rtts]
    print(f"connect (handshake + full sync): {connect_s * 1000:.1f} ms")
    print(f"round trip place -> Filled, {len(ms)} MKT orders at {args.rate:g}/s:")
    print(
        f"  p50 {statistics.median(ms):.2f} ms   p99 {_pct(ms, 0.99):.2f} ms   "
        f"max {max(ms):.2f} ms   (target p50 < 5 ms, p99 < 20 ms)"
    )
    with gateway_process("--tick-interval", "0", "--pacing", "0") as gw:
        rate = asyncio.run(_throughput(gw["port"], args.burst))
    print(
        f"sustained rate, pacing off, {args.burst} orders fired at once: "
        f"{rate:,.0f} orders/s (placed -> every Filled seen)"
    )


if __name__ == "__main__":
    main()
