"""`make run`'s path: embedded PostgreSQL and broker, stopped by Ctrl-C, data kept for next time."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from services.embedded import free_port
from tests.e2e import serve
from tests.support import seed_facts, uid, wait_for

pytestmark = pytest.mark.e2e


def _serve(var: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "RESERVES_API_TOKENS",
                        "RESERVES_ERP_TOKENS")}
    env.update({"RESERVES_VAR_DIR": str(var), "HTTP_PORT": str(port),
                "KAFKA_SESSION_TIMEOUT_MS": "6000"})
    return serve.start(env, var / "serve.log")


def test_embedded_service_keeps_its_data_across_a_ctrl_c_restart(traversable_tmp: Path) -> None:
    tmp_path = traversable_tmp
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    proc = _serve(tmp_path, port)
    serve.wait_healthy(proc, url, log)
    tokens = json.loads((tmp_path / "dev-tokens.json").read_text())
    assert oct((tmp_path / "dev-tokens.json").stat().st_mode & 0o777) == "0o600"
    erp = {"Authorization": f"Bearer {tokens['erp'][0]}"}
    manager = {"Authorization": f"Bearer {tokens['managers']['ivanov']}"}
    owner, requester = uid("o-"), uid("r-")
    facts = seed_facts(owner, requester)
    try:
        posted = httpx.post(f"{url}/v1/erp/events", json=facts,
                            headers=erp, timeout=10)
        assert posted.json() == {"accepted": 5, "duplicates": 0}
        wait_for(lambda: httpx.get(f"{url}/v1/orders/{requester}", headers=manager,
                                   timeout=5).status_code == 200, what="the order view")
    finally:
        serve.stop(proc, log)
    assert "Development tokens" in log.read_text()  # the dev default is printed at start
    assert not _embedded_still_running(tmp_path)

    proc = _serve(tmp_path, port)
    try:
        serve.wait_healthy(proc, url, log)
        order = httpx.get(f"{url}/v1/orders/{requester}", headers=manager, timeout=5)
        assert order.status_code == 200 and order.json()["number"] == "F4718999"
        again = httpx.post(f"{url}/v1/erp/events", json=facts,
                           headers=erp, timeout=10)
        assert again.json() == {"accepted": 0, "duplicates": 5}
    finally:
        serve.stop(proc, log)


def _embedded_still_running(var: Path) -> bool:
    """Whether a postgres or tansu process started for this var dir outlived the service."""
    for cmdline in Path("/proc").glob("*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(var) in text and ("postgres" in text or "tansu" in text):
            return True
    return False
