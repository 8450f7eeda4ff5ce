"""IB's own Python client 9.81 (it offers v100..157) as a second, independent v157 decoder.

Its decoder drops the connection on a mistyped field (a decimal size before v163) and
discards a message whose field count does not match its wrapper method (an error with the
v166 advancedOrderRejectJson), so every event below arriving proves a v157 layout right.
"""

import threading
from typing import Any

import pytest

from paper_gateway.testing import eventually

ibapi = pytest.importorskip("ibapi")
from ibapi import server_versions  # noqa: E402
from ibapi.client import EClient  # noqa: E402
from ibapi.contract import Contract  # noqa: E402
from ibapi.order import Order  # noqa: E402
from ibapi.wrapper import EWrapper  # noqa: E402

EVENTS = (
    "error",
    "nextValidId",
    "contractDetails",
    "contractDetailsEnd",
    "tickPrice",
    "tickSize",
    "tickSnapshotEnd",
    "historicalData",
    "historicalDataEnd",
    "openOrder",
    "orderStatus",
    "execDetails",
    "commissionReport",
    "position",
    "positionEnd",
    "updateAccountValue",
    "accountDownloadEnd",
    "pnlSingle",
    "headTimestamp",
    "symbolSamples",
    "completedOrdersEnd",
)


class Recorder(EWrapper):  # type: ignore[misc]  # ibapi ships no types: EWrapper is Any
    """Record every callback of interest as (name, args)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.lock = threading.Lock()

    def of(self, name: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [args for n, args in self.events if n == name]


def _recorder(name: str):
    def record(self: Recorder, *args: Any) -> None:
        with self.lock:
            self.events.append((name, args))

    return record


for _name in EVENTS:
    setattr(Recorder, _name, _recorder(_name))


def stock(symbol: str = "AAPL", exchange: str = "SMART") -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "STK", exchange, "USD"
    return c


@pytest.fixture
def client(gateway):
    if server_versions.MAX_CLIENT_VER != 157:
        pytest.skip("needs ibapi 9.81 (v100..157), see requirements.txt")
    wrapper = Recorder()
    c = EClient(wrapper)
    c.connect("127.0.0.1", gateway.port, 11)
    thread = threading.Thread(target=c.run, name="ibapi-157", daemon=True)
    thread.start()
    eventually(lambda: wrapper.of("nextValidId"), what="nextValidId")
    yield c, wrapper
    c.disconnect()
    thread.join(5)


def test_ibapi_981_reads_every_reply_at_v157(client):
    c, w = client
    assert c.serverVersion() == 157
    c.reqContractDetails(1, stock())
    eventually(lambda: w.of("contractDetailsEnd"), what="contract details")
    [(req_id, details)] = w.of("contractDetails")
    assert (req_id, details.contract.conId, details.minTick) == (1, 265598, 0.01)
    c.reqContractDetails(2, stock("NOSUCH"))
    c.reqMktData(3, stock(), "", True, False, [])
    eventually(lambda: w.of("tickSnapshotEnd"), what="snapshot end")
    assert [s for _, t, s in w.of("tickSize") if t == 0] == [500]
    c.reqHistoricalData(4, stock(), "", "2 D", "1 hour", "TRADES", 1, 1, False, [])
    c.reqHistoricalData(5, stock(), "", "5 D", "1 day", "TRADES", 1, 1, False, [])
    eventually(lambda: len(w.of("historicalDataEnd")) == 2, what="two bar sets")
    order_id = w.of("nextValidId")[0][0]
    order = Order()
    order.action, order.orderType, order.totalQuantity = "BUY", "MKT", 10
    c.placeOrder(order_id, stock(), order)
    eventually(lambda: w.of("commissionReport"), what="commission report")
    c.placeOrder(order_id + 1, stock(exchange=""), order)
    c.reqPositions()
    c.reqAccountUpdates(True, "DU1234567")
    c.reqPnLSingle(6, "DU1234567", "", 265598)
    c.reqHeadTimeStamp(7, stock(), "TRADES", 1, 1)
    c.reqMatchingSymbols(8, "MSFT")
    c.reqCompletedOrders(False)
    for name in ("positionEnd", "accountDownloadEnd", "pnlSingle", "headTimestamp"):

        def answered(name: str = name) -> bool:
            return bool(w.of(name))

        eventually(answered, what=name)
    eventually(lambda: w.of("symbolSamples") and w.of("completedOrdersEnd"), what="samples")
    assert any(s == "Filled" for _, s, *_ in w.of("orderStatus"))
    assert w.of("pnlSingle")[0][1] == 10
    codes = {code for req_id, code, _ in w.of("error") if req_id in (2, order_id + 1)}
    assert codes == {200, 321}
    assert c.isConnected()
