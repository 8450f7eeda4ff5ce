"""Protective orders at the paper gateway, through unmodified ib_insync over TCP: stops held
PreSubmitted until they trigger, brackets that are not live until their last child is
transmitted, OCA groups (ocaType 1 cancels, 2/3 reduce), GTC stops across a restart."""

import pytest
from ib_client import IB, LimitOrder, Option, Order, Stock, StopOrder

from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually


def stock(ib, symbol):
    c = Stock(symbol, "SMART", "USD")
    ib.qualifyContracts(c)
    return c


def errors_of(ib):
    seen = []
    ib.errorEvent += lambda req_id, code, msg, contract: seen.append((req_id, code, msg))
    return seen


def bracket(ib, action, qty, entry, stop, profit=None, ref="b1"):
    """Parent LMT + GTC STP (+ LMT take-profit) in one OCA group; only the last transmits."""
    back = "SELL" if action == "BUY" else "BUY"
    parent = LimitOrder(action, qty, entry, orderRef=ref, transmit=False)
    parent.orderId = ib.client.getReqId()
    children: list[Order] = [StopOrder(back, qty, stop, orderRef=ref + "-sl", tif="GTC")]
    if profit is not None:
        children.append(LimitOrder(back, qty, profit, orderRef=ref + "-tp", tif="GTC"))
    for i, child in enumerate(children):
        child.parentId = parent.orderId
        child.ocaGroup, child.ocaType = "oca-" + ref, 1
        child.transmit = i == len(children) - 1
    return [parent, *children]


def test_nothing_is_live_until_the_last_child_then_the_stop_rests_presubmitted(ib, admin):
    c = stock(ib, "JPM")
    admin.call("set_price", symbol="JPM", price=212.0)
    parent, sl, tp = bracket(ib, "BUY", 10, 215.0, 200.0, 230.0)  # a marketable entry
    t_parent = ib.placeOrder(c, parent)
    t_sl = ib.placeOrder(c, sl)
    eventually(lambda: len(admin.call("state")["open_orders"]) == 2, what="held orders arrive")
    state = admin.call("state")
    assert state["executions"] == 0  # the marketable parent waits for the last child
    assert {o["status"] for o in state["open_orders"]} == {"PendingSubmit"}
    t_tp = ib.placeOrder(c, tp)
    eventually(lambda: t_parent.orderStatus.status == "Filled", pump=ib)
    eventually(lambda: t_tp.orderStatus.status == "Submitted", pump=ib)
    eventually(lambda: t_sl.orderStatus.status == "PreSubmitted", pump=ib)  # untriggered stop
    assert t_sl.orderStatus.parentId == t_parent.order.orderId
    resting = {o["order_ref"]: o for o in admin.call("state")["open_orders"]}
    assert set(resting) == {"b1-sl", "b1-tp"}
    assert resting["b1-sl"]["tif"] == "GTC" and resting["b1-sl"]["oca_group"] == "oca-b1"
    [trade] = [t for t in ib.openTrades() if t.order.orderRef == "b1-sl"]
    assert trade.order.ocaType == 1 and trade.order.ocaGroup == "oca-b1"


def test_children_wait_presubmitted_while_the_parent_rests(ib, admin):
    c = stock(ib, "BAC")
    admin.call("set_price", symbol="BAC", price=40.0)
    orders = bracket(ib, "BUY", 5, 38.0, 36.0, ref="b2")
    parent, sl = (ib.placeOrder(c, o) for o in orders)
    eventually(lambda: parent.orderStatus.status == "Submitted", pump=ib)
    eventually(lambda: sl.orderStatus.status == "PreSubmitted", pump=ib)
    admin.call("set_price", symbol="BAC", price=35.0)  # through the stop: the child is held
    eventually(lambda: parent.orderStatus.status == "Filled", pump=ib)  # the entry fills ...
    eventually(lambda: sl.orderStatus.status == "Filled", pump=ib)  # ... then its stop fires
    assert admin.call("state")["positions"] == []


def test_a_price_move_through_the_stop_fills_it_once_and_cancels_the_take_profit(ib, admin):
    c = stock(ib, "GS")
    admin.call("set_price", symbol="GS", price=500.0)
    seen = errors_of(ib)
    _parent, sl, tp = (ib.placeOrder(c, o) for o in bracket(ib, "BUY", 3, 505.0, 480.0, 540.0))
    eventually(lambda: sl.orderStatus.status == "PreSubmitted", pump=ib)
    executions = admin.call("state")["executions"]
    admin.call("set_price", symbol="GS", price=470.0)
    eventually(lambda: sl.orderStatus.status == "Filled", pump=ib)
    eventually(lambda: tp.orderStatus.status == "Cancelled", pump=ib)
    admin.call("set_price", symbol="GS", price=460.0)  # further down: nothing fires again
    admin.call("set_price", symbol="GS", price=475.0)
    state = admin.call("state")
    assert state["executions"] == executions + 1
    assert state["positions"] == [] and state["open_orders"] == []
    assert [f.execution.orderRef for f in ib.fills() if f.execution.side == "SLD"] == ["b1-sl"]
    assert any(r == tp.order.orderId and k == 202 and "OCA" in m for r, k, m in seen)


def test_short_option_stop_is_a_buy_stop_on_the_option_price(ib, admin):
    und = stock(ib, "NVDA")
    chain = next(ch for ch in ib.reqSecDefOptParams("NVDA", "", "STK", und.conId))
    [t] = ib.reqTickers(und)
    strike = min(chain.strikes, key=lambda k: abs(k - t.last))
    opt = Option("NVDA", chain.expirations[2], strike, "P", "SMART")
    assert ib.qualifyContracts(opt) == [opt]
    [tk] = ib.reqTickers(opt)
    bid = tk.bid
    parent, sl = bracket(ib, "SELL", 1, round(bid, 2), round(bid * 1.5 + 0.05, 2), ref="o1")
    t_parent, t_sl = ib.placeOrder(opt, parent), ib.placeOrder(opt, sl)
    eventually(lambda: t_parent.orderStatus.status == "Filled", pump=ib)
    eventually(lambda: t_sl.orderStatus.status == "PreSubmitted", pump=ib)
    admin.call("set_price", symbol="NVDA", price=round(t.last * 0.7, 2))  # the put jumps
    eventually(lambda: t_sl.orderStatus.status == "Filled", pump=ib)
    assert [p for p in admin.call("state")["positions"] if p["sec_type"] == "OPT"] == []


@pytest.mark.parametrize("oca_type", [1, 3])
def test_oca_group_without_a_parent_cancels_or_reduces_the_others(ib, admin, oca_type):
    c = stock(ib, "AMD")
    admin.call("set_price", symbol="AMD", price=150.0)
    first = LimitOrder("BUY", 4, 140.0, ocaGroup="g", ocaType=oca_type, orderRef="g1")
    other = LimitOrder("BUY", 10, 130.0, ocaGroup="g", ocaType=oca_type, orderRef="g2")
    t1, t2 = ib.placeOrder(c, first), ib.placeOrder(c, other)
    eventually(lambda: t2.orderStatus.status == "Submitted", pump=ib)
    admin.call("set_price", symbol="AMD", price=139.0)
    eventually(lambda: t1.orderStatus.status == "Filled", pump=ib)
    if oca_type == 1:
        eventually(lambda: t2.orderStatus.status == "Cancelled", pump=ib)
    else:
        [left] = admin.call("state")["open_orders"]
        assert (left["order_ref"], left["quantity"]) == ("g2", 6.0)


def test_global_cancel_cancels_gtc_children_whoever_placed_them(connect, admin):
    ib = connect(1)
    c = stock(ib, "MSFT")
    admin.call("set_price", symbol="MSFT", price=400.0)
    trades = [ib.placeOrder(c, o) for o in bracket(ib, "BUY", 2, 405.0, 380.0, 440.0)]
    eventually(lambda: trades[1].orderStatus.status == "PreSubmitted", pump=ib)
    watchdog = connect(999)
    watchdog.reqGlobalCancel()
    eventually(lambda: admin.call("state")["open_orders"] == [], what="no order left")
    eventually(lambda: trades[1].orderStatus.status == "Cancelled", pump=ib)


class TestRestart:
    @pytest.fixture
    def gateway_config(self):
        return GatewayConfig(tick_interval_s=0.0)

    def test_gtc_stop_survives_a_restart_and_still_fires(self, gateway, connect, admin):
        ib = connect(1)
        c = stock(ib, "TSLA")
        admin.call("set_price", symbol="TSLA", price=250.0)
        trades = [ib.placeOrder(c, o) for o in bracket(ib, "BUY", 4, 255.0, 240.0)]
        eventually(lambda: trades[1].orderStatus.status == "PreSubmitted", pump=ib)
        # a DAY parent still resting lapses at the restart, and its held GTC child with it
        waiting = [ib.placeOrder(c, o) for o in bracket(ib, "BUY", 1, 200.0, 190.0, ref="b2")]
        eventually(lambda: waiting[1].orderStatus.status == "PreSubmitted", pump=ib)
        assert len(admin.call("state")["open_orders"]) == 3
        lost = []
        ib.disconnectedEvent += lambda: lost.append(True)
        admin.call("restart", down_s=0.3)
        eventually(lambda: lost, pump=ib, what="client saw the socket drop")
        again = IB()

        def reconnect():
            try:
                again.connect("127.0.0.1", gateway.port, clientId=1, timeout=2)
            except (ConnectionRefusedError, OSError, TimeoutError):
                return False
            return True

        eventually(reconnect, timeout=10, what="gateway back")
        try:
            [stop] = again.openTrades()
            assert (stop.order.orderRef, stop.orderStatus.status) == ("b1-sl", "PreSubmitted")
            admin.call("set_price", symbol="TSLA", price=230.0)
            eventually(lambda: stop.orderStatus.status == "Filled", pump=again)
            assert admin.call("state")["positions"] == []
        finally:
            again.disconnect()


def test_reject_next_can_target_one_order_type(ib, admin):
    c = stock(ib, "SPY")
    assert admin.call("reject_next", code=201, order_type="STP")["ok"]
    buy = ib.placeOrder(c, LimitOrder("BUY", 1, 1.0, orderRef="plain"))
    stop = ib.placeOrder(c, StopOrder("SELL", 1, 1.0, orderRef="stop"))
    eventually(lambda: stop.orderStatus.status == "Cancelled", pump=ib)
    assert buy.orderStatus.status == "Submitted"
    assert "order_type" in admin.raw({"cmd": "reject_next", "order_type": 3})["error"]
