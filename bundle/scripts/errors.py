"""One-line error reports for ``python -m monai.bundle run`` (the ``brainseg`` CLI has its own).

A bundle run that meets bad input (a malformed COCO file, an unreadable image, unsafe
weights) fails deep inside config evaluation, and Python would print MONAI's chained
tracebacks. The bundle's ``initialize`` step calls :func:`one_line_errors`, which replaces
``sys.excepthook`` so an uncaught error prints as ``error: <what is wrong>`` (the innermost
cause, which names the file, id or field) and the process still exits with status 1.
``--debug true`` on the bundle command line keeps the full traceback.
"""

from __future__ import annotations

import re
import sys
from types import TracebackType

__all__ = ["error_lines", "one_line_errors"]


def error_lines(error: BaseException) -> list[str]:
    """What to print for ``error``: one line per problem of a COCO split, else one line.

    The innermost cause is used: config evaluation and MONAI's ``apply_transform`` wrap the
    real error (e.g. PIL's "cannot identify image file '/data/x.png'") in generic ones.
    """
    from .coco import CocoDataError

    while True:
        if isinstance(error, CocoDataError):
            # str(problem) is "error: FILE: WHERE.FIELD: MESSAGE"; callers add their own prefix
            return [str(p).removeprefix("error: ") for p in error.problems if p.severity == "error"] or [str(error)]
        if error.__cause__ is None:
            break
        error = error.__cause__
    text = str(error).strip() or type(error).__name__
    return [re.sub(r"^\[Errno \d+\] ", "", text.splitlines()[0])]  # OSError's "[Errno 28] ..." prefix


def one_line_errors(debug: bool = False) -> None:
    """Make uncaught exceptions print one line each (no traceback) unless ``debug``."""
    if debug:
        sys.excepthook = sys.__excepthook__
        return

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: as usual
            sys.__excepthook__(exc_type, exc, tb)
            return
        for line in error_lines(exc):
            print(f"error: {line}", file=sys.stderr)

    sys.excepthook = hook
