"""Real services for the integration and end-to-end tests.

PostgreSQL: the embedded PostgreSQL 18 always, and also the server named by
``RESERVES_TEST_DATABASE_URL`` when it is set (CI names the machine's PostgreSQL 15). A named
server that cannot be reached fails the run; it is never skipped.

Kafka: the embedded Tansu broker, or the brokers named by ``RESERVES_TEST_KAFKA``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from services.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from services.eventstore import apply_session_options
from services.runtime import Core
from tests.support import make_settings

# Every connection of the suite starts its session as the service's do (`reserves` sets this
# for its process): the same plans, and a test that runs the CLI in-process changes nothing.
apply_session_options()

BACKENDS = ["embedded-pg18"] + (["server"] if os.environ.get("RESERVES_TEST_DATABASE_URL") else [])


@dataclass(frozen=True)
class PgServer:
    name: str
    admin_url: str

    def drop(self, url: str) -> None:
        name = conninfo_to_dict(url)["dbname"]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def fresh_database(self) -> str:
        """A new, empty database on this server; its URL."""
        name = f"rx_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        params = conninfo_to_dict(self.admin_url)
        params["dbname"] = name
        return make_conninfo(**params)  # type: ignore[arg-type]


@pytest.fixture
def traversable_tmp() -> Iterator[Path]:
    """A temp dir outside pytest's own (mode 0700, re-tightened by every pytest run): as root,
    embedded PostgreSQL runs as another user, who must be able to reach its data dir."""
    path = Path(tempfile.mkdtemp(prefix="rx-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[PgServer]:
    base = Path(tempfile.mkdtemp(prefix="rx-pg-"))
    pg = EmbeddedPostgres(base, ephemeral=True)
    url = pg.start()
    yield PgServer("embedded-pg18", url)
    pg.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session", params=BACKENDS)
def pg_server(request: pytest.FixtureRequest) -> PgServer:
    if request.param == "server":
        url = os.environ["RESERVES_TEST_DATABASE_URL"]
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as e:
            pytest.fail(f"RESERVES_TEST_DATABASE_URL is set but unreachable: {e}")
        return PgServer("server", url)
    server: PgServer = request.getfixturevalue("embedded_pg")
    return server


@pytest.fixture
def database_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database for one test, on each PostgreSQL backend in turn; dropped after."""
    url = pg_server.fresh_database()
    yield url
    pg_server.drop(url)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    named = os.environ.get("RESERVES_TEST_KAFKA")
    if named:
        yield named
        return
    broker = EmbeddedBroker(Path(tmp_path_factory.mktemp("broker")), port=free_port())
    yield broker.start()
    broker.stop()


@pytest.fixture
def core(database_url: str, tmp_path: Path) -> Iterator[Core]:
    """The store, views and handlers on a fresh database (no Kafka)."""
    c = Core(make_settings(tmp_path, database_url), database_url)
    yield c
    c.close()
