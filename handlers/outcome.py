"""What a handler answers: a status and a JSON body, the same for HTTP and Kafka callers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from domain.errors import DomainError

STATUS_BY_KIND = {"rule": 409, "forbidden": 403, "not_found": 404, "invalid": 422}


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def error(self) -> dict[str, str] | None:
        err = self.body.get("error")
        return err if isinstance(err, dict) else None


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def refusal(error: DomainError) -> Outcome:
    return Outcome(STATUS_BY_KIND.get(error.kind, 409), error_body(error.code, error.message))


def fingerprint(payload: Any) -> str:
    """A stable digest of a message's content, to tell a true repeat from a reused key."""
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                           default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()

