"""A minimal client of the websocket protocol the page speaks (wslink: chunk header + msgpack), for tests.

Enough to say hello as trame's page does, send frames of any size or a chunk header claiming any size,
change page state as any client can, and see how the server answers or closes the connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import struct
from typing import Any

import aiohttp
import msgpack

SECRET = "wslink-secret"  # trame's default, which the page sends in its hello
HEADER = struct.Struct("<III")  # message id, offset, total size (wslink.chunking)


def frame(message: dict, msg_id: int = 1) -> bytes:
    """``message`` as one wslink chunk (the whole message in one frame)."""
    body = msgpack.packb(message)
    return HEADER.pack(msg_id, 0, len(body)) + body


def rpc(rpc_id: str, method: str, *args: Any) -> bytes:
    """A wslink RPC call as one frame."""
    return frame({"wslink": "1.0", "id": rpc_id, "method": method, "args": list(args), "kwargs": {}})


def claim(total_size: int, payload: bytes = b"\x00" * 64, msg_id: int = 7) -> bytes:
    """The first chunk of a message that says it will be ``total_size`` bytes long."""
    return HEADER.pack(msg_id, 0, total_size) + payload


async def hello(ws: aiohttp.ClientWebSocketResponse) -> dict:
    """Authenticate as the page does; returns the server's answer."""
    await ws.send_bytes(rpc("system:c0:0", "wslink.hello", {"secret": SECRET}))
    while True:
        msg = await ws.receive(timeout=30)
        assert msg.type == aiohttp.WSMsgType.BINARY, f"no answer to hello: {msg}"
        reply = msgpack.unpackb(msg.data[HEADER.size:])
        if reply.get("id") == "system:c0:0":
            assert "result" in reply, reply
            return reply["result"]


async def close_code(ws: aiohttp.ClientWebSocketResponse, timeout: float = 20.0) -> int | None:
    """Wait for the server to close ``ws``; its close code (None if it stayed open)."""
    end = asyncio.get_running_loop().time() + timeout
    while not ws.closed:
        left = end - asyncio.get_running_loop().time()
        if left <= 0:
            return None
        try:
            msg = await ws.receive(timeout=left)
        except asyncio.TimeoutError:
            return None
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.ERROR):
            break
    return ws.close_code


async def call(ws: aiohttp.ClientWebSocketResponse, rpc_id: str, method: str, *args: Any) -> dict:
    """Send one RPC and wait for its answer (other messages are skipped)."""
    await ws.send_bytes(rpc(rpc_id, method, *args))
    while True:
        msg = await ws.receive(timeout=30)
        assert msg.type == aiohttp.WSMsgType.BINARY, f"no answer to {method}: {msg}"
        if len(msg.data) > HEADER.size and HEADER.unpack_from(msg.data)[1] == 0:
            try:
                reply = msgpack.unpackb(msg.data[HEADER.size:])
            except Exception:  # noqa: BLE001 - the first chunk of a longer message (an image): not ours
                continue
            if isinstance(reply, dict) and reply.get("id") == rpc_id:
                return reply


def push_state(base: str, changes: dict, headers: dict | None = None) -> dict:
    """Change page state as a (possibly hostile) page can: ``trame.state.update`` over a fresh websocket."""
    async def run() -> dict:
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.ws_connect(base.replace("http", "ws", 1) + "/ws") as ws:
                await hello(ws)
                return await call(ws, "rpc:c0:1", "trame.state.update", [{"key": k, "value": v} for k, v in changes.items()])

    return run_async(run())


def run_async(coro: Any) -> Any:
    """Run ``coro`` to its end on a fresh event loop in its own thread (Playwright's sync API owns this one's)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
