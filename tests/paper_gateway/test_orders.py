"""Order types, fills at the touch, resting limits, cancels, rejects, brackets, partial fills."""

import pytest
from ib_client import LimitOrder, MarketOrder, Order, Stock, StopLimitOrder, StopOrder

from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually


def stock(ib, symbol="AAPL"):
    c = Stock(symbol, "SMART", "USD")
    ib.qualifyContracts(c)
    return c


def quote(ib, contract):
    [t] = ib.reqTickers(contract)
    return t


def done(ib, trade, status="Filled"):
    return eventually(
        lambda: trade.orderStatus.status == status,
        pump=ib,
        what=f"order {trade.order.orderId} {status}",
    )


def errors_of(ib):
    seen = []
    ib.errorEvent += lambda req_id, code, msg, contract: seen.append((req_id, code, msg))
    return seen


def test_market_buy_fills_at_the_ask_and_sell_at_the_bid(ib):
    c = stock(ib)
    t = quote(ib, c)
    buy = ib.placeOrder(c, MarketOrder("BUY", 10))
    done(ib, buy)
    assert buy.orderStatus.avgFillPrice == t.ask
    sell = ib.placeOrder(c, MarketOrder("SELL", 10))
    done(ib, sell)
    assert sell.orderStatus.avgFillPrice == t.bid


def test_fill_books_position_cash_and_commission_exactly_once(ib, admin):
    c = stock(ib, "MSFT")
    cash0 = float(next(v.value for v in ib.accountValues() if v.tag == "TotalCashValue"))
    trade = ib.placeOrder(c, MarketOrder("BUY", 100))
    done(ib, trade)
    eventually(lambda: trade.fills and trade.fills[0].commissionReport.commission > 0, pump=ib)
    fill = trade.fills[0]
    assert fill.commissionReport.commission == 1.0  # 100 shares * $0.005, minimum $1
    state = admin.call("state")
    assert state["executions"] == 1
    assert state["positions"] == [
        pytest.approx(
            {
                **state["positions"][0],
                "symbol": "MSFT",
                "quantity": 100.0,
                "avg_cost": fill.execution.price,
            }
        )
    ]
    expected_cash = cash0 - 100 * fill.execution.price - 1.0
    assert state["account"]["TotalCashValue"] == pytest.approx(expected_cash, abs=0.01)
    eventually(
        lambda: (
            abs(
                float(next(v.value for v in ib.accountValues() if v.tag == "TotalCashValue"))
                - expected_cash
            )
            < 0.01
        ),
        pump=ib,
        what="cash pushed to the client",
    )


def test_order_ref_round_trips_into_open_orders_status_executions_and_completed(ib):
    c = stock(ib)
    resting = ib.placeOrder(c, LimitOrder("BUY", 1, 1.0, orderRef="intent-rest"))
    filled = ib.placeOrder(c, MarketOrder("BUY", 1, orderRef="intent-fill"))
    done(ib, filled)
    eventually(lambda: resting.orderStatus.status == "Submitted", pump=ib)
    assert [t.order.orderRef for t in ib.reqOpenOrders()] == ["intent-rest"]
    assert [f.execution.orderRef for f in ib.reqExecutions()] == ["intent-fill"]
    completed = {t.order.orderRef: t.orderStatus.status for t in ib.reqCompletedOrders(False)}
    assert completed == {"intent-fill": "Filled"}


def test_marketable_limit_fills_at_the_touch_not_the_limit(ib):
    c = stock(ib)
    t = quote(ib, c)
    trade = ib.placeOrder(c, LimitOrder("BUY", 5, round(t.ask + 5, 2)))
    done(ib, trade)
    assert trade.orderStatus.avgFillPrice == t.ask


def test_resting_limit_fills_at_its_price_when_the_market_crosses(ib, admin):
    c = stock(ib, "NVDA")
    trade = ib.placeOrder(c, LimitOrder("BUY", 10, 170.0))
    eventually(lambda: trade.orderStatus.status == "Submitted", pump=ib)
    admin.call("set_price", symbol="NVDA", price=175.0)
    assert admin.call("state")["executions"] == 0  # the gateway handled the move: no fill
    admin.call("set_price", symbol="NVDA", price=160.0)
    done(ib, trade)
    assert trade.orderStatus.avgFillPrice == 170.0


def test_resting_sell_limit_fills_when_the_market_model_moves_up(ib, admin):
    c = stock(ib, "TSLA")
    trade = ib.placeOrder(c, LimitOrder("SELL", 3, 250.0))
    eventually(lambda: trade.orderStatus.status == "Submitted", pump=ib)
    admin.call("set_price", symbol="TSLA", price=251.0)
    done(ib, trade)
    assert trade.orderStatus.avgFillPrice == 250.0


def test_stop_triggers_on_the_price_move_and_fills_at_the_touch(ib, admin):
    c = stock(ib, "AMD")
    trade = ib.placeOrder(c, StopOrder("SELL", 4, 150.0))
    eventually(lambda: trade.orderStatus.status == "PreSubmitted", pump=ib)  # not triggered
    admin.call("set_price", symbol="AMD", price=149.0)
    done(ib, trade)
    t = quote(ib, c)
    assert trade.orderStatus.avgFillPrice == t.bid


def test_stop_limit_becomes_a_limit_once_triggered(ib, admin):
    c = stock(ib, "AMD")
    trade = ib.placeOrder(c, StopLimitOrder("BUY", 2, 162.0, 160.0))
    eventually(lambda: trade.orderStatus.status == "PreSubmitted", pump=ib)
    admin.call("set_price", symbol="AMD", price=165.0)  # triggers, but 165 > limit 162
    eventually(lambda: trade.orderStatus.status == "Submitted", pump=ib)  # a working limit now
    assert admin.call("state")["executions"] == 0
    admin.call("set_price", symbol="AMD", price=161.0)
    done(ib, trade)
    assert trade.orderStatus.avgFillPrice <= 162.0


def test_ioc_limit_that_is_not_marketable_is_cancelled(ib):
    c = stock(ib)
    trade = ib.placeOrder(c, LimitOrder("BUY", 1, 1.0, tif="IOC"))
    done(ib, trade, "Cancelled")
    assert trade.filled() == 0


def test_modify_moves_a_resting_limit_into_the_market(ib):
    c = stock(ib)
    t = quote(ib, c)
    order = LimitOrder("BUY", 1, 1.0)
    trade = ib.placeOrder(c, order)
    eventually(lambda: trade.orderStatus.status == "Submitted", pump=ib)
    order.lmtPrice = round(t.ask + 1, 2)
    ib.placeOrder(c, order)
    done(ib, trade)
    assert trade.orderStatus.avgFillPrice == t.ask


def test_cancel_resting_order(ib, admin):
    c = stock(ib)
    trade = ib.placeOrder(c, LimitOrder("BUY", 1, 1.0))
    eventually(lambda: trade.orderStatus.status == "Submitted", pump=ib)
    ib.cancelOrder(trade.order)
    done(ib, trade, "Cancelled")
    assert admin.call("state")["open_orders"] == []


def test_cancel_of_unknown_order_is_10147_and_of_filled_order_is_10148(ib):
    seen = errors_of(ib)
    c = stock(ib)
    ib.cancelOrder(Order(orderId=99999))
    eventually(lambda: (99999, 10147) in [(r, code) for r, code, _ in seen], pump=ib)
    trade = ib.placeOrder(c, MarketOrder("BUY", 1))
    done(ib, trade)
    ib.client.cancelOrder(trade.order.orderId)
    eventually(lambda: (trade.order.orderId, 10148) in [(r, code) for r, code, _ in seen], pump=ib)


def test_another_clients_order_cannot_be_cancelled_but_global_cancel_cancels_it(connect, admin):
    daemon = connect(1)
    watchdog = connect(999)
    seen = errors_of(watchdog)
    c = stock(daemon)
    trade = daemon.placeOrder(c, LimitOrder("BUY", 1, 1.0))
    eventually(lambda: trade.orderStatus.status == "Submitted", pump=daemon)
    watchdog.client.cancelOrder(trade.order.orderId)
    eventually(lambda: any(code == 10147 for _, code, _ in seen), pump=watchdog)
    assert [o["order_id"] for o in admin.call("state")["open_orders"]] == [trade.order.orderId]
    watchdog.reqGlobalCancel()
    done(daemon, trade, "Cancelled")
    assert admin.call("state")["open_orders"] == []


def test_reused_order_id_of_a_done_order_is_rejected_as_duplicate_103(ib):
    seen = errors_of(ib)
    c = stock(ib)
    first = ib.placeOrder(c, MarketOrder("BUY", 1))
    done(ib, first)
    ib.client.placeOrder(first.order.orderId, c, MarketOrder("BUY", 1))
    eventually(lambda: (first.order.orderId, 103) in [(r, code) for r, code, _ in seen], pump=ib)
    assert len(ib.reqExecutions()) == 1


def test_order_beyond_buying_power_is_rejected_201_and_kept_as_completed(ib, admin):
    seen = errors_of(ib)
    c = stock(ib, "SPY")
    trade = ib.placeOrder(c, MarketOrder("BUY", 100_000, orderRef="too-big"))
    done(ib, trade, "Cancelled")
    assert any(code == 201 and "AVAILABLE FUNDS" in m for _, code, m in seen)
    assert admin.call("state")["positions"] == []
    completed = {t.order.orderRef: t.orderStatus.status for t in ib.reqCompletedOrders(False)}
    assert completed == {"too-big": "Cancelled"}


def test_unknown_contract_order_gets_error_200(ib):
    seen = errors_of(ib)
    trade = ib.placeOrder(Stock("ZZZZ", "SMART", "USD"), MarketOrder("BUY", 1))
    done(ib, trade, "Cancelled")
    assert any(code == 200 for _, code, _ in seen)


@pytest.mark.parametrize("code", [201, 202])
def test_reject_next_rejects_exactly_one_order_with_the_given_code(ib, admin, code):
    seen = errors_of(ib)
    c = stock(ib)
    admin.call("reject_next", code=code)
    rejected = ib.placeOrder(c, MarketOrder("BUY", 1))
    done(ib, rejected, "Cancelled")
    assert any(r == rejected.order.orderId and k == code for r, k, _ in seen)
    accepted = ib.placeOrder(c, MarketOrder("BUY", 1))
    done(ib, accepted)


def test_bracket_children_wait_for_the_parent_then_one_fill_cancels_the_other(ib, admin):
    c = stock(ib, "JPM")
    admin.call("set_price", symbol="JPM", price=212.0)
    bracket = ib.bracketOrder("BUY", 10, 205.0, 220.0, 200.0)
    parent, profit, stop = (ib.placeOrder(c, o) for o in bracket)
    eventually(lambda: parent.orderStatus.status == "Submitted", pump=ib)
    eventually(lambda: profit.orderStatus.status == "PreSubmitted", pump=ib)
    assert stop.orderStatus.status == "PreSubmitted"
    admin.call("set_price", symbol="JPM", price=204.0)  # entry fills; children go live
    done(ib, parent)
    eventually(lambda: profit.orderStatus.status == "Submitted", pump=ib)
    admin.call("set_price", symbol="JPM", price=221.0)  # take-profit fills
    done(ib, profit)
    done(ib, stop, "Cancelled")
    assert admin.call("state")["positions"] == []


def test_untransmitted_order_does_not_work_until_transmitted(ib, admin):
    c = stock(ib)
    t = quote(ib, c)
    order = LimitOrder("BUY", 1, round(t.ask + 1, 2), transmit=False)
    trade = ib.placeOrder(c, order)
    eventually(lambda: admin.call("state")["open_orders"], what="held order reached gateway")
    assert admin.call("state")["executions"] == 0
    order.transmit = True
    ib.placeOrder(c, order)
    done(ib, trade)


class TestPartialFills:
    @pytest.fixture
    def gateway_config(self):
        return GatewayConfig(tick_interval_s=0.0, partial_fill_above=100)

    def test_large_order_fills_in_clips_as_the_market_moves(self, ib, admin):
        c = stock(ib, "BAC")
        trade = ib.placeOrder(c, MarketOrder("BUY", 250))
        eventually(lambda: trade.filled() == 100, pump=ib, what="first clip")
        assert trade.orderStatus.status == "Submitted"
        assert trade.orderStatus.remaining == 150
        admin.call("step", seconds=1)
        eventually(lambda: trade.filled() == 200, pump=ib, what="second clip")
        admin.call("step", seconds=1)
        done(ib, trade)
        assert [f.execution.shares for f in trade.fills] == [100, 100, 50]
        assert [f.execution.cumQty for f in trade.fills] == [100, 200, 250]
        assert admin.call("state")["positions"][0]["quantity"] == 250


def test_two_clients_see_each_others_fills_in_their_positions(connect):
    daemon = connect(1)
    person = connect(7)
    c = stock(daemon, "GS")
    trade = daemon.placeOrder(c, MarketOrder("BUY", 3))
    done(daemon, trade)
    eventually(lambda: [p.position for p in person.positions()] == [3.0], pump=person)
    trade2 = person.placeOrder(c, MarketOrder("SELL", 1))
    done(person, trade2)
    eventually(lambda: [p.position for p in daemon.positions()] == [2.0], pump=daemon)
    eventually(lambda: [p.position for p in daemon.portfolio()] == [2.0], pump=daemon)


def test_closing_trade_reports_realised_pnl_net_of_commission(ib, admin):
    c = stock(ib, "AAPL")
    admin.call("set_price", symbol="AAPL", price=200.0)
    buy = ib.placeOrder(c, MarketOrder("BUY", 100))
    done(ib, buy)
    admin.call("set_price", symbol="AAPL", price=210.0)
    sell = ib.placeOrder(c, MarketOrder("SELL", 100))
    done(ib, sell)
    eventually(lambda: sell.fills and sell.fills[0].commissionReport.commission > 0, pump=ib)
    gross = 100 * (sell.fills[0].execution.price - buy.fills[0].execution.price)
    assert sell.fills[0].commissionReport.realizedPNL == pytest.approx(gross - 1.0, abs=0.01)


def test_unrealised_pnl_moves_with_the_price(ib, admin):
    c = stock(ib, "NVDA")
    trade = ib.placeOrder(c, MarketOrder("BUY", 10))
    done(ib, trade)
    before = admin.call("state")["account"]["UnrealizedPnL"]
    admin.call("set_price", symbol="NVDA", price=200.0)
    after = admin.call("state")["account"]["UnrealizedPnL"]
    assert after - before == pytest.approx(10 * (200.0 - 182.0), abs=1.0)
    eventually(lambda: ib.portfolio() and ib.portfolio()[0].marketPrice == 200.0, pump=ib)


def test_pnl_subscription_is_pushed_on_changes(ib, admin):
    c = stock(ib, "NVDA")
    pnl = ib.reqPnL("DU1234567")
    trade = ib.placeOrder(c, MarketOrder("BUY", 10))
    done(ib, trade)
    admin.call("set_price", symbol="NVDA", price=190.0)
    eventually(lambda: pnl.unrealizedPnL and pnl.unrealizedPnL > 50, pump=ib, what="pnl push")


def test_master_client_receives_order_events_of_other_clients(gateway_config):
    from ib_client import IB

    from paper_gateway import Gateway

    cfg = GatewayConfig(tick_interval_s=0.0, master_client_id=50)
    with Gateway(cfg) as gw:
        daemon, master = IB(), IB()
        daemon.connect("127.0.0.1", gw.port, clientId=1, timeout=5)
        master.connect("127.0.0.1", gw.port, clientId=50, timeout=5)
        try:
            c = stock(daemon)
            trade = daemon.placeOrder(c, MarketOrder("BUY", 1, orderRef="seen-by-master"))
            done(daemon, trade)
            eventually(
                lambda: [f.execution.orderRef for f in master.fills()] == ["seen-by-master"],
                pump=master,
            )
            assert any(t.order.orderRef == "seen-by-master" for t in master.trades())
        finally:
            daemon.disconnect()
            master.disconnect()


def test_what_if_order_reports_margin_without_trading(ib, admin):
    c = stock(ib, "AAPL")
    state = ib.whatIfOrder(c, MarketOrder("BUY", 10))
    assert float(state.initMarginChange) > 0
    assert admin.call("state")["executions"] == 0
