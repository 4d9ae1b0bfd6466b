"""Every action of the page, each one call into the scene bridge (``MuscleSAMLogic``).

Runs on the server's event loop, the thread that owns the MRML scene; Segment, Propagate and Cancel
are in ``runs.py``. Every failure becomes a message on the page (``messages.reported``); the server
keeps running. State keys are described in ``page_state.py``.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import tempfile
from pathlib import Path
from typing import Any

from ..outputs.bundle import edit_check_summary
from ..engine.types import BoxPrompt
from ..errors import InputError, MuscleSAMError
from ..sample_data import SAMPLE_DIR, muscle_names
from . import loading, page_state
from .box_rois import box_roi, remove_rois
from .bundle_zip import zip_bundle
from .drag_box import Drag, drag_to_ras
from .editing import Editing
from .learning import LearningActions, learning_defaults
from .messages import log, muscle_name, reported
from .options import WebOptions
from .paths import PathRule, safe_file_name, shown
from .runs import RunActions
from .scene_views import AXIAL, SceneViews


class WebController(RunActions, LearningActions):
    """The web app's behaviour: state in, bridge calls, state and scene out."""

    def __init__(self, server: Any, views: SceneViews, options: WebOptions) -> None:
        from ..scene_bridge import MuscleSAMLogic  # noqa: PLC0415

        self.server, self.state, self.views, self.options = server, server.state, views, options
        self.logic = MuscleSAMLogic()
        self.editing = Editing(views.app)
        self.volume_node: Any = None
        self.pending: list[tuple[BoxPrompt, Any]] = []  # drawn boxes not segmented yet, with their ROI nodes
        self.last_box: dict[int, BoxPrompt] = {}
        self.exports: dict[str, Path] = {}  # download name -> complete zip
        self.learn_bundles: list[tuple[Path, Path]] = []  # (bundle folder, its image file) exported in this session
        self.image_file: Path | None = None  # the open image's file (learning reads it again)
        self.image_name = ""  # the open image's name; file names are built from it (never from page state)
        self.paths = PathRule.build(options.data_dirs, options.image, SAMPLE_DIR)
        self.export_root = Path(options.output) if options.output else Path(tempfile.mkdtemp(prefix="musclesam-web-"))
        self.state.update({**page_state.defaults(), **learning_defaults()})
        self.state.msam_export_folder = str(self.export_root)
        self._task: asyncio.Task | None = None  # the run being watched (a strong reference keeps it alive)
        self._exporting = False  # a bundle is being written off the event loop (no other image, no second export)

    # ------------------------------------------------------------------ messages and small helpers
    def say(self, text: str, kind: str = "info") -> None:
        """Show ``text`` in the page's message bar (kind: info, success, warning, error)."""
        self.state.msam_message = {"type": kind, "text": text}
        (log.warning if kind in ("warning", "error") else log.info)("%s", text)

    def _require_volume(self) -> Any:
        if self.volume_node is None:
            raise InputError("no image is open: open one (or the sample) first")
        if self.logic.loaded is None:
            raise InputError("the ensemble is not loaded yet (or failed to load: see the message above)")
        return self.volume_node

    def _label(self) -> int:
        """The muscle chosen on the page (page state: checked, a client may send anything)."""
        value = self.state.msam_label
        try:
            label = int(str(value).strip())  # 3 or "3"; not 3.5, True or a list
        except ValueError:
            label = None
        if label not in muscle_names():
            raise InputError(f"muscle {shown(str(value))} is not one of the 11 thigh muscles: pick one from the Muscle list")
        return label

    def _require_idle(self, what: str) -> None:
        if self.logic.busy:
            raise InputError(f"a {self.state.msam_busy_text or 'prediction'} is running: wait for it or press Cancel, then {what}")
        if self._exporting:
            raise InputError(f"an export is being written: wait a moment, then {what}")

    def _segmentation(self) -> Any | None:
        return self.logic.segmentation_for(self.volume_node) if self.volume_node is not None else None

    def _refresh_ready(self) -> None:
        self.state.msam_ready = self.volume_node is not None and self.logic.loaded is not None
        if self.state.msam_ready:
            self.state.msam_phase = "ready"

    # ------------------------------------------------------------------ start-up: image and ensemble
    async def start(self) -> None:
        """Open the image given on the command line (or the sample) and load the ensemble, concurrently."""
        image = str(Path(self.options.image).expanduser().absolute()) if self.options.image else ""
        await asyncio.gather(self.open_image(image), self.load_ensemble())

    @reported
    async def load_ensemble(self, name: str | None = None) -> None:
        """Load ``name`` (default: the ensemble named on the command line, else the manifest's default)."""
        with self.state:
            self.state.msam_phase = "loading"
        try:
            loaded = await loading.read_ensemble(name or self.options.ensemble, self.options.manifest, self.options.device)
        except MuscleSAMError as exc:
            with self.state:
                self.state.msam_phase = "error"
                self.say(f"The ensemble could not be loaded: {exc}. Restart with --manifest (and --ensemble) "
                         "pointing at installed weights.", "error")
            return
        with self.state:
            self.logic.use_ensemble(loaded)
            spec = loaded.ensemble.spec
            self.state.msam_ensemble = f"{spec.name} ({spec.kind}, {loaded.ensemble.members} members)"
            self.state.msam_device = str(loaded.ensemble.device)
            self.state.msam_on_cpu = self.logic.on_cpu
            self._refresh_ready()
            self._precompute_middle()
            if self.volume_node is not None:
                self.say("Ready: pick a muscle, drag a box around it on the axial view, then press Segment.", "info")

    def _precompute_middle(self) -> None:
        """Encode the middle slice and its neighbours on the worker so the first box is fast."""
        if self.volume_node is None or self.logic.loaded is None:
            return
        seg = self.logic.session(self.volume_node).segmenter
        seg.precompute(seg.shape[0] // 2, radius=1)

    @reported
    async def open_image(self, requested: Any = "") -> None:
        """Open ``requested`` in place of the current image: a server path the path rule allows (paths.py); empty: the sample."""
        self._require_idle("open another image")
        try:
            path, name = self._image_request(requested)
            with self.state:
                self.say(f"Opening {path} ...", "info")
            volume = await loading.read_image(path)
        except (MuscleSAMError, OSError) as exc:  # OSError: what the reader did not put in words
            if isinstance(exc, OSError):
                exc = InputError(f"{shown(str(requested))}: {exc.strerror or exc}")
            with self.state:
                kept = f" The current image ({self.image_name}) stays open." if self.volume_node is not None else \
                    " Open another image, or the sample, with the Image panel."
                self.say(f"Could not open the image: {exc}.{kept}", "error")
            return
        with self.state:
            self._replace_volume(volume, name)
            self.image_name, self.image_file = name, path
            self._refresh_ready()
            self._precompute_middle()
            self.say(f"Opened {name}. Pick a muscle, drag a box around it on the axial view, then "
                     "press Segment." if self.logic.loaded is not None else
                     f"Opened {name}; the ensemble is still loading ...", "info")

    def _image_request(self, requested: Any) -> tuple[Path, str]:
        """(resolved path, display name) of the page's request: the sample when empty, else checked by the path rule."""
        if requested is None or (isinstance(requested, str) and not requested.strip()):
            from ..sample_data import sample_case  # noqa: PLC0415

            water = sample_case().water.resolve()
            return water, loading.display_name(water)
        return self.paths.check(requested), loading.display_name(Path(requested.strip()))

    def _replace_volume(self, volume: Any, name: str) -> None:
        from ..scene_bridge.geometry import add_volume_node  # noqa: PLC0415

        scene = self.views.scene
        self.editing.editor.clear()
        remove_rois(scene, [roi for _, roi in self.pending])
        loading.remove_case_nodes(scene, self.volume_node)
        self.pending, self.last_box = [], {}
        if self.logic.loaded is not None:
            self.logic.use_ensemble(self.logic.loaded)  # drops the previous image's session and cache
        self.volume_node = add_volume_node(scene, volume, name)
        self.views.show_volume(self.volume_node)
        self.state.update({"msam_image": name, "msam_boxes": [], "msam_has_result": False, "msam_queue": [],
                           "msam_remaining": 0, "msam_export": None})

    # ------------------------------------------------------------------ boxes
    @reported
    def box_drawn(self, *values: Any) -> None:
        """A drag ended on the axial view: make it a box prompt for the chosen muscle (shown as an ROI)."""
        volume_node = self._require_volume()
        drag = Drag.parse(values)
        label = self._label()
        ras0, ras1 = drag_to_ras(self.views.slice_node(AXIAL), drag)
        box = self.logic.box_from_drawing(volume_node, label, ras0, ras1, f"box {len(self.pending) + 1} ({muscle_name(label)})")
        roi = box_roi(self.views.scene, self.logic.session(volume_node).volume, box)
        self.pending.append((box, roi))
        self._publish_boxes()
        self.say(f"Box for {muscle_name(label)}: {box.width} x {box.height} pixels on slice {self._slice_text(box)}. "
                 "Press Segment (or draw more boxes first).", "info")

    def _slice_text(self, box: BoxPrompt) -> str:
        from ..scene_bridge.geometry import stored_slice_index  # noqa: PLC0415

        return str(stored_slice_index(self.logic.session(self.volume_node).volume, box.slice))

    def _publish_boxes(self) -> None:
        names = muscle_names()
        self.state.msam_boxes = [{"label": b.label, "abbrev": names[b.label]["abbrev"], "slice": self._slice_text(b),
                                  "size": f"{b.width}x{b.height}",
                                  "color": page_state.hex_colour(names[b.label].get("color", (128, 128, 128)))}
                                 for b, _ in self.pending]

    @reported
    def clear_boxes(self) -> None:
        """Forget the boxes not segmented yet."""
        remove_rois(self.views.scene, [roi for _, roi in self.pending])
        self.pending = []
        self._publish_boxes()
        self.say("Boxes cleared.", "info")

    # ------------------------------------------------------------------ uncertainty overlay
    @reported
    def heatmap_changed(self, **_: Any) -> None:
        """Kind / opacity / threshold / visibility changed on the page."""
        if self.state.msam_has_result:
            self._apply_heatmap()

    def _apply_heatmap(self) -> None:
        from ..scene_bridge import overlays  # noqa: PLC0415

        kind = str(self.state.msam_heat_kind)
        node = self.logic.show_uncertainty(self.volume_node, kind=kind, opacity=float(self.state.msam_heat_opacity),
                                           threshold=float(self.state.msam_heat_threshold))
        if not self.state.msam_heat_visible:
            overlays.show_as_foreground(self.volume_node, None, 0.0)
        color = self.views.scene.GetNodeByID(node.GetDisplayNode().GetColorNodeID())
        self.state.msam_legend = page_state.legend(color, self.logic.display.window_max, kind)

    # ------------------------------------------------------------------ review
    def _publish_review(self, table_node: Any | None = None) -> None:
        table = table_node if table_node is not None else self.logic.review_table(self.volume_node)
        self.state.msam_queue = page_state.table_rows(table)
        self.state.msam_remaining = self.logic.remaining_reviews(self.volume_node)

    @reported
    def next_uncertain(self) -> None:
        """Jump to the most uncertain place not visited yet and pick its muscle."""
        self._require_volume()
        target = self.logic.next_uncertain(self.volume_node, jump=True)
        self.state.msam_remaining = self.logic.remaining_reviews(self.volume_node)
        if target is None:
            self.say("Every uncertain place has been visited.", "success")
            return
        self.state.msam_label = target.label
        self.say(f"#{target.rank}: {target.muscle} on slice {target.slice}, mean uncertainty {target.uncertainty:.2f} "
                 f"nats, expected DSC {target.expected_dsc:.2f}. {target.remaining} left. Paint or Erase to correct it.",
                 "info")

    # ------------------------------------------------------------------ tools and corrections
    @reported
    def tool_changed(self, **_: Any) -> None:
        """Box / Paint / Erase / Navigate chosen, muscle or brush changed."""
        label = self._label()
        self.state.msam_label_color = page_state.hex_colour(muscle_names()[label].get("color", (128, 128, 128)))
        seg = self._segmentation()
        self.state.msam_locked = bool(seg is not None and label in self._locked(seg))
        self._apply_tool()

    def _locked(self, seg: Any) -> frozenset[int]:
        from ..scene_bridge.segments import locked_labels  # noqa: PLC0415

        return locked_labels(seg)

    def _apply_tool(self) -> None:
        from ..scene_bridge.segments import muscle_segment_ids  # noqa: PLC0415

        tool = str(self.state.msam_tool)
        seg = self._segmentation()
        if tool in ("paint", "erase") and seg is None:
            self.say("Nothing to correct yet: segment first, then Paint or Erase.", "warning")
        sid = muscle_segment_ids(seg).get(self._label()) if seg is not None else None
        self.editing.set_tool(tool, sid, float(self.state.msam_brush))

    @reported
    def brush_changed(self, **_: Any) -> None:
        """Brush size slider moved."""
        self.editing.set_brush(float(self.state.msam_brush))

    @reported
    def undo(self) -> None:
        """Undo the last paint/erase stroke."""
        if not self.editing.undo():
            self.say("Nothing to undo.", "info")

    @reported
    def toggle_lock(self) -> None:
        """Mark the chosen muscle finished (locked: never overwritten by a prediction) or unlock it."""
        seg = self._segmentation()
        if seg is None:
            raise InputError("nothing to lock yet: segment the muscle first")
        label = self._label()
        lock = label not in self._locked(seg)
        self.logic.lock_segment(seg, label, lock)
        self.state.msam_locked = lock
        self.say(f"{muscle_name(label)} {'locked: predictions will not change it' if lock else 'unlocked'}.", "info")

    # ------------------------------------------------------------------ export
    @reported
    async def export(self) -> None:
        """Write the corrected-label bundle (atomic) and offer it as one zip (complete or not at all)."""
        volume_node = self._require_volume()
        self._require_idle("export")
        seg = self._segmentation()
        if seg is None:
            raise InputError("nothing to export yet: draw a box, press Segment (and correct it), then Export")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = name = f"{safe_file_name(self.image_name)}-corrected-{stamp}"
        n = 1
        while (self.export_root / name).exists() or (self.export_root / f"{name}.zip").exists():
            n += 1  # unique: two exports in the same second never share a folder
            name = f"{base}-{n}"
        with self.state:
            self.state.msam_export = None
            self.say("Exporting ...", "info")
        write = self.logic.prepare_export(volume_node, seg, self.export_root / name)  # reads the scene here
        image_file = self.image_file  # the image this bundle belongs to, whatever is opened later
        loop = asyncio.get_running_loop()
        self._exporting = True
        try:
            folder = await loop.run_in_executor(None, write)  # the page stays live while the bundle is written
            zipped = await loop.run_in_executor(None, zip_bundle, folder, self.export_root / f"{name}.zip")
        finally:
            self._exporting = False
        self.exports[zipped.name] = zipped
        self.bundle_exported(folder, image_file)
        with self.state:
            self.state.msam_export = {"url": f"/musclesam/export/{zipped.name}", "name": zipped.name,
                                      "size": f"{zipped.stat().st_size / 1e6:.1f} MB", "folder": str(folder)}
            self.say(f"Exported to {folder} on the server. Download it as {zipped.name}. {edit_check_summary(folder)}", "success")

    # ------------------------------------------------------------------ page events
    @reported
    def key(self, key: Any) -> None:
        """Keyboard shortcut (B box tool, S segment, P propagate, N next most uncertain, Esc cancel)."""
        k = str(key).lower()
        if k == "b":
            self.state.msam_tool = "box"
        elif k in ("s", "p", "n") and self.logic.busy:
            self.say("A run is in progress: wait for it or press Esc to cancel.", "info")
        else:
            {"s": self.segment, "p": self.propagate, "n": self.next_uncertain, "escape": self.cancel}.get(k, lambda: None)()

    @reported
    def scroll(self, steps: Any) -> None:
        """Mouse wheel over the box layer: step the axial view's slices."""
        self.views.step_slice(int(max(-5, min(5, float(steps)))))

    def set_clients(self, count: int) -> None:
        """Tabs connected now (the page says so when several share this session); a new tab gets fresh frames."""
        grew = count > int(self.state.msam_clients)
        with self.state:
            self.state.msam_clients = count
        if grew:
            asyncio.get_running_loop().call_later(1.0, self.views.render_all)
