"""A local server that speaks the TWS API wire protocol (server version 176): the paper broker.

The unmodified ib_insync client connects to it over TCP exactly as to IB Gateway. It is the
broker for the demo, the tests and the benchmarks, and it injects faults on request through
its admin channel.
"""

from .admin_client import AdminClient, AdminCommandError
from .server import Gateway, GatewayConfig, GatewayCore

__all__ = ["AdminClient", "AdminCommandError", "Gateway", "GatewayConfig", "GatewayCore"]
