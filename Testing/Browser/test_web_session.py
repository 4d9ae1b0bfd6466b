"""A realistic session in real Chromium (issue 16): every muscle on both legs of 3 slices, Propagate,
corrections of 3 muscles, a lock, export, reload, export again.

What the user painted is recorded independently: the page's label map (test read-out) right after the
runs and after the strokes; the voxels that differ are the hand edits. Each exported zip must hold the
labels the page shows and an edit map equal to those voxels.
"""

from __future__ import annotations

import io
import re
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MuscleSAMLib.sample_data import muscle_names
from MuscleSAMLib.scene_bridge.geometry import canonical_to_ras

from helpers import drag, muscle_rect, open_app, page_point, sample_labels, tid, wait_message

pytestmark = pytest.mark.browser
LONG = 400
CORRECTED = (3, 2, 9)  # VL, RF, ST get a hand correction


def page_labels(server) -> np.ndarray:
    with urllib.request.urlopen(server.base + "/musclesam/test/labels", timeout=120) as r:
        return np.load(io.BytesIO(r.read()))


def pick_muscle(page, label: int) -> None:
    page.click(f'{tid("muscle")} .v-field')
    page.click(f'.v-overlay .v-list-item:has-text("{muscle_names()[label]["name"]}")')
    page.wait_for_selector(".v-overlay .v-list-item", state="hidden")


def jump(server, k: int) -> None:
    ras = canonical_to_ras(sample_labels(), 200.0, 200.0, k)
    status, body, _ = server.request("/musclesam/test/jump?ras=" + ",".join(f"{v:.4f}" for v in ras), "POST")
    assert status == 200, body
    server.wait(lambda s: s["axial"]["canonical_slice"] == k, what=f"slice {k}")


def export_zip(server, page, artifacts: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Export from the page and download the zip: (corrected labels, edit map) as stored arrays."""
    page.click(tid("export"))
    server.wait(lambda s: len(s["exports"]) == n and not s["msam_busy"], timeout=LONG, what=f"export {n}")
    page.wait_for_selector(tid("download"))
    with page.expect_download() as info:
        page.click(tid("download"))
    path = artifacts / f"export-{n}.zip"
    info.value.save_as(path)
    out = []
    with zipfile.ZipFile(path) as zf:
        for name in ("corrected_labels.nii.gz", "edit_map.nii.gz"):
            member = next(m for m in zf.namelist() if m.endswith("/" + name))
            target = artifacts / f"export-{n}-{name}"
            target.write_bytes(zf.read(member))
            out.append(sitk.GetArrayFromImage(sitk.ReadImage(str(target))))
    return out[0], out[1]


def test_realistic_session(server, browser, artifacts: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    open_app(page, server.base + "/", server)
    st = server.wait(lambda s: s["msam_ready"], timeout=LONG, what="ready")
    k0 = st["axial"]["canonical_slice"]
    page.keyboard.press("b")
    drawn = 0
    for k in (k0 - 1, k0, k0 + 1):
        jump(server, k)
        for label in sorted(muscle_names()):
            if label == 0:
                continue
            rects = []
            for right in (True, False):
                try:
                    rects.append(muscle_rect(label, k, right_leg=right, margin=2))
                except AssertionError:  # not on this leg on this slice
                    continue
            if not rects:
                continue
            pick_muscle(page, label)
            for c0, r0, c1, r1 in rects:
                drag(page, page_point(server, page, c0, r0, k), page_point(server, page, c1, r1, k), steps=4)
                drawn += 1
                server.wait(lambda s: len(s["pending_boxes"]) == drawn, what=f"box {drawn}")
    assert drawn >= 50, drawn  # 11 muscles on both legs of 3 slices (54 where the sample labels have them)
    page.keyboard.press("s")
    server.wait(lambda s: not s["msam_busy"] and s["segments"] and not s["pending_boxes"], timeout=LONG, what="66 boxes segmented")
    page.screenshot(path=str(artifacts / "01-segmented.png"))
    jump(server, k0)
    pick_muscle(page, 2)
    page.keyboard.press("p")  # RF's boxes on its newest box's slice (one per leg) through the neighbouring slices
    wait_message(page, "propagat", timeout_ms=LONG * 1000)
    done = server.wait(lambda s: not s["msam_busy"], timeout=LONG, what="propagation")
    # the page says, for each leg's walk, where each direction stopped (or why the start was not kept) and
    # which check fired there
    said = done["msam_message"]["text"]
    for side in ("right", "left"):
        assert re.search(rf"(Propagation stopped: down: (right side: .*; )?|found nothing to keep: (right side: .*; )?)"
                         rf"{side} side: (mask vanished|uncertainty jump|low expected quality|error) at slice \d+ \(",
                         said) or re.search(rf"Propagation stopped: down: .*{side} side: volume edge at slice \d+", said), said

    # Corrections: one stroke for each of three muscles on the middle slice
    before = page_labels(server)
    for label in CORRECTED:
        pick_muscle(page, label)
        page.keyboard.press("d")
        server.wait(lambda s: s["editor"]["segment"].startswith(f"muscle_{label}_"), what="paint on the chosen muscle")
        c0, r0, c1, r1 = muscle_rect(label, k0)
        count = (server.state()["segments"] or {}).get(str(label), 0)
        drag(page, page_point(server, page, c1 - 2, (r0 + r1) / 2, k0), page_point(server, page, c1 + 12, (r0 + r1) / 2 + 8, k0), steps=10)
        server.wait(lambda s: s["segments"].get(str(label), 0) != count, what=f"muscle {label} corrected")
    painted = page_labels(server) != before
    assert painted.any()
    pick_muscle(page, 9)
    page.click(tid("lock"))
    wait_message(page, "locked")
    page.screenshot(path=str(artifacts / "02-corrected.png"))

    corrected, edits = export_zip(server, page, artifacts, 1)
    assert np.array_equal(corrected, page_labels(server)), "the zip's labels differ from the page's"
    assert np.array_equal(edits > 0, painted), f"edit map {int((edits > 0).sum())} voxels, painted {int(painted.sum())}"

    page.reload()
    open_app(page, server.base + "/", server)
    server.wait(lambda s: s["msam_ready"], timeout=LONG, what="ready after reload")
    corrected2, edits2 = export_zip(server, page, artifacts, 2)
    assert np.array_equal(corrected2, page_labels(server))
    assert np.array_equal(edits2 > 0, painted)
    page.screenshot(path=str(artifacts / "03-exported-again.png"))
    page.close()
