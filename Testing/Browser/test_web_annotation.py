"""The page as an annotation tool (issue 16), in real Chromium: each fixed defect and each new control.

One server, one page, steps in order. Waits are on the server's state or the page's message, never
fixed sleeps. Screenshots of the new controls go to artifacts/test_annotation_tool/.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from helpers import drag, muscle_rect, open_app, page_point, tid, wait_message

pytestmark = pytest.mark.browser
VL, RF, VI = 3, 2, 4
LONG = 240  # seconds: a busy 2-core machine


def pick_muscle(page, name: str) -> None:
    """Choose a muscle with the picker, as a user does (the picker keeps the focus afterwards)."""
    page.click(f'{tid("muscle")} .v-field')
    page.click(f'.v-overlay .v-list-item:has-text("{name}")')
    page.wait_for_selector(".v-overlay .v-list-item", state="hidden")


def segments(server) -> dict:
    return server.state()["segments"] or {}


def test_annotation_tool(server, browser, artifacts: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    open_app(page, server.base + "/", server)
    st = server.wait(lambda s: s["msam_ready"], timeout=LONG, what="image and ensemble loaded")
    k = st["axial"]["canonical_slice"]
    layer = page.locator(tid("box-layer")).bounding_box()
    centre = (layer["x"] + layer["width"] / 2, layer["y"] + layer["height"] / 2)
    page.wait_for_selector(tid("view-title-Red") + ':has-text("Axial slice")')

    # Item 10: the wheel steps slices the same way whatever the tool (Slicer's own wheel vs the box layer)
    page.keyboard.press("v")
    server.wait(lambda s: s["msam_tool"] == "navigate", what="View tool by its key")
    page.mouse.move(*centre)
    offset = server.state()["axial"]["offset"]
    page.mouse.wheel(0, -120)
    moved = server.wait(lambda s: s["axial"]["offset"] != offset, what="a slice step with the View tool")["axial"]["offset"]
    slicer_way = moved - offset
    page.keyboard.press("b")
    server.wait(lambda s: s["msam_tool"] == "box", what="Box tool by its key")
    page.mouse.wheel(0, -120)
    boxed = server.wait(lambda s: s["axial"]["offset"] != moved, what="a slice step with the Box tool")["axial"]["offset"]
    assert (boxed - moved) * slicer_way > 0, "the wheel steps slices the other way with the Box tool"
    page.keyboard.press("ArrowDown")  # arrow keys step slices too: back to where we started
    page.keyboard.press("PageDown")
    page.keyboard.press("PageUp")
    page.keyboard.press("ArrowDown")
    server.wait(lambda s: s["axial"]["canonical_slice"] == k, what="back on the first slice by the arrow keys")

    # Item 5: the view's fit icon works with the Box tool (it is not taken as an empty box)
    page.click(tid("reset-Red"))
    page.wait_for_timeout(300)  # let a (wrong) box trigger arrive if there were one
    assert server.state()["pending_boxes"] == [] and "no size" not in server.state()["msam_message"]["text"]

    # Item 7: a drag past the view's edge and a box in air are refused, not clipped and accepted
    c0, r0, c1, r1 = muscle_rect(VL, k)
    inside = page_point(server, page, (c0 + c1) / 2, (r0 + r1) / 2, k)
    drag(page, inside, (layer["x"] - 40, inside[1] + 30))
    wait_message(page, "past the edge of the view")
    drag(page, page_point(server, page, 3, 3, k), page_point(server, page, 50, 50, k))
    wait_message(page, "in air")
    assert server.state()["pending_boxes"] == []
    page.screenshot(path=str(artifacts / "01-box-in-air-refused.png"))

    # Segment VL, then paint VL by hand beside it (an edit)
    drag(page, page_point(server, page, c0, r0, k), page_point(server, page, c1, r1, k))
    server.wait(lambda s: len(s["pending_boxes"]) == 1, what="the VL box")
    page.keyboard.press("s")
    server.wait(lambda s: not s["msam_busy"] and str(VL) in segments(server), timeout=LONG, what="VL segmented")
    v1 = segments(server)[str(VL)]
    page.keyboard.press("d")
    server.wait(lambda s: s["editor"]["effect"].endswith("SegmentationEffectPaint"), what="paint effect by its key")
    q0 = page_point(server, page, c1 + 15, (r0 + r1) / 2, k)
    q1 = page_point(server, page, c1 + 30, (r0 + r1) / 2 + 15, k)
    drag(page, q0, q1, steps=12)
    v2 = server.wait(lambda s: (s["segments"] or {}).get(str(VL), 0) > v1, what="VL painted")["segments"][str(VL)]

    # Item 4: after choosing a muscle with the picker, the keys still work (B, then S after a box)
    pick_muscle(page, "rectus femoris")
    page.keyboard.press("b")
    server.wait(lambda s: s["msam_tool"] == "box", what="the B key right after using the muscle picker")
    a0, b0, a1, b1 = muscle_rect(RF, k)
    drag(page, page_point(server, page, a0, b0, k), page_point(server, page, a1, b1, k))
    server.wait(lambda s: len(s["pending_boxes"]) == 1, what="the RF box")
    pick_muscle(page, "rectus femoris")
    page.keyboard.press("s")
    st = server.wait(lambda s: not s["msam_busy"] and str(RF) in (s["segments"] or {}), timeout=LONG, what="RF segmented")
    v3, rf = st["segments"].get(str(VL), 0), st["segments"][str(RF)]
    page.wait_for_selector(tid("segment-row"))
    # Item 10: moving "Hide below" never brings Slicer's colour bar into the view (the page has its legend)
    page.locator(tid("heat-threshold")).scroll_into_view_if_needed()
    track = page.locator(f'{tid("heat-threshold")} .v-slider-track').bounding_box()
    page.mouse.click(track["x"] + 0.3 * track["width"], track["y"] + track["height"] / 2)
    st = server.wait(lambda s: s["heatmap"] and s["heatmap"]["threshold"] > 0.1, what="hide-below moved")
    assert not st["heatmap"]["legend_in_views"]
    page.screenshot(path=str(artifacts / "02-two-muscles.png"))
    for panel in ("segments-panel", "review-panel", "correct-panel"):
        page.locator(tid(panel)).screenshot(path=str(artifacts / f"02-{panel}.png"))

    # Item 1: the VL paint is still an edit after RF was segmented on the same slice
    page.click(tid("export"))
    page.wait_for_selector(tid("download"), timeout=LONG * 1000)
    with page.expect_download() as info:
        page.click(tid("download"))
    zpath = artifacts / info.value.suggested_filename
    info.value.save_as(zpath)
    with zipfile.ZipFile(zpath) as zf:
        report = json.loads(zf.read(next(n for n in zf.namelist() if n.endswith("/report.json"))))
    added = report["edits_per_muscle"][str(VL)]["added"]
    assert (v2 - v1) - (v2 - v3) <= added <= v2 - v1 and added > 0, (added, v1, v2, v3)

    # A review row jumps there and says so (with the marker)
    page.click(f'{tid("review-row")} >> nth=0')
    wait_message(page, "yellow marker")
    page.screenshot(path=str(artifacts / "03-review-row-marker.png"))

    # Item 6: with VL locked, painting VI across it leaves every VL voxel in place
    pick_muscle(page, "vastus lateralis")
    page.click(tid("lock"))
    wait_message(page, "locked")
    pick_muscle(page, "vastus intermedius")
    page.keyboard.press("d")
    server.wait(lambda s: s["editor"]["effect"].endswith("SegmentationEffectPaint") and s["editor"]["segment"].startswith("muscle_4_"),
                what="paint VI")
    drag(page, page_point(server, page, c0 + 5, (r0 + r1) / 2, k), page_point(server, page, c1 + 25, (r0 + r1) / 2 + 5, k), steps=14)
    st = server.wait(lambda s: (s["segments"] or {}).get(str(VI), 0) > 0, what="VI painted")
    assert st["segments"][str(VL)] == v3, "painting another muscle erased part of the locked VL"
    wait_message(page, "keep their voxels")
    page.screenshot(path=str(artifacts / "04-locked-spared.png"))
    page.keyboard.press("Control+z")  # the stroke is taken back
    server.wait(lambda s: str(VI) not in (s["segments"] or {}), what="the VI stroke undone by Ctrl+Z")

    # Undo run: RF's run is taken back (but not where it took voxels of VL, locked since); window presets, cursor
    page.click(tid("undo-run"))
    st = server.wait(lambda s: (s["segments"] or {}).get(str(RF), 0) < rf, what="the RF run undone")
    assert st["segments"][str(VL)] == v3
    page.click(f'{tid("window")} button:has-text("Muscle")')
    wait_message(page, "window")
    page.mouse.move(*page_point(server, page, (c0 + c1) / 2, (r0 + r1) / 2, k))
    page.wait_for_function("() => document.querySelector('[data-testid=\"cursor\"]').innerText.includes('intensity')")
    page.screenshot(path=str(artifacts / "05-window-cursor-undo-run.png"))

    # Clear muscle on slice: refused for the locked VL, done once it is unlocked (the voxels go, as an edit)
    pick_muscle(page, "vastus lateralis")
    page.click(tid("clear-slice"))
    wait_message(page, "is locked")
    page.click(tid("lock"))
    wait_message(page, "unlocked")
    page.click(tid("clear-slice"))
    wait_message(page, "cleared on slice")
    assert str(VL) not in (server.state()["segments"] or {})

    # Item 2: opening the sample again asks before discarding the unsaved corrections
    kept = segments(server)
    page.click(tid("open-sample"))
    page.wait_for_selector(tid("confirm"))
    page.wait_for_function("() => getComputedStyle(document.querySelector('.v-overlay__content')).opacity === '1'")
    page.screenshot(path=str(artifacts / "06-confirm-discard.png"))
    page.click(tid("confirm-keep"))
    page.wait_for_selector(tid("confirm"), state="hidden")
    assert segments(server) == kept and server.state()["msam_image"] == "Thigh_001_water"
    page.click(tid("open-sample"))
    page.click(tid("confirm-discard"))
    server.wait(lambda s: s["msam_ready"] and not s["segments"], timeout=LONG, what="the sample opened again")
    page.close()


def tab_point(server, page, col: float, row: float, k: int) -> tuple[float, float]:
    """Page pixel of canonical (col, row) as THIS tab shows the server's image (at its width, top-aligned)."""
    from MuscleSAMLib.scene_bridge.geometry import canonical_to_ras

    from helpers import sample_labels

    ras = canonical_to_ras(sample_labels(), col, row, k)
    f = server.api("ras_to_view?ras=" + ",".join(f"{v:.4f}" for v in ras))
    box = page.locator(tid("box-layer")).bounding_box()
    w, h = server.state()["axial"]["pixels"]
    return box["x"] + f["fx"] * box["width"], box["y"] + f["fy"] * h * box["width"] / w


def test_boxes_land_where_drawn_in_two_tabs_of_different_shapes(server, browser, artifacts: Path) -> None:
    """Issue 16 item 3: the last-opened tab sizes the server's view; a box drawn in the other tab still lands
    on the muscle it was drawn around."""
    first = browser.new_page(viewport={"width": 1400, "height": 900})
    open_app(first, server.base + "/", server)
    server.wait(lambda s: s["msam_ready"], timeout=LONG, what="ready")
    second = browser.new_page(viewport={"width": 1100, "height": 950})
    open_app(second, server.base + "/", server)  # the server's view now has the second tab's shape
    server.action("clear_boxes")
    second.keyboard.press("b")
    server.wait(lambda s: s["msam_tool"] == "box", what="the Box tool")
    k = server.state()["axial"]["canonical_slice"]
    c0, r0, c1, r1 = muscle_rect(VL, k)
    for page in (first, second):
        page.bring_to_front()
        drag(page, tab_point(server, page, c0, r0, k), tab_point(server, page, c1, r1, k))
        st = server.wait(lambda s: len(s["pending_boxes"]) == 1, what="the box")
        bc0, br0, bc1, br1 = st["pending_boxes"][0]["xyxy"]
        assert max(abs(bc0 - c0), abs(br0 - r0), abs(bc1 - c1), abs(br1 - r1)) <= 2, (st["pending_boxes"], (c0, r0, c1, r1))
        page.screenshot(path=str(artifacts / f"tab-{page.viewport_size['width']}.png"))
        server.action("clear_boxes")
    first.close()
    second.close()
