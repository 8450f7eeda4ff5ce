"""Import sqlite_utils without numpy and pandas.

sqlite_utils imports numpy and pandas when they are installed, only to convert their values
on insert; the data lake stores plain Python values. Hiding them for that one import saves
100-200 ms of every CLI call (`status` under 0.5 s). They are unhidden at once: any other
code may still import them.
"""

from __future__ import annotations

import sys

_OPTIONAL = ("numpy", "pandas")


def import_sqlite_utils_lean() -> None:
    if "sqlite_utils" in sys.modules:
        return
    hidden = [name for name in _OPTIONAL if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # None: "import fails", by design
    try:
        import sqlite_utils  # noqa: F401
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


import_sqlite_utils_lean()
