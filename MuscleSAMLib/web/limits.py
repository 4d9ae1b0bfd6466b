"""Size limits on what a client may send the web app: HTTP request bodies and websocket messages.

What the page really sends is small: state changes, the four numbers of a box drag, button
triggers (measured over the browser workflow tests: the largest websocket message was 261 bytes);
it never uploads a file and sends no HTTP bodies at all. The limits leave ample room for that and
refuse anything that could only be an attempt to exhaust the server's memory:

* ``HTTP_BODY_LIMIT``: a request whose body is larger (or whose size is not declared up front) is
  answered 413 (411) before any handler runs; aiohttp's ``client_max_size`` is set to the same value
  for any handler that reads a body.
* ``WS_MESSAGE_LIMIT``: one websocket frame may be at most this plus wslink's 4 KiB header allowance
  (aiohttp closes the connection with 1009 otherwise), and a message that wslink reassembles from
  chunks may declare at most this size (wslink itself would allocate up to 4 GiB for an
  authenticated client); the connection is closed, the server keeps running.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

HTTP_BODY_LIMIT = 16 * 1024  # bytes: nothing on the page posts a body; room for a small JSON call
WS_MESSAGE_LIMIT = 64 * 1024  # bytes: 250 times the largest message the page sends (a long path fits)

log = logging.getLogger("musclesam.web")


def body_limit(max_bytes: int = HTTP_BODY_LIMIT) -> Callable[..., Awaitable[Any]]:
    """An aiohttp middleware refusing request bodies over ``max_bytes`` (413) or of undeclared size (411)."""
    from aiohttp import web  # noqa: PLC0415 - web extra only

    @web.middleware
    async def limit(request: "web.Request", handler: Callable[..., Awaitable[Any]]) -> Any:
        size = request.content_length
        if size is None and request.body_exists:
            return web.Response(status=411, text="MuscleSAM: a request body must declare its size (Content-Length); "
                                                 "the page sends none.\n")
        if size is not None and size > max_bytes:
            return web.Response(status=413, text=f"MuscleSAM: request body of {size} bytes refused: this app accepts "
                                                 f"at most {max_bytes} bytes (it takes no uploads).\n")
        return await handler(request)

    return limit


def set_client_max_size(app: Any, max_bytes: int = HTTP_BODY_LIMIT) -> None:
    """aiohttp ``app``'s ``client_max_size`` (what a handler may read of a body) to ``max_bytes``.

    wslink builds the Application without that argument; it is set on the (not yet started) app instead.
    """
    if not hasattr(app, "_client_max_size"):
        raise RuntimeError("aiohttp's Application has no _client_max_size: update MuscleSAMLib/web/limits.py")
    app._client_max_size = int(max_bytes)  # noqa: SLF001


def apply_websocket_limits(server: Any, max_bytes: int = WS_MESSAGE_LIMIT) -> None:
    """Limit frames (trame's ``ws_max_msg_size`` -> wslink -> aiohttp) and reassembled messages to ``max_bytes``.

    Call before the server starts: trame hands the option to wslink when it binds.
    """
    server.options["ws_max_msg_size"] = int(max_bytes)
    import wslink.chunking  # noqa: PLC0415
    import wslink.protocol  # noqa: PLC0415

    if not hasattr(wslink.protocol, "UnChunker"):
        log.warning("wslink has no UnChunker to cap: websocket messages are limited per frame only")
        return

    class CappedUnChunker(wslink.chunking.UnChunker):
        """wslink's reassembler, never allowed to accept a message over ``max_bytes``."""

        def set_max_message_size(self, size: int) -> None:
            super().set_max_message_size(min(int(size), int(max_bytes)))

        def process_chunk(self, chunk: bytes) -> Any:
            try:
                return super().process_chunk(chunk)
            except ValueError as exc:
                log.warning("websocket message refused, connection closed (limit %d bytes): %s", max_bytes,
                            " ".join(str(exc).split()))
                raise

    wslink.protocol.UnChunker = CappedUnChunker
