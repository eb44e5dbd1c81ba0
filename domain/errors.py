"""The one hierarchy of errors the domain raises.

Each error carries a stable snake_case ``code`` and a human sentence; entry points map the
family (``kind``) to a wire status: refused by a rule, forbidden, not found, invalid.
"""

from __future__ import annotations


class DomainError(Exception):
    """A command or fact the domain refuses. Nothing has been changed."""

    code = "domain_error"
    kind = "rule"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class RuleViolationError(DomainError):
    """A rule of the domain says no (the wire's 409)."""

    kind = "rule"


class ForbiddenError(DomainError):
    """The actor may not do this to that (the wire's 403)."""

    kind = "forbidden"


class NotFoundError(DomainError):
    """An id the command names is unknown (the wire's 404)."""

    kind = "not_found"


class InvalidInputError(DomainError):
    """The command itself is malformed in a way no state can fix (the wire's 422)."""

    kind = "invalid"


class InsufficientReserveError(RuleViolationError):
    code = "insufficient_reserve"


class ExceedsShortageError(RuleViolationError):
    code = "exceeds_shortage"


class ExceedsOrderedError(RuleViolationError):
    code = "exceeds_ordered"


class ExceedsRequestedError(RuleViolationError):
    code = "exceeds_requested"


class OrderClosedError(RuleViolationError):
    code = "order_closed"


class OrderExistsError(RuleViolationError):
    code = "order_exists"


class UnknownOrderError(RuleViolationError):
    """A fact names an order the service has never been told about."""

    code = "unknown_order"


class NoSuchLineError(RuleViolationError):
    code = "no_order_line"


class ReleaseExceedsReserveError(RuleViolationError):
    code = "release_exceeds_reserve"


class OwnReserveError(RuleViolationError):
    code = "own_reserve"


class RequestNotPendingError(RuleViolationError):
    code = "request_not_pending"


class RequestExpiredError(RuleViolationError):
    code = "request_expired"


class NotExpiredYetError(RuleViolationError):
    code = "not_expired_yet"


class NotYourOrderError(ForbiddenError):
    code = "not_your_order"


class NotOwnerError(ForbiddenError):
    code = "not_owner"


class NotRequesterError(ForbiddenError):
    code = "not_requester"


class OrderNotFoundError(NotFoundError):
    code = "order_not_found"


class RequestNotFoundError(NotFoundError):
    code = "request_not_found"


class SameOrderError(InvalidInputError):
    code = "same_order"


class InvalidQuantityError(InvalidInputError):
    code = "invalid_quantity"
