"""IB production realities played by the gateway, seen through ib_insync over TCP: daily restart
and weekly login, farm status, entitlements, competing session, market-data lines, historical
pacing and fills during a 1100 outage. Time moves only by admin `advance_clock`."""

import asyncio
import datetime as dt
import socket

import pytest
from ib_client import IB, LimitOrder, MarketOrder, Stock

from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually

# Thursday 2026-11-19 23:44:00 US/Eastern: one minute before a 23:45 daily restart
BEFORE_RESTART = dt.datetime(2026, 11, 20, 4, 44, tzinfo=dt.UTC)
FRIDAY_MORNING = dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC)


def _config(now: dt.datetime = FRIDAY_MORNING, **kwargs: object) -> GatewayConfig:
    return GatewayConfig(
        tick_interval_s=0.0,
        account_push_interval_s=0.05,
        clock=lambda: now,
        **kwargs,  # type: ignore[arg-type]
    )


def _stock(ib, symbol="AAPL"):
    c = Stock(symbol, "SMART", "USD")
    ib.qualifyContracts(c)
    return c


def _errors(ib):
    seen: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, text, contract: seen.append((req_id, code, text))
    return seen


def _round_trip(ib):
    """Everything the gateway sent before this answer has been read (one ordered stream)."""
    ib.reqCurrentTime()


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


# --- daily restart and weekly login -------------------------------------------------------
@pytest.mark.parametrize(
    "gateway_config", [_config(BEFORE_RESTART, daily_restart="23:45", restart_down_s=30.0)]
)
def test_daily_restart_drops_sockets_on_schedule_then_comes_back_with_state(
    gateway, connect, admin
):
    ib = connect(1)
    c = _stock(ib)
    gtc = ib.placeOrder(c, LimitOrder("BUY", 1, 1.0, tif="GTC", orderRef="gtc"))
    day = ib.placeOrder(c, LimitOrder("BUY", 1, 1.0, tif="DAY", orderRef="day"))
    eventually(lambda: gtc.orderStatus.status == day.orderStatus.status == "Submitted", pump=ib)
    state = admin.call("state")
    assert state["next_restart"] == "2026-11-19T23:45:00-05:00"
    assert state["down"] is None
    lost = []
    ib.disconnectedEvent += lambda: lost.append(True)

    assert admin.call("advance_clock", seconds=59)["down"] is False
    assert ib.isConnected()
    assert admin.call("advance_clock", seconds=1)["down"] is True
    eventually(lambda: lost, pump=ib, what="the restart dropped the socket")
    assert _refused(gateway.port)
    down = admin.call("state")["down"]
    assert down["until"] == "2026-11-20T04:45:30+00:00" and not down["login_required"]
    assert admin.call("state")["next_restart"] == "2026-11-20T23:45:00-05:00"

    assert admin.call("advance_clock", seconds=29)["down"] is True
    assert _refused(gateway.port)
    assert admin.call("advance_clock", seconds=1)["down"] is False  # listening when it answers
    again = connect(1)
    assert [t.order.orderRef for t in again.openTrades()] == ["gtc"]
    completed = {t.order.orderRef: t.orderStatus.status for t in again.reqCompletedOrders(False)}
    assert completed == {"day": "Cancelled"}


@pytest.mark.parametrize(
    "gateway_config",
    [_config(BEFORE_RESTART, daily_restart="23:45", restart_down_s=30.0, reauth_weekday="thu")],
)
def test_weekly_restart_stays_down_until_login(gateway, connect, admin):
    ib = connect(1)
    admin.call("advance_clock", seconds=60)
    eventually(lambda: not ib.isConnected(), pump=ib, what="socket dropped")
    assert admin.call("state")["down"]["login_required"] is True
    admin.call("advance_clock", seconds=3600)
    assert _refused(gateway.port)
    assert admin.call("login")["down"] is False
    assert connect(1).isConnected()


@pytest.mark.parametrize("gateway_config", [_config()])
def test_restart_now_keeps_the_port_closed_for_its_gateway_time(gateway, connect, admin):
    ib = connect(1)
    lost = []
    ib.disconnectedEvent += lambda: lost.append(True)
    assert admin.call("restart_now", down_s=90)["login_required"] is False
    eventually(lambda: lost, pump=ib, what="socket dropped")
    assert _refused(gateway.port)
    admin.call("advance_clock", seconds=89.5)
    assert _refused(gateway.port)
    admin.call("advance_clock", seconds=0.5)
    assert connect(1).isConnected()


def test_restart_now_with_reauth_waits_for_login_and_login_when_up_is_refused(
    gateway, connect, admin
):
    ib = connect(1)
    admin.call("restart_now", down_s=0, reauth=True)
    eventually(lambda: not ib.isConnected(), pump=ib, what="socket dropped")
    assert _refused(gateway.port)
    reply = admin.raw({"cmd": "advance_clock", "seconds": 600})
    assert reply["down"] is True
    admin.call("login")
    assert connect(2).isConnected()
    assert admin.raw({"cmd": "login"}) == {"ok": False, "error": "the gateway is not down"}


def test_schedule_options_are_validated():
    with pytest.raises(ValueError, match="HH:MM"):
        GatewayConfig(daily_restart="noon")
    with pytest.raises(ValueError, match="time zone"):
        GatewayConfig(daily_restart="23:45", restart_tz="Mars/Olympus")
    with pytest.raises(ValueError, match="daily restart"):
        GatewayConfig(reauth_weekday="sun")


# --- farm status ----------------------------------------------------------------------------
def test_farm_ok_messages_on_connect_and_flaps_without_dropping_the_socket(gateway, admin):
    ib = IB()
    seen = _errors(ib)
    ib.connect("127.0.0.1", gateway.port, clientId=1, timeout=5)
    try:
        eventually(lambda: len(seen) >= 3, pump=ib)
        assert seen == [
            (-1, 2104, "Market data farm connection is OK:usfarm"),
            (-1, 2106, "HMDS data farm connection is OK:ushmds"),
            (-1, 2158, "Sec-def data farm connection is OK:secdefnj"),
        ]
        seen.clear()
        for farm, code in (("market", 2103), ("historical", 2105), ("secdef", 2157)):
            assert admin.call("farm", farm=farm, ok=False) == {
                "ok": True,
                "code": code,
                "sent_to": 1,
            }
        for farm in ("market", "historical", "secdef"):
            admin.call("farm", farm=farm, ok=True)
        eventually(lambda: len(seen) == 6, pump=ib)
        assert [code for _, code, _ in seen] == [2103, 2105, 2157, 2104, 2106, 2158]
        assert seen[0][2] == "Market data farm connection is broken:usfarm"
        assert seen[1][2] == "HMDS data farm connection is broken:ushmds"
        assert seen[2][2] == "Sec-def data farm connection is broken:secdefnj"
        assert ib.isConnected() and ib.reqCurrentTime()
    finally:
        ib.disconnect()


def test_a_client_connecting_while_a_farm_is_broken_is_told_so(gateway, admin):
    admin.call("farm", farm="historical", ok=False)
    ib = IB()
    seen = _errors(ib)
    ib.connect("127.0.0.1", gateway.port, clientId=1, timeout=5)
    try:
        eventually(lambda: len(seen) >= 3, pump=ib)
        assert [code for _, code, _ in seen] == [2104, 2105, 2158]
        assert admin.call("state")["farms"]["historical"] == "broken"
    finally:
        ib.disconnect()


def test_market_farm_down_pauses_ticks_and_its_return_resumes_them(ib, admin):
    ticker = ib.reqMktData(_stock(ib, "MSFT"))
    eventually(lambda: ticker.last == ticker.last and ticker.last > 0, pump=ib)
    admin.call("farm", farm="market", ok=False)
    admin.call("set_price", symbol="MSFT", price=431.0)
    _round_trip(ib)
    assert ticker.last != 431.0
    admin.call("farm", farm="market", ok=True)
    eventually(lambda: ticker.last == 431.0, pump=ib, what="ticks resume")


def test_requests_of_a_broken_farm_wait_for_it_and_are_answered_when_it_is_ok(ib, admin):
    aapl = _stock(ib)
    admin.call("farm", farm="historical", ok=False)
    admin.call("farm", farm="secdef", ok=False)
    bars = asyncio.ensure_future(
        ib.reqHistoricalDataAsync(aapl, "", "5 D", "1 day", "TRADES", True)
    )
    details = asyncio.ensure_future(ib.reqContractDetailsAsync(Stock("MSFT", "SMART", "USD")))
    _round_trip(ib)
    assert not bars.done() and not details.done()
    assert ib.reqCurrentTime()  # the socket and other requests are unaffected
    admin.call("farm", farm="historical", ok=True)
    assert len(ib.run(bars)) == 5
    assert not details.done()
    admin.call("farm", farm="secdef", ok=True)
    assert ib.run(details)[0].contract.conId > 0


# --- entitlements -----------------------------------------------------------------------------
def test_not_subscribed_live_request_gets_354_and_no_subscription(ib, admin):
    seen = _errors(ib)
    admin.call("entitlement", symbol="AAPL", level="delayed")
    admin.call("entitlement", symbol="MSFT", level="none")
    ib.reqMktData(_stock(ib, "AAPL"))
    ib.reqMktData(_stock(ib, "MSFT"))
    eventually(lambda: len([e for e in seen if e[1] == 354]) == 2, pump=ib)
    texts = [text for _, code, text in seen if code == 354]
    assert texts[0] == (
        "Requested market data is not subscribed.Delayed market data is available."
        "AAPL NASDAQ/TOP/ALL"
    )
    assert texts[1].startswith("Requested market data is not subscribed. Check API status")
    assert admin.call("state")["market_data"] == {"1": []}


@pytest.mark.parametrize("gateway_config", [_config()])
def test_delayed_type_gets_10167_then_delayed_ticks_with_market_data_type_3(ib, admin):
    seen = _errors(ib)
    types: set[int] = set()
    ib.pendingTickersEvent += lambda tickers: types.update(
        t.tickType for tk in tickers for t in tk.ticks
    )
    admin.call("entitlement", symbol="AAPL", level="delayed")
    ib.reqMarketDataType(3)
    delayed = ib.reqMktData(_stock(ib, "AAPL"))
    live = ib.reqMktData(_stock(ib, "MSFT"))  # entitled: live even when delayed is asked for
    eventually(lambda: delayed.bid > 0 and live.bid > 0, pump=ib)
    assert delayed.marketDataType == 3 and live.marketDataType == 1
    assert {66, 67, 68} <= types
    assert [(code, text) for _, code, text in seen if code >= 10000] == [
        (10167, "Requested market data is not subscribed. Displaying delayed market data.")
    ]
    before = delayed.last
    admin.call("set_price", symbol="AAPL", price=199.0)
    admin.call("set_price", symbol="MSFT", price=431.0)
    eventually(lambda: live.last == 431.0, pump=ib)
    assert delayed.last == before  # the delayed feed shows the price of 15 minutes ago
    admin.call("advance_clock", seconds=15 * 60)
    eventually(lambda: delayed.last == 199.0, pump=ib, what="delayed stream catches up")


def test_no_delayed_data_either_gets_10168(ib, admin):
    seen = _errors(ib)
    admin.call("entitlement", symbol="AAPL", level="none")
    ib.reqMarketDataType(4)
    ib.reqMktData(_stock(ib, "AAPL"))
    eventually(lambda: any(code == 10168 for _, code, _ in seen), pump=ib)
    assert (
        next(text for _, code, text in seen if code == 10168)
        == "Requested market data is not subscribed. Delayed market data is not enabled."
    )
    assert admin.call("state")["market_data"] == {"1": []}
    admin.call("entitlement", symbol="AAPL", level="live")
    ticker = ib.reqMktData(_stock(ib, "AAPL"))
    eventually(lambda: ticker.bid > 0 and ticker.marketDataType == 1, pump=ib)


# --- competing live session -----------------------------------------------------------------------
def test_competing_session_ends_market_data_with_10197_until_it_is_over(connect, admin):
    ib, other = connect(1), connect(2)
    seen = _errors(ib)
    msft = ib.reqMktData(_stock(ib, "MSFT"))
    theirs = other.reqMktData(_stock(other, "MSFT"))
    eventually(lambda: msft.bid > 0 and theirs.bid > 0, pump=ib)
    assert admin.call("competing_session", client_id=1, active=True)["ended"] == 1
    eventually(lambda: any(code == 10197 for _, code, _ in seen), pump=ib)
    [(req_id, _, text)] = [e for e in seen if e[1] == 10197]
    assert text == "No market data during competing live session" and req_id > 0
    assert admin.call("state")["market_data"]["1"] == []
    assert len(admin.call("state")["market_data"]["2"]) == 1  # other clients keep theirs
    ib.reqMktData(_stock(ib, "AAPL"))
    eventually(lambda: len([e for e in seen if e[1] == 10197]) == 2, pump=ib)
    admin.call("competing_session", client_id=1, active=False)
    again = ib.reqMktData(_stock(ib, "AAPL"))
    eventually(lambda: again.bid > 0, pump=ib)


# --- market-data lines ----------------------------------------------------------------------------
def test_default_market_data_lines_are_100():
    assert GatewayConfig().max_market_data_lines == 100


@pytest.mark.parametrize("gateway_config", [_config(max_market_data_lines=3)])
def test_more_streams_than_lines_get_101_lines_are_shared_and_freed_by_cancel(connect, admin):
    ib, other = connect(1), connect(2)
    seen, seen_other = _errors(ib), _errors(other)
    stocks = [_stock(ib, s) for s in ("AAPL", "MSFT", "NVDA", "AMD")]
    tickers = [ib.reqMktData(c) for c in stocks[:3]]
    eventually(lambda: all(t.bid > 0 for t in tickers), pump=ib)
    ib.reqMktData(stocks[3])
    eventually(lambda: any(code == 101 for _, code, _ in seen), pump=ib)
    assert [text for _, code, text in seen if code == 101] == [
        "Max number of tickers has been reached"
    ]
    other.reqMktData(_stock(other, "AMD"))  # the account's lines are shared by every client
    eventually(lambda: any(code == 101 for _, code, _ in seen_other), pump=other)
    snap = other.reqMktData(_stock(other, "TSLA"), snapshot=True)  # a snapshot holds no line
    eventually(lambda: snap.bid > 0, pump=other)
    ib.cancelMktData(stocks[0])
    _round_trip(ib)
    freed = other.reqMktData(_stock(other, "AMD"))
    eventually(lambda: freed.bid > 0, pump=other)
    assert admin.call("state")["market_data_lines"] == 3


# --- historical-data pacing -----------------------------------------------------------------------
PACED = _config(historical_pacing=True)
PACING = "Historical Market Data Service error message:Historical data request pacing violation"


def _bars(ib, contract, duration="5 D", what="TRADES"):
    return ib.reqHistoricalData(contract, "", duration, "1 day", what, True)


@pytest.mark.parametrize("gateway_config", [PACED])
def test_identical_historical_request_within_15_s_gets_162(ib, admin):
    seen = _errors(ib)
    aapl = _stock(ib)
    assert len(_bars(ib, aapl)) == 5
    assert not _bars(ib, aapl)
    assert [(code, text) for _, code, text in seen] == [(162, PACING)]
    admin.call("advance_clock", seconds=14.9)
    assert not _bars(ib, aapl)
    admin.call("advance_clock", seconds=0.1)
    assert len(_bars(ib, aapl)) == 5


@pytest.mark.parametrize("gateway_config", [PACED])
def test_six_requests_for_one_contract_within_2_s_get_162(ib, admin):
    seen = _errors(ib)
    aapl, msft = _stock(ib), _stock(ib, "MSFT")
    for days in range(1, 6):
        assert _bars(ib, aapl, f"{days} D"), days
    assert not _bars(ib, aapl, "6 D")
    assert [code for _, code, _ in seen] == [162]
    assert _bars(ib, aapl, "6 D", what="MIDPOINT")  # another whatToShow is another series
    assert _bars(ib, msft, "6 D")
    admin.call("advance_clock", seconds=2)
    assert _bars(ib, aapl, "6 D")


@pytest.mark.parametrize("gateway_config", [PACED])
def test_more_than_60_requests_in_10_minutes_get_162(ib, admin):
    seen = _errors(ib)
    aapl = _stock(ib)
    for n in range(60):
        if n and n % 5 == 0:
            admin.call("advance_clock", seconds=2)  # stay under the per-contract rule
        assert _bars(ib, aapl, f"{n + 1} D"), n
    admin.call("advance_clock", seconds=2)
    assert not _bars(ib, aapl, "61 D")
    assert [(code, text) for _, code, text in seen] == [(162, PACING)]
    admin.call("advance_clock", seconds=600 - 24)  # the first request leaves the window
    assert _bars(ib, aapl, "61 D")


@pytest.mark.parametrize("gateway_config", [PACED])
def test_reset_forgets_the_pacing_history(ib, admin):
    aapl = _stock(ib)
    assert _bars(ib, aapl)
    assert not _bars(ib, aapl)
    admin.call("reset")
    assert _bars(ib, aapl)


def test_historical_pacing_is_off_in_process_unless_asked(ib):
    assert GatewayConfig().historical_pacing is False
    aapl = _stock(ib)
    assert _bars(ib, aapl) and _bars(ib, aapl)


# --- fills during a 1100 outage -------------------------------------------------------------------
LOST = "Connectivity between IB and TWS has been lost."


@pytest.mark.parametrize("restored", [1101, 1102])
def test_fills_during_1100_arrive_once_after_connectivity_is_restored(ib, admin, restored):
    aapl = _stock(ib)
    price = admin.call("state")["prices"]["AAPL"]
    resting = ib.placeOrder(aapl, LimitOrder("BUY", 10, round(price * 0.9, 2), orderRef="rest"))
    eventually(lambda: resting.orderStatus.status == "Submitted", pump=ib)
    admin.call("error", code=1100, msg=LOST)
    admin.call("set_price", symbol="AAPL", price=round(price * 0.85, 2))  # the exchange fills it
    sent = ib.placeOrder(aapl, MarketOrder("BUY", 5, orderRef="sent-in-outage"))
    _round_trip(ib)
    ledger = admin.call("ledger")
    assert [e["order_ref"] for e in ledger["executions"]] == ["rest"]
    assert admin.call("state")["outage"] is True
    assert ib.fills() == [] and resting.orderStatus.status == "Submitted"
    assert sent.orderStatus.status == "PendingSubmit"  # held by the gateway, not at IB
    assert ib.reqExecutions() == []  # the gateway does not know the fill yet

    admin.call("error", code=restored, msg="Connectivity between IB and TWS has been restored")
    eventually(
        lambda: resting.orderStatus.status == sent.orderStatus.status == "Filled",
        pump=ib,
        what="withheld fill and held order delivered",
    )
    eventually(lambda: all(f.commissionReport.commission > 0 for f in ib.fills()), pump=ib)
    fills = ib.fills()
    assert sorted(f.execution.orderRef for f in fills) == ["rest", "sent-in-outage"]
    assert len({f.execution.execId for f in fills}) == 2
    assert len(ib.reqExecutions()) == 2
    assert len(ib.fills()) == 2  # the same execIds again, recorded once
    assert ib.positions()[0].position == 15


def test_1101_ends_market_data_subscriptions_1102_keeps_them(ib, admin):
    ticker = ib.reqMktData(_stock(ib, "MSFT"))
    eventually(lambda: ticker.bid > 0, pump=ib)
    admin.call("error", code=1100, msg=LOST)
    admin.call("error", code=1102, msg="Connectivity restored - data maintained.")
    assert len(admin.call("state")["market_data"]["1"]) == 1
    admin.call("error", code=1100, msg=LOST)
    admin.call("error", code=1101, msg="Connectivity restored - data lost.")
    assert admin.call("state")["market_data"]["1"] == []
