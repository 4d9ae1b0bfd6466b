"""The Click tool in real Chromium: box -> Segment -> a negative click (Shift), a positive click (left), a right
click, Undo click -> the mask comes back; the suggested next click appears as a marker and follows the answers.

Waits on the server's state read-out (never fixed sleeps); screenshots under artifacts/test_click_tool/.
"""

from __future__ import annotations

import io
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from bad_input_table import record
from helpers import drag, muscle_rect, open_app, page_point, tid, wait_message

pytestmark = pytest.mark.browser
VL = 3


def _labels(server) -> np.ndarray:
    """The segmentation as the page shows it (the test API's .npy read-out)."""
    with urllib.request.urlopen(server.base + "/musclesam/test/labels", timeout=30) as r:
        return np.load(io.BytesIO(r.read()))


def _vl(st: dict) -> int:
    return (st["segments"] or {}).get(str(VL), 0)


def test_click_tool(server, browser, artifacts: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    open_app(page, server.base + "/", server)
    st = server.wait(lambda s: s["msam_ready"], timeout=180, what="image and ensemble loaded")
    wait_message(page, "ready")
    k = st["axial"]["canonical_slice"]

    # Click before any box: a clear message, nothing made
    page.click(tid("tool-click"))
    server.wait(lambda s: s["msam_tool"] == "click", what="the Click tool")
    c0, r0, c1, r1 = muscle_rect(VL, k)
    mid = page_point(server, page, (c0 + c1) / 2, (r0 + r1) / 2, k)
    with record("web", "click before any box for the muscle"):
        page.mouse.click(*mid)
        wait_message(page, "draw a box for vastus lateralis on slice")
        assert server.state()["segments"] is None

    # Box + Segment
    page.click(tid("tool-box"))
    drag(page, page_point(server, page, c0, r0, k), page_point(server, page, c1, r1, k))
    server.wait(lambda s: len(s["pending_boxes"]) == 1, what="the box prompt")
    page.click(tid("segment"))
    st = server.wait(lambda s: not s["msam_busy"] and s["segments"], timeout=120, what="the segmentation")
    wait_message(page, "done in")
    first, vl0 = _labels(server), _vl(st)
    page.screenshot(path=str(artifacts / "01-segmented.png"))

    # The suggestion marker: on, it sits on this slice's most uncertain VL region
    page.click(f'{tid("suggest")} input')
    st = server.wait(lambda s: len(s["clicks"]["markers"].get("suggested", [])) == 1, what="the suggested click marker")
    page.wait_for_selector(tid("suggest-hint"))
    suggested = st["clicks"]["markers"]["suggested"][0]

    # A negative click (Shift + left) inside the mask: the mask changes, the status says so, a red marker
    page.click(tid("tool-click"))
    server.wait(lambda s: s["msam_tool"] == "click", what="the Click tool")
    page.keyboard.down("Shift")
    page.mouse.click(*mid)
    page.keyboard.up("Shift")
    st = server.wait(lambda s: not s["msam_busy"] and s["clicks"]["count"] == 1, timeout=120, what="the first click")
    text = wait_message(page, "click 1 (not muscle) on vastus lateralis")
    assert st["clicks"]["on_slice"] == [{"label": VL, "positive": False}] and len(st["clicks"]["markers"]["negative"]) == 1
    one = _labels(server)
    changed = int((one != first).sum())
    assert ("mask changed by" in text.lower()) == (changed > 0), text
    assert set(np.unique(one[one != first])) | set(np.unique(first[one != first])) <= {0, VL}  # only VL's voxels
    assert len(st["clicks"]["markers"]["suggested"]) == 1  # recomputed from the new answer (it may stay put)
    page.wait_for_selector(f'{tid("undo-click")}:not([disabled])')
    page.wait_for_timeout(800)  # the next frame of the view, for the screenshot only
    page.screenshot(path=str(artifacts / "02-negative-click.png"))

    # A positive click (left) and a right click (negative), then undo all three: the mask of the box returns
    page.mouse.click(*page_point(server, page, c0 + 0.3 * (c1 - c0), (r0 + r1) / 2, k))
    server.wait(lambda s: not s["msam_busy"] and s["clicks"]["count"] == 2, timeout=120, what="the second click")
    wait_message(page, "click 2 (muscle)")
    page.mouse.click(*page_point(server, page, c0 + 0.7 * (c1 - c0), (r0 + r1) / 2, k), button="right")
    st = server.wait(lambda s: not s["msam_busy"] and s["clicks"]["count"] == 3, timeout=120, what="the right click")
    wait_message(page, "click 3 (not muscle)")
    assert len(st["clicks"]["markers"]["positive"]) == 1 and len(st["clicks"]["markers"]["negative"]) == 2
    page.wait_for_timeout(800)  # the next frame of the view, for the screenshot only
    page.screenshot(path=str(artifacts / "03-three-clicks.png"))
    page.click(tid("undo-click"))
    server.wait(lambda s: not s["msam_busy"] and s["clicks"]["count"] == 2, timeout=120, what="one click undone")
    wait_message(page, "taken back, 2 left")
    page.click(tid("undo-click"))
    server.wait(lambda s: not s["msam_busy"] and s["clicks"]["count"] == 1, timeout=120, what="two clicks undone")
    assert np.array_equal(_labels(server), one)  # back to the mask after the first click, exactly
    page.click(tid("undo-click"))
    st = server.wait(lambda s: not s["msam_busy"] and s["clicks"]["count"] == 0, timeout=120, what="every click undone")
    wait_message(page, "taken back, 0 left")
    assert np.array_equal(_labels(server), first) and _vl(st) == vl0  # the box's own mask, exactly
    assert st["clicks"]["markers"]["positive"] == [] and st["clicks"]["markers"]["negative"] == []
    assert st["clicks"]["markers"]["suggested"] == [pytest.approx(suggested)]  # the box's answer, the box's suggestion
    page.wait_for_selector(f'{tid("undo-click")}[disabled]')
    page.wait_for_timeout(800)  # the next frame of the view, for the screenshot only
    page.screenshot(path=str(artifacts / "04-undone.png"))

    # Click on a locked muscle: refused with a message, nothing changes
    page.click(tid("lock"))
    wait_message(page, "locked")
    with record("web", "click on a locked (finished) muscle"):
        page.mouse.click(*mid)
        wait_message(page, "is locked")
        assert np.array_equal(_labels(server), first)
    page.close()
