"""Correlation ids: one id follows a command from its entry point to the store, Kafka and views.

The id lives in ``asgi_correlation_id``'s context variable (the HTTP middleware sets it; the
Kafka middleware below sets it per consumed message). The event store writes it beside the
events it caused, in the same transaction (table ``event_correlations``, keyed by the event's
aggregate id and version), so the relay and the projector, which read the stored log later and
elsewhere, find it again: the relay puts it on every message it publishes (header
``correlation_id``) and both log it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from asgi_correlation_id import correlation_id
from eventsourcing.persistence import Notification
from faststream import BaseMiddleware

CORRELATIONS_TABLE = "event_correlations"
HEADER = "correlation_id"
MAX_LENGTH = 200


class _Positioned(Protocol):
    @property
    def id(self) -> int: ...


class _Executes(Protocol):
    def execute(self, query: Any, params: Any = ...) -> Any: ...


def valid_correlation_id(value: str) -> bool:
    """What we accept from a caller: 1 to 200 printable characters. Anything else is replaced
    by a fresh id rather than refused: tracing never fails a request."""
    return 0 < len(value) <= MAX_LENGTH and value.isprintable()


def current_correlation_id() -> str | None:
    return correlation_id.get()


@contextlib.contextmanager
def correlated(value: str | None) -> Iterator[None]:
    """Runs the block with ``value`` as the correlation id (the previous one restored after)."""
    token = correlation_id.set(value)
    try:
        yield
    finally:
        correlation_id.reset(token)


def correlation_ids(conn: _Executes, notifications: Sequence[Notification]
                    ) -> dict[int, str]:
    """The stored correlation id of each notification that has one, by position."""
    if not notifications:
        return {}
    by_key = {(n.originator_id, n.originator_version): n.id for n in notifications}
    rows = conn.execute(
        f"SELECT c.originator_id, c.originator_version, c.correlation_id "  # noqa: S608 - fixed name
        f"FROM {CORRELATIONS_TABLE} c JOIN unnest(%b::uuid[], %b::bigint[]) AS k(o, v) "
        "ON c.originator_id = k.o AND c.originator_version = k.v",
        ([k[0] for k in by_key], [k[1] for k in by_key]),
    ).fetchall()
    return {by_key[(row[0], row[1])]: row[2] for row in rows if (row[0], row[1]) in by_key}


def log_correlated(log: logging.Logger, verb: str, notifications: Sequence[_Positioned],
                   ids: dict[int, str]) -> None:
    """One line per correlation id of a page: what was done to which positions."""
    groups: dict[str | None, list[int]] = {}
    for n in notifications:
        groups.setdefault(ids.get(n.id), []).append(n.id)
    for cid, positions in groups.items():
        with correlated(cid):
            log.info("%s %d event%s at positions %s", verb, len(positions),
                     "" if len(positions) == 1 else "s", _ranges(positions),
                     extra={"positions": [positions[0], positions[-1]]})


def _ranges(positions: Iterable[int]) -> str:
    """``[3, 4, 5, 9]`` → ``"3-5,9"``."""
    runs: list[list[int]] = []
    for p in positions:
        if runs and runs[-1][1] == p - 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def message_correlation_id(headers: dict[str, str], body: bytes, fallback: str) -> str:
    """A consumed message's id: its ``correlation_id`` header, else its ``command_id`` (or the
    first envelope's ``event_id``), else where it came from."""
    given = headers.get(HEADER)
    if given and valid_correlation_id(given):
        return given
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # a poison message too must reach its handler (DLQ):
        return fallback  # not JSON, not UTF-8, a number too long to read, nested too deeply
    return payload_correlation_id(None, payload, fallback)


def payload_correlation_id(header: str | None, payload: Any, fallback: str) -> str:
    """``message_correlation_id`` for a message whose body the caller has decoded already
    (``header``: its ``correlation_id`` header, if any)."""
    if header and valid_correlation_id(header):
        return header
    first = payload[0] if isinstance(payload, list) and payload else payload
    if isinstance(first, dict):
        for name in ("command_id", "event_id"):
            value = first.get(name)
            if isinstance(value, str) and valid_correlation_id(value):
                return value
    return fallback


class CorrelationMiddleware(BaseMiddleware):
    """FastStream middleware: sets the correlation id for the handling of each consumed
    message, and puts the id in force on everything published meanwhile (command results,
    dead letters) as the ``correlation_id`` header. A batch subscriber's handler sets each
    message's id itself (a batch has no single id)."""

    async def consume_scope(self, call_next: Callable[[Any], Any], msg: Any) -> Any:
        raw = msg.raw_message
        if isinstance(raw, (tuple, list)):  # a batch (a list under FastStream's test broker)
            return await call_next(msg)
        cid = message_correlation_id(msg.headers, msg.body,
                                     f"{raw.topic}/{raw.partition}/{raw.offset}")
        with correlated(cid):
            return await call_next(msg)

    async def publish_scope(self, call_next: Callable[[Any], Any], cmd: Any) -> Any:
        cid = current_correlation_id()
        if cid is not None:
            cmd.correlation_id = cid
        return await call_next(cmd)
