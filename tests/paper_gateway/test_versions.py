"""Negotiated versions: our strict test client reads every reply field by field at v157..v176."""

import pytest
from ib_client import ExecutionFilter, LimitOrder, MarketOrder, Option, Stock
from tws_wire_client import (
    BAR_TIME_NO_ZONE,
    BAR_TIME_WITH_ZONE,
    LayoutError,
    RawSession,
    decode,
)

from paper_gateway import GatewayConfig

# 157: IB's ibapi 9.81; 158/160/162: openOrder duration, postToAts, autoCancelParent;
# 163/164: fractional sizes, size rules; 166: advanced reject; 170: peg offsets;
# 173/174: bar time zone; 176: ib_insync's maximum
VERSIONS = [157, 158, 160, 162, 163, 164, 166, 170, 173, 174, 176]
AAPL = 265598


@pytest.fixture
def raw(gateway):
    sessions = []

    def _open(offer="v100..176", client_id=7):
        s = RawSession(gateway.port, offer, client_id)
        sessions.append(s)
        return s

    yield _open
    for s in sessions:
        s.close()


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        ("v100..157", 157),
        ("v157..176", 176),
        ("v157..178 +PACEAPI", 176),
        ("v100..170", 170),
        ("v160..165", 165),
    ],
)
def test_the_gateway_answers_the_highest_version_both_sides_support(raw, offer, answer):
    assert raw(offer).version == answer


@pytest.mark.parametrize("offer", ["v100..150", "v177..180"])
def test_a_range_without_overlap_is_refused_with_error_506_then_closed(raw, offer):
    s = raw(offer)
    assert s.version == 0
    assert s.refusal[:4] == ["4", "2", "-1", "506"]
    assert len(s.refusal) == 5  # the layout a client reads before it has a server version
    assert "157..176" in s.refusal[4]
    with pytest.raises(ConnectionError):
        s.read_frame(5.0)


def test_the_strict_decoder_rejects_a_layout_of_another_version():
    with pytest.raises(LayoutError):
        decode(["1", "6", "3", "1", "228.5", "500.0", "0"], 157)  # fractional size before 163
    with pytest.raises(LayoutError):
        decode(["4", "2", "-1", "2104", "farm OK", ""], 157)  # advanced JSON before 166
    with pytest.raises(LayoutError):
        decode(["4", "2", "-1", "2104", "farm OK"], 176)  # missing advanced JSON at 176
    assert decode(["1", "6", "3", "1", "228.5", "500", "0"], 157).values["size"] == 500


@pytest.mark.parametrize("version", VERSIONS)
def test_contracts_market_data_and_history_decode_at_every_version(raw, version):
    s = raw(f"v100..{version}")
    assert s.version == version
    stock = Stock("AAPL", "SMART", "USD")
    s.request("reqContractDetails", 1, stock)
    s.wait_for(lambda m: m.msg_id == 52)
    [cd] = s.of(10, 1)
    assert cd["conId"] == AAPL and cd["timeZoneId"] == "US/Eastern"
    assert ("version" in cd) == (version < 164)
    assert ("minSize" in cd) == (version >= 164)

    s.request("reqMktData", 2, stock, "106", True, False, [])
    s.wait_for(lambda m: m.msg_id == 57)
    sizes = [t["size"] for t in s.of(1, 2)] + [t["size"] for t in s.of(2, 2)]
    assert sizes and all(isinstance(x, float if version >= 163 else int) for x in sizes)

    chain = Option("AAPL", "", 0, "C", "SMART")
    s.request("reqSecDefOptParams", 3, "AAPL", "", "STK", AAPL)
    s.wait_for(lambda m: m.msg_id == 76)
    params = s.of(75, 3)[0]
    option = Option("AAPL", params["expirations"][0], params["strikes"][20], "C", "SMART")
    s.request("reqMktData", 4, option, "", True, False, [])
    s.wait_for(lambda m: m.msg_id == 57 and m.values["1"] == 4)
    assert len(s.of(21)) == 3 and chain.right == "C"

    s.request("reqHistoricalData", 5, stock, "", "1 D", "30 mins", "TRADES", 1, 1, False, [])
    intraday = s.wait_for(lambda m: m.msg_id == 17).values
    pattern = BAR_TIME_WITH_ZONE if version >= 174 else BAR_TIME_NO_ZONE
    assert all(pattern.match(b["date"]) for b in intraday["bars"]), intraday["bars"][0]
    s.request("reqHistoricalData", 6, stock, "", "5 D", "1 day", "TRADES", 1, 1, False, [])
    daily = s.wait_for(lambda m: m.msg_id == 17 and m.values["reqId"] == 6).values
    assert len(daily["bars"]) == 5
    assert isinstance(daily["bars"][0]["volume"], float if version >= 163 else int)

    s.request("reqHeadTimeStamp", 7, stock, "TRADES", True, 1)
    head = s.wait_for(lambda m: m.msg_id == 88).values
    assert (BAR_TIME_WITH_ZONE if version >= 174 else BAR_TIME_NO_ZONE).match(head["1"])
    s.request("reqMatchingSymbols", 8, "MS")
    found = s.wait_for(lambda m: m.msg_id == 79).values["contracts"]
    assert found[0]["symbol"] == "MSFT"
    assert ("description" in found[0]) == (version >= 176)

    s.request("reqContractDetails", 9, Stock("NOPE", "SMART", "USD"))
    [err] = s.errors(9) or [s.wait_for(lambda m: m.msg_id == 4 and m.values["reqId"] == 9).values]
    assert err["code"] == 200
    assert ("advancedOrderRejectJson" in err) == (version >= 166)


@pytest.mark.parametrize("version", VERSIONS)
def test_orders_fills_and_account_decode_at_every_version(raw, version):
    s = raw(f"v100..{version}")
    stock = Stock("AAPL", "SMART", "USD")
    order_id = s.of(9)[0]["1"]
    s.request("placeOrder", order_id, stock, MarketOrder("BUY", 10))
    s.wait_for(lambda m: m.msg_id == 59)
    assert s.wait_for(lambda m: m.msg_id == 3 and m.values["status"] == "Filled")
    [fill] = s.of(11)
    assert fill["orderId"] == order_id and fill["side"] == "BOT" and fill["shares"] == 10
    assert s.of(5)[-1]["orderId"] == order_id

    s.request("placeOrder", order_id + 1, stock, LimitOrder("BUY", 100, 1.0, whatIf=True))
    preview = s.wait_for(lambda m: m.msg_id == 5 and m.values["orderId"] == order_id + 1)
    assert preview.values["whatIf"] == 1 and preview.values["commission"] == "1.0"

    s.request("placeOrder", order_id + 2, Stock("AAPL", "", "USD"), MarketOrder("BUY", 1))
    err = s.wait_for(lambda m: m.msg_id == 4 and m.values["reqId"] == order_id + 2).values
    assert err["code"] == 321 and "Missing order exchange" in err["msg"]

    s.request("reqPositions")
    s.wait_for(lambda m: m.msg_id == 62)
    assert [p["13"] for p in s.of(61)] == [10.0]  # position: a decimal at every version
    s.request("reqPnLSingle", 10, "DU1234567", "", AAPL)
    pnl = s.wait_for(lambda m: m.msg_id == 95).values
    assert pnl["pos"] == 10 and isinstance(pnl["pos"], float if version >= 163 else int)
    s.request("reqAccountUpdates", True, "DU1234567")
    s.wait_for(lambda m: m.msg_id == 54)
    currencies = {(v["1"], v["3"]) for v in s.of(6)}
    assert {("NetLiquidationByCurrency", "BASE"), ("NetLiquidationByCurrency", "USD")} <= (
        currencies
    )
    s.request("reqCompletedOrders", False)
    s.wait_for(lambda m: m.msg_id == 102)
    assert s.of(101)[0]["completedStatus"] == "Filled"
    s.request("reqExecutions", 11, ExecutionFilter())
    s.wait_for(lambda m: m.msg_id == 55)
    s.request("reqPositionsMulti", 12, "DU1234567", "")
    s.wait_for(lambda m: m.msg_id == 72)
    s.request("reqAccountSummary", 13, "All", "NetLiquidation")
    s.wait_for(lambda m: m.msg_id == 64)
    s.request("reqAccountUpdatesMulti", 14, "DU1234567", "", False)
    s.wait_for(lambda m: m.msg_id == 74)
    s.request("reqPnL", 15, "DU1234567", "")
    s.wait_for(lambda m: m.msg_id == 94)
    s.request("reqCurrentTime")
    s.wait_for(lambda m: m.msg_id == 49)
    assert [e["code"] for e in s.errors() if e["code"] < 2100] == [321]


@pytest.mark.parametrize(
    "gateway_config",
    [GatewayConfig(tick_interval_s=0.0, account_push_interval_s=0.05, historical_pacing=True)],
)
@pytest.mark.parametrize("version", VERSIONS)
def test_production_realities_decode_at_every_version(raw, admin, version):
    """Delayed ticks (66.., marketDataType 3) and the new error codes, field by field."""
    admin.call("entitlement", symbol="AAPL", level="delayed")
    admin.call("entitlement", symbol="MSFT", level="none")
    s = raw(f"v100..{version}")
    s.wait_for(lambda m: m.msg_id == 4 and m.values["code"] == 2158)
    assert [e["code"] for e in s.errors(-1)] == [2104, 2106, 2158]
    stock = Stock("AAPL", "SMART", "USD")
    s.request("reqMktData", 1, stock, "", False, False, [])
    assert s.wait_for(lambda m: m.msg_id == 4 and m.values["reqId"] == 1).values["code"] == 354
    s.request("reqMarketDataType", 3)
    s.request("reqMktData", 2, stock, "", False, False, [])
    s.wait_for(lambda m: m.msg_id == 2 and m.values["reqId"] == 2)
    assert [e["code"] for e in s.errors(2)] == [10167]
    assert s.of(58)[-1] == {"0": 1, "1": 2, "2": 3}
    prices = {t["tickType"]: t for t in s.of(1, 2)}
    assert {66, 67, 68, 75} <= set(prices)
    assert isinstance(prices[66]["size"], float if version >= 163 else int)
    assert [t["tickType"] for t in s.of(2, 2)] == [74]
    s.request("reqMktData", 3, Stock("MSFT", "SMART", "USD"), "", False, False, [])
    assert s.wait_for(lambda m: m.msg_id == 4 and m.values["reqId"] == 3).values["code"] == 10168

    admin.call("farm", farm="market", ok=False)
    assert s.wait_for(lambda m: m.msg_id == 4 and m.values["code"] == 2103).values["reqId"] == -1
    admin.call("competing_session", client_id=7, active=True)
    err = s.wait_for(lambda m: m.msg_id == 4 and m.values["code"] == 10197).values
    assert err["reqId"] == 2 and ("advancedOrderRejectJson" in err) == (version >= 166)
    for req_id in (4, 5):
        s.request("reqHistoricalData", req_id, stock, "", "5 D", "1 day", "TRADES", 1, 1, False, [])
    s.wait_for(lambda m: m.msg_id == 17 and m.values["reqId"] == 4)
    err = s.wait_for(lambda m: m.msg_id == 4 and m.values["reqId"] == 5).values
    assert err["code"] == 162 and "pacing violation" in err["msg"]
