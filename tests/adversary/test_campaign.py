"""The bad-input campaign against a real ``reserves serve`` (real PostgreSQL, real broker)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.embedded import free_port
from tests.adversary.campaign import run_campaign
from tests.conftest import PgServer
from tests.e2e import serve
from tests.support import ERP_TOKEN, TOKENS

pytestmark = pytest.mark.e2e


@dataclass
class Running:
    url: str
    kafka: str
    log: Path


@pytest.fixture(scope="module")
def service(pg_server: PgServer, kafka_bootstrap: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    database_url = pg_server.fresh_database()
    var = tmp_path_factory.mktemp("adversary-serve")
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(port),
           "RESERVES_API_TOKENS": ",".join(f"{m}={t}" for t, m in TOKENS.items()),
           "RESERVES_ERP_TOKENS": ERP_TOKEN, "RESERVES_VAR_DIR": str(var),
           "KAFKA_SESSION_TIMEOUT_MS": "6000"}
    log = var / "serve.log"
    proc = serve.start(env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        serve.wait_healthy(proc, url, log)
        yield Running(url, kafka_bootstrap, log)
    finally:
        serve.stop(proc, log)
        pg_server.drop(database_url)


async def test_every_bad_input_is_refused_cleanly_and_changes_nothing(service: Running) -> None:
    report = await run_campaign(
        http_url=service.url, manager_tokens={m: t for t, m in TOKENS.items()},
        erp_token=ERP_TOKEN, bootstrap_servers=service.kafka,
        examples=int(os.environ.get("ADVERSARY_EXAMPLES", "200")),
        seed=int(os.environ.get("ADVERSARY_SEED", "0")))
    assert report.failures == [], "\n".join(report.failures)
    assert report.tried >= 150
    assert report.refused_cleanly == report.tried
    assert set(report.by_kind) == {"http", "erp.events", "reserve.commands"}
    assert all(n > 0 for n in report.by_kind.values()), report.by_kind
    assert sum(report.by_kind.values()) == report.tried
    logged = service.log.read_text(errors="replace")
    assert "Traceback" not in logged
    assert "dead letter" in logged  # the log was written to, so the next check means something
    for token in [*TOKENS, ERP_TOKEN]:
        assert token not in logged, "a token was logged"
