"""Correlation ids and JSON log lines, without any server."""

from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace
from uuid import UUID, uuid4

from asgi_correlation_id import CorrelationIdFilter

from services.logs import json_formatter
from services.tracing import (
    correlated,
    current_correlation_id,
    log_correlated,
    message_correlation_id,
    valid_correlation_id,
)


def test_a_message_is_correlated_by_header_then_command_id_then_event_id_then_origin() -> None:
    body = json.dumps({"command_id": "cmd-1"}).encode()
    assert message_correlation_id({"correlation_id": "from-header"}, body, "t/0/1") == \
        "from-header"
    assert message_correlation_id({}, body, "t/0/1") == "cmd-1"
    batch = json.dumps([{"event_id": "ev-1"}, {"event_id": "ev-2"}]).encode()
    assert message_correlation_id({}, batch, "t/0/1") == "ev-1"
    assert message_correlation_id({}, b"\xff not json", "t/0/1") == "t/0/1"
    assert message_correlation_id({"correlation_id": "x" * 500}, b"{}", "t/0/2") == "t/0/2"


def test_correlation_ids_must_be_short_and_printable() -> None:
    assert valid_correlation_id("abc-123")
    assert not valid_correlation_id("")
    assert not valid_correlation_id("a\nb")
    assert not valid_correlation_id("x" * 201)


def test_correlated_restores_the_previous_id() -> None:
    with correlated("outer"):
        with correlated("inner"):
            assert current_correlation_id() == "inner"
        assert current_correlation_id() == "outer"
    assert current_correlation_id() is None


def _capture(name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(CorrelationIdFilter())
    handler.setFormatter(json_formatter())
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def test_log_lines_are_json_with_the_correlation_id_in_force() -> None:
    logger, stream = _capture(f"test.json.{uuid4().hex}")
    with correlated("cid-42"):
        logger.info("gave %d units", 8, extra={"request_id": "r-1"})
    line = json.loads(stream.getvalue())
    assert line["message"] == "gave 8 units"
    assert line["correlation_id"] == "cid-42"
    assert line["request_id"] == "r-1"
    assert line["level"] == "INFO" and line["logger"].startswith("test.json.")
    assert line["time"].endswith("+00:00")


def test_log_lines_keep_non_ascii_text_and_encode_what_json_lacks() -> None:
    logger, stream = _capture(f"test.utf8.{uuid4().hex}")
    logger.info("partner %s", "ООО Ромашка", extra={"request_id": UUID(int=7), "raw": b"\xff"})
    text = stream.getvalue()
    assert "ООО Ромашка" in text  # not \u-escaped
    line = json.loads(text)
    assert line["message"] == "partner ООО Ромашка"
    assert line["request_id"] == str(UUID(int=7))
    assert isinstance(line["raw"], str)


def test_a_page_is_logged_once_per_correlation_id_with_its_positions() -> None:
    logger, stream = _capture(f"test.page.{uuid4().hex}")
    page = [SimpleNamespace(id=i) for i in (3, 4, 5, 9, 10)]
    log_correlated(logger, "published", page,
                   {3: "a", 4: "a", 5: "a", 9: "b"})
    lines = [json.loads(s) for s in stream.getvalue().splitlines()]
    by_id = {line["correlation_id"]: line["message"] for line in lines}
    assert by_id == {"a": "published 3 events at positions 3-5",
                     "b": "published 1 event at positions 9",
                     None: "published 1 event at positions 10"}



def test_a_poison_body_falls_back_to_its_source_instead_of_failing() -> None:
    """The middleware runs before the handler that dead-letters poison: raising here would
    nack the message and stall its partition for good."""
    for body in (b"1" * 5000, b"[" * 100_000, b"\xff\xfe", b"not json"):
        assert message_correlation_id({}, body, "erp.events/2/5") == "erp.events/2/5"
