"""A real MRML scene without the Slicer application (the ``slicer-core`` wheel): tests, CLI, servers.

Desktop Slicer and trame-slicer's ``SlicerApp`` set this up themselves. Without them, segmentation
converters and module logics need an application logic first: this builds the minimum the bridge
uses (application logic, default colour tables, the Segmentations logic) on a fresh scene. The
logics are kept alive on the returned object (VTK objects die with their last Python reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .mrml import slicer_module


@dataclass
class HeadlessScene:
    """A scene plus the logics that must outlive it."""

    scene: Any
    app_logic: Any
    segmentations_logic: Any

    def clear(self) -> None:
        """Remove every node (keeps the logics and the default colour tables' classes registered)."""
        self.scene.Clear(0)


def headless_scene() -> HeadlessScene:
    """A new scene with the application, colour and Segmentations logics set up (slicer-core)."""
    slicer = slicer_module()
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = app.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    seg_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    seg_logic.SetMRMLScene(scene)
    seg_logic.SetMRMLApplicationLogic(app)
    app.SetModuleLogic("Segmentations", seg_logic)
    return HeadlessScene(scene, app, seg_logic)
