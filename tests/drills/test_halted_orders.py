"""Drill: HALTED means no order stays working either. A global cancel can be lost (the
gateway froze while panic sent it); an order left working, or placed by another session
while HALTED, is cancelled by the watchdog at its next poll."""

from __future__ import annotations

import pytest
from invariant import assert_books_balance
from procs import cli, data, start, stop, write_config

from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually


@pytest.fixture
def gateway_config():
    return GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.1)


def test_an_order_left_working_while_halted_is_cancelled_by_the_watchdog(
    gateway, admin, tmp_path, connect
):
    from ib_insync import LimitOrder, Stock

    cfg = write_config(tmp_path, gateway.port)
    trip = cli("breaker", "trip", "--by", "ops", "--reason", "drill", "--config", str(cfg))
    assert trip.returncode == 0, trip.stderr
    wd = start("watchdog", cfg)
    try:
        eventually(lambda: 999 in admin.call("state")["clients"], timeout=30, what="watchdog")
        other = connect(7)  # a manual session places an order while HALTED
        c = Stock("AAPL", "SMART", "USD")
        other.qualifyContracts(c)
        price = admin.call("state")["prices"]["AAPL"]
        other.placeOrder(c, LimitOrder("BUY", 3, round(price * 0.95, 2), orderRef="manual-1"))
        eventually(lambda: admin.call("state")["open_orders"], timeout=10, what="order working")
        eventually(
            lambda: admin.call("state")["open_orders"] == [],
            timeout=15,
            what="the watchdog cancelled the order left working while HALTED",
        )
        [order] = [o for o in admin.call("ledger")["orders"] if o["order_ref"] == "manual-1"]
        assert order["status"] == "Cancelled" and order["filled"] == 0
    finally:
        assert stop(wd) == 0
    events = cli("safety-events", "--config", str(cfg), "--kind", "halted_orders_working", "--json")
    assert "manual-1" in events.stdout
    assert_books_balance(admin, data(tmp_path))
