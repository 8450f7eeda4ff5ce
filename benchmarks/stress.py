"""Stress: orders at twice the configured peak order rate, messages at twice the peak message rate.

python -m benchmarks.stress [--seconds S] [--order-factor F] [--msg-factor F]

The daemon's own pieces against the paper gateway (its default pacing: 50 messages a second
per client, error 100 above it): the data lake's single writer, the broker session
(`runtime.broker.Broker`, ib_insync underneath), the gate context and the execution gate
(`place_order_with_guard`), the only path to placeOrder. Every `cycle_s` a cycle proposes
F x max_orders_per_second x cycle_s resting limit orders through the gate and cancels the
oldest working one; beside it, filler API messages go out at F x the gateway's pacing limit,
and a heartbeat task beats every heartbeat_interval_s on the same event loop, as the main
loop's does.

Checked and printed: the gate's order throttles hold (never more sent in any second or
minute than configured), every refused order is recorded in the database with its reasons,
the gateway never sends error 100, cancels go first (a cancel's time to Cancelled compared
with the outgoing message queue it found), and the cycle and heartbeat stay on time.
Figures: accepted / refused / sent to the gateway per second, heartbeat max age, cycle start
lateness, the client's outgoing message backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import itertools
import json
import logging
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from data_lake import Store, open_readonly
from paper_gateway import AdminClient
from paper_gateway.process import gateway_process
from runtime.broker import Broker
from runtime.config import Secrets, load_config
from runtime.demo import write_config
from runtime.gate_context import build_gate_context, inputs_unavailable
from runtime.heartbeat import SystemClock, write_heartbeat
from skills.execution_gate import GateState, OrderRequest, place_order_with_guard

PACING = 50  # the paper gateway's default, IB's documented limit: messages/s per client
SYMBOLS = ("NVDA", "AMD", "TSLA", "AAPL", "MSFT", "SPY", "JPM", "BAC", "GS")
RESULTS = Path(__file__).resolve().parent / "results"


class Timed:
    """The broker as the gate's Submitter, noting when each order is handed to the client."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.sent: list[float] = []

    def submit(self, order_ref: str, request: OrderRequest) -> int:
        handed = time.monotonic()  # the moment it is handed to the client, as the gate counts
        order_id = self.broker.submit(order_ref, request)
        self.sent.append(handed)
        return order_id


def _arrivals(admin_port: int, stop: threading.Event, seen: dict[int, float]) -> None:
    """Note when each order first shows at the gateway (its ledger, polled)."""
    with AdminClient(admin_port, timeout=30) as admin:
        while not stop.wait(0.05):
            now = time.monotonic()
            for o in admin.call("ledger")["orders"]:
                seen.setdefault(o["order_id"], now)


def _max_in(times: list[float], window: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while t - times[j] >= window:
            j += 1
        best = max(best, i - j + 1)
    return best


class Stress:
    def __init__(self, args: argparse.Namespace, work: Path, port: int) -> None:
        self.args = args
        self.work = work
        cfg_path = write_config(
            work / "stress.toml",
            {
                "port": port,
                "dir": (work / "data").as_posix(),
                "max_open_positions": 100,
                "max_gross_exposure": 1e9,
                "heartbeat_interval_s": 0.2,
            },
        )
        self.cfg = load_config(cfg_path)
        self.risk = self.cfg.risk
        self.clock = SystemClock()
        self.verdicts: list[tuple[float, bool, str | None, tuple[str, ...]]] = []
        self.errors: collections.Counter[int] = collections.Counter()
        self.beats: list[float] = []
        self.cycle_starts: list[tuple[float, float]] = []  # (due, started)
        self.cancels: list[dict[str, Any]] = []
        self.working: collections.deque[str] = collections.deque()
        self.backlog: list[int] = []
        self.filler_sent = 0

    async def heartbeat(self) -> None:
        path = self.work / "data" / "heartbeat-stress.json"
        while True:
            write_heartbeat(path, self.clock, 0, "stress")
            self.beats.append(time.monotonic())
            await asyncio.sleep(self.cfg.loop.heartbeat_interval_s)

    async def filler(self, broker: Broker, rate: float, until: float) -> None:
        """API messages at `rate` per second (current-time requests: cheap, answered)."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while loop.time() < until:
            due = int((loop.time() - t0) * rate) - self.filler_sent
            for _ in range(max(0, due)):
                broker.ib.client.reqCurrentTime()
                self.filler_sent += 1
            self.backlog.append(len(broker.ib.client._msgQ))
            await asyncio.sleep(0.01)

    def on_status(self, trade: Any) -> None:
        ref = trade.order.orderRef
        for c in self.cancels:
            if c["ref"] == ref and "done_s" not in c and trade.orderStatus.status == "Cancelled":
                c["done_s"] = round(time.monotonic() - c["t"], 3)

    def on_error(self, req_id: int, code: int, message: str, *rest: Any) -> None:
        self.errors[code] += 1

    async def cycle(self, store: Store, broker: Broker, n: int, cycle_id: int, prices: Any) -> None:
        if self.working:  # cancel the oldest working order first
            ref = self.working.popleft()
            queued = len(broker.ib.client._msgQ)
            if broker.cancel(ref):
                self.cancels.append({"ref": ref, "t": time.monotonic(), "queue_ahead": queued})
        for i in range(n):
            symbol = SYMBOLS[(cycle_id * n + i) % len(SYMBOLS)]
            price = prices[symbol]
            request = OrderRequest(
                symbol=symbol,
                sec_type="STK",
                action="BUY",
                quantity=1 + (cycle_id * n + i) % 50,  # sizes differ: not duplicates
                order_type="LMT",
                limit_price=round(price * 0.97, 2),  # inside the collar, below the market: rests
                cycle_id=cycle_id,
                decision_id=i,
            )
            try:
                ctx = await build_gate_context(
                    broker,
                    request,
                    breaker="ACTIVE",
                    watchdog_alive=True,
                    market_open=True,
                    now=self.clock.monotonic(),
                    quote_wait_s=0.5,
                )
            except (TimeoutError, ConnectionError) as exc:  # as the commander: fail closed
                verdict = inputs_unavailable(store, request, exc, cycle_id)
                self.verdicts.append(
                    (time.monotonic(), verdict.accepted, verdict.order_ref, verdict.reasons)
                )
                continue
            verdict = await place_order_with_guard(
                request,
                ctx,
                self.state,
                self.risk,
                store,
                self.submitter,
                dt.datetime.now(dt.UTC).strftime("%Y%m%d"),
                intent_timeout_s=self.cfg.data.write_timeout_s,
            )
            self.verdicts.append(
                (time.monotonic(), verdict.accepted, verdict.order_ref, verdict.reasons)
            )
            if verdict.accepted and verdict.order_ref:
                self.working.append(verdict.order_ref)

    async def run(self, admin: AdminClient, admin_port: int) -> dict[str, Any]:
        args = self.args
        store = await asyncio.to_thread(Store.open, self.work / "data", name="stress")
        broker = Broker(
            self.cfg.broker, self.cfg.mode, Secrets(), store, source="stress", intent_sources=()
        )
        self.state = GateState()
        self.submitter = Timed(broker)
        await broker.start()
        broker.ib.errorEvent += self.on_error
        broker.ib.orderStatusEvent += self.on_status
        for s in SYMBOLS:  # warm up: qualify and subscribe before the load
            c = await broker.qualify(s)
            if c is not None:
                await broker.quote(c, max_wait_s=5)
        prices = admin.call("state")["prices"]
        loop = asyncio.get_running_loop()
        hb = loop.create_task(self.heartbeat())
        per_cycle = max(1, round(args.order_factor * self.risk.max_orders_per_second * args.cycle))
        rate = args.msg_factor * PACING
        t0 = loop.time()
        until = t0 + args.seconds
        filler = loop.create_task(self.filler(broker, rate, until))
        arrived: dict[int, float] = {}
        stop = threading.Event()
        poller = threading.Thread(target=_arrivals, args=(admin_port, stop, arrived), daemon=True)
        poller.start()
        cycle_times = []
        k = 0
        while loop.time() < until:
            due = t0 + k * args.cycle
            await asyncio.sleep(max(0.0, due - loop.time()))
            started = loop.time()
            self.cycle_starts.append((due, started))
            await self.cycle(store, broker, per_cycle, k + 1, prices)
            cycle_times.append(loop.time() - started)
            k += 1
        await filler
        drain_t0 = loop.time()
        while broker.ib.client._msgQ and loop.time() - drain_t0 < 120:
            await asyncio.sleep(0.1)
        drain_s = loop.time() - drain_t0
        await asyncio.sleep(1.0)  # the last statuses and errors
        stop.set()
        await asyncio.to_thread(poller.join)
        self.arrived = list(arrived.values())
        hb.cancel()
        sent_orders = admin.call("ledger")["orders"]
        left = broker.cancel_own_orders()
        await asyncio.sleep(0.5)
        await broker.close()
        await asyncio.to_thread(store.close, 10)
        return self.figures(
            per_cycle, rate, cycle_times, drain_s, len(sent_orders), len(left), t0, until
        )

    def figures(
        self,
        per_cycle: int,
        rate: float,
        cycle_times: list[float],
        drain_s: float,
        at_gateway: int,
        cancelled_at_end: int,
        t0: float,
        t1: float,
    ) -> dict[str, Any]:
        r = self.risk
        accepted = [t for t, ok, _, _ in self.verdicts if ok]
        refused = [(ref, reasons) for _, ok, ref, reasons in self.verdicts if not ok]
        gate_1s = _max_in(list(self.state.sent), 1.0)  # the gate's own clock (decision time)
        max_1s = _max_in(self.submitter.sent, 1.0)  # handed to the client
        max_60s = _max_in(self.submitter.sent, 60.0)
        wire_1s = _max_in(self.arrived, 1.0)  # arrived at the gateway
        db = open_readonly(self.work / "data")
        recorded = {
            row["order_ref"]: row["reason"]
            for row in db.query(
                "SELECT order_ref, reason FROM safety_events WHERE kind = 'gate_refusal'"
            )
        }
        unrecorded = [ref for ref, _ in refused if not recorded.get(ref or "")]
        reasons = collections.Counter(reason.split(":")[0] for _, rs in refused for reason in rs)
        seconds = max(1, round(t1 - t0))
        beats = self.beats
        gaps = [b - a for a, b in itertools.pairwise(beats)]
        late = [s - d for d, s in self.cycle_starts]
        done = [c for c in self.cancels if "done_s" in c]
        return {
            "benchmark": "stress",
            "command": " ".join(["python -m benchmarks.stress", *sys.argv[1:]]),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "host": platform.node(),
            "seconds": round(t1 - t0, 1),  # the load; the drain comes after
            "limits": {
                "max_orders_per_second": r.max_orders_per_second,
                "max_orders_per_minute": r.max_orders_per_minute,
                "gateway_pacing_msgs_per_s": PACING,
            },
            "proposed_orders_per_s": round(len(self.verdicts) / seconds, 2),
            "accepted_per_s": round(len(accepted) / seconds, 2),
            "refused_per_s": round(len(refused) / seconds, 2),
            "sent_to_gateway": at_gateway,
            "orders_accepted": len(accepted),
            "orders_refused": len(refused),
            "max_sent_in_any_1s": max_1s,
            "max_sent_in_any_60s": max_60s,
            "max_gate_counted_in_any_1s": gate_1s,
            "max_arrived_at_gateway_in_any_1s": wire_1s,
            "throttles_hold": max(max_1s, wire_1s) <= r.max_orders_per_second
            and max_60s <= r.max_orders_per_minute,
            "refusal_reasons": dict(reasons),
            "refusals_unrecorded": len(unrecorded),
            "filler_msgs_per_s": round(self.filler_sent / seconds, 1),
            "filler_target_per_s": rate,
            "outgoing_backlog_max": max(self.backlog, default=0),
            "backlog_drain_s": round(drain_s, 1),
            "error_100": self.errors.get(100, 0),
            "errors": dict(self.errors),
            "cancels": len(self.cancels),
            "cancel_to_cancelled_s_median": (
                round(statistics.median(c["done_s"] for c in done), 3) if done else None
            ),
            "cancel_to_cancelled_s_max": max((c["done_s"] for c in done), default=None),
            "cancel_queue_ahead_max": max((c["queue_ahead"] for c in self.cancels), default=0),
            "cancels_go_first": all(c["queue_ahead"] == 0 for c in self.cancels)
            or bool(done and max(c["done_s"] for c in done) < 1.0),
            "cancelled_at_end": cancelled_at_end,
            "heartbeat_interval_s": self.cfg.loop.heartbeat_interval_s,
            "heartbeat_max_age_s": round(max(gaps, default=0.0), 3),
            "cycle_s": self.args.cycle,
            "orders_per_cycle": per_cycle,
            "cycle_max_s": round(max(cycle_times, default=0.0), 3),
            "cycle_start_late_max_s": round(max(late, default=0.0), 3),
        }


def summary(f: dict[str, Any]) -> str:
    lim = f["limits"]
    return "\n".join(
        [
            f"{f['seconds']:.0f} s: {f['proposed_orders_per_s']:.1f} orders/s proposed through "
            f"the gate (limit {lim['max_orders_per_second']}/s, {lim['max_orders_per_minute']}"
            f"/min); filler {f['filler_msgs_per_s']:.0f} msgs/s (gateway pacing "
            f"{lim['gateway_pacing_msgs_per_s']}/s)",
            f"accepted {f['accepted_per_s']:.2f}/s ({f['orders_accepted']}), refused "
            f"{f['refused_per_s']:.2f}/s ({f['orders_refused']}), at the gateway "
            f"{f['sent_to_gateway']}; most sent in any 1 s {f['max_sent_in_any_1s']}, in any "
            f"60 s {f['max_sent_in_any_60s']} (by the gate's decision clock "
            f"{f['max_gate_counted_in_any_1s']}/1 s; arrived at the gateway "
            f"{f['max_arrived_at_gateway_in_any_1s']}/1 s): throttles hold: "
            f"{f['throttles_hold']}",
            f"refusals by reason: {f['refusal_reasons']}; unrecorded: {f['refusals_unrecorded']}",
            f"error 100 from the gateway: {f['error_100']} (all errors {f['errors']})",
            f"client outgoing backlog max {f['outgoing_backlog_max']} messages, drained "
            f"{f['backlog_drain_s']} s after the load",
            f"cancels: {f['cancels']}, to Cancelled median {f['cancel_to_cancelled_s_median']} s,"
            f" max {f['cancel_to_cancelled_s_max']} s, with up to "
            f"{f['cancel_queue_ahead_max']} messages queued ahead: cancels go first: "
            f"{f['cancels_go_first']}",
            f"heartbeat every {f['heartbeat_interval_s']} s: max age {f['heartbeat_max_age_s']}"
            f" s; cycle every {f['cycle_s']} s ({f['orders_per_cycle']} orders): longest "
            f"{f['cycle_max_s']} s, started late by at most {f['cycle_start_late_max_s']} s",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--cycle", type=float, default=1.0, help="seconds between cycles")
    p.add_argument("--order-factor", type=float, default=2.0, help="x max_orders_per_second")
    p.add_argument("--msg-factor", type=float, default=2.0, help="x the gateway's pacing")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # a refusal per order is logged: too many lines
    work = Path(tempfile.mkdtemp(prefix="stress-"))
    try:
        with (
            open(work / "gateway.log", "w") as gw_log,
            gateway_process("--tick-interval", "0.25", stderr=gw_log) as gw,
            AdminClient(gw["admin_port"], timeout=30) as admin,
        ):
            figures = asyncio.run(Stress(args, work, gw["port"]).run(admin, gw["admin_port"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(summary(figures))
    out = args.out or RESULTS / f"stress-{dt.date.today().isoformat()}-{platform.node()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"result: {out}")


if __name__ == "__main__":
    main()
