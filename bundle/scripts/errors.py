"""One-line error reports for ``python -m monai.bundle run`` (the ``brainseg`` CLI has its own).

A bundle run that meets bad input (a malformed COCO file, an unreadable image, unsafe
weights) fails deep inside config evaluation, and Python would print MONAI's chained
tracebacks. The bundle's ``initialize`` step calls :func:`one_line_errors`, which replaces
``sys.excepthook`` so an uncaught error prints as ``error: <what is wrong>`` (the innermost
cause, which names the file, id or field) and the process still exits with status 1.
``--debug true`` on the bundle command line keeps the full traceback.
"""

from __future__ import annotations

import errno
import logging
import re
import sys
from types import TracebackType

__all__ = ["error_lines", "one_line_errors", "short_repr"]


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, with its length said: a 100,000-digit value stays one short line.

    Never raises for a huge integer: Python refuses to convert one of more than 4300 digits to text
    ("Exceeds the limit (4300 digits) for integer string conversion"); its digits are counted instead.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 13000:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


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
    line = re.sub(r"^\[Errno \d+\] ", "", text.splitlines()[0])  # OSError's "[Errno 28] ..." prefix
    if isinstance(error, OSError) and error.errno in _DISK_FULL and not error.filename and "/" not in line:
        # e.g. MONAI's MetricsSaver writing a CSV: Python names no file when the write itself fails
        line = f"{line}: the disk that the results are written to is full; free some space or write them elsewhere"
    return [line]


#: "No space left on device" and "Disk quota exceeded": the disk is full, whatever was written.
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class _NoTraceback(logging.Filter):
    """A run's error is said once, in one line: no traceback in the log, and no ignite line that only repeats it.

    Ignite logs "Engine run is terminating due to exception: <the outermost error>" (often MONAI's
    "applying transform <Compose object at 0x...>", which says nothing) and ``StatsHandler`` "Exception: <it>"
    before the error line names the cause.
    """

    REPEATS = (
        "Engine run is terminating due to exception",
        "Current run is terminating due to exception",
        "Exception: ",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return not str(record.msg).startswith(self.REPEATS)


#: Loggers that log an error before it reaches the caller: MONAI's ``StatsHandler`` logs every exception of
#: a training or evaluation run with its traceback (``logger.exception``), ignite's engines (named after their
#: class) say that they stop because of it.
STATS_LOGGER = "monai.handlers.StatsHandler"
TRACEBACK_LOGGERS = (STATS_LOGGER,) + tuple(
    f"ignite.engine.engine.{name}" for name in ("SupervisedTrainer", "SupervisedEvaluator", "EnsembleEvaluator")
)


def _logger(name: str) -> logging.Logger:
    """The logger ``name`` as its owner makes it.

    MONAI's ``StatsHandler`` gets its logger with ``monai.apps.utils.get_logger``, which gives it its
    own stdout handler only when the logger does not exist yet: a plain ``logging.getLogger`` first
    would leave every training line unprinted.
    """
    if name == STATS_LOGGER and name not in logging.root.manager.loggerDict:
        from monai.apps.utils import get_logger

        return get_logger(name)
    return logging.getLogger(name)


def one_line_errors(debug: bool = False) -> None:
    """Make uncaught exceptions print one line each (no traceback) unless ``debug``.

    Also keeps the tracebacks, and the lines that only repeat the error, out of the logs of
    :data:`TRACEBACK_LOGGERS` (a training refused at its start, a disk that fills up during an evaluation):
    the error is said once, by the error line. ``debug`` keeps them all.
    """
    from .config_values import switch  # here: config_values reports with this module's short_repr

    try:
        debug = switch(debug, "debug")
    except ValueError:
        one_line_errors(False)  # the bad value itself is said in one line
        raise
    for name in TRACEBACK_LOGGERS:
        logger = _logger(name)
        for old in [f for f in logger.filters if isinstance(f, _NoTraceback)]:
            logger.removeFilter(old)
        if not debug:
            logger.addFilter(_NoTraceback())
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
