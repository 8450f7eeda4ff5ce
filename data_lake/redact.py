"""Keep secrets out of everything that is stored or logged."""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from types import TracebackType
from typing import Any

__all__ = ["RedactingFilter", "redact", "redacting_excepthook", "register_secret"]

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
    """A logging filter that redacts registered secrets from every record's message and from
    its traceback (exception text is not exempt: an SDK error may echo a header)."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = redact(record.getMessage())
            record.args = None
            if record.exc_info:
                record.exc_text = redact(self._formatter.formatException(record.exc_info))
                record.exc_info = None
            elif record.exc_text:
                record.exc_text = redact(record.exc_text)
            if record.stack_info:
                record.stack_info = redact(record.stack_info)
        return True


def redacting_excepthook(
    kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """A sys.excepthook that prints the traceback with registered secrets removed."""
    text = "".join(traceback.format_exception(kind, exc, tb))
    sys.stderr.write(redact(text))
