"""Build the MuscleSAM web app (trame server + trame-slicer views + controller + page) and serve it."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from .options import WebOptions
from .connections import websocket_counter
from .limits import apply_websocket_limits, body_limit, set_client_max_size
from .security import access_middleware, check_bind

log = logging.getLogger("musclesam.web")


def build(options: WebOptions, server: Any = None) -> tuple[Any, Any]:
    """A ready-to-start trame server and its controller (nothing is loaded until the server runs)."""
    from trame.app import get_server  # noqa: PLC0415
    from trame_slicer import module as trame_slicer_module  # noqa: PLC0415

    from .box_overlay import TRIGGER_BOX, TRIGGER_CLICK, TRIGGER_SCROLL, slice_view_ui  # noqa: PLC0415
    from .controller import WebController  # noqa: PLC0415
    from .routes import add_routes  # noqa: PLC0415
    from .scene_views import SceneViews  # noqa: PLC0415
    from .ui import build_page  # noqa: PLC0415

    _preload_engine()
    server = server or get_server("musclesam", client_type="vue3")
    server.enable_module(trame_slicer_module)
    views = SceneViews(server, slice_view_ui)
    controller = WebController(server, views, options)
    state, ctrl = server.state, server.controller

    ctrl.trigger(TRIGGER_BOX)(controller.box_drawn)
    ctrl.trigger(TRIGGER_SCROLL)(controller.scroll)
    ctrl.trigger(TRIGGER_CLICK)(controller.view_click)
    ctrl.trigger("msam_key")(controller.key)
    ctrl.trigger("msam_cursor")(controller.cursor)
    state.change("msam_heat_visible", "msam_heat_kind", "msam_heat_opacity", "msam_heat_threshold")(controller.heatmap_changed)
    state.change("msam_tool", "msam_label")(controller.tool_changed)
    state.change("msam_brush")(controller.brush_changed)
    state.change("msam_suggest")(controller.suggest_changed)
    state.change("msam_seg_opacity")(controller.segment_opacity_changed)
    state.change("msam_window")(controller.window_changed)

    apply_websocket_limits(server)

    def bind(wslink_server: Any) -> None:
        app = wslink_server.app
        set_client_max_size(app)
        middlewares = app.middlewares  # access checks first, then the body size limit, then the tab counter
        middlewares.insert(0, websocket_counter(controller.set_clients))
        middlewares.insert(0, body_limit())
        middlewares.insert(0, access_middleware(options.token))
        add_routes(app, controller, options.test_api)

    def ready(**_: Any) -> None:
        from trame_server.utils.asynchronous import create_task  # noqa: PLC0415

        host = socket.gethostname() if options.host in ("0.0.0.0", "::", "") else options.host
        url = f"http://{'[' + host + ']' if ':' in host else host}:{server.port}/"
        print(f"MuscleSAM web app: {url}{'?token=' + options.token if options.token else ''}", flush=True)
        print(f"Exports are written to {controller.export_root}", flush=True)
        create_task(controller.start())

    ctrl.on_server_bind.add(bind)
    ctrl.on_server_ready.add(ready)
    build_page(server, controller, views)
    return server, controller


def _preload_engine() -> None:
    """Import torch and the engine before VTK creates an OpenGL (Mesa EGL) context.

    Importing torch's compiler stack (triton, pulled in via torchvision) after Mesa has rendered
    crashes the process (two LLVMs in one process); in this order both work.
    """
    import torchvision.ops  # noqa: F401, PLC0415

    from ..scene_bridge import MuscleSAMLogic  # noqa: F401, PLC0415
    from ..pipelines import segment  # noqa: F401, PLC0415


def serve(options: WebOptions) -> int:
    """Check the bind policy, build the app and serve until interrupted."""
    check_bind(options.host, options.token)
    _log_to_stderr()
    server, _controller = build(options)
    sys.argv = sys.argv[:1]  # trame parses sys.argv again on start: ours are not its options
    server.start(host=options.host, port=options.port, open_browser=False, timeout=0, show_connection_info=False)
    return 0


def _log_to_stderr() -> None:
    """MuscleSAM's own messages to stderr (libraries keep their defaults)."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s musclesam web %(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
