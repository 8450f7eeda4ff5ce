"""Keep secrets out of everything that is stored or logged."""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["RedactingFilter", "redact", "register_secret"]

_lock = threading.Lock()
_secrets: set[str] = set()
MASK = "[REDACTED]"


def register_secret(value: str | None) -> None:
    """Remember a secret value (8+ characters) so that `redact` removes it everywhere."""
    if value and len(value) >= 8:
        with _lock:
            _secrets.add(value)


def redact(obj: Any) -> Any:
    """Return `obj` with every registered secret replaced, recursing into lists and dicts."""
    if not _secrets:
        return obj
    if isinstance(obj, str):
        for secret in _secrets:
            if secret in obj:
                obj = obj.replace(secret, MASK)
        return obj
    if isinstance(obj, dict):
        return {k: redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    return obj


class RedactingFilter(logging.Filter):
    """A logging filter that redacts registered secrets from every record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = redact(record.getMessage())
            record.args = None
        return True
