"""The whole interaction loop in real Chromium: box by drag -> Segment -> heatmap -> review -> paint -> export.

One server, one page, steps in order (each step needs the previous one). A screenshot of every step
is saved under artifacts/test_workflow/ and the axial view is checked not to be blank.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import SimpleITK as sitk

from MuscleSAMLib.outputs.bundle import REQUIRED_FILES, check_bundle

from bad_input_table import record
from helpers import assert_not_blank, drag, muscle_rect, open_app, page_point, tid, wait_message, warm_fraction

pytestmark = pytest.mark.browser
VL = 3


def test_workflow(server, browser, artifacts: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    open_app(page, server.base + "/", server)
    st = server.wait(lambda s: s["msam_ready"], timeout=180, what="image and ensemble loaded")
    wait_message(page, "ready")
    page.screenshot(path=str(artifacts / "01-loaded.png"))
    blank_px = assert_not_blank(page, "after loading")

    # Export before any segmentation: a clear refusal, nothing offered for download
    with record("web", "Export before segmenting"):
        page.click(tid("export"))
        wait_message(page, "nothing to export yet")
        assert server.state()["exports"] == []
    page.screenshot(path=str(artifacts / "02-export-refused.png"))

    # The mouse wheel over the box layer steps through the axial slices
    k = st["axial"]["canonical_slice"]
    layer = page.locator(tid("box-layer")).bounding_box()
    page.mouse.move(layer["x"] + layer["width"] / 2, layer["y"] + layer["height"] / 2)
    page.mouse.wheel(0, 120)
    server.wait(lambda s: abs(s["axial"]["canonical_slice"] - k) == 1, what="the next slice")
    page.mouse.wheel(0, -120)
    server.wait(lambda s: s["axial"]["canonical_slice"] == k, what="back to the first slice")

    # A zero-size drag (a click) is refused with a message, no box is made
    c0, r0, c1, r1 = muscle_rect(VL, k)
    p0, p1 = page_point(server, page, c0, r0, k), page_point(server, page, c1, r1, k)
    drag(page, p0, p0, steps=1)
    wait_message(page, "has no size")
    assert server.state()["pending_boxes"] == []

    # One drag = one box prompt, with a visible rectangle while dragging
    drag(page, p0, p1, shot=artifacts / "03-dragging.png")
    st = server.wait(lambda s: len(s["pending_boxes"]) == 1, what="the box prompt")
    box = st["pending_boxes"][0]
    assert box["label"] == VL and box["slice"] == k
    bc0, br0, bc1, br1 = box["xyxy"]
    assert abs(bc0 - c0) <= 2 and abs(br0 - r0) <= 2 and abs(bc1 - c1) <= 2 and abs(br1 - r1) <= 2, (box, (c0, r0, c1, r1))
    page.screenshot(path=str(artifacts / "04-box.png"))

    # Segment: the VL segment exists on that slice with a plausible size; the heatmap layer is shown
    page.click(tid("segment"))
    st = server.wait(lambda s: not s["msam_busy"] and s["segments"], timeout=120, what="the segmentation")
    voxels = st["segments"].get(str(VL), 0)
    box_area = (bc1 - bc0) * (br1 - br0)
    assert 0.02 * box_area < voxels < 2.5 * box_area, (voxels, box_area)
    assert st["segment_slices"][str(VL)] == [k]
    heat = st["heatmap"]
    assert heat and heat["shown"] and heat["kind"] == "total" and heat["max_value"] > 0, heat
    wait_message(page, "done in")
    page.wait_for_selector(tid("legend"))
    page.wait_for_timeout(1500)
    page.screenshot(path=str(artifacts / "05-segmented.png"))
    px = assert_not_blank(page, "after segmenting")
    assert warm_fraction(px) > warm_fraction(blank_px) + 0.01, "no coloured overlay visible after Segment"

    # Overlay controls: hide/show, opacity, another kind; then the review queue's next most uncertain place
    page.click(f'{tid("heat-visible")} input')
    server.wait(lambda s: not s["heatmap"]["shown"], what="heatmap hidden")
    page.click(f'{tid("heat-visible")} input')
    server.wait(lambda s: s["heatmap"]["shown"], what="heatmap shown again")
    page.locator(tid("heat-opacity")).scroll_into_view_if_needed()  # the panel scrolls: Export sits above the fold
    track = page.locator(f'{tid("heat-opacity")} .v-slider-track').bounding_box()
    page.mouse.click(track["x"] + 0.8 * track["width"], track["y"] + track["height"] / 2)
    server.wait(lambda s: abs(s["heatmap"]["opacity"] - 0.8) < 0.06, what="heatmap opacity 0.8")
    page.click(f'{tid("heat-kind")} button:has-text("epistemic")')
    server.wait(lambda s: s["heatmap"]["kind"] == "epistemic", what="epistemic heatmap")
    page.keyboard.press("n")  # the keyboard shortcut of "Next most uncertain"
    wait_message(page, "#1:")
    page.screenshot(path=str(artifacts / "06-review.png"))

    # Paint an edit with trame-slicer's paint effect: VL gains voxels outside its box
    page.click(tid("tool-paint"))
    server.wait(lambda s: s["editor"]["effect"].endswith("SegmentationEffectPaint"), what="paint effect active")
    before = server.state()["segments"][str(VL)]
    q0 = page_point(server, page, bc1 + 25, (br0 + br1) / 2, k)
    q1 = page_point(server, page, bc1 + 45, (br0 + br1) / 2 + 20, k)
    drag(page, q0, q1, steps=12)
    server.wait(lambda s: s["segments"][str(VL)] > before, what="the painted voxels")
    page.click(tid("undo"))  # undo the stroke, then paint it again
    server.wait(lambda s: s["segments"][str(VL)] == before, what="the stroke undone")
    drag(page, q0, q1, steps=12)
    st = server.wait(lambda s: s["segments"][str(VL)] > before, what="the painted voxels")
    painted = st["segments"][str(VL)]
    page.wait_for_timeout(800)
    page.screenshot(path=str(artifacts / "07-painted.png"))

    # Export: the bundle downloads as one zip holding the edit
    page.click(tid("export"))
    page.wait_for_selector(tid("download"), timeout=60_000)
    with page.expect_download() as info:
        page.click(tid("download"))
    zpath = artifacts / info.value.suggested_filename
    info.value.save_as(zpath)
    page.screenshot(path=str(artifacts / "08-exported.png"))
    with zipfile.ZipFile(zpath) as zf:
        names = zf.namelist()
        root = names[0].split("/")[0]
        for required in (*REQUIRED_FILES, "corrected_labels.seg.nrrd"):
            assert f"{root}/{required}" in names, names
        zf.extractall(artifacts / "bundle")
    bundle = check_bundle(artifacts / "bundle" / root)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(bundle / "corrected_labels.nii.gz")))
    assert int((labels == VL).sum()) == painted  # the painted edit is in the exported labels
    edit_map = sitk.GetArrayFromImage(sitk.ReadImage(str(bundle / "edit_map.nii.gz")))
    assert int((edit_map == 1).sum()) == painted - voxels  # ... and recorded as added voxels
    report = json.loads((bundle / "report.json").read_text())
    assert report["edits_per_muscle"][str(VL)]["added"] == painted - voxels

    # A finished (locked) muscle is never overwritten: a new VL box is refused with a message
    page.click(tid("lock"))
    wait_message(page, "locked")
    page.click(tid("tool-box"))
    drag(page, page_point(server, page, c0, r0, k), page_point(server, page, c1, r1, k))
    server.wait(lambda s: len(s["pending_boxes"]) == 1, what="a second VL box")
    page.click(tid("segment"))
    wait_message(page, "is locked")
    assert server.state()["segments"][str(VL)] == painted
    page.screenshot(path=str(artifacts / "09-locked.png"))
    page.close()
