"""Settings from the contract's environment variables, read once at start, never at import."""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

DEV_MANAGERS = ("ivanov", "petrova", "sidorov")
ROLES = ("api", "consumers", "relay", "projections", "expiry")  # what `reserves serve` can run
EventLoop = Literal["uvloop", "asyncio"]  # what `reserves serve` runs its event loops on
EVENT_LOOPS: tuple[EventLoop, ...] = get_args(EventLoop)
# uvloop by default: its HTTP and socket handling costs less of the one interpreter that
# serves everything. It does not exist on Windows.
DEFAULT_EVENT_LOOP: EventLoop = "asyncio" if sys.platform == "win32" else "uvloop"
# The interpreter's GIL switch interval in `reserves serve` (Python's default is 5 ms): a
# thread back from PostgreSQL takes the GIL back sooner while others compute.
DEFAULT_SWITCH_INTERVAL_S = 0.0005


class SettingsError(ValueError):
    """A configuration value is malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    kafka_bootstrap_servers: str | None
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    api_tokens: dict[str, str] = field(default_factory=dict)  # token -> manager
    erp_tokens: frozenset[str] = frozenset()
    request_ttl: float = 86400.0
    var_dir: Path = Path("var")
    kafka_partitions: int = 3
    kafka_replication_factor: int = 1
    kafka_enable_idempotence: bool = False
    kafka_session_timeout_ms: int = 10_000
    event_loop: EventLoop = DEFAULT_EVENT_LOOP
    switch_interval_s: float = DEFAULT_SWITCH_INTERVAL_S
    generated_api_tokens: bool = False
    generated_erp_tokens: bool = False

    @property
    def embedded_postgres(self) -> bool:
        return not self.database_url

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def tokens_generated(self) -> bool:
        return self.generated_api_tokens or self.generated_erp_tokens


def parse_api_tokens(raw: str) -> dict[str, str]:
    """``manager=token,manager=token`` → {token: manager}."""
    tokens: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        manager, sep, token = pair.partition("=")
        manager, token = manager.strip(), token.strip()
        if not sep or not manager or not token:
            raise SettingsError(
                "RESERVES_API_TOKENS must be comma-separated manager=token pairs; "
                f"an entry for {manager or '?'!r} is malformed."
            )
        if token in tokens:
            raise SettingsError("RESERVES_API_TOKENS gives the same token to two managers.")
        tokens[token] = manager
    return tokens


def parse_erp_tokens(raw: str) -> frozenset[str]:
    return frozenset(t.strip() for t in raw.split(",") if t.strip())


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, not {raw!r}.") from None


def _seconds(env: dict[str, str], name: str, default: float, at_most: float,
             limit: str) -> float:
    """A positive, finite number of seconds, at most ``at_most`` (``limit`` says it in words)."""
    raw = env.get(name) or ""
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be seconds, not {raw!r}.") from None
    if not (math.isfinite(value) and 0 < value <= at_most):
        raise SettingsError(f"{name} must be a positive number of seconds ({limit}), "
                            f"not {raw!r}.")
    return value


def _dev_tokens(var_dir: Path) -> tuple[dict[str, str], frozenset[str]]:
    """Random development tokens, kept under var/ so they survive restarts (mode 0600)."""
    path = var_dir / "dev-tokens.json"
    if path.exists():
        data = json.loads(path.read_text())
    else:
        var_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "managers": {m: secrets.token_urlsafe(24) for m in DEV_MANAGERS},
            "erp": [secrets.token_urlsafe(24)],
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
    return ({tok: m for m, tok in data["managers"].items()}, frozenset(data["erp"]))


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    var_dir = Path(env.get("RESERVES_VAR_DIR") or "var").resolve()
    api_raw, erp_raw = env.get("RESERVES_API_TOKENS"), env.get("RESERVES_ERP_TOKENS")
    if api_raw and erp_raw:
        api_tokens, erp_tokens = parse_api_tokens(api_raw), parse_erp_tokens(erp_raw)
    else:
        dev_api, dev_erp = _dev_tokens(var_dir)
        api_tokens = parse_api_tokens(api_raw) if api_raw else dev_api
        erp_tokens = parse_erp_tokens(erp_raw) if erp_raw else dev_erp
    if set(api_tokens) & erp_tokens:
        raise SettingsError("A token cannot be both a manager's (RESERVES_API_TOKENS) and an "
                            "ERP connector's (RESERVES_ERP_TOKENS).")
    if not api_tokens:
        raise SettingsError("RESERVES_API_TOKENS names no manager.")
    if not erp_tokens:
        raise SettingsError("RESERVES_ERP_TOKENS names no token.")
    ttl = _seconds(env, "RESERVE_REQUEST_TTL", 86400.0, 10 * 365 * 86400, "at most ten years")
    switch_interval = _seconds(env, "RESERVES_SWITCH_INTERVAL_S", DEFAULT_SWITCH_INTERVAL_S, 1.0,
                               "at most one second")
    event_loop = env.get("RESERVES_EVENT_LOOP") or DEFAULT_EVENT_LOOP
    if event_loop not in EVENT_LOOPS:
        raise SettingsError(f"RESERVES_EVENT_LOOP must be one of {', '.join(EVENT_LOOPS)}; "
                            f"not {event_loop!r}")
    http_port = _int(env, "HTTP_PORT", 8000)
    if not 0 < http_port < 65536:
        raise SettingsError(f"HTTP_PORT must be a TCP port (1-65535), not {http_port}.")
    return Settings(
        database_url=env.get("DATABASE_URL") or None,
        kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        http_host=env.get("HTTP_HOST") or "127.0.0.1",
        http_port=http_port,
        api_tokens=api_tokens,
        erp_tokens=erp_tokens,
        request_ttl=ttl,
        var_dir=var_dir,
        kafka_partitions=_int(env, "KAFKA_PARTITIONS", 3),
        kafka_replication_factor=_int(env, "KAFKA_REPLICATION_FACTOR", 1),
        kafka_enable_idempotence=(env.get("KAFKA_ENABLE_IDEMPOTENCE", "").lower()
                                  in ("1", "true", "yes")),
        kafka_session_timeout_ms=_int(env, "KAFKA_SESSION_TIMEOUT_MS", 10_000),
        event_loop=event_loop,
        switch_interval_s=switch_interval,
        generated_api_tokens=not api_raw,
        generated_erp_tokens=not erp_raw,
    )
