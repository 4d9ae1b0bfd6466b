"""Box prompts: the boxes JSON format, validation with per-box reasons, and boxes derived from labels.

Boxes JSON (documented in README.md)::

    {"coordinates": "ijk",            # "ijk" (voxel indices of the input file, default), "lps" or "ras" (mm)
     "boxes": [
        {"label": 3, "slice": 7, "xyxy": [120, 200, 180, 260]},
        {"label": "VL", "corners": [[-80.5, 10.0, -150.2], [-40.0, 55.5, -150.2]]},
        {"label": 3, "slice": 7, "xyxy": [120, 200, 180, 260], "points": [[150, 230, 1], [125, 205, 0]]}
     ]}

* ``ijk``: ``slice`` is the index along the file's axial axis (chosen from its direction matrix);
  ``xyxy`` = first and last voxel (inclusive) along the file's two other index axes, in file order
  (i before j before k). This is what a viewer showing voxel indices displays.
* ``lps`` / ``ras``: ``corners`` are two opposite corners in physical millimetres; the box holds the
  voxels whose centres lie inside (edges inclusive), on the axial slice nearest to the corners (it
  must not span more than one slice). This module holds THE physical-corners -> box rule
  (:func:`box_from_physical_corners`, :func:`nearest_slice`, :func:`box_from_canonical_rect`); the
  Slicer scene bridge applies the same functions to ROI nodes and drag boxes.
* ``points`` (optional): corrective clicks after the box, in click order, in the box's coordinates:
  ``[x, y, 1 | 0]`` voxel indices on the box's slice for ``ijk``, ``[x, y, z, 1 | 0]`` millimetres
  for ``lps`` / ``ras`` (on the box's slice); 1 = muscle, 0 = not muscle; at most 32
  (:mod:`.clicks`). The engine replays them one after another, so a box and its clicks give the mask
  the interactive tool showed after the last click.
* ``label``: a muscle label value (1-11, see Resources/muscle_labels.json), abbreviation or name
  (:func:`~MuscleSAMLib.labels.parse_label`).

Internally every box becomes a :class:`BoxPrompt` in canonical coordinates (half-open).
A bad box is rejected with a reason naming it; the good boxes still run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from scipy import ndimage

from ..errors import GeometryError, InputError
from ..labels import parse_label
from ..volumes import Volume, lps_ras
from .clicks import MAX_CLICKS, check_clicks
from .types import BoxPrompt

COORDINATE_SYSTEMS = ("ijk", "lps", "ras")
EDGE_TOL = 1e-6  # voxels: a voxel centre this close to a box edge counts as inside


def load_boxes_file(path: str | Path, volume: Volume) -> tuple[list[BoxPrompt], list[tuple[str, str]]]:
    """Read a boxes JSON file for ``volume``. Returns (valid boxes, [(which box, reason)] rejected).

    Raises :class:`InputError` for a missing/unreadable/empty file or one with no valid box.
    """
    from ..json_files import read_json

    p = Path(path)
    doc = read_json(p, "boxes JSON file")
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
    good: list[BoxPrompt] = []
    bad: list[tuple[str, str]] = []
    for n, raw in enumerate(doc["boxes"]):
        where = f"{source} box #{n}"
        try:
            if not isinstance(raw, dict):
                raise ValueError("each box must be an object")
            label = parse_label(raw.get("label"))
            if system == "ijk":
                box = _box_from_ijk(raw, volume, label)
            else:
                box = _box_from_physical(raw, volume, label, system)
            if raw.get("points") is not None:
                box = replace(box, points=_points(raw["points"], volume, box, system, where))
            good.append(replace(box, source=where))
        except (ValueError, TypeError, KeyError, InputError) as exc:
            bad.append((where, str(exc)))
    return good, bad


def _box_from_ijk(raw: dict, volume: Volume, label: int) -> BoxPrompt:
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
    # first/last voxel indices (inclusive), each rounded to the nearest voxel: a rectangle through their centres
    lo = np.floor(canon[:, :2].min(axis=0) + 0.5)
    hi = np.floor(canon[:, :2].max(axis=0) + 0.5)
    return box_from_canonical_rect(volume, label, lo, hi, nearest_slice(canon[:, 2].mean()), hint=" (degenerate box)")


def _box_from_physical(raw: dict, volume: Volume, label: int, system: str) -> BoxPrompt:
    corners = np.array([[_number(c) for c in _three(p)] for p in _two(raw.get("corners"))], dtype=np.float64)
    return box_from_physical_corners(volume, label, lps_ras(corners) if system == "ras" else corners)


def _points(raw: Any, volume: Volume, box: BoxPrompt, system: str, where: str) -> tuple:
    """A box's ``points`` list -> canonical clicks on the box's slice (InputError naming the point)."""
    if not isinstance(raw, list):
        raise InputError(f"{where}: 'points' must be a list of [x, y, 1 | 0] (ijk) or [x, y, z, 1 | 0] (mm)")
    if len(raw) > MAX_CLICKS:
        raise InputError(f"{where}: {len(raw)} points; at most {MAX_CLICKS} per box")
    width = 3 if system == "ijk" else 4
    axial = 2 - volume.axial_axis
    in_plane = [a for a in range(3) if a != axial]
    canon_clicks = []
    for n, p in enumerate(raw):
        name = f"{where} point #{n + 1}"
        if not isinstance(p, (list, tuple)) or len(p) != width:
            form = "[x, y, 1 | 0]" if system == "ijk" else "[x, y, z, 1 | 0]"
            raise InputError(f"{name} {p!r} must be {form} in {system} coordinates")
        try:
            vals = [_number(v) for v in p]
        except ValueError as exc:
            raise InputError(f"{name} {p!r}: {exc}") from None
        if system == "ijk":
            idx = [0.0, 0.0, 0.0]
            idx[in_plane[0]], idx[in_plane[1]] = vals[0], vals[1]
            idx[axial] = _ijk_slice_of(box, volume)
            c = volume.canonical_index_of(np.array([idx]))[0]
        else:
            lps = np.array([vals[:3]])
            c = volume.canonical_index_of_physical(lps_ras(lps) if system == "ras" else lps)[0]
            if nearest_slice(c[2]) != box.slice:
                raise InputError(f"{name} lies on axial slice {nearest_slice(c[2])}, its box on slice {box.slice}")
        canon_clicks.append((float(np.floor(c[0] + 0.5)), float(np.floor(c[1] + 0.5)), vals[-1]))
    return check_clicks(canon_clicks, volume.canonical_array.shape[1:], where)


def _ijk_slice_of(box: BoxPrompt, volume: Volume) -> float:
    """The file's axial index of a canonical box's slice."""
    phys = volume.physical_of_canonical_index(float(box.xyxy[0]), float(box.xyxy[1]), float(box.slice))
    idx = volume.image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in phys))
    return float(np.round(idx[2 - volume.axial_axis]))


def nearest_slice(k: float) -> int:
    """THE axial slice of a continuous canonical slice coordinate: the one whose slab [k - 0.5, k + 0.5) holds it.

    Half-voxel ties go to the higher canonical index, i.e. the more superior slice (``floor(k + 0.5)``),
    as ITK's TransformPhysicalPointToIndex (RoundHalfIntegerUp) and the in-plane voxel-centre rule do.
    Python's ``round`` would send 2.5 to 2 but 3.5 to 4 (banker's rounding), so the slice of a box on a
    slab boundary depended on its parity.
    """
    return int(np.floor(float(k) + 0.5))


def box_from_physical_corners(volume: Volume, label: int, corners_lps: np.ndarray, source: str = "",
                              hint: str = "", noun: str = "image") -> BoxPrompt:
    """Two opposite physical corners (LPS mm) on one axial slice -> the box of the voxels whose centres lie
    inside, on the nearest slice (:func:`nearest_slice`). Refused (:class:`GeometryError`) when the corners
    lie more than one slice apart, or as :func:`box_from_canonical_rect` refuses."""
    idx = volume.canonical_index_of_physical(corners_lps)
    if abs(idx[0, 2] - idx[1, 2]) > 1.0:
        raise GeometryError(f"{_named(source)}box spans slices {idx[:, 2].min():.1f}..{idx[:, 2].max():.1f}; "
                            "draw it on one axial slice")
    return box_from_canonical_rect(volume, label, idx[:, :2].min(axis=0), idx[:, :2].max(axis=0),
                                   nearest_slice(idx[:, 2].mean()), source, hint, noun)


def box_from_canonical_rect(volume: Volume, label: int, lo: np.ndarray, hi: np.ndarray, k: int, source: str = "",
                            hint: str = "", noun: str = "image") -> BoxPrompt:
    """A rectangle in continuous canonical (col, row) indices on slice ``k`` -> the half-open box of the voxels
    whose centres lie inside it (edges inclusive), clipped to the image.

    Refused (:class:`GeometryError`, prefixed with ``source`` when given) on a slice that does not exist,
    under 2 x 2 voxels (``hint`` says why that may be) or outside the image (``noun`` names it for the user).
    """
    n_slices, rows, cols = volume.canonical_array.shape
    named = _named(source)
    if not 0 <= k < n_slices:
        raise GeometryError(f"{named}box lies on slice {k}, outside the {noun}'s {n_slices} axial slices")
    c0, r0 = (int(np.ceil(v - EDGE_TOL)) for v in lo[:2])
    c1, r1 = (int(np.floor(v + EDGE_TOL)) + 1 for v in hi[:2])
    if c1 - c0 < 2 or r1 - r0 < 2:
        raise GeometryError(f"{named}box covers only {max(c1 - c0, 0)} x {max(r1 - r0, 0)} voxels of the axial slice"
                            f"{hint}; draw at least 2 x 2 voxels on the axial view")
    cc0, rr0, cc1, rr1 = max(c0, 0), max(r0, 0), min(c1, cols), min(r1, rows)
    if cc1 - cc0 < 2 or rr1 - rr0 < 2:
        raise GeometryError(f"{named}box lies outside the {noun}")
    return BoxPrompt(label=int(label), slice=int(k), xyxy=(cc0, rr0, cc1, rr1), source=source)


def _named(source: str) -> str:
    return f"{source}: " if source else ""


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
    try:
        check_clicks(box.points, (rows, cols), box.source or f"box {box.xyxy}")
    except InputError as exc:
        return str(exc)
    return None


AIR_LEVEL = 0.15  # a voxel darker than this share of its slice's 99th percentile counts as air (or background)
MIN_TISSUE = 0.2  # a drawn box needs at least this share of tissue voxels (muscle boxes of the sample: >= 0.4)


def tissue_fraction(slice_image: np.ndarray, xyxy: tuple[int, int, int, int]) -> float:
    """Share of the box's voxels brighter than :data:`AIR_LEVEL` x the slice's 99th percentile (non-zero voxels)."""
    c0, r0, c1, r1 = xyxy
    inside = np.asarray(slice_image[r0:r1, c0:c1], dtype=np.float64)
    nonzero = slice_image[slice_image > 0]
    if inside.size == 0 or nonzero.size == 0:
        return 0.0
    return float((inside > AIR_LEVEL * np.percentile(nonzero, 99)).mean())


def air_reason(slice_image: np.ndarray, box: BoxPrompt) -> str | None:
    """Why a hand-drawn box lies in air (outside the body, between the legs), or None when it holds tissue."""
    share = tissue_fraction(slice_image, box.xyxy)
    if share >= MIN_TISSUE:
        return None
    return (f"the box lies in air or background ({share:.0%} of it is tissue): draw it around a muscle, "
            "from corner to corner")


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
        item = {"label": b.label, "slice": int(idx[0][axial]),
                "xyxy": [int(lo[in_plane[0]]), int(lo[in_plane[1]]), int(hi[in_plane[0]]), int(hi[in_plane[1]])]}
        if b.points:
            pts = []
            for x, y, sign in b.points:
                phys = canon_img.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(b.slice)))
                ijk = np.round(volume.image.TransformPhysicalPointToContinuousIndex(phys)).astype(int)
                pts.append([int(ijk[in_plane[0]]), int(ijk[in_plane[1]]), int(sign)])
            item["points"] = pts
        items.append(item)
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
