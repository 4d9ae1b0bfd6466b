"""Box prompts: the boxes JSON format, validation with per-box reasons, and boxes derived from labels.

Boxes JSON (documented in README.md)::

    {"coordinates": "ijk",            # "ijk" (voxel indices of the input file, default), "lps" or "ras" (mm)
     "boxes": [
        {"label": 3, "slice": 7, "xyxy": [120, 200, 180, 260]},
        {"label": "VL", "corners": [[-80.5, 10.0, -150.2], [-40.0, 55.5, -150.2]]}
     ]}

* ``ijk``: ``slice`` is the index along the file's axial axis (chosen from its direction matrix);
  ``xyxy`` = first and last voxel (inclusive) along the file's two other index axes, in file order
  (i before j before k). This is what a viewer showing voxel indices displays.
* ``lps`` / ``ras``: ``corners`` are two opposite corners in physical millimetres; the box holds the
  voxels whose centres lie inside, on the axial slice nearest to the corners (it must not span more
  than one slice). This is the rule the Slicer scene bridge applies to ROI nodes.
* ``label``: a muscle label value (1-11, see Resources/muscle_labels.json), abbreviation or name.

Internally every box becomes a :class:`BoxPrompt` in canonical coordinates (half-open).
A bad box is rejected with a reason naming it; the good boxes still run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..sample_data import muscle_names
from ..volumes import Volume
from .types import BoxPrompt

COORDINATE_SYSTEMS = ("ijk", "lps", "ras")


def label_lookup() -> dict[str, int]:
    """Map accepted label spellings (value, abbreviation, name; case-insensitive) to label values."""
    table: dict[str, int] = {}
    for value, info in muscle_names().items():
        table[str(value)] = value
        table[info["abbrev"].lower()] = value
        table[info["name"].lower()] = value
    return table


def _parse_label(raw: Any, lookup: dict[str, int]) -> int:
    key = str(raw).strip().lower()
    if isinstance(raw, bool) or key not in lookup:
        raise ValueError(f"unknown label {raw!r} (use 1-11 or an abbreviation such as 'VL')")
    return lookup[key]


def load_boxes_file(path: str | Path, volume: Volume) -> tuple[list[BoxPrompt], list[tuple[str, str]]]:
    """Read a boxes JSON file for ``volume``. Returns (valid boxes, [(which box, reason)] rejected).

    Raises :class:`InputError` for a missing/unreadable/empty file or one with no valid box.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: boxes file not found")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: not a valid boxes JSON file ({exc})") from None
    boxes, rejected = parse_boxes(doc, volume, source=p.name)
    if not boxes:
        detail = f"; first problem: {rejected[0][0]}: {rejected[0][1]}" if rejected else ""
        raise InputError(f"{p}: no usable box ({len(rejected)} rejected){detail}")
    return boxes, rejected


def parse_boxes(doc: Any, volume: Volume, source: str = "boxes") -> tuple[list[BoxPrompt], list[tuple[str, str]]]:
    """Validate a boxes document (already parsed JSON) against ``volume``; see the module docstring."""
    if isinstance(doc, list):
        doc = {"boxes": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("boxes"), list):
        raise InputError(f"{source}: expected an object with a 'boxes' list")
    system = str(doc.get("coordinates", "ijk")).lower()
    if system not in COORDINATE_SYSTEMS:
        raise InputError(f"{source}: unknown coordinates {system!r}; use one of {COORDINATE_SYSTEMS}")
    lookup = label_lookup()
    good: list[BoxPrompt] = []
    bad: list[tuple[str, str]] = []
    for n, raw in enumerate(doc["boxes"]):
        where = f"{source} box #{n}"
        try:
            if not isinstance(raw, dict):
                raise ValueError("each box must be an object")
            label = _parse_label(raw.get("label"), lookup)
            if system == "ijk":
                box = _box_from_ijk(raw, volume, label, where)
            else:
                box = _box_from_physical(raw, volume, label, where, system)
            good.append(box)
        except (ValueError, TypeError, KeyError) as exc:
            bad.append((where, str(exc)))
    return good, bad


def _box_from_ijk(raw: dict, volume: Volume, label: int, where: str) -> BoxPrompt:
    if "slice" not in raw or "xyxy" not in raw:
        raise ValueError("an ijk box needs 'slice' and 'xyxy'")
    x0, y0, x1, y1 = (_number(v) for v in _four(raw["xyxy"]))
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box {raw['xyxy']} has negative size (need first <= last voxel)")
    axial = 2 - volume.axial_axis  # ITK index axis that is axial
    size = volume.image.GetSize()
    k = _number(raw["slice"])
    if not float(k).is_integer() or not 0 <= k < size[axial]:
        raise ValueError(f"slice {raw['slice']} does not exist (the image has {size[axial]} axial slices)")
    in_plane = [a for a in range(3) if a != axial]
    corners = []
    for u, v in ((x0, y0), (x1, y1)):
        idx = [0.0, 0.0, 0.0]
        idx[axial] = k
        idx[in_plane[0]], idx[in_plane[1]] = u, v
        corners.append(idx)
    canon = volume.canonical_index_of(np.array(corners))
    return _canonical_box(canon, volume, label, where, inclusive=True)


def _box_from_physical(raw: dict, volume: Volume, label: int, where: str, system: str) -> BoxPrompt:
    corners = np.array([[_number(c) for c in _three(p)] for p in _two(raw.get("corners"))], dtype=np.float64)
    if system == "ras":
        corners[:, :2] *= -1.0  # RAS -> LPS
    canon_img = volume.canonical_image
    canon = np.array([canon_img.TransformPhysicalPointToContinuousIndex(tuple(c)) for c in corners])
    if abs(canon[0, 2] - canon[1, 2]) > 1.0:
        raise ValueError(f"box spans slices {canon[:, 2].min():.1f}..{canon[:, 2].max():.1f}; draw it on one axial slice")
    return _canonical_box(canon, volume, label, where, inclusive=False)


def _canonical_box(canon: np.ndarray, volume: Volume, label: int, where: str, inclusive: bool) -> BoxPrompt:
    """Continuous canonical indices (2, 3: col, row, slice) -> a validated, clipped half-open box."""
    n_slices, rows, cols = volume.canonical_array.shape
    k = int(round(float(canon[:, 2].mean())))
    if not 0 <= k < n_slices:
        raise ValueError(f"box lies on slice {k}, outside the image's {n_slices} axial slices")
    if inclusive:  # first/last voxel indices
        lo = np.floor(canon[:, :2].min(axis=0) + 0.5).astype(int)
        hi = np.floor(canon[:, :2].max(axis=0) + 0.5).astype(int) + 1
    else:  # physical corners: the voxels whose centres lie inside the box (the scene bridge's rule)
        lo = np.ceil(canon[:, :2].min(axis=0) - 1e-6).astype(int)
        hi = np.floor(canon[:, :2].max(axis=0) + 1e-6).astype(int) + 1
    if (hi - lo).min() < 2:
        raise ValueError(f"box is degenerate ({hi[0] - lo[0]} x {hi[1] - lo[1]} pixels); draw at least 2 x 2 pixels")
    c0, r0 = max(lo[0], 0), max(lo[1], 0)
    c1, r1 = min(hi[0], cols), min(hi[1], rows)
    if c1 - c0 < 2 or r1 - r0 < 2:
        raise ValueError("box lies outside the image")
    return BoxPrompt(label=label, slice=k, xyxy=(int(c0), int(r0), int(c1), int(r1)), source=where)


def validate_box(box: BoxPrompt, shape: tuple[int, int, int]) -> str | None:
    """Reason a canonical box cannot run on a volume of canonical ``shape``, or None if it can."""
    n_slices, rows, cols = shape
    c0, r0, c1, r1 = box.xyxy
    if not 0 <= box.slice < n_slices:
        return f"slice {box.slice} does not exist ({n_slices} slices)"
    if c1 - c0 < 2 or r1 - r0 < 2:
        return f"box {box.xyxy} is degenerate (zero or negative size)"
    if c0 < 0 or r0 < 0 or c1 > cols or r1 > rows:
        return f"box {box.xyxy} extends outside the {cols} x {rows} slice"
    return None


def boxes_from_labels(labels: np.ndarray, values: Iterable[int] | None = None, slices: Iterable[int] | None = None,
                      min_pixels: int = 20) -> list[BoxPrompt]:
    """One tight box per connected component (e.g. per leg) per label per axial slice.

    ``labels`` is a canonical (slices, rows, cols) label map. Components smaller than ``min_pixels``
    (label noise) get no box. 8-connectivity in-plane. Boxes are ordered by slice, label, column.
    """
    wanted = set(int(v) for v in (values if values is not None else np.unique(labels)) if int(v) != 0)
    out: list[BoxPrompt] = []
    for k in (slices if slices is not None else range(labels.shape[0])):
        sl = labels[k]
        for value in sorted(wanted):
            comp, n = ndimage.label(sl == value, structure=np.ones((3, 3), bool))
            if n == 0:
                continue
            found = ndimage.find_objects(comp)
            sizes = ndimage.sum_labels(np.ones_like(comp), comp, index=np.arange(1, n + 1))
            boxes = [(rs, cs) for (rs, cs), size in zip(found, sizes) if size >= min_pixels]
            for rs, cs in sorted(boxes, key=lambda b: b[1].start):
                out.append(BoxPrompt(label=value, slice=int(k), xyxy=(cs.start, rs.start, cs.stop, rs.stop),
                                     source=f"label {value} slice {k}"))
    return out


def boxes_to_json(boxes: Iterable[BoxPrompt], volume: Volume) -> dict:
    """Canonical boxes -> a boxes document in the input file's ``ijk`` convention (inverse of parse)."""
    axial = 2 - volume.axial_axis
    in_plane = [a for a in range(3) if a != axial]
    canon_img = volume.canonical_image
    items = []
    for b in boxes:
        c0, r0, c1, r1 = b.xyxy
        idx = []
        for c, r in ((c0, r0), (c1 - 1, r1 - 1)):
            phys = canon_img.TransformContinuousIndexToPhysicalPoint((float(c), float(r), float(b.slice)))
            idx.append(np.round(volume.image.TransformPhysicalPointToContinuousIndex(phys)).astype(int))
        idx = np.array(idx)
        lo, hi = idx.min(axis=0), idx.max(axis=0)
        items.append({"label": b.label, "slice": int(idx[0][axial]),
                      "xyxy": [int(lo[in_plane[0]]), int(lo[in_plane[1]]), int(hi[in_plane[0]]), int(hi[in_plane[1]])]})
    return {"coordinates": "ijk", "boxes": items}


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise ValueError(f"{v!r} is not a finite number")
    return float(v)


def _four(v: Any) -> list:
    if not isinstance(v, (list, tuple)) or len(v) != 4:
        raise ValueError("'xyxy' must be four numbers [x0, y0, x1, y1]")
    return list(v)


def _three(v: Any) -> list:
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise ValueError("each corner must be three numbers [x, y, z]")
    return list(v)


def _two(v: Any) -> list:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError("'corners' must be two points [[x, y, z], [x, y, z]]")
    return list(v)
