"""Capabilities the commander uses. Public modules (import them by name):

- `math_core`: Kelly sizing, Black-Scholes price, implied vol, Greeks.
- `execution_gate`: `place_order_with_guard()`, the only path to the broker.
- `swarm_core` (with `swarm_models`, `swarm_providers`): the strategy swarm.
- `contracts`: the one spelling of a contract key.
"""

__all__ = [
    "contracts",
    "execution_gate",
    "math_core",
    "swarm_core",
    "swarm_models",
    "swarm_providers",
]
