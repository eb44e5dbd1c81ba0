"""Running ``reserves serve`` as a child process, the way an operator starts it.

:func:`service_fixture` is the one ``service`` fixture the end-to-end, adversary and browser
tests share: a fresh database, a free port, the test tokens, Ctrl-C and a dropped database at
the end. What differs between them (the var dir's name, extra environment such as the request
TTL, the scope) is passed in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from services.embedded import free_port
from tests.conftest import PgServer
from tests.support import ERP_TOKEN, TOKENS, wait_for

Scope = Literal["session", "package", "module", "class", "function"]


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.cli", "serve"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    def healthy() -> bool:
        assert proc.poll() is None, f"reserves serve exited early:\n{log.read_text()}"
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=90, interval=0.1, what="reserves serve to answer /health")


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Ctrl-C, as a person would; the service must exit cleanly (status 0)."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, log.read_text()


@dataclass(frozen=True)
class Running:
    """A started ``reserves serve``: where it answers, its broker, its process and its log."""

    url: str
    kafka: str
    proc: subprocess.Popen[bytes]
    log: Path


@contextmanager
def running(pg_server: PgServer, kafka_bootstrap: str, var: Path,
            env: Mapping[str, str] | None = None) -> Iterator[Running]:
    """``reserves serve`` on a fresh database of ``pg_server`` and a free port, with the test
    managers' and ERP tokens, its var dir and log in ``var``; ``env`` adds to (or overrides)
    that environment. Healthy on entry; stopped by Ctrl-C (exit status 0 asserted) and its
    database dropped on exit, also when it never became healthy."""
    database_url = pg_server.fresh_database()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = var / "serve.log"
    proc = start({
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
        "RESERVES_API_TOKENS": ",".join(f"{m}={t}" for t, m in TOKENS.items()),
        "RESERVES_ERP_TOKENS": ERP_TOKEN,
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "RESERVES_VAR_DIR": str(var),
        **(env or {}),
    }, log)
    try:
        wait_healthy(proc, url, log)
        yield Running(url, kafka_bootstrap, proc, log)
    finally:
        try:
            stop(proc, log)
        finally:
            pg_server.drop(database_url)


def service_fixture(var_name: str, env: Mapping[str, str] | None = None, *,
                    scope: Scope = "module") -> Any:
    """A pytest fixture named ``service`` yielding a :class:`Running` from :func:`running`,
    one per ``scope``, its var dir made by ``tmp_path_factory.mktemp(var_name)``. Bind it in the
    test module or conftest::

        service = serve.service_fixture("serve", {"RESERVE_REQUEST_TTL": "8"})
    """

    @pytest.fixture(scope=scope, name="service")
    def service(pg_server: PgServer, kafka_bootstrap: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
        with running(pg_server, kafka_bootstrap, tmp_path_factory.mktemp(var_name),
                     env) as started:
            yield started

    return service
