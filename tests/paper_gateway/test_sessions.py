"""Handshake, sync, several clients, client-id conflicts, unsupported and malformed requests."""

import socket
import struct

import pytest
from ib_client import IB, Stock

from paper_gateway import Gateway, GatewayConfig
from paper_gateway.testing import eventually


def test_connect_syncs_account_positions_and_orders(connect):
    ib = connect(1)
    assert ib.isConnected()
    assert ib.managedAccounts() == ["DU1234567"]
    assert ib.client.serverVersion() == 176
    assert {v.tag for v in ib.accountValues()} >= {
        "NetLiquidation",
        "BuyingPower",
        "TotalCashValue",
    }
    assert ib.positions() == []


def test_account_id_is_configurable_and_farm_messages_arrive_as_warnings():
    ib = IB()
    seen = []
    ib.errorEvent += lambda req_id, code, msg, contract: seen.append(code)
    with Gateway(GatewayConfig(tick_interval_s=0.0, account="DU7654321")) as gw:
        ib.connect("127.0.0.1", gw.port, clientId=3, timeout=5)
        try:
            assert ib.managedAccounts() == ["DU7654321"]
            assert {2104, 2106, 2158} <= set(seen)
        finally:
            ib.disconnect()


def test_daemon_watchdog_and_cli_clients_connect_at_once(connect, admin):
    connect(1)
    connect(999)
    connect(7)
    assert admin.call("state")["clients"] == [1, 7, 999]


def test_client_id_in_use_is_refused_with_326_and_first_client_keeps_working(
    gateway, connect, admin
):
    first = connect(1)
    second = IB()
    codes = []
    second.errorEvent += lambda req_id, code, msg, contract: codes.append(code)
    with pytest.raises((TimeoutError, ConnectionError)):
        second.connect("127.0.0.1", gateway.port, clientId=1, timeout=1.5)
    assert 326 in codes
    assert admin.call("state")["clients"] == [1]
    assert first.reqCurrentTime() is not None


def test_client_id_is_free_again_after_disconnect(connect, admin):
    ib = connect(5)
    ib.disconnect()
    eventually(lambda: admin.call("state")["clients"] == [], what="client 5 released")
    again = connect(5)
    assert again.isConnected()


def test_unsupported_request_gets_an_ib_style_error_and_the_session_continues(ib):
    codes = []
    ib.errorEvent += lambda req_id, code, msg, contract: codes.append((code, msg))
    contract = Stock("AAPL", "SMART", "USD")
    ib.qualifyContracts(contract)
    ib.reqMktDepth(contract)
    eventually(lambda: any(c == 354 for c, _ in codes), pump=ib, what="error 354")
    assert next(m for c, m in codes if c == 354) == "Requested market data is not subscribed."
    assert ib.reqCurrentTime() is not None
    assert ib.reqContractDetails(contract)[0].contract.conId == 265598


def _raw_connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"API\0" + struct.pack(">I", 9) + b"v157..176")
    size = struct.unpack(">I", s.recv(4))[0]
    fields = s.recv(size).split(b"\0")
    assert fields[0] == b"176"
    return s


def test_malformed_message_is_answered_with_an_error_not_a_crash(gateway, connect, admin):
    s = _raw_connect(gateway.port)
    start = b"71\x002\x0042\x00\x00"
    s.sendall(struct.pack(">I", len(start)) + start)
    bad = b"3\x00notanumber\x00"  # placeOrder with garbage and far too few fields
    s.sendall(struct.pack(">I", len(bad)) + bad)
    received = b""
    while b"321" not in received:
        chunk = s.recv(65536)
        assert chunk, "gateway closed the socket instead of answering"
        received += chunk
    s.close()
    ib = connect(1)
    assert ib.reqCurrentTime() is not None


def test_garbage_connection_is_dropped_without_affecting_others(gateway, ib):
    s = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(100) == b""
    s.close()
    assert ib.reqCurrentTime() is not None


def test_account_summary_reports_the_paper_account(ib):
    summary = {v.tag: v.value for v in ib.accountSummary()}
    assert float(summary["NetLiquidation"]) == 1_000_000.0
    assert float(summary["BuyingPower"]) == 2_000_000.0
    assert summary["AccountType"] == "INDIVIDUAL"


def test_debug_log_shows_every_message_per_client(connect, caplog):
    import logging

    with caplog.at_level(logging.DEBUG, logger="paper_gateway.session"):
        ib = connect(4)
        ib.reqCurrentTime()
    lines = [r.getMessage() for r in caplog.records if r.name == "paper_gateway.session"]
    assert any(line.startswith("client 4 <<< 49,1") for line in lines)  # reqCurrentTime in
    assert any(line.startswith("client 4 >>> 49,1,") for line in lines)  # currentTime out
    assert any("client 4 connected" in line for line in lines)
