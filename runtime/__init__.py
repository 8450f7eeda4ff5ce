"""Processes and orchestration. Public modules (import them by name):

- `config`: the frozen, typed Config. `broker`: the only importer of the IB client library
  (ib_insync or ib_async).
- `ib_errors`: IB's error codes as one policy table; `ib_conditions`: what they say now.
- `breaker`: the latched circuit breaker. `heartbeat`: heartbeat files and sd_notify.
- `commander` (with `sense`, `gate_context`, `llm_commander`): one cycle.
- `main_loop`, `watchdog`: the two processes. `cli`, `demo`: the command line.
- `replay` (with `replay_record`, `replay_gate`, `replay_view`): a cycle's Decide and gate
  run again offline from its snapshot.
"""

__all__ = [
    "breaker",
    "broker",
    "cli",
    "commander",
    "config",
    "demo",
    "gate_context",
    "heartbeat",
    "ib_conditions",
    "ib_errors",
    "llm_commander",
    "main_loop",
    "market_hours",
    "replay",
    "replay_gate",
    "replay_record",
    "replay_view",
    "sense",
    "watchdog",
]
