"""How many browser tabs are connected: counts live websocket connections at the HTTP layer.

trame's client "exited" notice is not sent when a tab is closed abruptly, so the count follows the
websocket handler itself: it runs for as long as its connection is open.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable


def websocket_counter(on_change: Callable[[int], None]) -> Callable[..., Awaitable[Any]]:
    """An aiohttp middleware calling ``on_change(count)`` whenever a websocket opens or closes."""
    from aiohttp import web  # noqa: PLC0415

    live = 0

    @web.middleware
    async def count(request: "web.Request", handler: Callable[..., Awaitable[Any]]) -> Any:
        nonlocal live
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return await handler(request)
        live += 1
        on_change(live)
        try:
            return await handler(request)
        finally:
            live -= 1
            on_change(live)

    return count
