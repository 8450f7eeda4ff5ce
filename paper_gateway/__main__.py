"""python -m paper_gateway --port P --admin-port A [--seed N] [--account DU...]"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys

from .server import GatewayConfig, GatewayCore


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m paper_gateway",
        description="Paper IB Gateway speaking the TWS API (server versions 157..176).",
    )
    p.add_argument("--port", type=int, default=4002, help="API port (0 = pick a free one)")
    p.add_argument("--admin-port", type=int, default=4003, help="admin port (0 = free one)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    p.add_argument("--seed", type=int, default=7, help="seed of the market model")
    p.add_argument("--account", default="DU1234567", help="paper account id")
    p.add_argument("--cash", type=float, default=1_000_000.0, help="starting cash in USD")
    p.add_argument(
        "--master-client-id",
        type=int,
        default=None,
        help="client id that receives every client's order events",
    )
    p.add_argument(
        "--pacing",
        type=int,
        default=50,
        help="messages per second per client before error 100 (0 = off)",
    )
    p.add_argument(
        "--tick-interval",
        type=float,
        default=0.5,
        help="seconds between market model steps (0 = prices move only by admin)",
    )
    p.add_argument(
        "--partial-fill-above",
        type=float,
        default=0.0,
        help="orders larger than this fill in clips of this size (0 = off)",
    )
    p.add_argument(
        "--max-market-data-lines",
        type=int,
        default=100,
        help="simultaneous market-data subscriptions of the account before error 101",
    )
    p.add_argument(
        "--no-historical-pacing",
        action="store_true",
        help="serve historical data without IB's pacing rules (error 162)",
    )
    p.add_argument(
        "--daily-restart",
        metavar="HH:MM",
        default=None,
        help="restart every day at HH:MM in --restart-tz (sockets drop, state is kept)",
    )
    p.add_argument("--restart-tz", default="US/Eastern", help="time zone of --daily-restart")
    p.add_argument(
        "--restart-down-s",
        type=float,
        default=60.0,
        help="seconds a restart keeps the API port closed (gateway clock)",
    )
    p.add_argument(
        "--reauth-weekday",
        choices=["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        default=None,
        help="that day's restart stays down until an admin login (weekly re-authentication)",
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG logs every message")
    return p


async def _serve(config: GatewayConfig) -> None:
    core = GatewayCore(config)
    await core.start()
    print(
        json.dumps({"event": "ready", "port": core.port, "admin_port": core.admin_port}), flush=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await core.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = GatewayConfig(
            host=args.host,
            port=args.port,
            admin_port=args.admin_port,
            seed=args.seed,
            account=args.account,
            cash=args.cash,
            master_client_id=args.master_client_id,
            pacing_per_s=args.pacing,
            tick_interval_s=args.tick_interval,
            partial_fill_above=args.partial_fill_above,
            max_market_data_lines=args.max_market_data_lines,
            historical_pacing=not args.no_historical_pacing,
            daily_restart=args.daily_restart,
            restart_tz=args.restart_tz,
            restart_down_s=args.restart_down_s,
            reauth_weekday=args.reauth_weekday,
        )
    except ValueError as exc:
        print(f"paper_gateway: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config))
    except OSError as exc:
        print(f"paper_gateway: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
