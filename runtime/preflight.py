"""What `run` refuses, checked in one place so that `check` refuses the same, with the same
messages: bad config (already refused at load), swarm instances, a missing API key, live
mode not armed, and (for `check`) an unreachable gateway, a client id in use, an account
that does not match the mode."""

from __future__ import annotations

from skills.swarm_core import SwarmConfigError, load_instances

from .broker import AccountModeError, BrokerError, ClientIdInUse, probe_gateway
from .config import Config, Secrets

__all__ = ["gateway_refusals", "static_refusals"]

KEY_MISSING = (
    "swarm.provider 'anthropic' / commander.mode 'llm' need ANTHROPIC_API_KEY in the environment"
)
NOT_ARMED = "mode is 'live' but LIVE_TRADING_ARMED=1 is not set: refusing to connect"


def static_refusals(cfg: Config, secrets: Secrets) -> list[str]:
    """Reasons `run` would refuse to start, without touching the network."""
    out: list[str] = []
    try:
        load_instances(cfg.swarm.instances_dir, cfg.swarm.templates_dir, cfg.risk.model_dump())
    except SwarmConfigError as exc:
        out.append(str(exc))
    needs_key = cfg.swarm.provider == "anthropic" or cfg.commander.mode == "llm"
    if needs_key and not secrets.anthropic_api_key:
        out.append(KEY_MISSING)
    if cfg.mode == "live" and not secrets.live_armed:
        out.append(NOT_ARMED)
    return out


async def gateway_refusals(cfg: Config, secrets: Secrets) -> list[str]:
    """Reasons the gateway would refuse the main loop's or the watchdog's session."""
    out: list[str] = []
    b = cfg.broker
    for client_id, who in ((b.client_id, "main loop"), (b.watchdog_client_id, "watchdog")):
        try:
            await probe_gateway(b, cfg.mode, secrets, client_id)
        except ClientIdInUse as exc:
            out.append(f"{who}: {exc}")
        except (AccountModeError, BrokerError) as exc:
            out.append(str(exc))
            break
        except (ConnectionError, OSError, TimeoutError) as exc:
            out.append(f"gateway {b.host}:{b.port} unreachable: {exc or type(exc).__name__}")
            break
    return out
