"""trame-slicer's Slicer application, its remote slice views and the page layout (axial, coronal, sagittal).

One :class:`SceneViews` per server: the MRML scene the scene bridge works on, the axial ("Red") view
that takes box drags, and coronal ("Green") and sagittal ("Yellow") views stacked beside it that show
how far a muscle reaches.
"""

from __future__ import annotations

from typing import Any, Callable

AXIAL = "Red"
CORONAL = "Green"
SAGITTAL = "Yellow"
LAYOUT_ID = "MuscleSAM"


class SceneViews:
    """The Slicer app (scene, logics, views) of the web app."""

    def __init__(self, server: Any, slice_view_ui: Callable[[Any, str, Any], None]) -> None:
        from trame_slicer.core import LayoutManager, SlicerApp  # noqa: PLC0415
        from trame_slicer.rca_view import register_rca_factories  # noqa: PLC0415
        from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition  # noqa: PLC0415

        self.app = SlicerApp()
        register_rca_factories(self.app.view_manager, server, slice_view_ui_f=slice_view_ui)
        self.layout_manager = LayoutManager(self.app.scene, self.app.view_manager, server)
        side = Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.coronal_view(), ViewLayoutDefinition.sagittal_view()])
        self.layout_manager.register_layout(LAYOUT_ID, Layout(LayoutDirection.Horizontal, [ViewLayoutDefinition.axial_view(), side],
                                                              flex_sizes=["3", "2"]))
        self.layout_manager.set_layout(LAYOUT_ID)
        for name in (AXIAL, CORONAL, SAGITTAL):
            self._refit_on_resize(name)

    def _refit_on_resize(self, name: str) -> None:
        """Fit the image to view ``name`` whenever the browser gives the view a new size."""
        from vtkmodules.vtkCommonCore import vtkCommand  # noqa: PLC0415

        view = self.view(name)

        def refit(*_: Any) -> None:
            if view.get_background_volume_id():
                view.fit_view_to_content()

        view.interactor().AddObserver(vtkCommand.WindowResizeEvent, refit)

    @property
    def scene(self) -> Any:
        """The MRML scene every node lives in."""
        return self.app.scene

    def view(self, name: str = AXIAL) -> Any:
        """The trame-slicer SliceView called ``name``."""
        view = self.app.view_manager.get_view(name)
        if view is None:
            raise RuntimeError(f"slice view {name!r} was not created")
        return view

    def slice_node(self, name: str = AXIAL) -> Any:
        """The vtkMRMLSliceNode of view ``name``."""
        return self.view(name).get_view_node()

    def show_volume(self, volume_node: Any) -> None:
        """Show ``volume_node`` as every slice view's background, fitted, with no foreground."""
        display = self.app.display_manager
        display.show_volume_in_slice_background(volume_node)
        display.show_volume_in_slice_foreground(None)
        display.reset_views()

    def step_slice(self, steps: int, name: str = AXIAL) -> None:
        """Move view ``name`` by ``steps`` slices (mouse wheel over the box overlay)."""
        view = self.view(name)
        lo, hi = view.get_slice_range()
        value = view.get_slice_value() + steps * view.get_slice_step()
        view.set_slice_value(min(hi, max(lo, value)))

    def jump_to(self, ras: Any, name: str = AXIAL) -> None:
        """Show the slice of view ``name`` through world point ``ras`` (keeps the zoom)."""
        self.slice_node(name).JumpSliceByOffsetting(*[float(v) for v in ras])

    def render_all(self) -> None:
        """Ask every view for a new frame."""
        for view in self.app.view_manager.get_views():
            view.schedule_render()
