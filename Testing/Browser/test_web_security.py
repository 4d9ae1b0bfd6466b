"""Who may reach the web app: a token, when given, guards every request (pages, websocket, routes).

The loopback-only rules (Host and Origin checks without a token) are in test_web_units.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import open_app, tid
from webserver import ROOT, start_server

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

