"""Small MRML helpers shared by the scene bridge (Slicer is imported lazily, inside functions).

Everything here uses only MRML/VTK API that exists both in desktop Slicer and in the ``slicer-core``
wheel: no ``slicer.app``, ``slicer.modules`` or ``slicer.mrmlScene`` (the scene is always taken from
a node the caller passed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ROLE_ATTR = "MuscleSAM.Role"  # what a node created by MuscleSAM is for
VOLUME_ATTR = "MuscleSAM.VolumeID"  # the input volume node it belongs to
LABEL_ATTR = "MuscleSAM.Label"  # muscle label value (ROI nodes, segments)


def slicer_module() -> Any:
    """``import slicer`` (desktop Slicer or the slicer-core wheel); a clear error when neither is there."""
    try:
        import slicer  # noqa: PLC0415 - lazy on purpose (MuscleSAMLib must import without Slicer)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the MuscleSAM scene bridge needs 3D Slicer or the 'slicer-core' package") from exc
    return slicer


def vtk_numpy() -> Any:
    """``vtk.util.numpy_support`` (present in Slicer's and in the wheel's VTK)."""
    from vtkmodules.util import numpy_support  # noqa: PLC0415

    return numpy_support


def matrix_to_numpy(m: Any) -> np.ndarray:
    """vtkMatrix4x4 -> (4, 4) float64 array."""
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def numpy_to_matrix(a: np.ndarray) -> Any:
    """(4, 4) array -> new vtkMatrix4x4."""
    from vtkmodules.vtkCommonMath import vtkMatrix4x4  # noqa: PLC0415

    m = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def parent_to_world(node: Any, what: str) -> np.ndarray:
    """4x4 matrix from ``node``'s coordinate frame to world (its parent transforms, linear only)."""
    from ..errors import GeometryError

    tn = node.GetParentTransformNode()
    if tn is None:
        return np.eye(4)
    if not tn.IsTransformToWorldLinear():
        raise GeometryError(f"{what} '{node.GetName()}' is under a non-linear transform; harden the transform "
                            "(Transforms module) before using MuscleSAM")
    m = numpy_to_matrix(np.eye(4))
    tn.GetMatrixTransformToWorld(m)
    return matrix_to_numpy(m)


def nodes_by_class(scene: Any, class_name: str) -> list[Any]:
    """All nodes of ``class_name`` (and subclasses) in ``scene``."""
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


def find_owned_node(scene: Any, class_name: str, role: str, volume_id: str) -> Any | None:
    """The node MuscleSAM created for ``role`` on volume ``volume_id``, or None."""
    for node in nodes_by_class(scene, class_name):
        if node.GetAttribute(ROLE_ATTR) == role and node.GetAttribute(VOLUME_ATTR) == volume_id:
            return node
    return None


CASE_NODE_CLASSES = ("vtkMRMLSegmentationNode", "vtkMRMLScalarVolumeNode", "vtkMRMLTableNode", "vtkMRMLMarkupsROINode",
                     "vtkMRMLMarkupsFiducialNode")  # points: the review target, clicks and the suggested click


def remove_owned_nodes(scene: Any, volume_node: Any | None) -> None:
    """Remove ``volume_node`` and every node MuscleSAM made for it (segments, maps, table, markers) and the box ROIs."""
    if volume_node is None:
        return
    vid = volume_node.GetID()
    doomed = [volume_node]
    for cls in CASE_NODE_CLASSES:
        for node in nodes_by_class(scene, cls):
            if node.GetAttribute(VOLUME_ATTR) == vid or (node.GetAttribute(ROLE_ATTR) == "box" and node.GetAttribute(LABEL_ATTR)):
                doomed.append(node)
    for node in doomed:
        if node.GetScene() is scene:
            scene.RemoveNode(node)


def owned_node(scene: Any, class_name: str, role: str, volume_node: Any, name: str) -> Any:
    """Get or create the node of ``role`` belonging to ``volume_node`` (tagged with attributes)."""
    node = find_owned_node(scene, class_name, role, volume_node.GetID())
    if node is None:
        node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
        node.SetAttribute(ROLE_ATTR, role)
        node.SetAttribute(VOLUME_ATTR, volume_node.GetID())
    return node


def image_array(image: Any) -> np.ndarray:
    """View (k, j, i) of a single-component vtkImageData's scalars (no copy)."""
    dims = image.GetDimensions()
    return vtk_numpy().vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])


def oriented_image(array_kji: np.ndarray, ijk_to_frame: np.ndarray, extent_start: tuple[int, int, int] = (0, 0, 0)) -> Any:
    """A vtkOrientedImageData (uint8) holding ``array_kji`` at index offset ``extent_start`` (i, j, k)."""
    slicer = slicer_module()
    from vtkmodules.vtkCommonCore import VTK_UNSIGNED_CHAR  # noqa: PLC0415

    k, j, i = array_kji.shape
    i0, j0, k0 = (int(v) for v in extent_start)
    img = slicer.vtkOrientedImageData()
    img.SetExtent(i0, i0 + i - 1, j0, j0 + j - 1, k0, k0 + k - 1)
    img.AllocateScalars(VTK_UNSIGNED_CHAR, 1)
    image_array(img)[:] = array_kji
    img.SetImageToWorldMatrix(numpy_to_matrix(ijk_to_frame))
    img.Modified()
    return img


def set_volume_array(node: Any, array_kji: np.ndarray) -> None:
    """Replace a volume node's voxels with ``array_kji`` (k, j, i), keeping its geometry."""
    slicer = slicer_module()
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array_kji))


def volume_array(node: Any) -> np.ndarray:
    """Copy of a volume node's voxels as (k, j, i)."""
    slicer = slicer_module()
    return np.array(slicer.util.arrayFromVolume(node), copy=True)
