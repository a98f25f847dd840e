"""The errors of :mod:`portacnn.data`: :class:`DataError`, :class:`DataFileNotFoundError` and ``_fail``.

Every problem with an input file raises :class:`DataError`, a subclass of :class:`ValueError`, whose
one-line message names the file, the problem and, where it helps, what to do about it (``_fail`` builds
it: ``<path>: [line <n>: ]<problem>[ -- <hint>]``). A missing file raises :class:`DataFileNotFoundError`,
which is both a :class:`DataError` and a :class:`FileNotFoundError`.
"""

from __future__ import annotations

import os


class DataError(ValueError):
    """A data file is missing, unreadable or malformed, or data are outside the allowed range.

    ``path`` is the offending file (or ``None``) and ``line`` the 1-based line number for CSV
    problems (or ``None``).
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, line: int | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.line = line


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A data file or folder does not exist (catchable as ValueError and as FileNotFoundError)."""


def _fail(path, problem: str, hint: str | None = None, *, line: int | None = None, cls=DataError):
    where = f"{path}: line {line}: " if line is not None else f"{path}: "
    message = where + problem + (f" -- {hint}" if hint else "")
    return cls(" ".join(message.splitlines()), path=path, line=line)
