"""Who may talk to the web app: loopback by default, an access token for anything else.

* :func:`check_bind` refuses a non-loopback ``--host`` without a ``--token`` (and a short token).
* :func:`access_middleware` guards every HTTP request, the websocket upgrade included:
  - with a token: the request must carry it, as ``?token=`` (the URL printed at start; the token is
    then moved into an HttpOnly, SameSite=Strict cookie and the address bar is cleaned), as that
    cookie, or as ``Authorization: Bearer``; otherwise 401 with a plain-text explanation;
  - without a token (loopback only): the Host header must name the loopback (blocks DNS rebinding);
  - always: a request with an ``Origin`` header must come from this server's own origin (blocks
    other web sites from opening the websocket in the user's browser).
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from ..errors import InputError

MIN_TOKEN_CHARS = 16
COOKIE = "musclesam_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
TOKEN_HINT = 'python -c "import secrets; print(secrets.token_urlsafe(24))"'


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Raise :class:`InputError` unless binding ``host`` with ``token`` is allowed."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise InputError(f"--token must have at least {MIN_TOKEN_CHARS} characters; make one with: {TOKEN_HINT}")
    if not is_loopback(host) and not token:
        raise InputError(f"--host {host} would let other machines reach the app: give --token too (every browser must "
                         f"then present it); make one with: {TOKEN_HINT}")


def _host_name(host_header: str) -> str:
    return urlsplit(f"//{host_header}").hostname or ""


def _same_token(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def access_middleware(token: str | None) -> Callable[..., Awaitable[Any]]:
    """An aiohttp middleware enforcing the rules in the module docstring."""
    from aiohttp import web  # noqa: PLC0415 - web extra only

    @web.middleware
    async def guard(request: "web.Request", handler: Callable[..., Awaitable[Any]]) -> Any:
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc.lower() != request.host.lower():
            return web.Response(status=403, text="MuscleSAM: requests from other web sites are refused.\n")
        if token is None:
            if not is_loopback(_host_name(request.host)):
                return web.Response(status=403, text="MuscleSAM: this server answers only to http://127.0.0.1 or "
                                                     "http://localhost (start it with --host and --token to share it).\n")
            return await handler(request)
        auth = request.headers.get("Authorization", "")
        bearer = auth[7:] if auth.startswith("Bearer ") else None
        if _same_token(request.query.get("token"), token):
            if request.method == "GET" and request.path in ("/", "/index.html"):
                response = web.HTTPFound("/index.html")  # the token leaves the address bar and history
            else:
                response = await handler(request)
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
            if isinstance(response, web.HTTPException):
                raise response
            return response
        if _same_token(request.cookies.get(COOKIE), token) or _same_token(bearer, token):
            return await handler(request)
        return web.Response(status=401, text="MuscleSAM: this server needs its access token. Open the address that "
                                             "`musclesam web` printed (it ends in ?token=...).\n")

    return guard
