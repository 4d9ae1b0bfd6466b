"""The muscle segmentation node: one segment per muscle, reading it as a label map, writing changes.

* Segments: one per muscle of ``Resources/muscle_labels.json`` (ID ``muscle_<label>_<abbrev>`` as
  the CLI's .seg.nrrd writer uses, name, colour, tag ``MuscleSAM.Label``), created all at once so the
  Segment Editor's list is stable. A segment is recognised by that tag, else by ID, else by name.
* Status (Slicer's ``Segmentation.Status`` tag): ``inprogress`` after a prediction, ``flagged`` when
  its review scores say uncertain, ``completed`` = locked: a completed segment is never written, and
  paint strokes of other muscles spare its voxels (:func:`spare_locked`).
* Writes go through ``vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment`` (Slicer's own
  path, as Segment Editor effects do) restricted to the bounding box of the changed voxels of each
  label: erase (MERGE_MIN) the voxels a label lost, then add (MERGE_MASK) the voxels it gained. Only
  voxels that the run changed are touched; voxels of locked segments (re-read at write time) never.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import InputError
from ..sample_data import muscle_names
from .geometry import check_volume_node, ijk_to_ras
from .mrml import LABEL_ATTR, image_array, matrix_to_numpy, numpy_to_matrix, oriented_image, slicer_module

_ID_RE = re.compile(r"^muscle_(\d+)_")
STATUS_NOT_STARTED, STATUS_IN_PROGRESS, STATUS_COMPLETED, STATUS_FLAGGED = "notstarted", "inprogress", "completed", "flagged"


def _logic() -> Any:
    return slicer_module().vtkSlicerSegmentationsModuleLogic


def segment_id(label: int) -> str:
    """Segment ID of a muscle (same as the CLI's .seg.nrrd)."""
    return f"muscle_{label}_{muscle_names()[label]['abbrev']}"


def ensure_muscle_segments(seg_node: Any) -> dict[int, str]:
    """Create the missing muscle segments (empty, named, coloured); returns label -> segment ID."""
    segmentation = seg_node.GetSegmentation()
    found = muscle_segment_ids(seg_node)
    for label, info in sorted(muscle_names().items()):
        if label in found:
            continue
        rgb = [c / 255.0 for c in info.get("color", (128, 128, 128))]
        sid = segmentation.AddEmptySegment(segment_id(label), info["name"], rgb)
        seg = segmentation.GetSegment(sid)
        seg.SetTag(LABEL_ATTR, str(label))
        _logic().SetSegmentStatus(seg, _logic().NotStarted)
        found[label] = sid
    return found


def muscle_segment_ids(seg_node: Any) -> dict[int, str]:
    """Label -> segment ID of the muscle segments present (by tag, else ID pattern, else name)."""
    names = {info["name"].lower(): label for label, info in muscle_names().items()}
    segmentation = seg_node.GetSegmentation()
    out: dict[int, str] = {}
    for n in range(segmentation.GetNumberOfSegments()):
        sid = segmentation.GetNthSegmentID(n)
        seg = segmentation.GetSegment(sid)
        tag = _get_tag(seg, LABEL_ATTR)
        label = None
        if isinstance(tag, str) and tag.isdigit():
            label = int(tag)
        elif _ID_RE.match(sid):
            label = int(_ID_RE.match(sid).group(1))
        elif seg.GetName().lower() in names:
            label = names[seg.GetName().lower()]
        if label is not None and label in muscle_names() and label not in out:
            out[label] = sid
    return out


def _get_tag(segment: Any, key: str) -> str | None:
    from vtkmodules.vtkCommonCore import reference  # noqa: PLC0415

    value = reference("")
    return str(value) if segment.GetTag(key, value) else None


def segment_status(seg_node: Any, label: int) -> str:
    """Machine-readable status of a muscle's segment ('' when the segment is missing)."""
    sid = muscle_segment_ids(seg_node).get(label)
    if sid is None:
        return ""
    seg = seg_node.GetSegmentation().GetSegment(sid)
    return _logic().GetSegmentStatusAsMachineReadableString(_logic().GetSegmentStatus(seg))


def set_segment_status(seg_node: Any, label: int, status: str) -> None:
    """Set a muscle segment's status (``notstarted``/``inprogress``/``completed``/``flagged``)."""
    sid = muscle_segment_ids(seg_node).get(label)
    if sid is None:
        raise InputError(f"segmentation '{seg_node.GetName()}' has no segment for muscle {label}")
    logic = _logic()
    logic.SetSegmentStatus(seg_node.GetSegmentation().GetSegment(sid), logic.GetSegmentStatusFromMachineReadableString(status))


def locked_labels(seg_node: Any) -> frozenset[int]:
    """Muscles whose segment is marked completed (never overwritten)."""
    return frozenset(label for label in muscle_segment_ids(seg_node) if segment_status(seg_node, label) == STATUS_COMPLETED)


def ijk_to_segmentation_frame(volume_node: Any, seg_node: Any) -> np.ndarray:
    """Volume IJK -> the segmentation node's own coordinate frame (both may sit under transforms)."""
    slicer = slicer_module()
    m = numpy_to_matrix(np.eye(4))
    slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(volume_node.GetParentTransformNode(),
                                                               seg_node.GetParentTransformNode(), m)
    return matrix_to_numpy(m) @ ijk_to_ras(volume_node)


def new_segmentation(volume_node: Any, name: str | None = None) -> Any:
    """A segmentation node for ``volume_node``: reference geometry from it, same parent transform, muscles."""
    check_volume_node(volume_node)
    scene = volume_node.GetScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name or f"{volume_node.GetName()} muscles"))
    node.CreateDefaultDisplayNodes()
    node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    prepare_segmentation(node, volume_node)
    return node


def prepare_segmentation(seg_node: Any, volume_node: Any) -> dict[int, str]:
    """Reference geometry from the volume (if unset), binary labelmap source, muscle segments."""
    if not seg_node.GetNodeReference(seg_node.GetReferenceImageGeometryReferenceRole()):
        seg_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    if seg_node.GetSegmentation().GetNumberOfSegments() == 0:
        seg_node.SetSourceRepresentationToBinaryLabelmap()
    return ensure_muscle_segments(seg_node)


def read_labels(seg_node: Any, volume_node: Any) -> np.ndarray:
    """The muscle segments as one (k, j, i) uint8 label map on the volume's grid (muscle label values).

    Where segments overlap (the user allowed overlap), the later segment in the list wins.
    """
    slicer = slicer_module()
    from vtkmodules.vtkCommonCore import vtkIntArray, vtkStringArray  # noqa: PLC0415

    ids = muscle_segment_ids(seg_node)
    dims = volume_node.GetImageData().GetDimensions()
    shape = (dims[2], dims[1], dims[0])
    if not ids:
        return np.zeros(shape, np.uint8)
    geometry = slicer.vtkOrientedImageData()  # geometry only: the volume's grid in the segmentation's frame
    geometry.SetExtent(0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1)
    geometry.SetImageToWorldMatrix(numpy_to_matrix(ijk_to_segmentation_frame(volume_node, seg_node)))
    seg_ids, values = vtkStringArray(), vtkIntArray()
    for label, sid in sorted(ids.items()):
        seg_ids.InsertNextValue(sid)
        values.InsertNextValue(label)
    merged = slicer.vtkOrientedImageData()
    if not seg_node.GenerateMergedLabelmapForAllSegments(merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY,
                                                         geometry, seg_ids, values):
        raise InputError(f"cannot read segmentation '{seg_node.GetName()}' as a label map")
    out = np.zeros(shape, np.uint8)
    ext = merged.GetExtent()
    if ext[1] < ext[0]:
        return out
    arr = image_array(merged)
    lo = np.maximum([ext[4], ext[2], ext[0]], 0)
    hi = np.minimum([ext[5] + 1, ext[3] + 1, ext[1] + 1], shape)
    if np.any(hi <= lo):
        return out
    src = arr[lo[0] - ext[4]:hi[0] - ext[4], lo[1] - ext[2]:hi[1] - ext[2], lo[2] - ext[0]:hi[2] - ext[0]]
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = src
    return out


def _bbox(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(i.size == 0 for i in idx):
        return None
    return tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)  # type: ignore[return-value]


def write_changes(seg_node: Any, volume_node: Any, before: np.ndarray, after: np.ndarray,
                  locked: Iterable[int] = ()) -> list[int]:
    """Write the voxels where ``after`` differs from ``before`` (both (k, j, i) label maps) into the segments.

    Voxels that hold a locked label now (re-read from the node) and locked labels are skipped. Returns
    the muscle labels whose segments changed. Call on the main thread.
    """
    ids = ensure_muscle_segments(seg_node)
    locked_now = set(locked) | set(locked_labels(seg_node))
    changed = before != after
    if locked_now:
        current = read_labels(seg_node, volume_node)
        changed &= ~np.isin(current, sorted(locked_now))
    if not changed.any():
        return []
    ijk = ijk_to_segmentation_frame(volume_node, seg_node)
    labels = sorted((set(np.unique(after[changed])) | set(np.unique(before[changed]))) - {0} - locked_now)
    labels = [int(v) for v in labels if int(v) in ids]
    overwrite = [ids[v] for v in sorted(ids) if v not in locked_now]
    logic = _logic()
    was_modifying = seg_node.StartModify()
    try:
        for erase in (True, False):  # all erasing first, so adds never meet stale voxels of a neighbour
            for value in labels:
                mask = changed & ((before == value) if erase else (after == value))
                if erase:
                    mask &= after != value
                box = _bbox(mask)
                if box is None:
                    continue
                sub = mask[box]
                modifier = (~sub if erase else sub).astype(np.uint8)
                k, j, i = (s.start for s in box)
                image = oriented_image(modifier, ijk, extent_start=(i, j, k))
                extent = list(image.GetExtent())
                mode = logic.MODE_MERGE_MIN if erase else logic.MODE_MERGE_MASK
                if not logic.SetBinaryLabelmapToSegment(image, seg_node, ids[value], mode, extent, False, overwrite):
                    raise InputError(f"could not write muscle {value} into segmentation '{seg_node.GetName()}'")
    finally:
        seg_node.EndModify(was_modifying)
    return labels


def set_statuses(seg_node: Any, statuses: Mapping[int, str]) -> None:
    """Set several muscle statuses at once (locked segments keep theirs)."""
    locked = locked_labels(seg_node)
    for label, status in statuses.items():
        if label not in locked:
            set_segment_status(seg_node, label, status)


def spare_locked(seg_node: Any, modifier: Any, edited_segment_id: str | None) -> bool:
    """Clear the voxels of a paint/erase ``modifier`` labelmap (vtkOrientedImageData, segmentation frame)
    that a locked muscle other than the edited segment holds; True when some were cleared.

    Slicer's Segment Editor masks by editable area and overwrite mode only (it has no per-segment
    lock), so a stroke of another muscle would overwrite a finished one. Applied to the modifier
    before Slicer's ``ModifySegmentByLabelmap`` (as Slicer applies its own edit mask), a stroke never
    takes a locked muscle's voxels; the rest of the stroke is painted as usual.
    """
    slicer = slicer_module()
    from vtkmodules.vtkCommonCore import vtkStringArray  # noqa: PLC0415

    ids = muscle_segment_ids(seg_node)
    locked = [ids[label] for label in sorted(locked_labels(seg_node)) if ids[label] != edited_segment_id]
    if not locked or modifier is None:
        return False
    seg_ids = vtkStringArray()
    for sid in locked:
        seg_ids.InsertNextValue(sid)
    merged = slicer.vtkOrientedImageData()
    if not seg_node.GenerateMergedLabelmapForAllSegments(merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY,
                                                         modifier, seg_ids):
        raise InputError(f"cannot read the locked muscles of segmentation '{seg_node.GetName()}'")
    target, ext = image_array(modifier), modifier.GetExtent()
    lock, mext = image_array(merged), merged.GetExtent()
    lo = [max(ext[2 * a], mext[2 * a]) for a in (2, 1, 0)]  # k, j, i
    hi = [min(ext[2 * a + 1], mext[2 * a + 1]) + 1 for a in (2, 1, 0)]
    if any(h <= low for low, h in zip(lo, hi)):
        return False
    spot = tuple(slice(low - ext[2 * a], h - ext[2 * a]) for low, h, a in zip(lo, hi, (2, 1, 0)))
    held = lock[tuple(slice(low - mext[2 * a], h - mext[2 * a]) for low, h, a in zip(lo, hi, (2, 1, 0)))] > 0
    hit = held & (target[spot] != 0)
    if not hit.any():
        return False
    target[spot][hit] = 0
    modifier.Modified()
    return True


def set_segment_display(seg_node: Any, label: int, visible: bool | None = None, opacity: float | None = None) -> None:
    """Show/hide muscle ``label``'s segment, or set its 2D fill opacity (0..1; the outline stays)."""
    sid = muscle_segment_ids(seg_node).get(label)
    display = seg_node.GetDisplayNode()
    if sid is None or display is None:
        raise InputError(f"segmentation '{seg_node.GetName()}' has no segment for muscle {label}")
    if visible is not None:
        display.SetSegmentVisibility(sid, bool(visible))
    if opacity is not None:
        display.SetSegmentOpacity2DFill(sid, float(min(1.0, max(0.0, opacity))))
