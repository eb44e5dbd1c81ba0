"""The projections' writes sent together (projections.batch.Writes): one statement for many,
with the same rows as each alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from projections.batch import Writes, upsert

pytestmark = pytest.mark.integration

_COLUMNS = ("k", "v")
_TYPES = ("text", "bigint")


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS wr_a, wr_b")
        conn.execute("CREATE TABLE wr_a (k text PRIMARY KEY, v bigint NOT NULL)")
        conn.execute("CREATE TABLE wr_b (k text PRIMARY KEY, v bigint NOT NULL)")
        yield conn
        conn.execute("DROP TABLE wr_a, wr_b")


def _rows(conn: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT k, v FROM {table} ORDER BY k").fetchall()


def _write(target: Any) -> None:
    upsert(target, "wr_a", _COLUMNS, _TYPES, [("x", 2), ("y", 3)], conflict=("k",),
           update=("v",))
    upsert(target, "wr_b", _COLUMNS, _TYPES, [("z", 7)], conflict=("k",), update=("v",))
    target.execute("DELETE FROM wr_a WHERE k = ANY(%b::text[])", (["gone"],))
    upsert(target, "wr_a", _COLUMNS, _TYPES, [], conflict=("k",))  # nothing: no statement


class _Spy:
    """A cursor's ``execute`` that keeps the statements it is given."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur
        self.sent: list[bytes] = []

    def execute(self, query: Any, params: Any = None) -> Any:
        self.sent.append(query)
        return self.cur.execute(query, params)


def test_writes_together_equal_writes_alone(conn: psycopg.Connection[Any]) -> None:
    seed = "INSERT INTO {} VALUES ('x', 1), ('gone', 9)"
    conn.execute(seed.format("wr_a"))
    with conn.cursor() as cur:
        _write(cur)
    alone = (_rows(conn, "wr_a"), _rows(conn, "wr_b"))
    conn.execute("TRUNCATE wr_a, wr_b")
    conn.execute(seed.format("wr_a"))

    writes = Writes()
    _write(writes)
    assert len(writes) == 3  # the empty upsert wrote nothing
    with conn.cursor() as cur:
        spy = _Spy(cur)
        writes.flush(spy)  # type: ignore[arg-type]
        writes.flush(spy)  # type: ignore[arg-type]  # flushed: the second sends nothing
    assert len(spy.sent) == 1 and spy.sent[0].startswith(b"WITH w0 AS (")
    assert (_rows(conn, "wr_a"), _rows(conn, "wr_b")) == alone == (
        [("x", 2), ("y", 3)], [("z", 7)])


def test_one_write_goes_as_itself_and_none_sends_nothing(
        conn: psycopg.Connection[Any]) -> None:
    writes = Writes()
    with conn.cursor() as cur:
        spy = _Spy(cur)
        writes.flush(spy)  # type: ignore[arg-type]
        assert spy.sent == []
        writes.execute(b"INSERT INTO wr_b VALUES (%s, %s)", ("a", 1))
        writes.flush(spy)  # type: ignore[arg-type]
    assert spy.sent == [b"INSERT INTO wr_b VALUES (%s, %s)"]
    assert _rows(conn, "wr_b") == [("a", 1)]


def test_a_failing_part_fails_the_whole_statement(conn: psycopg.Connection[Any]) -> None:
    writes = Writes()
    writes.execute(b"INSERT INTO wr_a VALUES (%s, %s)", ("ok", 1))
    writes.execute(b"INSERT INTO wr_b VALUES (%s, %s)", ("bad", None))  # NOT NULL
    with conn.cursor() as cur, pytest.raises(psycopg.errors.NotNullViolation):
        writes.flush(cur)
    assert _rows(conn, "wr_a") == [] and _rows(conn, "wr_b") == []
