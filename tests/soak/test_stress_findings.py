"""What the stress benchmark found (benchmarks/stress.py), pinned as tests.

Over the gateway's pacing (50 messages/s per client), ib_insync queues outgoing messages
in one FIFO (45 a second) and the broker adapter sends a cancel like any other message: it
waits behind everything queued before it (the stress run at 2x the message rate measured
seconds). IB's and RTS 6's expectation is that cancels go first.
"""

from __future__ import annotations

import asyncio
import time
import tomllib
from pathlib import Path

import pytest
import pytest_asyncio

from runtime.broker import Broker
from runtime.config import Secrets, parse_config
from skills.execution_gate import OrderRequest

ROOT = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture
async def broker(gateway, store):
    data = tomllib.loads((ROOT / "config/paper.toml").read_text())
    data["broker"].update({"port": gateway.port, "connect_timeout_s": 3.0})
    cfg = parse_config(data)
    b = Broker(cfg.broker, cfg.mode, Secrets({}), store)
    await b.start()
    yield b
    await b.close()


async def _until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)
    return value


@pytest.mark.asyncio
async def test_a_cancel_overtakes_messages_queued_before_it(broker, admin):
    price = admin.call("state")["prices"]["MSFT"]
    ref = "stress-cancel-first"
    request = OrderRequest(
        symbol="MSFT",
        sec_type="STK",
        action="BUY",
        quantity=1,
        order_type="LMT",
        limit_price=round(price * 0.9, 2),
    )
    broker.submit(ref, request)

    def order():
        return next((o for o in admin.call("ledger")["orders"] if o["order_ref"] == ref), None)

    await _until(lambda: (o := order()) and o["status"] == "Submitted", 10, "order resting")
    for _ in range(150):  # 3 s of traffic at the client's 45 messages/s throttle
        broker.ib.client.reqCurrentTime()
    assert broker.cancel(ref)
    await _until(lambda: order()["status"] == "Cancelled", 30, "the cancel at the gateway")
    # cancels first: the cancel reached the gateway while the earlier traffic still queued
    assert len(broker.ib.client._msgQ) > 0


@pytest.mark.asyncio
async def test_urgent_messages_overtake_traffic_but_keep_their_own_order(broker, admin):
    """An order and then its cancel, both sent behind a backlog: both overtake the backlog,
    and the cancel is never moved ahead of the order it cancels (it arrives after it)."""
    price = admin.call("state")["prices"]["MSFT"]
    ref = "stress-order-then-cancel"
    for _ in range(150):  # 3 s of traffic at the client's 45 messages/s throttle
        broker.ib.client.reqCurrentTime()
    request = OrderRequest(
        symbol="MSFT",
        sec_type="STK",
        action="BUY",
        quantity=1,
        order_type="LMT",
        limit_price=round(price * 0.9, 2),
    )
    broker.submit(ref, request)
    assert broker.cancel(ref)
    positions = await broker.fresh_positions(timeout_s=10)  # an urgent read, after both

    def order():
        return next((o for o in admin.call("ledger")["orders"] if o["order_ref"] == ref), None)

    await _until(lambda: (o := order()) and o["status"] == "Cancelled", 30, "order, then cancel")
    assert positions == []
    assert len(broker.ib.client._msgQ) > 0  # the earlier traffic is still queued
