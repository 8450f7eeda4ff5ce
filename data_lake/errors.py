"""The project's exception tree, grouped by what happens next.

It lives in the bottom package so every layer can use it. Each project exception derives from
exactly one of the four groups below (and may also derive from the builtin it refines, so
`except ValueError` style callers keep working):

- `RetryLater`: temporary (a locked database, a broker not ready): retry with backoff; no
  order goes out meanwhile.
- `HaltAndAlert`: the safety net cannot do its job as asked (a breaker file that cannot be
  written): keep the system safe and tell a person now.
- `RefuseToStart`: bad configuration or environment (a config key, a second daemon, a live
  account in paper mode): exit non-zero with a message that names the cause.
- `DiscardOutput`: one input is unusable (an instance's malformed answer, invalid math
  inputs): drop that output, record why, go on with the rest.
"""

from __future__ import annotations

__all__ = ["DiscardOutput", "HaltAndAlert", "RefuseToStart", "RetryLater", "TraderError"]


class TraderError(Exception):
    """The root of every exception this project raises on purpose."""


class RetryLater(TraderError):
    """Temporary: retry with backoff; nothing is sent meanwhile."""


class HaltAndAlert(TraderError):
    """The safety net is impaired: stay safe (halted, flat) and alert a person."""


class RefuseToStart(TraderError):
    """Bad configuration or environment: exit non-zero, naming the cause."""


class DiscardOutput(TraderError):
    """One input or output is unusable: record why and discard it; the rest goes on."""
