"""Bad input in real Chromium (a missing IMAGE, Export with no image, two tabs, reload mid-inference, Cancel),
then, through the page's own actions on the same server (test API, no clicks): broken images, paths the
path rule refuses, bad drags, page state a hostile client forged, export into a read-only folder.

Each case must end with a clear message on the page, the current image still open and the server still
answering; every case is a row of the bad-input table (entry point "web").
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from bad_images import BAD_IMAGES, good
from bad_input_table import record
from helpers import assert_not_blank, drag, muscle_rect, open_app, page_point, sample_labels, tid, wait_message
from webserver import start_server
from wsclient import push_state

pytestmark = pytest.mark.browser
VL = 3


@pytest.fixture(scope="module")
def server(random_manifest: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("web-bad")
    srv = start_server([str(out / "no-such-thigh.nii.gz"), "--manifest", str(random_manifest),
                        "--output", str(out / "exports")], out / "server.log")
    srv.data_dir = out  # the folder of IMAGE: the one folder (besides the sample's) the page may open from
    yield srv
    srv.stop()


def _box(server, page) -> None:
    k = server.state()["axial"]["canonical_slice"]
    c0, r0, c1, r1 = muscle_rect(VL, k)
    drag(page, page_point(server, page, c0, r0, k), page_point(server, page, c1, r1, k))


def test_missing_image_then_sample(server, browser, artifacts: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(server.base + "/")
    with record("web", "missing IMAGE on the command line"):
        text = wait_message(page, "could not open the image")
        assert "no-such-thigh.nii.gz" in text and "not found" in text
    page.screenshot(path=str(artifacts / "01-missing-image.png"))
    with record("web", "Export with no image open"):
        page.click(tid("export"))
        wait_message(page, "no image is open")
    page.click(tid("open-sample"))
    server.wait(lambda s: s["msam_ready"], what="the sample opened from the page")
    wait_message(page, "opened thigh_001_water")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(artifacts / "02-sample-opened.png"))
    page.close()


def test_two_tabs_and_reload_mid_inference(server, browser, artifacts: Path) -> None:
    with record("web", "two tabs on one session, reload mid-inference"):
        _two_tabs_and_reload(server, browser, artifacts)


def _two_tabs_and_reload(server, browser, artifacts: Path) -> None:
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
    with record("web", "Cancel mid-inference, then open the sample again"):
        _cancel_then_reopen(server, browser, artifacts)


def _cancel_then_reopen(server, browser, artifacts: Path) -> None:
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

    # Opening an image again replaces the case (after the page asked about the unsaved segmentation):
    # no segments, boxes, heatmap or exports of the old one
    page.click(tid("open-sample"))
    page.click(tid("confirm-discard"))
    st = server.wait(lambda s: s["msam_ready"] and s["segments"] is None and not s["pending_boxes"],
                     what="a fresh case")
    assert st["heatmap"] is None and not st["msam_busy"]
    wait_message(page, "opened thigh_001_water")
    page.wait_for_timeout(1000)
    assert_not_blank(page, "after opening the sample again")
    page.screenshot(path=str(artifacts / "02-reopened.png"))
    page.close()


# ---------------------------------------------------------------- the same server, through the page's actions
def _ready(server) -> dict:
    """An idle app with an image open (the sample when none is)."""
    st = server.wait(lambda s: not s["msam_busy"], what="an idle app")
    if not st["msam_ready"]:
        server.action("open_image", "")
    return server.wait(lambda s: s["msam_ready"], what="an image open")


def _assert_refused(st: dict, before: dict, *fragments: str) -> None:
    """An error message with ``fragments`` that says the current image stays open, and it did."""
    text = st["msam_message"]["text"]
    assert st["msam_message"]["type"] == "error", st["msam_message"]
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    assert f"The current image ({before['msam_image']}) stays open" in text, text
    assert (st["msam_image"], st["image_file"], st["msam_ready"]) == (before["msam_image"], before["image_file"], True)


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_typed_in_the_page(server, case: str) -> None:
    before = _ready(server)
    write, expected = BAD_IMAGES[case]
    path = write(server.data_dir)
    with record("web", f"open from the page: {case}"):
        _assert_refused(server.action("open_image", str(path)), before, "Could not open the image", path.name, expected)
        server.assert_alive()


PATH_CASES = {  # name -> (path typed, given the allowed folder and another one; fragment of the message)
    "path outside the allowed folders": (lambda ok, other: str(good(other)), "is outside the folders this server may open"),
    "path with a NUL character": (lambda ok, other: str(good(ok)) + "\x00.png", "contains a NUL"),
    "path escaping with '..'": (lambda ok, other: f"{ok}/../{other.name}/{good(other).name}", "contains '..'"),
    "symlink out of the allowed folder": (lambda ok, other: str(_link(ok / "link.nii.gz", good(other))), "a link to"),
}


def _link(link: Path, target: Path) -> Path:
    if not link.is_symlink():
        os.symlink(target, link)
    return link


@pytest.mark.parametrize("case", list(PATH_CASES))
def test_path_rule_from_the_page(server, case: str, tmp_path: Path) -> None:
    before = _ready(server)
    typed, expected = PATH_CASES[case]
    path = typed(server.data_dir, tmp_path)  # every target is a valid image: the rule refuses it, not the reader
    with record("web", case):
        st = server.action("open_image", path)
        _assert_refused(st, before, expected, path.split("\x00")[0])  # names the path
        assert "--data-dir" in st["msam_message"]["text"] or "type the" in st["msam_message"]["text"]  # says what to do


def test_bad_drags_from_the_page(server) -> None:
    k = _ready(server)["axial"]["canonical_slice"]
    server.action("clear_boxes")
    with record("web", "zero-size drag box"):
        st = server.action("box_drawn", 0.4, 0.4, 0.4, 0.4)
        assert "has no size" in st["msam_message"]["text"] and st["pending_boxes"] == []
    with record("web", "drag box that is not four numbers (NaN, text, three values)"):
        for values in ([float("nan"), 0.2, 0.5, 0.5], ["a", 0.2, 0.5, 0.5], [0.1, 0.2, 0.3]):
            st = server.action("box_drawn", *values)
            assert "did not arrive as four numbers" in st["msam_message"]["text"] and st["pending_boxes"] == []
    with record("web", "inverted drag box (dragged bottom-right to top-left)"):
        ahead = server.action("box_drawn", 0.3, 0.35, 0.6, 0.65)["pending_boxes"]
        back = server.action("box_drawn", 0.6, 0.65, 0.3, 0.35)["pending_boxes"]
        assert len(back) == 2 and back[0] == back[1] == ahead[0]  # the same box either way
    with record("web", "drag box on a slice outside the volume"):
        from MuscleSAMLib.scene_bridge.geometry import canonical_to_ras

        centre = canonical_to_ras(sample_labels(), 100, 100, k)
        server.api("jump?ras={},{},{}".format(centre[0], centre[1], centre[2] + 5000), "POST")
        try:
            st = server.action("box_drawn", 0.3, 0.35, 0.6, 0.65)
        finally:
            server.api("jump?ras={},{},{}".format(*centre), "POST")
        assert "outside the volume" in st["msam_message"]["text"] and len(st["pending_boxes"]) == 2, st["msam_message"]
    with record("web", "muscle label forged in page state"):
        push_state(server.base, {"msam_label": "../3"})
        try:
            st = server.action("box_drawn", 0.3, 0.35, 0.6, 0.65)
        finally:
            push_state(server.base, {"msam_label": VL})
        assert "Muscle ../3 is not one of the 11 thigh muscles: pick one" in st["msam_message"]["text"], st["msam_message"]
        assert len(st["pending_boxes"]) == 2
    server.action("clear_boxes")


@contextmanager
def _unwritable(folder: Path) -> Iterator[None]:
    """``folder`` read-only (mode 0o555); as root, which ignores modes, a plain file stands where it should be."""
    folder.mkdir(exist_ok=True)
    assert not any(folder.iterdir()), "expected an empty export folder"
    os.chmod(folder, 0o555)
    blocker = os.access(folder, os.W_OK)
    if blocker:
        os.chmod(folder, 0o755)
        folder.rmdir()
        folder.write_text("not a folder")
    try:
        yield
    finally:
        if blocker:
            folder.unlink()
            folder.mkdir()
        os.chmod(folder, 0o755)


def test_export_refused_then_forged_name_then_download(server) -> None:
    _ready(server)
    server.action("clear_boxes")
    server.action("box_drawn", 0.3, 0.35, 0.6, 0.65)
    server.action("segment")
    before = server.wait(lambda s: not s["msam_busy"] and s["segments"], timeout=120, what="a segmentation")
    root = Path(before["export_root"])
    root.mkdir(exist_ok=True)
    around = sorted(root.parent.iterdir())
    with record("web", "export into a read-only folder"):
        with _unwritable(root):
            st = server.action("export")
            assert sorted(root.parent.iterdir()) == around and (not root.is_dir() or not any(root.iterdir()))  # no partial file
        text = st["msam_message"]["text"]
        assert st["msam_message"]["type"] == "error" and str(root) in text and "cannot write" in text, text
        assert st["segments"] == before["segments"] and st["exports"] == before["exports"]  # the edits are kept
    with record("web", "image name forged in page state (export file names)"):
        push_state(server.base, {"msam_image": "../../evil"})
        st = server.action("export")  # the same segmentation, now into a writable folder
        names = sorted(set(st["exports"]) - set(before["exports"]))
        assert len(names) == 1 and names[0].startswith(f"{Path(before['image_file']).name.split('.')[0]}-corrected-"), names
        assert not [p for d in (root, root.parent, root.parent.parent) for p in d.glob("*evil*")]
        assert server.request(f"/musclesam/export/{names[0]}")[0] == 200
    with record("web", "export download named with a path"):
        for bad in (f"..%2F{names[0]}", "..%2F..%2Fserver.log", "%2E%2E%2Fserver.log", names[0][:-4] + ".txt"):
            status, body, _ = server.request(f"/musclesam/export/{bad}")
            assert status == 404 and "export again" in body, (bad, status)
