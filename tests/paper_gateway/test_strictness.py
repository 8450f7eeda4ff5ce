"""As strict as the real service: its codes and texts, requests that end, holidays, time zones."""

import datetime as dt

import pytest
from ib_client import (
    ON_IB_ASYNC,
    Contract,
    LimitOrder,
    MarketOrder,
    Option,
    ScannerSubscription,
    Stock,
    qualified,
)

from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually


def errors_of(ib):
    seen = []
    ib.errorEvent += lambda req_id, code, msg, contract: seen.append((req_id, code, msg))
    return seen


def test_an_order_without_exchange_is_refused_with_321_and_never_fills(ib, admin):
    seen = errors_of(ib)
    contract = Contract(conId=265598)  # qualified by conId, but no exchange
    trade = ib.placeOrder(contract, MarketOrder("BUY", 5))
    eventually(lambda: any(e[1] == 321 for e in seen), pump=ib, what="321 for the order")
    # IB sends no order status for a request it could not validate; the client's own view:
    # ib_insync ends the order, ib_async marks it ValidationError (321 may answer a modify)
    assert trade.orderStatus.status == ("ValidationError" if ON_IB_ASYNC else "Cancelled")
    [(req_id, _, msg)] = [e for e in seen if e[1] == 321]
    assert req_id == trade.order.orderId
    assert msg == "Error validating request.-'bW' : cause - Missing order exchange"
    state = admin.call("state")
    assert state["executions"] == 0 and state["positions"] == [] and state["open_orders"] == []


@pytest.mark.parametrize(
    "contract",
    [
        Stock("NOSUCH", "SMART", "USD"),
        Stock("AAPL", "SMART", "EUR"),
        Stock("AAPL", "LSE", "USD"),
        Stock("AAPL", "SMART", "USD", primaryExchange="NYSE"),
    ],
)
def test_contracts_that_contradict_the_listing_get_error_200(ib, contract):
    seen = errors_of(ib)
    assert qualified(ib.qualifyContracts(contract)) == []
    assert [(code, msg) for _, code, msg in seen] == [
        (200, "No security definition has been found for the request")
    ]


def test_head_timestamp_and_matching_symbols_are_served(ib):
    stock = Stock("AAPL", "SMART", "USD")
    head = ib.reqHeadTimeStamp(stock, "TRADES", useRTH=True)
    assert isinstance(head, dt.datetime) and str(head.tzinfo) == "US/Eastern"
    assert (head.hour, head.minute) == (9, 30)
    found = ib.reqMatchingSymbols("AM")
    assert [d.contract.symbol for d in found][:2] == ["AMD", "AMZN"]
    assert found[0].derivativeSecTypes == ["OPT"]


def test_unsupported_requests_end_at_once_instead_of_hanging(ib):
    ib.RequestTimeout = 5  # a request the gateway leaves open would fail the test here
    stock = Stock("AAPL", "SMART", "USD")
    ib.qualifyContracts(stock)
    seen = errors_of(ib)
    end = "20261120 10:00:00 US/Eastern"
    assert ib.reqHistoricalTicks(stock, "", end, 10, "TRADES", True) == []
    assert ib.reqHistogramData(stock, True, "1 week") == []
    assert not ib.reqFundamentalData(stock, "ReportSnapshot")
    assert not ib.reqScannerData(ScannerSubscription("STK", "STK.US", "TOP_PERC_GAIN"))
    assert not ib.reqHistoricalNews(265598, "BRFG", "", "", 10)
    assert ib.reqScannerParameters() == "<ScanParameterResponse/>"
    assert ib.reqMktDepthExchanges() == []
    assert ib.reqNewsProviders() == []
    assert ib.reqSmartComponents("a6") == []
    assert not ib.reqUserInfo()
    groups = []
    ib.wrapper.displayGroupList = lambda req_id, g: groups.append((req_id, g))
    ib.client.queryDisplayGroups(77)
    eventually(lambda: groups == [(77, "")], pump=ib, what="display groups")
    codes = sorted({code for _, code, _ in seen})
    assert codes == [162, 430]  # both end a request in ib_insync and in ib_async


def test_what_if_carries_the_commission_the_fill_pays(ib):
    stock = Stock("MSFT", "SMART", "USD")
    ib.qualifyContracts(stock)
    state = ib.whatIfOrder(stock, MarketOrder("BUY", 300))
    assert float(state.commission) == 1.5  # 300 shares at $0.005
    assert float(state.initMarginChange) > 0
    trade = ib.placeOrder(stock, MarketOrder("BUY", 300))
    eventually(lambda: trade.fills and trade.fills[0].commissionReport.commission, pump=ib)
    assert trade.fills[0].commissionReport.commission == float(state.commission)


def test_intraday_bars_carry_the_exchange_time_zone(ib):
    stock = Stock("AAPL", "SMART", "USD")
    ib.qualifyContracts(stock)
    bars = ib.reqHistoricalData(stock, "", "1 D", "5 mins", "TRADES", True)
    assert bars and all(str(b.date.tzinfo) == "US/Eastern" for b in bars)


def test_account_values_have_base_and_per_currency_rows(ib):
    values = {(v.tag, v.currency): v.value for v in ib.accountValues()}
    for tag in ("NetLiquidationByCurrency", "CashBalance", "TotalCashBalance", "ExchangeRate"):
        assert (tag, "BASE") in values and (tag, "USD") in values
    assert values[("NetLiquidationByCurrency", "BASE")] == values[("NetLiquidation", "USD")]


THANKSGIVING_WEEK = dt.datetime(2026, 11, 23, 15, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "gateway_config",
    [GatewayConfig(tick_interval_s=0.0, clock=lambda: THANKSGIVING_WEEK)],
)
def test_holidays_and_early_closes_shape_hours_and_daily_bars(ib, gateway_config):
    stock = Stock("SPY", "SMART", "USD")
    [details] = ib.reqContractDetails(stock)
    liquid = details.liquidHours.split(";")
    assert "20261126:CLOSED" in liquid  # Thanksgiving
    assert "20261127:0930-20261127:1300" in liquid  # early close
    assert "20261127:0400-20261127:1700" in details.tradingHours.split(";")
    assert "20261123:0930-20261123:1600" in liquid
    bars = ib.reqHistoricalData(stock, "", "1 M", "1 day", "TRADES", True)
    dates = {b.date for b in bars}
    assert dt.date(2026, 11, 23) in dates and dt.date(2026, 11, 20) in dates
    assert not any(d.weekday() >= 5 for d in dates)
    assert dt.date(2026, 9, 7) not in dates  # Labor Day (inside "1 M" only if it grows)
    chains = ib.reqSecDefOptParams("SPY", "", "STK", details.contract.conId)
    assert all(e != "20261126" for c in chains for e in c.expirations)


def test_a_limit_order_at_a_valid_exchange_still_trades(ib):
    stock = Stock("AAPL", "ISLAND", "USD")
    ib.qualifyContracts(stock)
    trade = ib.placeOrder(stock, LimitOrder("BUY", 1, 10_000.0))
    eventually(lambda: trade.orderStatus.status == "Filled", pump=ib, what="fill")


BLACK_FRIDAY_11AM = dt.datetime(2026, 11, 27, 16, 20, tzinfo=dt.UTC)  # 11:20 US/Eastern


@pytest.mark.parametrize(
    "gateway_config",
    [GatewayConfig(tick_interval_s=0.0, clock=lambda: BLACK_FRIDAY_11AM)],
)
def test_intraday_bars_lie_in_the_sessions_of_trading_days(ib, gateway_config):
    stock = Stock("AAPL", "SMART", "USD")
    ib.qualifyContracts(stock)
    bars = ib.reqHistoricalData(stock, "", "2 D", "1 hour", "TRADES", useRTH=True)
    assert [b.date.strftime("%d %H:%M") for b in bars] == [
        "25 09:30",  # Wednesday; Thanksgiving is closed
        *(f"25 {h}:00" for h in range(10, 16)),
        "27 09:30",
        "27 10:00",
        "27 11:00",  # early-close Friday, the bar in progress included
    ]
    extended = ib.reqHistoricalData(stock, "", "1 D", "1 hour", "TRADES", useRTH=False)
    assert extended[0].date.strftime("%d %H:%M") == "27 04:00" and len(extended) == 8
    seen = errors_of(ib)
    assert not ib.reqHistoricalData(stock, "", "1 D", "7 mins", "TRADES", True)
    assert [code for _, code, _ in seen] == [162]


@pytest.mark.parametrize(
    "gateway_config",
    [GatewayConfig(tick_interval_s=0.0, clock=lambda: BLACK_FRIDAY_11AM)],
)
def test_historical_data_ends_at_the_requested_end(ib, gateway_config):
    stock = Stock("AAPL", "SMART", "USD")
    ib.qualifyContracts(stock)
    daily = ib.reqHistoricalData(stock, "20261120 16:00:00 US/Eastern", "5 D", "1 day", "TRADES", 1)
    assert [b.date for b in daily] == [dt.date(2026, 11, d) for d in (16, 17, 18, 19, 20)]
    latest = ib.reqHistoricalData(stock, "", "5 D", "1 day", "TRADES", 1)
    assert [b.date.day for b in latest] == [20, 23, 24, 25, 27]  # Thanksgiving skipped
    end = dt.datetime(2026, 11, 25, 17, 0, tzinfo=dt.UTC)  # 12:00 US/Eastern, sent as UTC
    bars = ib.reqHistoricalData(stock, end, "1 D", "1 hour", "TRADES", True)
    assert [b.date.strftime("%d %H:%M") for b in bars] == ["25 09:30", "25 10:00", "25 11:00"]
    seen = errors_of(ib)
    assert not ib.reqHistoricalData(stock, "next tuesday", "1 D", "1 hour", "TRADES", True)
    assert [code for _, code, _ in seen] == [162]


def test_an_ambiguous_contract_gets_200_ambiguous_for_quotes_and_orders(ib, admin):
    seen = errors_of(ib)
    ambiguous = Option("AAPL", "", 0.0, "C", "SMART")
    # through the client layer: ib_async's IB.reqMktData refuses a contract without a conId
    # before sending (it keys tickers by hash(contract)); the request on the wire is the same
    ib.client.reqMktData(ib.client.getReqId(), ambiguous, "", True, False, [])
    ib.placeOrder(ambiguous, MarketOrder("BUY", 1))
    expected = "The contract description specified for AAPL is ambiguous."
    eventually(lambda: len(seen) == 2, pump=ib, what="two errors")
    assert [(code, msg) for _, code, msg in seen] == [(200, expected), (200, expected)]
    assert admin.call("state")["executions"] == 0
