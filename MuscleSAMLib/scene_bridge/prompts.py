"""Box prompts from the scene: markups ROI nodes and plain RAS boxes -> engine :class:`BoxPrompt`.

An ROI is a 3D box (possibly rotated, possibly under a transform). Its prompt lies on the axial slice
nearest to its centre; the prompt rectangle is the bounding rectangle, in that slice's pixel grid, of
the ROI projected along the slice axis when the ROI is at most one slice thick (a box drawn on an
axial view, even where the view cuts an oblique volume's slices at an angle), or of the part of the
ROI inside that slice's slab when it is thicker (a 3D box). An ROI tilted or rotated more than
:data:`MAX_TILT_DEG` against the volume's axial grid (drawn on a reformatted view) is refused, as is
one outside the volume.

Which voxels: the engine's one physical-corners -> box rule (``engine/boxes.py``: voxel centres inside
the rectangle, edges inclusive, the slice by :func:`~MuscleSAMLib.engine.boxes.nearest_slice`), so a
boxes JSON file with the same corners gives the same box.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..biomarkers import SIDES, side_of_box
from ..engine.boxes import EDGE_TOL, air_reason, box_from_canonical_rect, box_from_physical_corners, nearest_slice, validate_box
from ..engine.types import BoxPrompt
from ..errors import GeometryError, InputError
from ..labels import UNKNOWN_HINT, is_muscle_label, parse_label
from ..sample_data import muscle_names
from ..volumes import LPS_RAS_FLIP, Volume, lps_ras
from .geometry import canonical_to_ras, ras_to_canonical
from .mrml import LABEL_ATTR, ROLE_ATTR, matrix_to_numpy, numpy_to_matrix

MAX_TILT_DEG = 20.0
NOT_AXIAL_HINT = " (drawn on a sagittal or coronal view?)"
BOX_ROLE = "box"


def roi_label(roi: Any, label: Any | None = None) -> int:
    """The muscle an ROI prompts: ``label`` if given, else the ROI's MuscleSAM.Label attribute."""
    raw = label if label is not None else roi.GetAttribute(LABEL_ATTR)
    if raw is None:
        raise InputError(f"ROI '{roi.GetName()}' has no muscle; pick the muscle before placing the box")
    return parse_label(raw)


def roi_corners_ras(roi: Any) -> np.ndarray:
    """The 8 world-RAS corners (8, 3) of a markups ROI (its rotation and parent transforms applied)."""
    half = np.asarray(roi.GetSize(), dtype=np.float64) / 2.0
    m = matrix_to_numpy(roi.GetObjectToWorldMatrix())
    local = np.array([[sx * half[0], sy * half[1], sz * half[2], 1.0] for sx, sy, sz in itertools.product((-1, 1), repeat=3)])
    return (m @ local.T).T[:, :3]


def _tilt_degrees(corners_idx: np.ndarray, spacing: Sequence[float]) -> float:
    """Largest angle (deg) between an ROI edge direction and its nearest canonical axis (in mm)."""
    mm = corners_idx * np.asarray(spacing, dtype=np.float64)  # (col, row, slice) spacing
    worst = 0.0
    for a, b in ((0, 4), (0, 2), (0, 1)):  # the three edge directions of the itertools.product order
        v = mm[b] - mm[a]
        n = np.linalg.norm(v)
        if n < 1e-6:
            continue
        worst = max(worst, float(np.degrees(np.arccos(min(1.0, np.max(np.abs(v)) / n)))))
    return worst


def _thickness_along_slice_axis(roi: Any, volume: Volume) -> float:
    """The ROI's size (mm) along its own axis closest to the volume's slice axis."""
    m = matrix_to_numpy(roi.GetObjectToWorldMatrix())[:3, :3]
    size = np.asarray(roi.GetSize(), dtype=np.float64) * np.linalg.norm(m, axis=0)
    d = np.asarray(volume.canonical_image.GetDirection(), dtype=np.float64).reshape(3, 3)
    slice_axis_ras = lps_ras(d[:, 2])
    axes = m / np.maximum(np.linalg.norm(m, axis=0), 1e-12)
    return float(size[int(np.argmax(np.abs(axes.T @ slice_axis_ras)))])


def _slab_section(corners_idx: np.ndarray, k: int) -> np.ndarray:
    """(col, row) vertices of the ROI box clipped to the slab of slice ``k`` (k - 0.5 <= slice <= k + 0.5)."""
    lo_plane, hi_plane = k - 0.5, k + 0.5
    pts = [c[:2] for c in corners_idx if lo_plane - EDGE_TOL <= c[2] <= hi_plane + EDGE_TOL]
    n = len(corners_idx)
    for a in range(n):
        for b in range(a + 1, n):
            if bin(a ^ b).count("1") != 1:  # only the 12 edges of the box
                continue
            pa, pb = corners_idx[a], corners_idx[b]
            for plane in (lo_plane, hi_plane):
                if (pa[2] - plane) * (pb[2] - plane) < 0:
                    t = (plane - pa[2]) / (pb[2] - pa[2])
                    pts.append((pa + t * (pb - pa))[:2])
    return np.array(pts)


def check_box(volume: Volume, box: BoxPrompt) -> BoxPrompt:
    """``box`` (a canonical BoxPrompt from a front end or a label map) if it can run on ``volume``.

    Refused with the box named: a label that is not a muscle of the label table (:class:`InputError`),
    a degenerate or inverted box, a box outside the image or on a slice that does not exist
    (:class:`GeometryError`). Checked before a run, so a bad box never reaches the scene.
    """
    name = box.source or f"box {tuple(box.xyxy)} on slice {box.slice}"
    if not is_muscle_label(box.label):
        raise InputError(f"{name}: unknown muscle label {box.label!r}; {UNKNOWN_HINT}")
    reason = validate_box(box, volume.canonical_array.shape)
    if reason:
        raise GeometryError(f"{name}: {reason}")
    return box


def box_from_roi(volume: Volume, roi: Any, label: Any | None = None) -> BoxPrompt:
    """The axial box prompt of a markups ROI node on ``volume`` (see the module docstring)."""
    lab = roi_label(roi, label)
    source = f"ROI '{roi.GetName()}'"
    if roi.GetNumberOfControlPoints() == 0:
        raise InputError(f"{source} is not placed yet: draw it on an axial slice first")
    idx = ras_to_canonical(volume, roi_corners_ras(roi))
    spacing = volume.canonical_image.GetSpacing()
    tilt = _tilt_degrees(idx, spacing)
    if tilt > MAX_TILT_DEG:
        raise GeometryError(f"{source} is rotated {tilt:.0f} degrees against the volume's axial slices (drawn on a "
                            "reformatted view?); draw the box on the axial view")
    n_slices = volume.canonical_array.shape[0]
    k = nearest_slice(idx[:, 2].mean())
    if not 0 <= k < n_slices:
        raise GeometryError(f"{source}: box lies on slice {k}, outside the volume's {n_slices} axial slices")
    thickness_mm = _thickness_along_slice_axis(roi, volume)
    section = idx[:, :2] if thickness_mm <= spacing[2] + EDGE_TOL else _slab_section(idx, k)
    if len(section) == 0:  # cannot happen for a box whose centre is on slice k; be explicit anyway
        raise GeometryError(f"{source} does not reach axial slice {k}")
    return box_from_canonical_rect(volume, lab, section.min(axis=0), section.max(axis=0), k, source, NOT_AXIAL_HINT, "volume")


def box_from_ras(volume: Volume, label: Any, corner0: Sequence[float], corner1: Sequence[float],
                 source: str = "RAS box") -> BoxPrompt:
    """A box given by two opposite world-RAS corners on one axial slice (voxel-centre rule as for ROIs)."""
    corners_lps = lps_ras(np.array([corner0, corner1], dtype=np.float64))
    return box_from_physical_corners(volume, parse_label(label), corners_lps, source, NOT_AXIAL_HINT, "volume")


OUTSIDE_TOL_VOXELS = 1.0  # a drawn corner may lie this far past the image edge (a hand's imprecision)


def drawn_box(volume: Volume, label: Any, corner0: Sequence[float], corner1: Sequence[float],
              source: str = "drawn box") -> BoxPrompt:
    """A box the user dragged on an axial view (two world-RAS corners), held to the README's box contract.

    Beyond :func:`box_from_ras`: a box reaching past the image edge (more than
    :data:`OUTSIDE_TOL_VOXELS`) is refused rather than clipped, and so is a box in air
    (:func:`~MuscleSAMLib.engine.boxes.air_reason`): a careless drag never labels the wrong region.
    """
    box = box_from_ras(volume, label, corner0, corner1, source)
    _, rows, cols = volume.canonical_array.shape
    idx = ras_to_canonical(volume, np.array([corner0, corner1], dtype=np.float64))
    past = np.concatenate([-0.5 - idx[:, :2].min(axis=0), idx[:, :2].max(axis=0) - (np.array([cols, rows]) - 0.5)])
    if past.max() > OUTSIDE_TOL_VOXELS:
        spacing = volume.canonical_image.GetSpacing()
        mm = max(float(v) * spacing[i % 2] for i, v in enumerate(past))
        raise GeometryError(f"{source}: the box reaches {mm:.0f} mm past the edge of the image; draw it inside "
                            "the image, around the muscle")
    reason = air_reason(volume.canonical_array[box.slice], box)
    if reason:
        raise GeometryError(f"{source}: {reason}")
    return box


def roi_for_box(scene: Any, volume: Volume, box: BoxPrompt, name: str | None = None, thickness: float = 1.0) -> Any:
    """A markups ROI node exactly over canonical ``box``: THE ROI-from-box builder (bridge and web app).

    Oriented along the volume's pixel axes (so a slice view aligned to an oblique volume shows it
    upright), ``thickness`` slices thick (1: its edges lie on voxel boundaries, so :func:`box_from_roi`
    gives ``box`` back; less than 1 shows it on its own slice only).
    """
    c0, r0, c1, r1 = box.xyxy
    centre = canonical_to_ras(volume, (c0 + c1 - 1) / 2.0, (r0 + r1 - 1) / 2.0, box.slice)
    d = np.asarray(volume.canonical_image.GetDirection(), dtype=np.float64).reshape(3, 3)
    sx, sy, sz = volume.canonical_image.GetSpacing()
    rotation = np.diag(LPS_RAS_FLIP) @ d  # canonical (col, row, slice) axes in RAS
    if np.linalg.det(rotation) < 0:
        rotation[:, 2] *= -1.0  # keep a right-handed frame (the box is symmetric along the slice axis)
    object_to_node = np.eye(4)
    object_to_node[:3, :3] = rotation
    object_to_node[:3, 3] = centre
    roi = new_box_roi(scene, box.label, name=name)
    roi.SetAndObserveObjectToNodeMatrix(numpy_to_matrix(object_to_node))
    roi.SetSize(float((c1 - c0) * sx), float((r1 - r0) * sy), float(thickness * sz))
    return roi


def new_box_roi(scene: Any, label: Any, center: Sequence[float] | None = None, size: Sequence[float] | None = None,
                name: str | None = None) -> Any:
    """A new markups ROI tagged with a muscle (name and colour from the muscle table)."""
    lab = parse_label(label)
    info = muscle_names()[lab]
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", scene.GenerateUniqueName(name or f"box {info['abbrev']}"))
    roi.SetAttribute(LABEL_ATTR, str(lab))
    roi.SetAttribute(ROLE_ATTR, BOX_ROLE)
    if center is not None and size is not None:
        roi.SetCenter(*[float(v) for v in center])
        roi.SetSize(*[float(v) for v in size])
    roi.CreateDefaultDisplayNodes()
    display = roi.GetDisplayNode()
    if display is not None and "color" in info:
        rgb = [c / 255.0 for c in info["color"]]
        display.SetSelectedColor(*rgb)
        display.SetColor(*rgb)
    return roi


def propagation_starts(pending: Sequence[Any], last_used: Mapping[int, Sequence[BoxPrompt]], label: Any,
                       box_of: Callable[[Any], BoxPrompt] | None = None,
                       standing: Callable[[list[BoxPrompt]], list[BoxPrompt]] | None = None
                       ) -> tuple[list[Any], list[BoxPrompt]]:
    """The boxes Propagate walks from for muscle ``label`` (the rule both front ends use): (pending items it
    uses, their boxes). Its pending boxes (BoxPrompts, or ROI nodes that ``box_of`` turns into boxes) on the
    slice of its newest one, so one box per leg walks each leg; without a pending box, the boxes the last run
    used for it (``last_used``, kept by :func:`last_run_boxes`) as ``standing`` gives them now: the boxes whose
    answers stand for that muscle on that slice (``MuscleSAMLogic.standing_boxes``: both legs when the legs
    were segmented one run each). Runs consume pending boxes, so Propagate right after Segment still has them."""
    lab = parse_label(label)
    mine = [item for item in pending if (item.label if isinstance(item, BoxPrompt) else roi_label(item)) == lab]
    if not mine:
        last = list(last_used.get(lab, ()))
        return [], (standing(last) if standing is not None and last else last)
    boxes = [item if isinstance(item, BoxPrompt) else box_of(item) for item in mine]
    newest = boxes[-1].slice
    keep = [i for i, b in enumerate(boxes) if b.slice == newest]
    return [mine[i] for i in keep], [boxes[i] for i in keep]


def last_run_boxes(boxes: Sequence[BoxPrompt]) -> dict[int, list[BoxPrompt]]:
    """{label: that muscle's boxes of a run on the slice of its last one}: what Propagate walks next for it
    (both legs' boxes when the run had both)."""
    out: dict[int, list[BoxPrompt]] = {}
    for label in dict.fromkeys(b.label for b in boxes):
        mine = [b for b in boxes if b.label == label]
        out[label] = [b for b in mine if b.slice == mine[-1].slice]
    return out


def walk_names(boxes: Sequence[BoxPrompt], midline: float | None) -> list[str]:
    """How stop notes name each of several propagation walks: "right side: " or "left side: " by where the box's
    centre lies against ``midline`` (the column between the legs that the engine's leg crops use, so a walk is
    named after the crop that answers it), by the one rule ``biomarkers.side_of_box`` (canonical columns run
    patient right -> left); numbered when two share a side; "box 1: ", "box 2: " ... when the legs cannot be
    told apart (``midline`` None); "" for a single walk."""
    if len(boxes) < 2:
        return [""] * len(boxes)
    if midline is None:
        return [f"box {i + 1}: " for i in range(len(boxes))]
    sides = [f"{SIDES[side_of_box(b.xyxy, midline)]} side" for b in boxes]
    return [f"{side} box {sides[:i + 1].count(side)}: " if sides.count(side) > 1 else f"{side}: "
            for i, side in enumerate(sides)]
