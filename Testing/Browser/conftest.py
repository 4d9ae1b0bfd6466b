"""Browser-test fixtures: Debian's headless Chromium, a random-weight ensemble, artifact folders.

Servers are started by ``webserver.start_server`` (each test module starts its own). Screenshots go
to ``Testing/Browser/artifacts/<test>/`` (kept after the run: look at them). Tests that need Chromium skip, saying why, when /usr/bin/chromium is
missing (``apt-get install -y chromium``; Playwright's own browser download is not used).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


sys.path.insert(0, str(ROOT / "Testing" / "Python"))
from musclesam_test_helpers import write_random_decoder_ensemble  # noqa: E402


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Debian's Chromium, or skip with the reason."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent: install it with `apt-get install -y chromium` to run the browser tests")
    return CHROMIUM


@pytest.fixture(scope="session")
def random_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight decoder ensemble (the Python tests' helper) for deterministic, fast inference."""
    return write_random_decoder_ensemble(tmp_path_factory.mktemp("ensemble"))


@pytest.fixture(scope="module")
def server(random_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``musclesam web`` on the random ensemble, one per test module (exports in the module's own folder).

    A module that needs other options defines its own ``server`` fixture.
    """
    from webserver import start_server

    out = tmp_path_factory.mktemp("web")
    srv = start_server(["--manifest", str(random_manifest), "--output", str(out / "exports")], out / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Any]:
    """One headless Chromium per test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """This test's screenshot folder (emptied first)."""
    folder = ARTIFACTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder
