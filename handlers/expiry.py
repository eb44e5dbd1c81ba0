"""The expiry timer: a request not answered within the TTL becomes ``expired``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from domain.commands import ExpireReserveRequest
from handlers.commands import SYSTEM_ACTOR, CommandHandler
from services.observability import record_command


def expire_due(commands: CommandHandler, due: Callable[[datetime], list[str]]) -> int:
    """Expires every pending request past its time; returns how many it expired.

    The list comes from the (eventually consistent) requests view; the aggregate re-checks,
    so a request answered meanwhile is simply left alone.
    """
    expired = 0
    for request_id in due(commands.clock()):
        outcome = commands.execute(ExpireReserveRequest(request_id), SYSTEM_ACTOR)
        record_command("ExpireReserveRequest", outcome, "timer")
        expired += outcome.ok
    return expired
