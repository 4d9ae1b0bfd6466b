"""The drag-a-box layer over the axial view: a visible rectangle while dragging, one trigger per drag.

With the Click tool the same layer sends each press instead (``msam_click``: view fractions, the mouse
button and Shift; left = "muscle", right or Shift = "not muscle"; the browser's menu is kept off it).
The layer takes the mouse only while the Box or Click tool is chosen (otherwise pointer events pass through
to the Slicer view, so paint, erase, zoom and window/level work there). Drag coordinates stay in
the browser (client-only state) until the button is released; then ``msam_box_drawn`` is
triggered once, with the drag as fractions of the view. The mouse wheel over the layer steps slices
(``msam_scroll``) the way Slicer's own wheel does (forward = next slice up), so the direction never
depends on the tool. Each view also gets its gutter (reset camera, above the layer so the Box tool
never swallows it; no 3D button: there is no 3D view), orientation letters and the slice slider.
"""

from __future__ import annotations

from typing import Any

from .scene_views import AXIAL

DRAG = "msam_drag"
IDLE = "{on: false, x0: 0, y0: 0, x1: 0, y1: 0}"
TRIGGER_BOX = "msam_box_drawn"
TRIGGER_SCROLL = "msam_scroll"
TRIGGER_CLICK = "msam_click"
CSS = """
.msam-box-layer { position: absolute; inset: 0; z-index: 1; cursor: crosshair; touch-action: none; }
.msam-drag-rect { position: absolute; border: 2px dashed; pointer-events: none; background: rgba(255,255,255,0.08); }
.msam-gutter { position: absolute; top: 0; left: 0; z-index: 3; }
.msam-slider { position: absolute; bottom: 0; left: 0; width: 100%; z-index: 3; }
.msam-orient { position: absolute; z-index: 2; pointer-events: none; color: #ffe066; font: bold 13px sans-serif;
               text-shadow: 0 0 3px #000; }
.msam-view-title { position: absolute; top: 4px; right: 8px; z-index: 2; pointer-events: none; color: #eee;
                   font: 12px sans-serif; text-shadow: 0 0 3px #000; }
"""
# view tag -> letters at (top, bottom, left, right), as Slicer's default slice orientations show the patient
ORIENTATION = {"Red": ("A", "P", "R", "L"), "Green": ("S", "I", "R", "L"), "Yellow": ("S", "I", "A", "P")}
VIEW_NAMES = {"Red": "Axial", "Green": "Coronal", "Yellow": "Sagittal"}


def _fraction(axis: str) -> str:
    """JS: the pointer position as a fraction of the layer's width ('x') or height ('y')."""
    side, size, client = ("left", "width", "clientX") if axis == "x" else ("top", "height", "clientY")
    return f"(($event.{client} - $event.currentTarget.getBoundingClientRect().{side}) / $event.currentTarget.getBoundingClientRect().{size})"


def _handlers() -> list[str]:
    fx, fy = _fraction("x"), _fraction("y")
    size = "$event.currentTarget.getBoundingClientRect().width, $event.currentTarget.getBoundingClientRect().height"
    box = (f"$event.button === 0 && ($event.currentTarget.setPointerCapture($event.pointerId), "
           f"{DRAG} = {{on: true, x0: {fx}, y0: {fy}, x1: {fx}, y1: {fy}}})")
    click = (f"($event.button === 0 || $event.button === 2) && "
             f"trigger('{TRIGGER_CLICK}', [{fx}, {fy}, $event.button, $event.shiftKey, {size}])")
    down = f"msam_tool === 'click' ? ({click}) : ({box});"
    move = f"{DRAG}.on && ({DRAG} = {{...{DRAG}, x1: {fx}, y1: {fy}}});"
    up = (f"{DRAG}.on && trigger('{TRIGGER_BOX}', [{DRAG}.x0, {DRAG}.y0, {fx}, {fy}, {size}]); {DRAG} = {IDLE};")
    return [f'@pointerdown.prevent="{down}"', f'@pointermove="{move}"', f'@pointerup="{up}"',
            f'@pointercancel="{DRAG} = {IDLE};"', '@contextmenu.prevent',
            f'@wheel.prevent="trigger(\'{TRIGGER_SCROLL}\', [-Math.sign($event.deltaY)]);"']


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
    active = "(msam_tool === 'box' || msam_tool === 'click') && msam_ready"
    with html.Div(classes="msam-box-layer", style=(f"{{pointerEvents: ({active}) ? 'auto' : 'none'}}",),
                  raw_attrs=[*_handlers(), 'data-testid="box-layer"']):
        html.Div(v_if=(f"{DRAG}.on",), classes="msam-drag-rect", style=(rect_style(),), raw_attrs=['data-testid="drag-rect"'])


def slice_view_ui(server: Any, view_id: str, view: Any) -> None:
    """trame-slicer ``slice_view_ui_f``: the box layer on the axial view, then gutter, letters and slider."""
    from trame.widgets import html  # noqa: PLC0415
    from trame.widgets import vuetify3 as v  # noqa: PLC0415
    from trame_slicer.app.logic.slice_view_logic import connect_slice_view_slider_to_state  # noqa: PLC0415
    from trame_slicer.app.ui.slider import Slider  # noqa: PLC0415

    tag = view.get_singleton_tag()
    if tag == AXIAL:
        add_box_layer(server)
    with html.Div(classes="msam-gutter pa-1"):
        with v.VBtn(size="small", variant="text", icon=True, click=view.reset_view, raw_attrs=[f'data-testid="reset-{tag}"']):
            v.VIcon("mdi-fit-to-screen-outline", color="white")
            v.VTooltip("Fit the image to the view", activator="parent", location="right")
    top, bottom, left, right = ORIENTATION.get(tag, ("", "", "", ""))
    for letter, place in ((top, "top: 4px; left: 50%;"), (bottom, "bottom: 28px; left: 50%;"),
                          (left, "left: 6px; top: 50%;"), (right, "right: 6px; top: 50%;")):
        html.Div(letter, classes="msam-orient", style=place)
    html.Div("{{ msam_view_titles['%s'] }}" % tag, classes="msam-view-title", raw_attrs=[f'data-testid="view-title-{tag}"'])
    with html.Div(classes="msam-slider"):
        Slider(classes="slice-slider", typed_state=connect_slice_view_slider_to_state(server, view), theme="dark", dense=True)
