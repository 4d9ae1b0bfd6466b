"""The drag-a-box layer over the axial view: a visible rectangle while dragging, one trigger per drag.

The layer takes the mouse only while the Box tool is chosen (otherwise pointer events pass through
to the Slicer view, so paint, erase, zoom and window/level work there). Drag coordinates stay in
the browser (client-only state) until the button is released; then ``msam_box_drawn`` is
triggered once, with the drag as fractions of the view. The mouse wheel over the layer steps slices
(``msam_scroll``).
"""

from __future__ import annotations

from typing import Any

from .scene_views import AXIAL

DRAG = "msam_drag"
IDLE = "{on: false, x0: 0, y0: 0, x1: 0, y1: 0}"
TRIGGER_BOX = "msam_box_drawn"
TRIGGER_SCROLL = "msam_scroll"
CSS = """
.msam-box-layer { position: absolute; inset: 0; z-index: 1; cursor: crosshair; touch-action: none; }
.msam-drag-rect { position: absolute; border: 2px dashed; pointer-events: none; background: rgba(255,255,255,0.08); }
"""


def _fraction(axis: str) -> str:
    """JS: the pointer position as a fraction of the layer's width ('x') or height ('y')."""
    side, size, client = ("left", "width", "clientX") if axis == "x" else ("top", "height", "clientY")
    return f"(($event.{client} - $event.currentTarget.getBoundingClientRect().{side}) / $event.currentTarget.getBoundingClientRect().{size})"


def _handlers() -> list[str]:
    fx, fy = _fraction("x"), _fraction("y")
    down = (f"$event.button === 0 && ($event.currentTarget.setPointerCapture($event.pointerId), "
            f"{DRAG} = {{on: true, x0: {fx}, y0: {fy}, x1: {fx}, y1: {fy}}});")
    move = f"{DRAG}.on && ({DRAG} = {{...{DRAG}, x1: {fx}, y1: {fy}}});"
    up = (f"{DRAG}.on && trigger('{TRIGGER_BOX}', [{DRAG}.x0, {DRAG}.y0, {fx}, {fy}]); {DRAG} = {IDLE};")
    return [f'@pointerdown.prevent="{down}"', f'@pointermove="{move}"', f'@pointerup="{up}"',
            f'@pointercancel="{DRAG} = {IDLE};"', f'@wheel.prevent="trigger(\'{TRIGGER_SCROLL}\', [Math.sign($event.deltaY)]);"']


def rect_style() -> str:
    """JS object for the rectangle's position, size and colour (the chosen muscle's)."""
    return (f"{{left: Math.min({DRAG}.x0, {DRAG}.x1) * 100 + '%', top: Math.min({DRAG}.y0, {DRAG}.y1) * 100 + '%', "
            f"width: Math.abs({DRAG}.x1 - {DRAG}.x0) * 100 + '%', height: Math.abs({DRAG}.y1 - {DRAG}.y0) * 100 + '%', "
            f"borderColor: msam_label_color}}")


def add_box_layer(server: Any) -> None:
    """Add the layer (inside the current trame layout context: the axial view's container)."""
    from trame.widgets import html  # noqa: PLC0415

    server.state.setdefault(DRAG, {"on": False, "x0": 0, "y0": 0, "x1": 0, "y1": 0})
    server.state.client_only(DRAG)
    active = "msam_tool === 'box' && msam_ready"
    with html.Div(classes="msam-box-layer", style=(f"{{pointerEvents: ({active}) ? 'auto' : 'none'}}",),
                  raw_attrs=[*_handlers(), 'data-testid="box-layer"']):
        html.Div(v_if=(f"{DRAG}.on",), classes="msam-drag-rect", style=(rect_style(),), raw_attrs=['data-testid="drag-rect"'])


def slice_view_ui(server: Any, view_id: str, view: Any) -> None:
    """trame-slicer ``slice_view_ui_f``: the box layer on the axial view, then the usual gutter and slider."""
    from trame_slicer.app.ui import create_vertical_slice_view_gutter_ui  # noqa: PLC0415

    if view.get_singleton_tag() == AXIAL:
        add_box_layer(server)
    create_vertical_slice_view_gutter_ui(server, view_id, view)
