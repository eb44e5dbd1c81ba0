"""Loading and saving many aggregates at once, for batched ingest (ERP facts from Kafka).

The event store (``services/eventstore.py``) loads one aggregate per query and writes one
correlation id for all the events of a save. A batch of Kafka messages touches hundreds of
aggregates and each message has its own correlation id, so this module adds the two things a
batch needs, built on the same recorder and in the same shape as its own save:

- ``load_events``: the stored events of many aggregates, decoded, in one query;
- ``save_batch``: one transaction holding the receipts, every aggregate's pending events (one
  pass through the events table's lock) and each event's own correlation id, each table
  written by ``COPY``. It is ``ReservesRecorder.insert_events`` with per-event correlation
  ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import StoredEvent
from psycopg.sql import SQL, Composed, Identifier
from psycopg.types.json import Jsonb

from services.eventstore import (
    RECEIPTS_TABLE,
    Receipt,
    ReservesRecorder,
    ReserveStore,
    _quick_retry,
)
from services.tracing import CORRELATIONS_TABLE

EventKey = tuple[UUID, int]  # (originator_id, originator_version)


def load_events(store: ReserveStore, ids: Iterable[UUID]
                ) -> dict[UUID, list[DomainEventProtocol[UUID]]]:
    """Every stored event of each aggregate in ``ids``, oldest first; an aggregate with no
    events is absent. One query whatever the number of ids."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    out: dict[UUID, list[DomainEventProtocol[UUID]]] = {}
    to_domain_event = store.mapper.to_domain_event
    for aggregate_id, stored in store.reserves_recorder.select_events_of(wanted):
        out[aggregate_id] = [to_domain_event(s) for s in stored]
    return out


def _copy(table: str, columns: str, recorder: ReservesRecorder) -> Composed:
    return SQL("COPY {schema}.{table} (" + columns + ") FROM STDIN (FORMAT BINARY)").format(
        schema=Identifier(recorder.datastore.schema), table=Identifier(table))


@_quick_retry
def _insert(recorder: ReservesRecorder, stored: Sequence[StoredEvent],
            receipts: Sequence[Receipt], correlations: Sequence[tuple[UUID, int, str]]) -> None:
    """``ReservesRecorder.insert_events`` for big batches: the receipts, then (under the events
    table's lock, with its NOTIFY) the events, then their correlation ids, each by ``COPY``.
    psycopg dumps the arrays of the recorder's statements element by element in Python (an
    array of composites for the events), which cost more than the statements themselves for
    thousands of rows. A receipt or a version stored meanwhile fails its primary key
    (``IntegrityError``, a ``RecordConflictError``) and nothing is stored: the caller reads the
    receipts again and retries, as after a ``DuplicateReceiptError``."""
    id_type = recorder.datastore.originator_id_type
    with recorder.datastore.get_connection() as conn, conn.transaction(), \
            conn.cursor() as curs:
        if stored:
            # the lock first, as the group writer takes it: a receipt row written before it
            # and wanted by a group waiting on the lock would deadlock the two
            recorder._lock_table(curs)
            recorder._notify_channel(curs)
        if receipts:
            with curs.copy(_copy(RECEIPTS_TABLE, "key, fingerprint, status, body",
                                 recorder)) as copy:
                copy.set_types(["text", "text", "int4", "jsonb"])
                for r in receipts:
                    copy.write_row((r.key, r.fingerprint, r.status, Jsonb(r.body)))
        if stored:
            with curs.copy(_copy(recorder.events_table_name,
                                 "originator_id, originator_version, topic, state",
                                 recorder)) as copy:
                copy.set_types([id_type, "int8", "text", "bytea"])
                for e in stored:
                    copy.write_row((e.originator_id, e.originator_version, e.topic, e.state))
        if correlations:
            with curs.copy(_copy(CORRELATIONS_TABLE,
                                 "originator_id, originator_version, correlation_id",
                                 recorder)) as copy:
                copy.set_types([id_type, "int8", "text"])
                for row in correlations:
                    copy.write_row(row)


def save_batch(store: ReserveStore, aggregates: Iterable[Aggregate],
               receipts: Sequence[Receipt], correlations: Mapping[EventKey, str]) -> None:
    """One atomic save of every aggregate's pending events and the receipts, each event with
    the correlation id ``correlations`` gives it (by aggregate id and version), if any.

    Raises ``RecordConflictError`` when another writer stored a version or a receipt first;
    nothing is stored then.
    """
    saved = [a for a in aggregates]
    events = [e for a in saved for e in a.collect_events()]
    to_stored_event = store.mapper.to_stored_event
    stored = [to_stored_event(e) for e in events]
    rows = []
    for e in events:
        cid = correlations.get((e.originator_id, e.originator_version))
        if cid is not None:
            rows.append((e.originator_id, e.originator_version, cid))
    _insert(store.reserves_recorder, stored, receipts, rows)
    cache: Any = store.repository.cache
    if cache is not None and not store.repository.fastforward:  # as Application.save does
        for aggregate in saved:
            cache.put(aggregate.id, aggregate)
