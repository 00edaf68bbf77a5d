"""Caffe-style logging: the package logger, a glog formatter, and number formatting.

Every module logs through ``logging.getLogger("pycaffe_lite")`` (or a child of it).
:func:`setup_logging` (used by the CLI) prints records the way Caffe's glog does::

    I1127 03:40:09.123456 12345 solver.py:301] Iteration 100, loss = 0.2931

so tools written for Caffe logs (``tools/extra/parse_log.py`` and friends, which split
the first two fields for the date and time and regex the message) read ours too.
Numbers in those messages are printed with :func:`cfmt`, which matches C++'s default
``ostream << float`` (six significant digits, ``%g``).
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

logger = logging.getLogger("pycaffe_lite")

# glog knows INFO, WARNING, ERROR and FATAL; DEBUG (glog's VLOG) prints as 'I' too.
_LEVEL_LETTER = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E",
                 logging.CRITICAL: "F"}


def cfmt(x) -> str:
    """Format a number as C++'s default ``std::ostream`` does (``%g``, 6 significant digits)."""
    return f"{float(x):.6g}"


class GlogFormatter(logging.Formatter):
    """``Lmmdd hh:mm:ss.uuuuuu threadid file:line] message``, glog's line prefix."""

    def format(self, record: logging.LogRecord) -> str:
        secs = int(record.created)
        micros = round((record.created - secs) * 1e6)
        if micros == 1_000_000:
            secs, micros = secs + 1, 0
        t = time.localtime(secs)
        letter = _LEVEL_LETTER.get(record.levelno, "I" if record.levelno < logging.WARNING else "E")
        tid = threading.get_native_id()  # handlers run in the logging thread
        prefix = (f"{letter}{t.tm_mon:02d}{t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
                  f".{micros:06d} {tid:5d} {record.filename}:{record.lineno}] ")
        message = record.getMessage()
        if record.exc_info:
            message = message + "\n" + self.formatException(record.exc_info)
        return prefix + message


class _PliteHandler(logging.Handler):
    """A stream handler whose output function can be swapped (e.g. for ``tqdm.write``)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream
        self.write: Callable[[str], object] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            if self.write is not None:
                self.write(msg)
            else:
                stream = self.stream if self.stream is not None else sys.stderr
                stream.write(msg + "\n")
                stream.flush()
        except Exception:  # noqa: BLE001  (never let logging kill a training run)
            self.handleError(record)


def setup_logging(level: int = logging.INFO, glog_style: bool = True, stream: TextIO | None = None) -> logging.Logger:
    """Send the ``pycaffe_lite`` logger's records to ``stream`` (stderr, as glog does).

    Calling it again replaces the handler it installed before (never anyone else's).
    ``glog_style=False`` prints ``LEVEL message`` instead of glog's prefix.
    """
    for h in list(logger.handlers):
        if isinstance(h, _PliteHandler):
            logger.removeHandler(h)
    handler = _PliteHandler(stream)
    handler.setFormatter(GlogFormatter() if glog_style else logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # do not print twice through a root handler
    return logger


def route_logging_through(write: Callable[[str], object] | None) -> None:
    """Write log lines with ``write(line)`` (e.g. ``tqdm.write`` to keep a progress bar intact).

    ``None`` restores plain stream output.  Installs the default handler if there is none.
    """
    handlers = [h for h in logger.handlers if isinstance(h, _PliteHandler)]
    if not handlers:
        setup_logging(logger.level or logging.INFO)
        handlers = [h for h in logger.handlers if isinstance(h, _PliteHandler)]
    for h in handlers:
        h.write = write
