"""TWS API framing and field encoding: length-prefixed messages of NUL-terminated fields."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

__all__ = [
    "UNSET_DOUBLE",
    "UNSET_INTEGER",
    "Field",
    "FieldReader",
    "FrameDecoder",
    "ProtocolError",
    "encode_fields",
    "frame",
    "split_fields",
]

UNSET_DOUBLE = 1.7976931348623157e308
UNSET_INTEGER = 2**31 - 1
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_LEN = struct.Struct(">I")

Field = str | int | float | bool | None


class ProtocolError(Exception):
    """The peer sent bytes that do not follow the TWS API framing."""


def _encode(value: Field) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return "" if value == UNSET_INTEGER else str(value)
    if isinstance(value, float):
        if value == UNSET_DOUBLE or math.isnan(value):
            return ""
        if value == math.inf:
            return "Infinite"
        return repr(value)
    return value


def encode_fields(fields: Iterable[Field]) -> bytes:
    """Encode fields as NUL-terminated text, the way IB's own server does."""
    return "".join(_encode(f) + "\0" for f in fields).encode()


def frame(payload: bytes) -> bytes:
    """Prefix a payload with its 4-byte big-endian length."""
    return _LEN.pack(len(payload)) + payload


class FrameDecoder:
    """Split a byte stream into frames; the first frame of a session may be the API prefix."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.handshake_done = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes and return every complete frame payload now available."""
        self._buf += data
        out: list[bytes] = []
        while True:
            if not self.handshake_done:
                if len(self._buf) < 4:
                    break
                if bytes(self._buf[:4]) != b"API\0":
                    raise ProtocolError("connection did not start with the API prefix")
                del self._buf[:4]
                self.handshake_done = True
                continue
            if len(self._buf) < 4:
                break
            (size,) = _LEN.unpack_from(self._buf)
            if size > MAX_MESSAGE_BYTES:
                raise ProtocolError(f"frame of {size} bytes exceeds the limit")
            if len(self._buf) < 4 + size:
                break
            out.append(bytes(self._buf[4 : 4 + size]))
            del self._buf[: 4 + size]
        return out


def split_fields(payload: bytes) -> list[str]:
    """Split a frame payload into its text fields."""
    fields = payload.decode(errors="backslashreplace").split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    return fields


class FieldReader:
    """Read typed fields from a decoded message, in order."""

    def __init__(self, fields: list[str]) -> None:
        self._fields = fields
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._fields) - self._pos

    def text(self) -> str:
        if self._pos >= len(self._fields):
            raise ProtocolError("message ended early")
        value = self._fields[self._pos]
        self._pos += 1
        return value

    def integer(self, default: int = 0) -> int:
        text = self.text()
        if text == "":
            return default
        try:
            return int(text)
        except ValueError:
            return int(float(text))

    def number(self, default: float = UNSET_DOUBLE) -> float:
        text = self.text()
        if text == "":
            return default
        if text == "Infinite":
            return math.inf
        return float(text)

    def flag(self) -> bool:
        text = self.text()
        return text not in ("", "0", "false", "False")

    def skip(self, n: int = 1) -> None:
        if self._pos + n > len(self._fields):
            raise ProtocolError("message ended early")
        self._pos += n
