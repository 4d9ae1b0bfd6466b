"""Who may reach the web app: a token, when given, guards every request (pages, websocket, routes); and how
much even a client holding the token may send (limits.py).

The loopback-only rules (Host and Origin checks without a token) are in test_web_units.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bad_input_table import record
from helpers import open_app, tid
from MuscleSAMLib.web.limits import HTTP_BODY_LIMIT, WS_MESSAGE_LIMIT
from webserver import ROOT, start_server
from wsclient import call, claim, close_code, hello, rpc, run_async

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def token_server(random_manifest: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("web-token")
    srv = start_server(["--manifest", str(random_manifest), "--token", TOKEN, "--output", str(out / "exports")],
                       out / "server.log", token=TOKEN)
    yield srv
    srv.stop()


def test_non_loopback_host_needs_token() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "MuscleSAMLib.cli", "web", "--host", "0.0.0.0"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--token" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "MuscleSAMLib.cli", "web", "--host", "0.0.0.0", "--token", "short"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "at least" in r.stderr, r.stderr


def test_token_required_for_every_request(token_server) -> None:
    assert token_server.request("/")[0] == 401
    assert token_server.request("/index.html")[0] == 401
    assert token_server.request("/musclesam/test/state")[0] == 401
    assert token_server.request("/?token=wrong-token-0123456789")[0] == 401
    status, _, headers = token_server.request(f"/?token={TOKEN}")
    assert status == 302 and headers["Location"] == "/index.html"  # the token leaves the address bar
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    assert token_server.request("/index.html", headers={"Cookie": f"musclesam_token={TOKEN}"})[0] == 200
    assert token_server.request("/index.html", headers={"Origin": "http://evil.example",  # another site's page
                                                        "Cookie": f"musclesam_token={TOKEN}"})[0] == 403


@pytest.mark.browser
def test_browser_with_token_url(token_server, browser, artifacts: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(token_server.base + "/")
    assert "access token" in page.content()
    page.screenshot(path=str(artifacts / "01-no-token.png"))
    open_app(page, f"{token_server.base}/?token={TOKEN}")
    assert "token=" not in page.url
    page.wait_for_selector(tid("segment"))
    token_server.wait(lambda s: s["msam_ready"], what="the app behind the token")
    page.wait_for_timeout(1000)
    page.screenshot(path=str(artifacts / "02-with-token.png"))
    page.close()


def _rss_mib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) // 1024


def _state_update(key: str, value: str) -> list:
    return [{"key": key, "value": value}]


async def _websocket_limits(base: str, auth: dict, pid: int) -> dict:
    """What the server does with a long path (fits), an oversized frame and a chunk claiming 1 GiB."""
    out: dict = {}
    url = base.replace("http", "ws", 1) + "/ws"
    async with aiohttp.ClientSession(headers=auth) as session:
        async with session.ws_connect(url) as ws:
            await hello(ws)
            reply = await call(ws, "rpc:c0:1", "trame.state.update", _state_update("msam_image_request", "/d/" + "p" * 8000))
            out["long path"] = "error" not in reply
            too_big = _state_update("msam_image_request", "x" * (WS_MESSAGE_LIMIT + 8192))
            await ws.send_bytes(rpc("rpc:c0:2", "trame.state.update", too_big))
            out["oversized frame"] = await close_code(ws)
        async with session.ws_connect(url) as ws:
            await hello(ws)
            before = _rss_mib(pid)
            await ws.send_bytes(claim(1 << 30))  # 76 bytes that announce a 1 GiB message
            out["1 GiB claim"] = (ws.closed or await close_code(ws) is not None, _rss_mib(pid) - before)
        async with session.ws_connect(url) as ws:
            out["hello afterwards"] = await hello(ws)
    return out


def test_oversized_requests_refused_server_keeps_answering(token_server) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with record("web", "oversized HTTP request body"):
        status, body, _ = token_server.request("/index.html", "POST", auth, b"x" * (HTTP_BODY_LIMIT + 1))
        assert status == 413 and f"at most {HTTP_BODY_LIMIT} bytes" in body, (status, body)
        assert token_server.request("/index.html", "POST", {}, b"x" * (HTTP_BODY_LIMIT + 1))[0] == 401  # token first

        async def chunked() -> int:
            async def parts():
                for _ in range(4):
                    yield b"x" * 1024
            async with aiohttp.ClientSession(headers=auth) as session:
                async with session.post(token_server.base + "/musclesam/test/action/open_image", data=parts()) as r:
                    return r.status

        assert run_async(chunked()) == 411  # a body of undeclared size is not read at all
        assert token_server.request("/index.html", headers=auth)[0] == 200
    with record("web", "oversized websocket message"):
        seen = run_async(_websocket_limits(token_server.base, auth, token_server.proc.pid))
        assert seen["long path"], seen  # an 8 kB path still fits
        assert seen["oversized frame"] == 1009, seen  # WebSocket 'message too big'
        closed, grown_mib = seen["1 GiB claim"]
        assert closed and grown_mib < 256, seen  # refused before allocating
        assert "clientID" in seen["hello afterwards"], seen
        assert token_server.state()["msam_phase"] in ("ready", "loading", "starting")
