"""Running ``reserves serve`` as a child process, the way an operator starts it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import wait_for


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
