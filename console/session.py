"""Who is signed in to the console, and the CSRF check on its forms.

The token is posted once and then kept in an HttpOnly, SameSite=Strict cookie; every request
identifies it again through the service's ``Authenticator`` (constant-time comparison), so a
token removed from the configuration stops working at the next restart. Tokens are never
logged nor rendered into a page. State-changing forms carry a double-submit CSRF value that
must equal the ``rx_csrf`` cookie, and a cross-site ``Origin`` is refused."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from fastapi import Request, Response

from handlers.auth import Authenticator, Caller

SESSION_COOKIE = "rx_session"
CSRF_COOKIE = "rx_csrf"
LANG_COOKIE = "rx_lang"
MONTH = 30 * 24 * 3600


def manager(request: Request, auth: Authenticator) -> Caller | None:
    """The signed-in manager, or None (an ERP connector's token does not sign in)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    who = auth.identify(f"Bearer {token}")
    return who if who is not None and who.kind == "manager" else None


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def sign_in(response: Response, request: Request, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=12 * 3600, httponly=True,
                        samesite="strict", secure=_secure(request), path="/")


def sign_out(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def csrf_value(request: Request) -> str:
    """The CSRF value for this browser: the cookie's, or a new one that ``keep_csrf`` sets."""
    existing = request.cookies.get(CSRF_COOKIE)
    if existing and 20 <= len(existing) <= 100:
        return existing
    fresh: str = request.state.__dict__.setdefault("csrf", secrets.token_urlsafe(32))
    return fresh


def keep_csrf(response: Response, request: Request) -> None:
    if request.cookies.get(CSRF_COOKIE) != csrf_value(request):
        response.set_cookie(CSRF_COOKIE, csrf_value(request), max_age=MONTH, httponly=True,
                            samesite="strict", secure=_secure(request), path="/")


def csrf_ok(request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not submitted:
        return False
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        return False
    return hmac.compare_digest(cookie.encode(), submitted.encode())
