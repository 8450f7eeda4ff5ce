"""Contracts, quotes, streaming, IV, history and options, as the IB client library sees them."""

import math

import pytest
from ib_client import Option, Stock, qualified

from paper_gateway import Gateway, GatewayConfig
from paper_gateway.instruments import STOCKS
from paper_gateway.testing import eventually
from skills.math_core import black_scholes_price

STRATEGY_SYMBOLS = ["NVDA", "AMD", "TSLA", "AAPL", "MSFT", "SPY", "JPM", "BAC", "GS"]


def test_strategy_symbols_qualify_with_real_looking_details(ib):
    contracts = [Stock(s, "SMART", "USD") for s in STRATEGY_SYMBOLS]
    assert len(qualified(ib.qualifyContracts(*contracts))) == len(STRATEGY_SYMBOLS)
    [details] = ib.reqContractDetails(Stock("NVDA", "SMART", "USD"))
    assert details.contract.conId == 4815747
    assert details.contract.primaryExchange == "NASDAQ"
    assert details.timeZoneId == "US/Eastern"
    days = details.liquidHours.split(";")
    assert len(days) == 7
    assert all(d.endswith(("CLOSED", "1600", "1300")) for d in days)  # 1300: early close
    assert any(d.endswith("CLOSED") for d in days)  # a weekend is in any 7-day window


def test_unknown_symbol_is_error_200_and_does_not_qualify(ib):
    codes = []
    ib.errorEvent += lambda req_id, code, msg, contract: codes.append(code)
    assert qualified(ib.qualifyContracts(Stock("NOPE", "SMART", "USD"))) == []
    assert 200 in codes


def test_snapshot_quote_has_a_spread_around_the_last_price(ib):
    c = Stock("SPY", "SMART", "USD")
    ib.qualifyContracts(c)
    [t] = ib.reqTickers(c)
    assert 0 < t.bid < t.last < t.ask
    assert t.ask - t.bid < 0.01 * t.last
    assert t.close > 0


def test_same_seed_gives_the_same_market_and_another_seed_does_not():
    def history(seed):
        from ib_client import IB

        with Gateway(GatewayConfig(tick_interval_s=0.0, seed=seed)) as gw:
            ib = IB()
            ib.connect("127.0.0.1", gw.port, clientId=1, timeout=5)
            try:
                c = Stock("AAPL", "SMART", "USD")
                ib.qualifyContracts(c)
                return [
                    b.close for b in ib.reqHistoricalData(c, "", "1 M", "1 day", "TRADES", True)
                ]
            finally:
                ib.disconnect()

    assert history(11) == history(11)
    assert history(11) != history(12)


def test_streaming_ticks_follow_admin_price_changes(ib, admin):
    c = Stock("MSFT", "SMART", "USD")
    ib.qualifyContracts(c)
    ticker = ib.reqMktData(c)
    eventually(lambda: ticker.last == 415.0, pump=ib)
    admin.call("set_price", symbol="MSFT", price=420.0)
    eventually(lambda: ticker.last == 420.0 and ticker.bid < 420.0 < ticker.ask, pump=ib)
    ib.cancelMktData(c)


class TestMarketModelClock:
    @pytest.fixture
    def gateway_config(self):
        return GatewayConfig(tick_interval_s=0.02)

    def test_market_model_moves_prices_by_itself(self, ib):
        c = Stock("TSLA", "SMART", "USD")
        ib.qualifyContracts(c)
        ticker = ib.reqMktData(c)
        eventually(lambda: ticker.last == ticker.last, pump=ib)  # first tick (not NaN)
        first = ticker.last
        eventually(lambda: ticker.last != first, pump=ib, what="price moved")


def test_generic_tick_106_gives_the_underlyings_implied_vol(ib):
    c = Stock("NVDA", "SMART", "USD")
    ib.qualifyContracts(c)
    ticker = ib.reqMktData(c, "106")
    eventually(lambda: not math.isnan(ticker.impliedVolatility), pump=ib)
    spec = next(s for s in STOCKS if s.symbol == "NVDA")
    assert spec.iv_low <= ticker.impliedVolatility <= spec.iv_high


def test_a_year_of_iv_history_gives_the_designed_iv_rank(ib):
    c = Stock("NVDA", "SMART", "USD")
    ib.qualifyContracts(c)
    bars = ib.reqHistoricalData(c, "", "1 Y", "1 day", "OPTION_IMPLIED_VOLATILITY", True)
    assert len(bars) == 252
    assert bars[0].date < bars[-1].date
    closes = [b.close for b in bars]
    rank = (closes[-1] - min(closes)) / (max(closes) - min(closes))
    assert rank == pytest.approx(0.91, abs=0.01)


def test_intraday_bars_end_at_the_current_price(ib):
    c = Stock("AMD", "SMART", "USD")
    ib.qualifyContracts(c)
    bars = ib.reqHistoricalData(c, "", "1 D", "5 mins", "MIDPOINT", True, formatDate=2)
    assert len(bars) == 78
    assert bars[-1].close == pytest.approx(158.0)


def test_option_chain_lists_expiries_and_strikes_around_spot(ib):
    c = Stock("AAPL", "SMART", "USD")
    ib.qualifyContracts(c)
    chains = ib.reqSecDefOptParams("AAPL", "", "STK", c.conId)
    smart = next(ch for ch in chains if ch.exchange == "SMART")
    assert smart.multiplier == "100"
    assert len(smart.expirations) >= 6
    assert min(smart.strikes) < 228 < max(smart.strikes)


def _listed_option(ib, symbol, right="C", offset=0):
    stock = Stock(symbol, "SMART", "USD")
    ib.qualifyContracts(stock)
    chain = next(ch for ch in ib.reqSecDefOptParams(symbol, "", "STK", stock.conId))
    [t] = ib.reqTickers(stock)
    strike = min(chain.strikes, key=lambda k: abs(k - t.last))
    strike = chain.strikes[chain.strikes.index(strike) + offset]
    opt = Option(symbol, chain.expirations[2], strike, right, "SMART")
    assert qualified(ib.qualifyContracts(opt)) == [opt]
    return opt, t.last


def test_option_quote_and_model_greeks_are_black_scholes_consistent(ib):
    call, spot = _listed_option(ib, "AAPL", "C")
    put = Option("AAPL", call.lastTradeDateOrContractMonth, call.strike, "P", "SMART")
    ib.qualifyContracts(put)
    tc, tp = ib.reqTickers(call, put)
    g = tc.modelGreeks
    assert 0.3 < g.delta < 0.7
    assert g.gamma > 0 and g.theta < 0 and g.undPrice == spot
    assert tc.bid < g.optPrice < tc.ask
    assert -0.7 < tp.modelGreeks.delta < -0.3
    # same IV on both sides at one strike: put-call parity holds for the model prices
    assert tp.modelGreeks.impliedVol == pytest.approx(g.impliedVol)
    t_years = tc.modelGreeks.optPrice - tp.modelGreeks.optPrice  # C - P
    assert t_years == pytest.approx(
        black_scholes_price(spot, call.strike, _years(call), g.impliedVol, 0.045, 0.0, "C")
        - black_scholes_price(spot, call.strike, _years(call), g.impliedVol, 0.045, 0.0, "P"),
        abs=1e-6,
    )


def _years(opt):
    import datetime as dt

    exp = dt.datetime.strptime(opt.lastTradeDateOrContractMonth, "%Y%m%d").replace(
        hour=21, tzinfo=dt.UTC
    )
    return (exp - dt.datetime.now(dt.UTC)).total_seconds() / (365 * 86400)


def test_unlisted_strike_is_error_200(ib):
    codes = []
    ib.errorEvent += lambda req_id, code, msg, contract: codes.append(code)
    opt = Option("AAPL", "20990101", 228.0, "C", "SMART")
    assert qualified(ib.qualifyContracts(opt)) == []
    assert 200 in codes


def test_options_trade_like_stocks_with_multiplier_100(ib, admin):
    from ib_client import MarketOrder

    opt, _ = _listed_option(ib, "MSFT", "P", offset=-2)
    [t] = ib.reqTickers(opt)
    cash0 = admin.call("state")["account"]["TotalCashValue"]
    trade = ib.placeOrder(opt, MarketOrder("BUY", 2))
    eventually(lambda: trade.orderStatus.status == "Filled", pump=ib)
    assert trade.orderStatus.avgFillPrice == t.ask
    state = admin.call("state")
    [pos] = state["positions"]
    assert (pos["sec_type"], pos["quantity"], pos["right"]) == ("OPT", 2.0, "P")
    assert pos["avg_cost"] == pytest.approx(t.ask * 100)
    assert state["account"]["TotalCashValue"] == pytest.approx(
        cash0 - 2 * t.ask * 100 - 1.3, abs=0.01
    )
    eventually(lambda: [p.contract.right for p in ib.positions()] == ["P"], pump=ib)
