"""Uncertainty heatmap, mean-probability volume and ensemble-agreement outlines as MRML nodes.

* Heatmap: a float32 scalar volume on the input's grid (``CopyOrientation`` + same parent transform),
  values in nats. Display: a perceptual colour table (Slicer's ``Inferno`` where the Colors module has
  it, else ``MuscleSAM Inferno`` built from ``Resources/uncertainty_colormap.json``), a fixed window
  [0, ln 2] (the largest binary entropy, so colours mean the same on every slice and run), a lower
  threshold below which voxels are transparent, a colour legend, and shown as the slice views'
  foreground at the chosen opacity over the MRI.
* Agreement outlines: a second segmentation with "all members agree" (every member's p >= 0.5) and
  "any member" (some member's p >= 0.5), drawn as outlines; the band between them is where members
  disagree.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..errors import InputError
from ..paths import RESOURCES
from ..uncertainty import KINDS
from .mrml import nodes_by_class, oriented_image, owned_node, set_volume_array, slicer_module
from .segments import ijk_to_segmentation_frame

COLORMAP_FILE = RESOURCES / "uncertainty_colormap.json"
BUILTIN_COLOR_NAMES = ("Inferno", "Viridis")
UNCERTAINTY_MAX_NATS = math.log(2.0)


def _first_node_by_name(scene: Any, class_name: str, name: str) -> Any | None:
    for node in nodes_by_class(scene, class_name):
        if node.GetName() == name:
            return node
    return None


def uncertainty_color_node(scene: Any) -> Any:
    """The perceptual colour table for heatmaps: a built-in Inferno/Viridis, else one built here."""
    for name in BUILTIN_COLOR_NAMES:
        node = _first_node_by_name(scene, "vtkMRMLColorNode", name)
        if node is not None:
            return node
    spec = json.loads(COLORMAP_FILE.read_text(encoding="utf-8"))
    node = _first_node_by_name(scene, "vtkMRMLColorTableNode", spec["name"])
    if node is not None:
        return node
    anchors = np.asarray(spec["anchors"], dtype=np.float64)
    xs = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([np.interp(xs, anchors[:, 0], anchors[:, c]) for c in (1, 2, 3)], axis=1)
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", spec["name"])
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    node.SetAttribute("Category", "MuscleSAM")
    for n, (r, g, b) in enumerate(rgb):
        node.SetColor(n, f"{n / 255.0:.3f}", float(r), float(g), float(b), 1.0)
    node.SetHideFromEditors(False)
    return node


def write_float_volume(volume_node: Any, role: str, name: str, array_kji: np.ndarray) -> Any:
    """Get/create the float volume of ``role`` for ``volume_node`` and fill it (geometry from the input)."""
    scene = volume_node.GetScene()
    node = owned_node(scene, "vtkMRMLScalarVolumeNode", role, volume_node, name)
    set_volume_array(node, array_kji.astype(np.float32, copy=False))
    node.CopyOrientation(volume_node)
    node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def style_heatmap(node: Any, threshold: float = 0.05, window_max: float = UNCERTAINTY_MAX_NATS) -> None:
    """Perceptual colours, fixed window [0, window_max], voxels below ``threshold`` transparent."""
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(uncertainty_color_node(node.GetScene()).GetID())
    display.SetAutoWindowLevel(0)
    display.SetWindowLevelMinMax(0.0, float(window_max))
    display.SetAutoThreshold(0)
    display.SetApplyThreshold(1)
    display.SetLowerThreshold(float(threshold))
    display.SetUpperThreshold(1.0e6)
    display.SetInterpolate(0)


def style_probability(node: Any) -> None:
    """Mean probability: the same perceptual colours, fixed window [0, 1], near-zero voxels transparent."""
    style_heatmap(node, threshold=0.01, window_max=1.0)


def add_color_legend(node: Any, title: str) -> Any | None:
    """A colour legend for ``node`` (None where the legend node class is unavailable)."""
    slicer = slicer_module()
    scene = node.GetScene()
    if not hasattr(slicer, "vtkMRMLColorLegendDisplayNode") or not hasattr(slicer, "vtkSlicerColorLogic"):
        return None
    existing = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(node)
    if existing is not None:
        return existing
    if not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):
        scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())  # slicer-core: Colors module not loaded
    legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(node)
    if legend is not None:
        legend.SetTitleText(title)
        legend.SetLabelFormat("%.2f")
    return legend


def show_as_foreground(volume_node: Any, overlay_node: Any, opacity: float) -> int:
    """Show ``volume_node`` as background and ``overlay_node`` as foreground in every slice view."""
    count = 0
    for composite in nodes_by_class(volume_node.GetScene(), "vtkMRMLSliceCompositeNode"):
        composite.SetBackgroundVolumeID(volume_node.GetID())
        composite.SetForegroundVolumeID(overlay_node.GetID() if overlay_node is not None else None)
        composite.SetForegroundOpacity(float(opacity))
        count += 1
    return count


def write_agreement(volume_node: Any, all_agree_kji: np.ndarray, any_member_kji: np.ndarray) -> Any:
    """The 'all members agree' / 'any member' outline segmentation of ``volume_node``."""
    scene = volume_node.GetScene()
    node = owned_node(scene, "vtkMRMLSegmentationNode", "agreement", volume_node, f"{volume_node.GetName()} ensemble agreement")
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
        node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        node.SetSourceRepresentationToBinaryLabelmap()
        node.GetSegmentation().AddEmptySegment("all_agree", "all members agree", [0.2, 0.9, 0.2])
        node.GetSegmentation().AddEmptySegment("any_member", "any member", [0.95, 0.85, 0.1])
    display = node.GetDisplayNode()
    display.SetVisibility2DFill(False)
    display.SetVisibility2DOutline(True)
    ijk = ijk_to_segmentation_frame(volume_node, node)
    logic = slicer_module().vtkSlicerSegmentationsModuleLogic
    for sid, mask in (("all_agree", all_agree_kji), ("any_member", any_member_kji)):
        image = oriented_image(mask.astype(np.uint8), ijk)
        if not logic.SetBinaryLabelmapToSegment(image, node, sid, logic.MODE_REPLACE, None, False, []):
            raise RuntimeError(f"could not write the '{sid}' outline")
    return node


WINDOW_PRESETS = {  # name -> (low, high) percentiles of the image's non-zero voxels
    "auto": (1.0, 99.5),
    "muscle": (20.0, 95.0),
    "bright": (50.0, 99.9),
    "full": (0.0, 100.0),
}


def set_window_level(volume_node: Any, preset: str) -> tuple[float, float]:
    """Window the MRI by a named preset of :data:`WINDOW_PRESETS` (percentiles, so any scanner's scale
    works); returns (low, high). Dragging in a slice view with no effect active changes it further."""
    if preset not in WINDOW_PRESETS:
        raise InputError(f"unknown window preset {preset!r}; use one of {', '.join(WINDOW_PRESETS)}")
    slicer = slicer_module()
    arr = slicer.util.arrayFromVolume(volume_node)
    values = arr[arr != 0] if np.any(arr != 0) else arr.ravel()
    lo, hi = (float(v) for v in np.percentile(values, WINDOW_PRESETS[preset]))
    hi = max(hi, lo + 1e-3)
    display = volume_node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(lo, hi)
    return lo, hi


def hide_color_legend(node: Any) -> None:
    """Hide the colour legend of ``node`` in the views (a front end that draws its own legend)."""
    slicer = slicer_module()
    if hasattr(slicer, "vtkSlicerColorLogic"):
        legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(node)
        if legend is not None:
            legend.SetVisibility(False)
