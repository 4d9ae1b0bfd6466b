"""``musclesam web`` in a subprocess for the browser tests, with helpers for its test API.

Each server runs on a free localhost port with a random-weight ensemble (``--manifest``) and the
test-only read-out (``--test-api``); it is stopped by its own pid.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "MuscleSAM web app:"
START_TIMEOUT_S = 150


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebServer:
    """A running ``musclesam web`` subprocess and small HTTP helpers for its test API."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path, token: str | None = None) -> None:
        self.proc, self.port, self.log, self.token = proc, port, log, token
        self.base = f"http://127.0.0.1:{port}"

    def request(self, path: str, method: str = "GET", headers: dict | None = None,
                data: bytes | None = None) -> tuple[int, str, dict]:
        """(status, body, headers) of one HTTP request (no redirects followed)."""
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *_a: Any, **_k: Any) -> None:
                return None

        req = urllib.request.Request(self.base + path, method=method, headers=headers or {}, data=data)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(req, timeout=30) as r:
                return r.status, r.read().decode(errors="replace"), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace"), dict(e.headers)

    def api(self, path: str, method: str = "GET") -> Any:
        """JSON from the test API (``/musclesam/test/<path>``)."""
        hdr = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        status, body, _ = self.request(f"/musclesam/test/{path}", method, hdr)
        assert status == 200, f"{path}: HTTP {status}: {body[:300]}"
        return json.loads(body)

    def action(self, name: str, *args: Any) -> dict:
        """Call page action ``name`` with ``args`` as the page would (test API); the state read-out after it."""
        hdr = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.token}"} if self.token else {})}
        status, body, _ = self.request(f"/musclesam/test/action/{name}", "POST", hdr, json.dumps(list(args)).encode())
        assert status == 200, f"{name}: HTTP {status}: {body[:300]}"
        return json.loads(body)

    def state(self) -> dict:
        """The server's scene read-out."""
        return self.api("state")

    def wait(self, predicate: Callable[[dict], Any], timeout: float = 60.0, what: str = "condition") -> dict:
        """Poll the state until ``predicate(state)`` is truthy."""
        end = time.monotonic() + timeout
        st = {}
        while time.monotonic() < end:
            self.assert_alive()
            st = self.state()
            if predicate(st):
                return st
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; last state: {json.dumps(st)[:1500]}")

    def assert_alive(self) -> None:
        """Fail with the server's log tail if it died."""
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self) -> None:
        """Terminate the server (by its own pid) and wait for it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


def start_server(args: list[str], log: Path, token: str | None = None) -> WebServer:
    """Start ``musclesam web ARGS --port <free> --test-api`` and wait for its ready line."""
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "MuscleSAMLib.cli", "web", *args, "--port", str(port), "--test-api"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = WebServer(proc, port, log, token)
    end = time.monotonic() + START_TIMEOUT_S
    while READY_LINE not in server.log_tail(10**7):
        if proc.poll() is not None or time.monotonic() > end:
            server.stop()
            raise AssertionError(f"musclesam web did not start:\n{server.log_tail()}")
        time.sleep(0.3)
    return server
