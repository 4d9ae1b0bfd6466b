"""Bad input in real Chromium: a missing IMAGE, Export with no image, two tabs, reload mid-inference, Cancel.

Each case must end with a clear message on the page and the server still answering.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import assert_not_blank, drag, muscle_rect, open_app, page_point, tid, wait_message
from webserver import start_server

pytestmark = pytest.mark.browser
VL = 3


@pytest.fixture(scope="module")
def server(random_manifest: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("web-bad")
    srv = start_server([str(out / "no-such-thigh.nii.gz"), "--manifest", str(random_manifest),
                        "--output", str(out / "exports")], out / "server.log")
    yield srv
    srv.stop()


def _box(server, page) -> None:
    k = server.state()["axial"]["canonical_slice"]
    c0, r0, c1, r1 = muscle_rect(VL, k)
    drag(page, page_point(server, page, c0, r0, k), page_point(server, page, c1, r1, k))


def test_missing_image_then_sample(server, browser, artifacts: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(server.base + "/")
    text = wait_message(page, "could not open the image")
    assert "no-such-thigh.nii.gz" in text and "not found" in text
    page.screenshot(path=str(artifacts / "01-missing-image.png"))
    page.click(tid("export"))
    wait_message(page, "no image is open")
    page.click(tid("open-sample"))
    server.wait(lambda s: s["msam_ready"], what="the sample opened from the page")
    wait_message(page, "opened thigh_001_water")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(artifacts / "02-sample-opened.png"))
    page.close()


def test_two_tabs_and_reload_mid_inference(server, browser, artifacts: Path) -> None:
    server.wait(lambda s: s["msam_ready"], what="an image (previous test opens the sample)")
    first, second = (browser.new_page(viewport={"width": 1400, "height": 900}) for _ in range(2))
    open_app(first, server.base + "/")
    open_app(second, server.base + "/")
    for page in (first, second):
        page.wait_for_selector(tid("tabs-warning"), timeout=20_000)
    _box(server, first)
    second.wait_for_selector(f'{tid("boxes")} .v-chip', timeout=20_000)  # one session: the other tab sees the box
    second.screenshot(path=str(artifacts / "01-second-tab-sees-box.png"))

    server.api("hold_worker?seconds=10", "POST")  # the ensemble is slow now: the run is surely in flight
    first.click(tid("segment"))
    first.wait_for_selector(tid("progress"), timeout=10_000)
    first.screenshot(path=str(artifacts / "02-progress.png"))
    assert second.locator(tid("segment")).is_disabled()  # the other tab cannot start a second run meanwhile
    first.reload()  # mid-inference: the job keeps running on the server and lands in the reloaded page
    first.wait_for_selector(tid("progress"), timeout=30_000)  # the reloaded page still shows the run
    first.wait_for_timeout(1500)
    first.screenshot(path=str(artifacts / "03-reloaded-mid-inference.png"))
    assert server.state()["msam_busy"], "the run ended before the reload could be checked"
    assert_not_blank(first, "reloaded mid-inference")
    st = server.wait(lambda s: not s["msam_busy"] and s["segments"], timeout=120, what="the segmentation")
    assert st["segments"].get(str(VL), 0) > 0
    wait_message(first, "done in")
    first.wait_for_timeout(1000)
    first.screenshot(path=str(artifacts / "04-done-after-reload.png"))
    second.close()
    first.wait_for_selector(tid("tabs-warning"), state="detached", timeout=20_000)  # one tab again
    first.close()


def test_propagate_stop_is_explained(server, browser, artifacts: Path) -> None:
    server.wait(lambda s: s["msam_ready"] and not s["msam_busy"], what="an idle app")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    open_app(page, server.base + "/")
    page.click(tid("propagate"))
    # random weights are maximally uncertain, so propagation stops at once and says why; a trained
    # ensemble propagates: either way the page explains the outcome
    st = server.wait(lambda s: any(w in s["msam_message"]["text"].lower() for w in ("found nothing", "done in")),
                     timeout=60, what="the propagation outcome")
    assert "uncertainty" in st["msam_message"]["text"] or "done in" in st["msam_message"]["text"].lower(), st
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / "01-propagate.png"))
    server.assert_alive()
    page.close()


def test_cancel_leaves_scene_unchanged(server, browser, artifacts: Path) -> None:
    server.wait(lambda s: s["msam_ready"] and not s["msam_busy"], what="an idle app")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    open_app(page, server.base + "/")
    before = server.state()["segments"]
    _box(server, page)
    server.api("hold_worker?seconds=30", "POST")
    page.click(tid("segment"))
    page.wait_for_selector(tid("progress"), timeout=10_000)
    page.click(tid("cancel"))
    wait_message(page, "cancelled", timeout_ms=30_000)
    st = server.wait(lambda s: not s["msam_busy"], timeout=30, what="the run to stop")
    assert st["segments"] == before  # nothing written
    assert len(st["pending_boxes"]) == 1  # the box is kept for another try
    page.screenshot(path=str(artifacts / "01-after-cancel.png"))

    # Opening an image again replaces the case: no segments, boxes, heatmap or exports of the old one
    page.click(tid("open-sample"))
    st = server.wait(lambda s: s["msam_ready"] and s["segments"] is None and not s["pending_boxes"],
                     what="a fresh case")
    assert st["heatmap"] is None and not st["msam_busy"]
    wait_message(page, "opened thigh_001_water")
    page.wait_for_timeout(1000)
    assert_not_blank(page, "after opening the sample again")
    page.screenshot(path=str(artifacts / "02-reopened.png"))
    page.close()
