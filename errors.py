"""The one exception for problems a user can cause: the scripts print it as one line and exit with status 1."""
from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A problem with the user's input. `str()` is one line naming the file."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(reason if path is None else f"{path}: {reason}")
