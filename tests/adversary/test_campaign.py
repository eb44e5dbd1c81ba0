"""The bad-input campaign against a real ``reserves serve`` (real PostgreSQL, real broker)."""

from __future__ import annotations

import os

import pytest

from tests.adversary.campaign import run_campaign
from tests.e2e import serve
from tests.support import ERP_TOKEN, TOKENS

pytestmark = pytest.mark.e2e


service = serve.service_fixture("adversary-serve")


async def test_every_bad_input_is_refused_cleanly_and_changes_nothing(
        service: serve.Running) -> None:
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
