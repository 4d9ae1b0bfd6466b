"""HTTP routes beside the trame page: the export download, and (tests only) a read-out of the scene.

* ``GET /musclesam/export/<name>.zip``: a finished export (only plain names the app registered, whose file
  still resolves inside the export folder: no paths).
* ``GET /musclesam/test/state``, ``GET /musclesam/test/ras_to_view?ras=R,A,S``,
  ``POST /musclesam/test/jump?ras=R,A,S``, ``POST /musclesam/test/hold_worker?seconds=S`` (occupies
  the bridge's worker thread like a slow ensemble, until Cancel), ``POST /musclesam/test/action/<name>``
  with a JSON list of arguments (one of ``TEST_ACTIONS``, called as the page's trigger calls it; answers
  the read-out afterwards): exist only with ``--test-api`` (the browser tests). They run on the event
  loop, the thread that owns the scene.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from .drag_box import ras_to_fraction, view_pixels
from .paths import is_download_name
from .scene_views import AXIAL

EXPORT_PREFIX = "/musclesam/export/"
TEST_PREFIX = "/musclesam/test/"
TEST_ACTIONS = ("open_image", "box_drawn", "segment", "export", "clear_boxes", "view_click", "undo_click")  # page actions the tests may call


def add_routes(app: Any, controller: Any, test_api: bool) -> None:
    """Register the routes on the aiohttp application ``app``."""
    from aiohttp import web  # noqa: PLC0415

    async def download(request: "web.Request") -> "web.StreamResponse":
        name = request.match_info["name"]
        path = controller.exports.get(name) if is_download_name(name) else None
        if path is None or not path.is_file() or not path.resolve().is_relative_to(controller.export_root.resolve()):
            return web.Response(status=404, text="MuscleSAM: no such export (export again from the page).\n")
        return web.FileResponse(path, headers={"Content-Disposition": f'attachment; filename="{path.name}"',
                                               "Content-Type": "application/zip", "Cache-Control": "no-store"})

    app.router.add_get(EXPORT_PREFIX + "{name}", download)
    if not test_api:
        return

    async def state(_request: "web.Request") -> "web.Response":
        return web.json_response(scene_report(controller))

    async def to_view(request: "web.Request") -> "web.Response":
        ras = _ras(request)
        fx, fy = ras_to_fraction(controller.views.slice_node(AXIAL), ras)
        return web.json_response({"fx": fx, "fy": fy})

    async def jump(request: "web.Request") -> "web.Response":
        controller.views.jump_to(_ras(request), AXIAL)
        return web.json_response({"ok": True})

    async def hold_worker(request: "web.Request") -> "web.Response":
        seconds = min(60.0, float(request.query.get("seconds", "5")))
        controller.logic.worker.submit(lambda cancel: cancel.wait(seconds))  # a slow ensemble, stopped by Cancel
        return web.json_response({"ok": True})

    async def action(request: "web.Request") -> "web.Response":
        name = request.match_info["name"]
        if name not in TEST_ACTIONS:
            raise web.HTTPNotFound(text=f"test actions: {', '.join(TEST_ACTIONS)}\n")
        try:
            args = await request.json()  # read within client_max_size
        except ValueError:
            args = None
        if not isinstance(args, list):
            raise web.HTTPBadRequest(text="a JSON list of arguments expected\n")
        with controller.state:
            result = getattr(controller, name)(*args)  # as the page's trigger would call it
            if asyncio.iscoroutine(result):
                await result
        return web.json_response(scene_report(controller))

    async def labels(_request: "web.Request") -> "web.Response":
        """The segmentation as the page shows it: stored (k, j, i) uint8 label map, .npy bytes (tests compare bundles)."""
        import io  # noqa: PLC0415

        from ..scene_bridge import segments  # noqa: PLC0415

        seg = controller.logic.segmentation_for(controller.volume_node) if controller.volume_node is not None else None
        if seg is None:
            raise web.HTTPNotFound(text="no segmentation\n")
        buf = io.BytesIO()
        np.save(buf, segments.read_labels(seg, controller.volume_node))
        return web.Response(body=buf.getvalue(), content_type="application/octet-stream")

    app.router.add_get(TEST_PREFIX + "state", state)
    app.router.add_get(TEST_PREFIX + "labels", labels)
    app.router.add_post(TEST_PREFIX + "action/{name}", action)
    app.router.add_post(TEST_PREFIX + "hold_worker", hold_worker)
    app.router.add_get(TEST_PREFIX + "ras_to_view", to_view)
    app.router.add_post(TEST_PREFIX + "jump", jump)


def _ras(request: Any) -> list[float]:
    from aiohttp import web  # noqa: PLC0415

    try:
        ras = [float(v) for v in request.query["ras"].split(",")]
    except (KeyError, ValueError):
        raise web.HTTPBadRequest(text="ras=R,A,S expected\n") from None
    if len(ras) != 3:
        raise web.HTTPBadRequest(text="ras=R,A,S expected\n")
    return ras


def _legend_visible(node: Any) -> bool:
    """Whether Slicer's colour legend of ``node`` is drawn in the views."""
    from ..scene_bridge.mrml import slicer_module  # noqa: PLC0415

    logic = getattr(slicer_module(), "vtkSlicerColorLogic", None)
    legend = logic.GetColorLegendDisplayNode(node) if logic is not None else None
    return bool(legend is not None and legend.GetVisibility())


def scene_report(controller: Any) -> dict:
    """What the tests check: segments' voxel counts, the heatmap layer, boxes, exports, page messages."""
    from ..scene_bridge import segments  # noqa: PLC0415
    from ..scene_bridge.mrml import find_owned_node  # noqa: PLC0415

    st = controller.state
    out: dict[str, Any] = {key: st[key] for key in ("msam_phase", "msam_ready", "msam_busy", "msam_message", "msam_image",
                                                     "msam_ensemble", "msam_clients", "msam_remaining", "msam_tool")}
    out.update({"pending_boxes": [{"label": b.label, "slice": b.slice, "xyxy": list(b.xyxy)} for b, _ in controller.pending],
                "exports": sorted(controller.exports), "segments": None, "heatmap": None,
                "image_file": str(controller.image_file) if controller.image_file else None,
                "export_root": str(controller.export_root)})
    volume = controller.volume_node
    slice_node = controller.views.slice_node(AXIAL)
    out["axial"] = {"pixels": list(view_pixels(slice_node)), "offset": slice_node.GetSliceOffset()}
    if volume is None:
        return out
    if controller.logic.loaded is not None:
        from ..scene_bridge.geometry import ras_to_canonical  # noqa: PLC0415

        centre = (np.array([[slice_node.GetSliceToRAS().GetElement(r, 3) for r in range(3)]]))
        out["axial"]["canonical_slice"] = int(round(float(ras_to_canonical(controller.logic.session(volume).volume, centre)[0, 2])))
    out["clicks"] = _clicks_report(controller)
    seg = controller.logic.segmentation_for(volume)
    if seg is not None:
        labels = segments.read_labels(seg, volume)
        values, counts = np.unique(labels, return_counts=True)
        out["segments"] = {str(int(v)): int(c) for v, c in zip(values, counts) if v != 0}
        out["segment_slices"] = {str(int(v)): sorted({int(k) for k in np.nonzero(labels == v)[0]}) for v in values if v != 0}
    heat = find_owned_node(controller.views.scene, "vtkMRMLScalarVolumeNode", "uncertainty", volume.GetID())
    if heat is not None:
        composite = controller.views.view(AXIAL).get_foreground_volume_id()
        opacity = controller.views.view(AXIAL).get_foreground_opacity()
        display = heat.GetDisplayNode()
        out["heatmap"] = {"node": heat.GetName(), "kind": heat.GetAttribute("MuscleSAM.UncertaintyKind"),
                          "shown": composite == heat.GetID() and opacity > 0, "opacity": opacity,
                          "threshold": display.GetLowerThreshold(), "window": [display.GetWindowLevelMin(), display.GetWindowLevelMax()],
                          "max_value": float(np.max(controller.logic.session(volume).total)),
                          "legend_in_views": _legend_visible(heat)}
    editor = controller.editing.editor
    out["editor"] = {"effect": editor.active_effect_name, "segment": editor.active_segment_id}
    return out


def _clicks_report(controller: Any) -> dict:
    """The clicks in effect on the axial view's slice, the page's click count and the suggestion marker."""
    volume = controller.volume_node
    if controller.logic.loaded is None:
        return {"on_slice": [], "count": 0, "markers": {}}
    k = controller._axial_slice()
    return {"on_slice": [{"label": c["label"], "positive": c["positive"]} for c in controller.logic.clicks_on_slice(volume, k)],
            "count": int(controller.state.msam_clicks),
            "markers": {key: [list(p) for p in points] for key, points in controller.logic.click_marker_points(volume).items()}}
