"""Volume nodes <-> engine :class:`~MuscleSAMLib.volumes.Volume`, and the stored <-> canonical mapping.

A scalar volume node stores voxels as (k, j, i) with an IJKToRAS matrix; its parent transforms (linear
only) place it in the world. The engine's Volume is the SimpleITK equivalent in world LPS millimetres:
``direction * spacing = diag(-1, -1, 1) @ (world IJKToRAS)[:3, :3]``, ``origin = diag(-1, -1, 1) @
(world IJKToRAS)[:3, 3]``, so ``Volume.canonical_*`` (the axial LPS view the engine works on) is right
for RAS-, LPS- and oblique-stored volumes alike. Results go back onto the node's own voxel grid
(:func:`to_stored`), so they overlay the input voxel for voxel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import GeometryError, InputError
from ..volumes import CANONICAL_ORIENTATION, LPS_RAS_FLIP, MAX_VOXELS, Volume, image_like, lps_ras, single_non_axial_plane
from .mrml import matrix_to_numpy, numpy_to_matrix, parent_to_world, set_volume_array, volume_array

RAS_TO_LPS = np.diag([*LPS_RAS_FLIP, 1.0])  # homogeneous form of volumes.lps_ras (its own inverse)
ORTHOGONALITY_TOL = 1e-3


def ijk_to_ras(node: Any) -> np.ndarray:
    """The node's own IJKToRAS matrix (4x4), without parent transforms."""
    m = numpy_to_matrix(np.eye(4))
    node.GetIJKToRASMatrix(m)
    return matrix_to_numpy(m)


def ijk_to_world(node: Any) -> np.ndarray:
    """IJK -> world RAS (parent transforms applied; linear transforms only)."""
    return parent_to_world(node, "volume") @ ijk_to_ras(node)


def check_volume_node(node: Any) -> None:
    """Raise :class:`InputError` (same text the module shows) unless ``node`` is a usable 3D scalar volume."""
    if node is None:
        raise InputError("no volume selected: choose the MRI volume to segment")
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"'{node.GetName()}' is not a scalar volume ({node.GetClassName()}); choose a 3D MRI volume")
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"'{node.GetName()}' is a label map; choose the MRI volume to segment")
    image = node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"'{node.GetName()}' has no voxels loaded")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"'{node.GetName()}' has {image.GetNumberOfScalarComponents()} components per voxel "
                         "(4D, vector or colour image); choose a 3D scalar MRI volume")
    dims = image.GetDimensions()
    if min(dims) < 1:
        raise InputError(f"'{node.GetName()}' is empty")
    voxels = int(np.prod(np.asarray(dims, dtype=np.int64)))
    size = " x ".join(str(d) for d in dims)
    if voxels > MAX_VOXELS:  # before any copy of the voxels (the engine holds several float32 copies)
        raise InputError(f"'{node.GetName()}' has {voxels} voxels ({size}), above the limit of {MAX_VOXELS}; "
                         "crop or downsample it first (Crop Volume module)")
    values = image.GetPointData().GetScalars().GetNumberOfTuples()
    if values != voxels:
        raise InputError(f"'{node.GetName()}' holds {values} voxel values for its {voxels} voxels ({size}); reload it")


def world_geometry(node: Any) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(spacing, origin, direction) of the node in world LPS, ITK conventions; sheared grids refused."""
    a = RAS_TO_LPS @ ijk_to_world(node)
    cols = a[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing <= 0):
        raise GeometryError(f"'{node.GetName()}' has a zero voxel size")
    direction = cols / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=ORTHOGONALITY_TOL):
        raise GeometryError(f"'{node.GetName()}' is sheared by its transform; harden and resample it first")
    return tuple(float(s) for s in spacing), tuple(float(o) for o in a[:3, 3]), tuple(float(d) for d in direction.ravel())


def volume_from_node(node: Any) -> Volume:
    """The engine Volume of a scalar volume node (voxels copied, world geometry in LPS).

    Refused (:class:`InputError` naming the node): NaN/inf voxels, and a single slice that is not axial
    (a 2D sagittal or coronal image has no axial slice to draw a box on). A single axial slice is a
    volume of one slice, as the CLI treats a one-slice file.
    """
    check_volume_node(node)
    spacing, origin, direction = world_geometry(node)
    voxels = volume_array(node)
    if voxels.dtype.kind == "f" and not np.isfinite(voxels.sum(dtype=np.float64)):  # no mask unless something is off
        bad = int(voxels.size - np.count_nonzero(np.isfinite(voxels)))
        if bad:
            raise InputError(f"'{node.GetName()}' has {bad} NaN/inf voxels; fix or mask them before segmentation")
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    plane = single_non_axial_plane(image)
    if plane is not None:
        raise InputError(f"'{node.GetName()}' is a single {plane} slice ({' x '.join(map(str, image.GetSize()))} voxels): "
                         "it has no axial slice to draw a box on; load the axial images")
    return Volume(image=image, source=node.GetName())


def volume_from_node_labels(labelmap_node: Any, reference: Volume) -> np.ndarray:
    """A label map node on ``reference``'s grid -> canonical uint8 labels (refused on another grid)."""
    if labelmap_node is None or not labelmap_node.IsA("vtkMRMLScalarVolumeNode") or labelmap_node.GetImageData() is None:
        raise InputError("no label map selected")
    spacing, origin, direction = world_geometry(labelmap_node)
    image = sitk.GetImageFromArray(volume_array(labelmap_node))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    if not Volume(image=image).same_grid(reference):
        raise GeometryError(f"label map '{labelmap_node.GetName()}' is not on the grid of '{reference.source}'")
    return to_canonical(sitk.GetArrayFromImage(image).astype(np.uint8), reference)


def add_volume_node(scene: Any, volume: Volume, name: str, class_name: str = "vtkMRMLScalarVolumeNode") -> Any:
    """Add ``volume`` (ITK geometry in LPS) to ``scene`` as a volume node with the same RAS geometry."""
    node = scene.AddNewNodeByClass(class_name, name)
    set_volume_array(node, sitk.GetArrayFromImage(volume.image))
    node.SetIJKToRASMatrix(numpy_to_matrix(ijk_to_ras_of_image(volume.image)))
    node.CreateDefaultDisplayNodes()
    return node


def ijk_to_ras_of_image(image: sitk.Image) -> np.ndarray:
    """4x4 IJK -> RAS matrix of a SimpleITK image (whose physical space is LPS)."""
    d = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = d * np.asarray(image.GetSpacing())
    m[:3, 3] = image.GetOrigin()
    return RAS_TO_LPS @ m


def to_canonical(array_kji: np.ndarray, volume: Volume) -> np.ndarray:
    """A (k, j, i) array on the node's grid -> the canonical (slices, rows, cols) array (exact, no resampling)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_kji))
    img.CopyInformation(volume.image)
    return sitk.GetArrayFromImage(sitk.DICOMOrient(img, CANONICAL_ORIENTATION))


def to_stored(canonical: np.ndarray, volume: Volume) -> np.ndarray:
    """A canonical array -> (k, j, i) on the node's grid (inverse of :func:`to_canonical`)."""
    return sitk.GetArrayFromImage(image_like(canonical, volume))


def canonical_to_ras(volume: Volume, col: float, row: float, slice_: float) -> tuple[float, float, float]:
    """World RAS (mm) of a continuous canonical index (col, row, slice)."""
    x, y, z = lps_ras(volume.physical_of_canonical_index(col, row, slice_))
    return (float(x), float(y), float(z))


def ras_to_canonical(volume: Volume, ras: np.ndarray) -> np.ndarray:
    """World RAS points (N, 3) -> continuous canonical indices (N, 3) as (col, row, slice)."""
    return volume.canonical_index_of_physical(lps_ras(np.atleast_2d(ras)))


def stored_slice_index(volume: Volume, canonical_slice: int) -> int:
    """Index along the node's own axial axis of canonical slice ``canonical_slice`` (what users see as K)."""
    axial_itk = 2 - volume.axial_axis
    point = volume.canonical_image.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, float(canonical_slice)))
    return int(round(volume.image.TransformPhysicalPointToContinuousIndex(point)[axial_itk]))
