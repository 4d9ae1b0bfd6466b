"""Page helpers for the browser tests: where a muscle is on the axial view, mouse drags, checks.

Where to drag comes from the sample's reference labels (test data, not the app): the bounding box of
a muscle on the slice the view shows, turned into page pixels through the server's RAS -> view
mapping (the inverse of what the app uses for drags), so the whole display -> RAS -> box path is
exercised.
"""

from __future__ import annotations

import functools
import io
import time
from pathlib import Path
from typing import Any

import numpy as np

BOX_LAYER = '[data-testid="box-layer"]'
VIEW_SETTLE_S = 1.5


def tid(name: str) -> str:
    """CSS selector of a ``data-testid``."""
    return f'[data-testid="{name}"]'


@functools.lru_cache(maxsize=1)
def sample_labels() -> Any:
    """The sample's reference label volume (engine Volume)."""
    from MuscleSAMLib.sample_data import sample_case
    from MuscleSAMLib.volumes import read_volume

    return read_volume(sample_case().labels, allow_labels=True)


def muscle_rect(label: int, k: int, right_leg: bool = True, margin: int = 3) -> tuple[int, int, int, int]:
    """(col0, row0, col1, row1) canonical pixel bbox (+ margin) of ``label`` on slice ``k``, one leg."""
    lab = sample_labels().canonical_array[k] == label
    half = lab.shape[1] // 2
    if right_leg:  # canonical cols run patient right -> left: the right leg is the left half
        lab[:, half:] = False
    else:
        lab[:, :half] = False
    rows, cols = np.nonzero(lab)
    assert rows.size, f"label {label} absent on slice {k}"
    return int(cols.min()) - margin, int(rows.min()) - margin, int(cols.max()) + margin, int(rows.max()) + margin


def page_point(server: Any, page: Any, col: float, row: float, k: int) -> tuple[float, float]:
    """Page pixel of canonical (col, row) on slice ``k`` in the axial view."""
    from MuscleSAMLib.scene_bridge.geometry import canonical_to_ras

    ras = canonical_to_ras(sample_labels(), col, row, k)
    f = server.api("ras_to_view?ras=" + ",".join(f"{v:.4f}" for v in ras))
    box = page.locator(BOX_LAYER).bounding_box()
    return box["x"] + f["fx"] * box["width"], box["y"] + f["fy"] * box["height"]


def drag(page: Any, p0: tuple[float, float], p1: tuple[float, float], shot: Path | None = None, steps: int = 8) -> None:
    """Press at ``p0``, move to ``p1`` (screenshot while still pressed), release."""
    page.mouse.move(*p0)
    page.mouse.down()
    page.mouse.move((p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2, steps=steps)
    page.mouse.move(*p1, steps=steps)
    if shot is not None:
        page.screenshot(path=str(shot))
    page.mouse.up()


def open_app(page: Any, url: str, server: Any = None) -> None:
    """Load the page and wait until the axial view can take boxes and has its final size.

    With ``server``: until the server's axial view has this page's size (state, not a fixed wait).
    """
    page.goto(url)
    page.wait_for_selector(BOX_LAYER, timeout=180_000)
    if server is None:
        time.sleep(VIEW_SETTLE_S)
        return

    def same_size(st: dict) -> bool:
        box = page.locator(BOX_LAYER).bounding_box()
        w, h = st["axial"]["pixels"]
        return box is not None and abs(w - box["width"]) <= 2 and abs(h - box["height"]) <= 2

    server.wait(same_size, timeout=180, what="the axial view at the page's size")


def message(page: Any) -> str:
    """Text of the page's message bar."""
    return page.locator(tid("message")).inner_text()


def wait_message(page: Any, needle: str, timeout_ms: int = 180_000) -> str:
    """Wait until the message bar contains ``needle`` (case-insensitive); returns the message."""
    page.wait_for_function(
        "n => { const e = document.querySelector('[data-testid=\"message\"]'); return e && e.innerText.toLowerCase().includes(n); }",
        arg=needle.lower(), timeout=timeout_ms)
    return message(page)


def view_pixels(page: Any) -> np.ndarray:
    """RGB pixels of the axial view as the browser shows it."""
    from PIL import Image

    png = page.locator(BOX_LAYER).screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def assert_not_blank(page: Any, what: str) -> np.ndarray:
    """The axial view shows an image (not one flat colour); returns its pixels."""
    px = view_pixels(page)
    assert px.std() > 15 and (px.mean(axis=2) > 60).mean() > 0.05, f"{what}: the axial view looks blank"
    return px


def warm_fraction(px: np.ndarray) -> float:
    """Share of view pixels that are clearly coloured (heatmap/segment), not grey MRI."""
    spread = px.max(axis=2) - px.min(axis=2)
    return float((spread > 60).mean())
