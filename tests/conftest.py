"""Shared fixtures: a paper gateway on free loopback ports, its admin channel, IB API clients
(ib_insync, or ib_async with IB_CLIENT_LIBRARY=ib_async: tests/ib_client.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

import pytest
from ib_client import IB

from data_lake import Store
from paper_gateway import AdminClient, Gateway, GatewayConfig

logging.getLogger("ib_insync").setLevel(logging.CRITICAL)
logging.getLogger("ib_async").setLevel(logging.CRITICAL)


@pytest.fixture(autouse=True)
def _current_loop_for_sync_clients(request: pytest.FixtureRequest) -> None:
    """The client library's sync API runs on the thread's current event loop; an async test before
    this one may have left none. Async tests get theirs from pytest-asyncio."""
    if asyncio.iscoroutinefunction(request.function):
        return
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


@pytest.fixture
def gateway_config() -> GatewayConfig:
    """Prices move only when a test says so (tick_interval_s=0)."""
    return GatewayConfig(tick_interval_s=0.0, account_push_interval_s=0.05)


@pytest.fixture
def gateway(gateway_config: GatewayConfig) -> Iterator[Gateway]:
    gw = Gateway(gateway_config).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def admin(gateway: Gateway) -> Iterator[AdminClient]:
    with AdminClient(gateway.admin_port) as client:
        yield client


@pytest.fixture
def connect(gateway: Gateway) -> Iterator[Callable[..., IB]]:
    """Return a function that connects a new client of the run's library (ib_client.NAME); all
    are disconnected after."""
    clients: list[IB] = []

    def _connect(client_id: int = 1, timeout: float = 5.0, **kwargs: object) -> IB:
        ib = IB()
        ib.connect("127.0.0.1", gateway.port, clientId=client_id, timeout=timeout, **kwargs)
        clients.append(ib)
        return ib

    yield _connect
    for ib in clients:
        ib.disconnect()


@pytest.fixture
def ib(connect: Callable[..., IB]) -> IB:
    return connect(1)


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    """A real data lake (SQLite file, writer thread) in the test's temp dir."""
    s = Store.open(tmp_path, busy_timeout_ms=200)
    try:
        yield s
    finally:
        s.close(10)
