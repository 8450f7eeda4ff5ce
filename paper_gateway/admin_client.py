"""A small blocking client for the admin channel (tests, drills, benchmarks, a person's shell)."""

from __future__ import annotations

import json
import socket
from typing import Any

__all__ = ["AdminClient", "AdminCommandError"]


class AdminCommandError(RuntimeError):
    """The gateway answered {"ok": false, ...}."""


class AdminClient:
    """Send one JSON command per line to the admin port and read the one-line reply."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._file = self._sock.makefile("rwb")

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Run a command; return the reply, or raise AdminCommandError when it is refused."""
        reply = self.raw({"cmd": cmd, **args})
        if not reply.get("ok"):
            raise AdminCommandError(f"{cmd}: {reply.get('error')}")
        return reply

    def raw(self, obj: Any) -> dict[str, Any]:
        """Send any JSON value and return the parsed reply, ok or not."""
        self._file.write((json.dumps(obj) + "\n").encode())
        self._file.flush()
        line = self._file.readline()
        if not line:
            raise ConnectionError("admin channel closed")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
