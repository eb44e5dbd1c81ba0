"""Who is calling: bearer tokens, compared in constant time, never logged."""

from __future__ import annotations

import hmac
from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    kind: str  # "manager" or "erp"
    name: str  # the manager's name, or "erp"


class Authenticator:
    def __init__(self, api_tokens: dict[str, str], erp_tokens: frozenset[str]) -> None:
        self._tokens: list[tuple[bytes, Caller]] = [
            (t.encode(), Caller("manager", m)) for t, m in api_tokens.items()
        ] + [(t.encode(), Caller("erp", "erp")) for t in erp_tokens]

    def identify(self, authorization: str | None) -> Caller | None:
        """The caller a ``Bearer`` header names, or None. Every known token is compared, with
        ``hmac.compare_digest``, so the time taken says nothing about which one nearly matched."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = token.strip().encode()
        found: Caller | None = None
        for known, caller in self._tokens:
            if hmac.compare_digest(presented, known):
                found = caller
        return found
