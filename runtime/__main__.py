"""python -m runtime <command> --config F

Built so far: `check` (validate a config). The daemon commands (run, watchdog, status,
breaker, panic, trades, snapshots, demo) arrive with the runtime (issue 5); until then they
are not offered.
"""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_config


def _check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(
        f"{args.config}: ok (mode={cfg.mode}, broker {cfg.broker.host}:{cfg.broker.port}, "
        f"client {cfg.broker.client_id}, watchdog {cfg.broker.watchdog_client_id}, "
        f"data {cfg.data.dir})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a config file")
    check.add_argument("--config", required=True)
    check.set_defaults(func=_check)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
