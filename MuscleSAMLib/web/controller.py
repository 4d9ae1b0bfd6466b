"""Every action of the page, each one call into the scene bridge (``MuscleSAMLogic``).

Runs on the server's event loop, the thread that owns the MRML scene; Segment, Propagate and Cancel
are in ``runs.py``, the Click tool in ``click_tool.py``. Every failure becomes a message on the page (``messages.reported``); the server
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
from ..volumes import label_map_reason
from ..sample_data import SAMPLE_DIR, muscle_names
from . import loading, page_state
from .box_rois import box_roi, remove_rois
from .click_tool import ClickActions
from .bundle_zip import zip_bundle
from .drag_box import Drag, drag_to_ras
from .editing import Editing
from .learning import LearningActions, learning_defaults
from .messages import log, muscle_name, reported
from .options import WebOptions
from .paths import PathRule, safe_file_name, shown
from .runs import RunActions
from .scene_views import AXIAL, SceneViews


class WebController(RunActions, ClickActions, LearningActions):
    """The web app's behaviour: state in, bridge calls, state and scene out."""

    def __init__(self, server: Any, views: SceneViews, options: WebOptions) -> None:
        from ..scene_bridge import MuscleSAMLogic  # noqa: PLC0415

        self.server, self.state, self.views, self.options = server, server.state, views, options
        self.logic = MuscleSAMLogic()
        self.logic.display.legend_in_views = False  # the page draws its own legend; Slicer's would cover the thigh
        self.editing = Editing(views.app)
        self.volume_node: Any = None
        self.pending: list[tuple[BoxPrompt, Any]] = []  # drawn boxes not segmented yet, with their ROI nodes
        self.last_box: dict[int, list[BoxPrompt]] = {}  # what Propagate walks next per muscle (last_run_boxes)
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
        self._exported_digest: str | None = None  # the segmentation as last exported (unsaved work is asked about)
        self._held_image: tuple[Path, str, Any] | None = None  # read, waiting for "discard unsaved work?"
        self.editing.on_spared = self._stroke_spared
        views.slice_node(AXIAL).AddObserver("ModifiedEvent", lambda *_: self._publish_slices())

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
            ens = loaded.ensemble
            joined = "".join(f" + {e.spec.name} ({e.members})" for e in ens.joined)
            views = (", all x 2 views" if ens.joined else " x 2 views") if spec.mirror_view else ""
            self.state.msam_ensemble = f"{spec.name} ({spec.kind}, {ens.members} members{joined}{views})"
            self.state.msam_device = str(loaded.ensemble.device)
            self.state.msam_on_cpu = self.logic.on_cpu
            self._refresh_ready()
            self._precompute_middle()
            self._publish_slices()
            if self.volume_node is not None:
                self.say("Ready: pick a muscle, drag a box around it on the axial view, then press Segment.", "info")

    def _precompute_middle(self) -> None:
        """Encode the middle slice and its neighbours on the worker so the first box is fast."""
        if self.volume_node is None or self.logic.loaded is None:
            return
        self.logic.precompute(self.volume_node)

    def _unsaved(self) -> bool:
        """True when the open image's segmentation changed since its last export (or was never exported)."""
        seg = self._segmentation()
        return seg is not None and self.logic.segmentation_digest(self.volume_node, seg) != self._exported_digest

    @reported
    async def open_image(self, requested: Any = "", discard: Any = False) -> None:
        """Open ``requested`` in place of the current image: a server path the path rule allows (paths.py); empty: the sample.

        Unsaved corrections are never dropped silently: once the new image is read and checked, the page
        asks first (``discard`` = the user said yes; the image read then is used).
        """
        self._require_idle("open another image")
        with self.state:
            self.state.msam_confirm = None
        try:
            path, name = self._image_request(requested)
            held, self._held_image = self._held_image, None
            if discard is True and held is not None and held[0] == path:
                volume = held[2]  # read and checked when the page asked
            else:
                with self.state:
                    self.say(f"Opening {path} ...", "info")
                volume = await loading.read_image(path)
            reason = label_map_reason(volume)
            if reason:
                raise InputError(reason)
        except (MuscleSAMError, OSError) as exc:  # OSError: what the reader did not put in words
            if isinstance(exc, OSError):
                exc = InputError(f"{shown(str(requested))}: {exc.strerror or exc}")
            with self.state:
                kept = f" The current image ({self.image_name}) stays open." if self.volume_node is not None else \
                    " Open another image, or the sample, with the Image panel."
                self.say(f"Could not open the image: {exc}.{kept}", "error")
            return
        if discard is not True and self._unsaved():
            self._held_image = (path, name, volume)
            what = "the sample" if not str(requested or "").strip() else shown(str(requested))
            with self.state:
                self.state.msam_confirm = {"path": str(requested or ""),
                                           "text": f"The segmentation of {self.image_name} has changes that were not exported. "
                                                   f"Open {what} and discard them?"}
                self.say("Export your corrections first, or confirm that they may be discarded.", "warning")
            return
        with self.state:
            self._replace_volume(volume, name)
            self.image_name, self.image_file = name, path
            self._refresh_ready()
            self._precompute_middle()
            self._publish_slices()
            # Whichever of image and ensemble arrives last says "Ready" (the page waits for that word)
            self.say(f"Ready: opened {name}. Pick a muscle, drag a box around it on the axial view, then "
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
        scene = self.views.scene
        self.editing.editor.clear()
        remove_rois(scene, [roi for _, roi in self.pending])
        self.logic.remove_case(scene, self.volume_node)
        self.pending, self.last_box = [], {}
        if self.logic.loaded is not None:
            self.logic.use_ensemble(self.logic.loaded)  # drops the previous image's session and cache
        self.volume_node = self.logic.add_volume(scene, volume, name)
        self.views.show_volume(self.volume_node)
        self._exported_digest = None
        self.state.update({"msam_image": name, "msam_boxes": [], "msam_has_result": False, "msam_queue": [],
                           "msam_remaining": 0, "msam_export": None, "msam_segments": [], "msam_can_undo_run": False,
                           "msam_window": "auto", "msam_clicks": 0, "msam_suggested": False})
        self._click_view = None
        self._publish_slices()

    # ------------------------------------------------------------------ boxes
    @reported
    def box_drawn(self, *values: Any) -> None:
        """A drag ended on the axial view: make it a box prompt for the chosen muscle (shown as an ROI)."""
        volume_node = self._require_volume()
        drag = Drag.parse(values)
        label = self._label()
        ras0, ras1 = drag_to_ras(self.views.slice_node(AXIAL), drag)
        box = self.logic.box_from_drawing(volume_node, label, ras0, ras1, f"box {len(self.pending) + 1} ({muscle_name(label)})")
        roi = box_roi(self.logic, volume_node, box)
        self.pending.append((box, roi))
        self._publish_boxes()
        self.say(f"Box for {muscle_name(label)}: {box.width} x {box.height} pixels on slice {self._slice_text(box)}. "
                 "Press Segment (or draw more boxes first).", "info")

    def _slice_text(self, box: BoxPrompt) -> str:
        return str(self.logic.slice_number(self.volume_node, box.slice))

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
        kind = str(self.state.msam_heat_kind)
        node = self.logic.show_uncertainty(self.volume_node, kind=kind, opacity=float(self.state.msam_heat_opacity),
                                           threshold=float(self.state.msam_heat_threshold))
        if not self.state.msam_heat_visible:
            self.logic.hide_uncertainty(self.volume_node)
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
        self._go_to_target(target)

    @reported
    def review_row(self, rank: Any) -> None:
        """A review table row was clicked: jump to it (marker at the target) and pick its muscle."""
        self._require_volume()
        self._go_to_target(self.logic.review_target_at(self.volume_node, int(rank)))
        self.state.msam_remaining = self.logic.remaining_reviews(self.volume_node)

    def _go_to_target(self, target: Any) -> None:
        changed = int(self.state.msam_label) != target.label
        self.state.msam_label = target.label
        self.say(f"#{target.rank}: {target.muscle} on slice {target.slice} (yellow marker), mean uncertainty "
                 f"{target.uncertainty:.2f} nats, expected DSC {target.expected_dsc:.2f}. {target.remaining} left."
                 + (f" The chosen muscle is now {target.muscle}." if changed else "")
                 + " Paint or Erase to correct it.", "info")

    # ------------------------------------------------------------------ tools and corrections
    @reported
    def tool_changed(self, **_: Any) -> None:
        """Box / Paint / Erase / Navigate chosen, muscle or brush changed."""
        label = self._label()
        self.state.msam_label_color = page_state.hex_colour(muscle_names()[label].get("color", (128, 128, 128)))
        seg = self._segmentation()
        self.state.msam_locked = bool(seg is not None and label in self._locked(seg))
        self._apply_tool()
        self._refresh_clicks()

    def _locked(self, seg: Any) -> frozenset[int]:
        return self.logic.locked_labels(seg)

    def _apply_tool(self) -> None:
        tool = str(self.state.msam_tool)
        seg = self._segmentation()
        if tool in ("paint", "erase") and seg is None:
            self.say("Nothing to correct yet: segment first, then Paint or Erase.", "warning")
        label = self._label()
        sid = self.logic.segment_id(seg, label)
        if tool in ("paint", "erase") and seg is not None and label in self._locked(seg):
            sid = None  # a finished muscle is not edited until it is unlocked
            self.say(f"{muscle_name(label)} is locked (finished): unlock it to paint or erase it.", "warning")
        self.editing.set_tool(tool, sid, float(self.state.msam_brush))

    @reported
    def brush_changed(self, **_: Any) -> None:
        """Brush size slider moved."""
        self.editing.set_brush(float(self.state.msam_brush))

    @reported
    def undo(self) -> None:
        """Undo the last paint/erase stroke (Ctrl+Z; with no stroke since the last run, the run)."""
        if self.editing.undo():
            self._publish_segments()
            self.say("Stroke undone.", "info")
        elif self.state.msam_can_undo_run:
            self.undo_run()
        else:
            self.say("Nothing to undo.", "info")

    @reported
    def undo_run(self) -> None:
        """Take back the last Segment/Propagate run (edits made since and locked muscles stay)."""
        volume_node = self._require_volume()
        self._require_idle("undo the run")
        slices = self.logic.undo_run(volume_node)
        self.editing.clear_history()
        runs_left, can_undo = self.logic.run_history(volume_node)
        self.state.msam_has_result = runs_left > 0
        self.state.msam_can_undo_run = can_undo
        if runs_left:
            self._apply_heatmap()
            self._publish_review()
        else:
            self.state.msam_queue, self.state.msam_remaining = [], 0
        self._publish_segments()
        self._refresh_clicks(force=True)
        self.say(f"Run undone on slice{'s' if len(slices) > 1 else ''} {', '.join(map(str, slices))}.", "info")

    def _axial_slice(self) -> int:
        """The axial view's slice (the image's own K index)."""
        return self.logic.slice_of(self.volume_node, self._axial_centre())[0]

    def _axial_centre(self) -> list[float]:
        m = self.views.slice_node(AXIAL).GetSliceToRAS()
        return [m.GetElement(r, 3) for r in range(3)]

    @reported
    def clear_on_slice(self) -> None:
        """Erase the chosen muscle on the axial view's slice (an edit, in the edit map)."""
        volume_node = self._require_volume()
        self._require_idle("clear the muscle")
        label, k = self._label(), self._axial_slice()
        n = self.logic.clear_muscle(volume_node, label, k)
        self._publish_segments()
        self.say(f"{muscle_name(label)} cleared on slice {k} ({n} voxels)." if n else
                 f"{muscle_name(label)} has no voxels on slice {k}.", "info")

    @reported
    def delete_muscle(self, label: Any) -> None:
        """Erase a muscle on every slice (from the segment list)."""
        volume_node = self._require_volume()
        self._require_idle("delete the muscle")
        n = self.logic.clear_muscle(volume_node, int(label))
        self._publish_segments()
        self.say(f"{muscle_name(int(label))} deleted ({n} voxels); Ctrl+Z does not bring it back, a new box does.", "info")

    @reported
    def segment_visibility(self, label: Any, visible: Any) -> None:
        """Show or hide one muscle in the views."""
        seg = self._segmentation()
        if seg is not None:
            self.logic.set_segment_display(seg, int(label), visible=bool(visible))
            self._publish_segments()

    @reported
    def segment_opacity_changed(self, **_: Any) -> None:
        """The segment opacity slider moved: every muscle's fill opacity."""
        seg = self._segmentation()
        if seg is not None:
            for row in self.state.msam_segments:
                self.logic.set_segment_display(seg, row["label"], opacity=float(self.state.msam_seg_opacity))

    def _publish_segments(self) -> None:
        """The segment list: each muscle present (or locked) with colour, voxel count, visibility, lock."""
        seg = self._segmentation()
        if seg is None:
            self.state.msam_segments = []
            return
        self.state.msam_segments = page_state.segment_rows(self.logic.segment_summary(self.volume_node, seg))

    @reported
    def window_changed(self, **_: Any) -> None:
        """A window/level preset was chosen."""
        if self.volume_node is not None:
            lo, hi = self.logic.set_window_level(self.volume_node, str(self.state.msam_window))
            self.say(f"Window {lo:.0f} to {hi:.0f} ({self.state.msam_window}). Drag in a view with the View tool to adjust.", "info")

    def _publish_slices(self) -> None:
        """Slice numbers in the view titles (which slice of how many each view shows)."""
        if self.volume_node is None or self.logic.loaded is None:
            return
        titles = dict(self.state.msam_view_titles)
        k, n = self.logic.slice_of(self.volume_node, self._axial_centre())
        titles["Red"] = f"Axial slice {k} (0-{n - 1})"
        if titles != self.state.msam_view_titles:
            self.state.msam_view_titles = titles
            self._refresh_clicks()
            self.state.flush()

    @reported
    def cursor(self, fx: Any, fy: Any, page_w: Any = 0, page_h: Any = 0) -> None:
        """The mouse moved over the axial view (fractions of this tab's view element of that size): what lies under it."""
        from .drag_box import fraction_to_ras, server_fraction  # noqa: PLC0415

        if self.volume_node is None:
            return
        node = self.views.slice_node(AXIAL)
        ras = fraction_to_ras(node, float(fx), server_fraction(node, float(fy), float(page_w), float(page_h)))
        out = self.logic.read_out(self.volume_node, ras)
        if out is None:
            self.state.msam_cursor = "outside the image"
            return
        unc = "" if out["uncertainty"] is None else f", uncertainty {out['uncertainty']:.2f} nats"
        self.state.msam_cursor = (f"slice {out['slice']}: intensity {out['intensity']:.0f}, "
                                  f"{out['muscle'] or 'no muscle'}{unc}")

    def _stroke_spared(self) -> None:
        with self.state:
            self.say("Locked (finished) muscles keep their voxels: the stroke left them as they were. "
                     "Unlock a muscle to paint over it.", "info")

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
        self._publish_segments()
        self._apply_tool()
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
        digest = self.logic.segmentation_digest(volume_node, seg)
        image_file = self.image_file  # the image this bundle belongs to, whatever is opened later
        loop = asyncio.get_running_loop()
        self._exporting = True
        try:
            folder = await loop.run_in_executor(None, write)  # the page stays live while the bundle is written
            zipped = await loop.run_in_executor(None, zip_bundle, folder, self.export_root / f"{name}.zip")
        finally:
            self._exporting = False
        self.exports[zipped.name] = zipped
        self._exported_digest = digest
        self.bundle_exported(folder, image_file)
        with self.state:
            self.state.msam_export = {"url": f"/musclesam/export/{zipped.name}", "name": zipped.name,
                                      "size": f"{zipped.stat().st_size / 1e6:.1f} MB", "folder": str(folder)}
            self.say(f"Exported to {folder} on the server. Download it as {zipped.name}. {edit_check_summary(folder)}", "success")

    # ------------------------------------------------------------------ page events
    @reported
    def key(self, key: Any) -> None:
        """Keyboard shortcuts (as in the desktop module and Slicer): see ``KEYS`` in ui.py."""
        k = str(key).lower()
        tools = {"b": "box", "c": "click", "d": "paint", "e": "erase", "v": "navigate"}
        slices = {"arrowup": 1, "arrowright": 1, "arrowdown": -1, "arrowleft": -1, "pageup": 5, "pagedown": -5}
        if k in tools:
            self.state.msam_tool = tools[k]
        elif k in slices:
            self.views.step_slice(slices[k])
        elif k in ("[", "]"):
            self.state.msam_brush = float(min(20.0, max(1.0, float(self.state.msam_brush) + (1.0 if k == "]" else -1.0))))
        elif k in ("s", "p", "n", "ctrl+z") and self.logic.busy:
            self.say("A run is in progress: wait for it or press Esc to cancel.", "info")
        else:
            {"s": self.segment, "p": self.propagate, "n": self.next_uncertain, "escape": self.cancel,
             "ctrl+z": self.undo}.get(k, lambda: None)()

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
