"""Loading and saving many aggregates at once, for batched ingest (ERP facts from Kafka).

The event store (``services/eventstore.py``) loads one aggregate per query and writes one
correlation id for all the events of a save. A batch of Kafka messages touches hundreds of
aggregates and each message has its own correlation id, so this module adds the two things a
batch needs, built on the same recorder and in the same shape as its own save:

- ``load_events``: the stored events of many aggregates in one query (``= ANY``);
- ``save_batch``: one transaction holding the receipts, every aggregate's pending events (one
  pass through the events table's lock, one ``INSERT … unnest``) and each event's own
  correlation id. It is ``ReservesRecorder.insert_events`` with per-event correlation ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import StoredEvent
from psycopg.sql import SQL, Composed, Identifier

from services.eventstore import Receipt, ReservesRecorder, ReserveStore, _quick_retry
from services.tracing import CORRELATIONS_TABLE

EventKey = tuple[UUID, int]  # (originator_id, originator_version)


def _select_many(recorder: ReservesRecorder) -> Composed:
    return SQL(
        "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
        "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
    ).format(schema=Identifier(recorder.datastore.schema),
             table=Identifier(recorder.events_table_name))


def _insert_correlations(recorder: ReservesRecorder) -> Composed:
    return SQL(
        "INSERT INTO {schema}.{table} SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::text[]) "
        "ON CONFLICT DO NOTHING"
    ).format(schema=Identifier(recorder.datastore.schema), table=Identifier(CORRELATIONS_TABLE))


@_quick_retry
def _select_stored(recorder: ReservesRecorder, ids: Sequence[UUID]) -> list[StoredEvent]:
    with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(_select_many(recorder), (list(ids),))
        return [StoredEvent(originator_id=row["originator_id"],
                            originator_version=row["originator_version"],
                            topic=row["topic"], state=bytes(row["state"]))
                for row in curs.fetchall()]


def load_events(store: ReserveStore, ids: Iterable[UUID]
                ) -> dict[UUID, list[DomainEventProtocol[UUID]]]:
    """Every stored event of each aggregate in ``ids``, oldest first; an aggregate with no
    events is absent. One query whatever the number of ids."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    out: dict[UUID, list[DomainEventProtocol[UUID]]] = {}
    to_domain_event = store.mapper.to_domain_event
    for stored in _select_stored(store.reserves_recorder, wanted):
        out.setdefault(cast(UUID, stored.originator_id), []).append(to_domain_event(stored))
    return out


@_quick_retry
def _insert(recorder: ReservesRecorder, stored: Sequence[StoredEvent],
            receipts: Sequence[Receipt], correlations: Sequence[tuple[UUID, int, str]]) -> None:
    with recorder.datastore.get_connection() as conn, conn.transaction(), \
            conn.cursor() as curs:
        recorder._insert_events(curs, stored, receipts=receipts)  # the receipts, first
        if stored:
            recorder._insert_stored_events(curs, stored)  # lock, notify, insert
            recorder._fetch_ids_after_insert_events(curs, stored)
        if correlations:
            curs.execute(_insert_correlations(recorder), (
                [c[0] for c in correlations], [c[1] for c in correlations],
                [c[2] for c in correlations]))


def save_batch(store: ReserveStore, aggregates: Iterable[Aggregate],
               receipts: Sequence[Receipt], correlations: Mapping[EventKey, str]) -> None:
    """One atomic save of every aggregate's pending events and the receipts, each event with
    the correlation id ``correlations`` gives it (by aggregate id and version), if any.

    Raises ``RecordConflictError`` when another writer stored a version first and
    ``DuplicateReceiptError`` when a receipt is there already; nothing is stored then.
    """
    processing: ProcessingEvent[UUID] = ProcessingEvent()
    processing.collect_events(*aggregates)
    events = processing.events
    to_stored_event = store.mapper.to_stored_event
    stored = [to_stored_event(e) for e in events]
    keyed = [(e.originator_id, e.originator_version) for e in events]
    rows = [(k[0], k[1], correlations[k]) for k in keyed if k in correlations]
    _insert(store.reserves_recorder, stored, receipts, rows)
    cache: Any = store.repository.cache
    if cache is not None and not store.repository.fastforward:  # as Application.save does
        for aggregate_id, aggregate in processing.aggregates.items():
            cache.put(aggregate_id, aggregate)
