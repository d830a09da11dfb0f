"""Console helpers shared by the command line and the library's folder runs (no torch import).

Both :mod:`sodec.cli` and :mod:`sodec.batch` (whose worker processes have no CLI) print warnings and errors
as one ``sodec: …`` line; the helpers live here so that library code does not depend on the CLI.
"""

from __future__ import annotations

import sys

from sodec.errors import SodecError


def warn_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A :data:`warnings.showwarning` replacement: ``sodec: warning: <message>`` on stderr, no source line."""
    print(f"sodec: warning: {message}", file=sys.stderr)


def describe(e: BaseException) -> str:
    """One line for an error: ``strerror`` with the file name for OS errors, else the message."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    if isinstance(e, (SodecError, OSError)):
        return str(e)
    return f"internal error ({e.__class__.__name__}: {e})"
