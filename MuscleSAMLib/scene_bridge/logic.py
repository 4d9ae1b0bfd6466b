"""MuscleSAMLogic: MRML nodes in, MRML nodes out; the engine runs on ONE persistent worker thread.

Rules every front end relies on:

* Every check (volume, boxes, ensemble, locks) happens before anything is submitted, and every MRML
  write happens in :meth:`Job.finish` on the calling (main) thread after the worker succeeded: a bad
  input, an error or a Cancel leaves the scene exactly as it was.
* One prompt at a time: starting a run while one is in flight raises :class:`Busy`.
* Only the voxels a run changed are written into the segmentation; completed (locked) segments never.
* State is keyed by volume node ID, and a closed scene's next case reuses those IDs
  (``vtkMRMLScene::Clear`` resets them): closing a scene drops it all, and a session is only served for
  the very volume it was built from (same ID, voxels and geometry).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..biomarkers import midline_column
from ..engine.embedding_cache import EmbeddingCache
from ..engine.propagation import propagate as propagate_box
from ..engine.review import FLAG_UNCERTAINTY_NATS
from ..engine.segmenter import Segmenter
from ..engine.types import BoxPrompt
from ..engine.volume_run import VolumeResult, segment_volume
from ..engine.worker import PersistentWorker
from ..errors import InputError, MuscleSAMError
from ..file_names import safe_file_name
from ..models.device import resolve_device
from ..models.loading import LoadedEnsemble, installed_spec, load_spec, missing_files, read_manifest
from ..labels import parse_label
from ..sample_data import muscle_names
from . import click_markers, clicks, geometry, overlays, prompts, review_table, segments
from .dicom_source import dicom_files_of
from .jobs import Busy, Job
from .mrml import find_owned_node, remove_owned_nodes
from .outcomes import NOT_CLICK_TRAINED, NOT_FOLLOWED, ClickOutcome, DisplaySettings, EnsembleChoice, RunOutcome
from ..engine.session import Session

Prompt = Any  # a BoxPrompt or a vtkMRMLMarkupsROINode


class MuscleSAMLogic:
    """The scene bridge (no Qt): see the module docstring and each method."""

    def __init__(self, flag_uncertainty_nats: float = FLAG_UNCERTAINTY_NATS, cache_bytes: int = 1 << 30) -> None:
        self.worker = PersistentWorker("musclesam-worker")
        self.cache = EmbeddingCache(cache_bytes)
        self.loaded: LoadedEnsemble | None = None
        self.display = DisplaySettings()
        self.flag_uncertainty_nats = float(flag_uncertainty_nats)
        self._sessions: dict[str, Session] = {}
        self._fat_nodes: dict[str, Any] = {}  # volume node ID -> its Dixon fat node (fat fraction columns)
        self._job: Job | None = None
        self._watched: list[tuple[Any, int]] = []  # (scene, observer tag): scene close drops every ID-keyed state

    # ------------------------------------------------------------------ ensemble
    @staticmethod
    def ensemble_choices(manifest: str | Path | None = None) -> list[EnsembleChoice]:
        """Entries of the manifest (the shipped one by default) for the ensemble selector."""
        m = read_manifest(manifest)
        default = m.get(None).name
        choices = []
        for e in m.ensembles:  # installed: its files and those of the entries it joins are there
            missing = tuple(str(p) for p in missing_files(m, e))
            choices.append(EnsembleChoice(e.name, e.name == default, not missing, e.licence, e.description, missing))
        return choices

    def load_ensemble(self, name: str | None = None, manifest: str | Path | None = None, device: str | None = None,
                      pump: Callable[[], Any] | None = None) -> LoadedEnsemble:
        """Load (checksums verified) on the worker thread; a missing file is a clear :class:`WeightsError`."""
        m = read_manifest(manifest)  # parsed once: every check before the worker starts
        spec = installed_spec(m, name)
        dev = resolve_device(device)
        self._check_idle()
        future, cancel = self.worker.submit(lambda cancel: load_spec(m, spec, dev))
        job: Job[Any] = Job(future, cancel, lambda loaded: loaded, self._close, what="loading the ensemble")
        self._job = job
        job.wait(pump)
        self.use_ensemble(job.finish())
        return self.loaded  # type: ignore[return-value]

    def use_ensemble(self, loaded: LoadedEnsemble) -> None:
        """Use an already loaded ensemble (tests, servers); previous sessions are dropped."""
        self.loaded = loaded
        self._sessions.clear()
        self.cache.clear()

    def forget_scene(self, *_: Any) -> None:
        """Drop everything keyed by node ID (sessions, fat images, cached embeddings) and cancel a run.

        Called on the scene's StartCloseEvent (observed from the first session on): after File > Close
        Scene the next case's nodes reuse the IDs, and must never be served the previous patient's maps,
        review queue or export contents.
        """
        self.cancel()
        self._sessions.clear()
        self._fat_nodes.clear()
        self.cache.clear()

    def _watch_scene(self, scene: Any) -> None:
        if scene is not None and not any(watched is scene for watched, _ in self._watched):
            self._watched.append((scene, scene.AddObserver(scene.StartCloseEvent, self.forget_scene)))

    @property
    def on_cpu(self) -> bool:
        """True when the loaded ensemble runs on the CPU (the module shows a persistent warning)."""
        return self.loaded is None or str(self.loaded.ensemble.device).startswith("cpu")

    # ------------------------------------------------------------------ sessions
    @staticmethod
    def _session_key(volume_node: Any) -> tuple:
        """What a session is valid for: the node ID, its voxels (image MTime) and its geometry."""
        return (volume_node.GetID(), volume_node.GetImageData().GetMTime(),
                tuple(np.round(geometry.ijk_to_world(volume_node).ravel(), 6)))

    def standing_boxes(self, volume_node: Any, boxes: Sequence[BoxPrompt]) -> list[BoxPrompt]:
        """The boxes whose answers stand now for the muscle of ``boxes`` (a run's boxes of one muscle on one slice)
        on that slice: after one run per leg, both legs' boxes; ``boxes`` when the session has none there."""
        s = self._existing_session(volume_node)
        lp = s.label_probs.get((boxes[-1].slice, boxes[-1].label)) if s is not None and boxes else None
        return [p.box for p in lp.boxes] if lp is not None else list(boxes)

    def _existing_session(self, volume_node: Any) -> Session | None:
        """The session built from this very volume, or None (none yet, or another case under the same ID)."""
        if volume_node is None or volume_node.GetImageData() is None:
            return None
        s = self._sessions.get(volume_node.GetID())
        return s if s is not None and s.key == self._session_key(volume_node) else None

    def session(self, volume_node: Any) -> Session:
        """The engine session of ``volume_node`` (rebuilt when its voxels or geometry changed)."""
        geometry.check_volume_node(volume_node)
        if self.loaded is None:
            raise InputError("no ensemble loaded: press Initialize first")
        key = self._session_key(volume_node)
        self._watch_scene(volume_node.GetScene())
        s = self._existing_session(volume_node)
        if s is None:
            vol = geometry.volume_from_node(volume_node)
            seg = Segmenter(self.loaded.ensemble, vol.canonical_array, volume_id=f"{key[0]}@{key[1]}", cache=self.cache,
                            worker=self.worker, spacing=vol.canonical_spacing)
            s = Session(key, vol, seg)
            self._sessions[volume_node.GetID()] = s
        return s

    def initialize(self, volume_node: Any, name: str | None = None, manifest: str | Path | None = None,
                   device: str | None = None, center_ras: Sequence[float] | None = None,
                   pump: Callable[[], Any] | None = None) -> Session:
        """Load the ensemble (if needed) and encode the slice at ``center_ras`` (default: middle) and its neighbours."""
        geometry.check_volume_node(volume_node)
        if self.loaded is None or (name is not None and self.loaded.ensemble.spec.name != name):
            self.load_ensemble(name, manifest, device, pump)
        s = self.session(volume_node)
        n = s.segmenter.shape[0]
        k = n // 2
        if center_ras is not None:
            k = int(np.clip(np.floor(geometry.ras_to_canonical(s.volume, center_ras)[0, 2] + 0.5), 0, n - 1))
        self._check_idle()
        future, cancel = s.segmenter.precompute(k, radius=1)
        job: Job[Any] = Job(future, cancel, lambda done: done, self._close, what="encoding the current slice")
        self._job = job
        job.wait(pump)
        job.finish()
        return s

    # ------------------------------------------------------------------ prompts
    def box_from_roi(self, volume_node: Any, roi_node: Any, label: Any | None = None) -> BoxPrompt:
        """The axial box prompt of a markups ROI (RAS -> canonical pixels; see prompts.py)."""
        geometry.check_volume_node(volume_node)
        return prompts.box_from_roi(self._volume(volume_node), roi_node, label)

    def box_from_ras(self, volume_node: Any, label: Any, corner0: Sequence[float], corner1: Sequence[float]) -> BoxPrompt:
        """A box from two world-RAS corners on one axial slice."""
        geometry.check_volume_node(volume_node)
        return prompts.box_from_ras(self._volume(volume_node), label, corner0, corner1)

    def box_from_drawing(self, volume_node: Any, label: Any, corner0: Sequence[float], corner1: Sequence[float],
                         source: str = "drawn box") -> BoxPrompt:
        """A box dragged on an axial view: as :meth:`box_from_ras`, but one reaching past the image or lying in
        air is refused with a message (see prompts.drawn_box)."""
        geometry.check_volume_node(volume_node)
        return prompts.drawn_box(self._volume(volume_node), label, corner0, corner1, source)

    @staticmethod
    def new_box_roi(scene: Any, label: Any, center: Sequence[float] | None = None, size: Sequence[float] | None = None) -> Any:
        """A new ROI node tagged with muscle ``label`` (to place interactively or set directly)."""
        return prompts.new_box_roi(scene, label, center, size)

    @staticmethod
    def start_box_placement(scene: Any, label: Any) -> Any:
        """A new ROI for ``label`` and the scene's interaction node switched to placing it."""
        roi = prompts.new_box_roi(scene, label)
        _place_mode(scene, roi, "vtkMRMLMarkupsROINode", persistent=False)
        return roi

    @staticmethod
    def start_click_placement(scene: Any) -> Any:
        """A fiducial node that takes clicks (desktop Click tool): the interaction node stays in place mode
        (persistent) with it as the active place node; each placed point is one click for :meth:`add_click`."""
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName("MuscleSAM click"))
        node.SetAttribute("MuscleSAM.Role", "click input")
        node.SetHideFromEditors(True)
        _place_mode(scene, node, "vtkMRMLMarkupsFiducialNode", persistent=True)
        return node

    @staticmethod
    def stop_click_placement(scene: Any, node: Any | None) -> None:
        """End the Click tool: back to view/transform mode and the click-taking node removed."""
        interaction = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
        if interaction is not None:
            interaction.SetPlaceModePersistence(0)
            interaction.SwitchToViewTransformMode()
        if node is not None and node.GetScene() is scene:
            scene.RemoveNode(node)

    def boxes_from_labelmap(self, volume_node: Any, labelmap_node: Any, values: Iterable[int] | None = None,
                            slices: Iterable[int] | None = None) -> list[BoxPrompt]:
        """One tight box per muscle component per axial slice of a label map on the volume's grid
        (e.g. an earlier segmentation, or reference labels in a self-test); ``slices`` are the node's K."""
        from ..engine.boxes import boxes_from_labels  # noqa: PLC0415

        vol = self._volume(volume_node)
        labels = geometry.volume_from_node_labels(labelmap_node, vol)
        canon_slices = None
        if slices is not None:
            wanted = {int(k) for k in slices}
            canon_slices = [k for k in range(labels.shape[0]) if geometry.stored_slice_index(vol, k) in wanted]
        return boxes_from_labels(labels, values=values, slices=canon_slices)

    def _volume(self, volume_node: Any):
        return self.session(volume_node).volume if self.loaded is not None else geometry.volume_from_node(volume_node)

    def _boxes(self, volume_node: Any, items: Iterable[Prompt]) -> list[BoxPrompt]:
        vol = self.session(volume_node).volume
        out = []
        for item in items:
            if item is not None:
                out.append(prompts.check_box(vol, item) if isinstance(item, BoxPrompt) else prompts.box_from_roi(vol, item))
        if not out:
            raise InputError("no box: place a box around a muscle first")
        return out

    # ------------------------------------------------------------------ runs
    @property
    def busy(self) -> bool:
        """True while a prediction is in flight (a second prompt is refused)."""
        return self._job is not None and not self._job.finished

    def _check_idle(self) -> None:
        if self.busy:
            raise Busy("a prediction is already running; wait for it or press Cancel")

    def _close(self, job: Job) -> None:
        if self._job is job:
            self._job = None

    def cancel(self) -> None:
        """Cancel the running prediction (and anything queued on the worker)."""
        if self._job is not None:
            self._job.cancel()
        self.worker.cancel_all()

    def segmentation_for(self, volume_node: Any) -> Any | None:
        """The muscle segmentation MuscleSAM created for ``volume_node`` (None before the first run)."""
        return find_owned_node(volume_node.GetScene(), "vtkMRMLSegmentationNode", "segmentation", volume_node.GetID())

    def _before(self, volume_node: Any, seg_node: Any | None) -> tuple[Any | None, np.ndarray, frozenset[int]]:
        seg_node = seg_node or self.segmentation_for(volume_node)
        dims = volume_node.GetImageData().GetDimensions()
        if seg_node is None:
            return None, np.zeros((dims[2], dims[1], dims[0]), np.uint8), frozenset()
        return seg_node, segments.read_labels(seg_node, volume_node), segments.locked_labels(seg_node)

    def start_segment(self, volume_node: Any, boxes: Iterable[Prompt], segmentation_node: Any | None = None) -> Job[RunOutcome]:
        """Submit a Segment run for ``boxes`` (BoxPrompts or ROI nodes); finish() writes the scene."""
        self._check_idle()
        s = self.session(volume_node)
        return self._submit_boxes(volume_node, s, self._boxes(volume_node, boxes), segmentation_node)

    def _submit_boxes(self, volume_node: Any, s: Session, box_list: list[BoxPrompt], segmentation_node: Any | None,
                      plan: clicks.ClickPlan | None = None) -> Job:
        """Submit a run of ``box_list``; finish() writes the scene. With a click ``plan`` (the clicked muscle's
        boxes on one slice), the run changes only that muscle, and only where the user did not edit."""
        seg_node, before, locked = self._before(volume_node, segmentation_node)
        for b in box_list:
            if b.label in locked:
                what = "click on it" if plan is not None else "segment it again"
                raise InputError(f"{muscle_names()[b.label]['name']} is locked (completed); unlock it to {what}")
        current = geometry.to_canonical(before, s.volume)
        started = time.perf_counter()

        earlier = s.earlier_windows()

        def work(cancel) -> VolumeResult:
            return segment_volume(s.segmenter, box_list, current=current, locked=locked, cancel=cancel,
                                  earlier=earlier)

        def finish(result: VolumeResult) -> RunOutcome:
            if plan is None:
                return self._apply(volume_node, seg_node, s, before, box_list, result, {}, started)
            return self._apply_click(volume_node, seg_node, s, before, current, plan, result, started)

        future, cancel = self.worker.submit(work)
        self._job = Job(future, cancel, finish, self._close, what="segmentation" if plan is None else "click")
        return self._job

    def segment(self, volume_node: Any, boxes: Iterable[Prompt], segmentation_node: Any | None = None,
                pump: Callable[[], Any] | None = None) -> RunOutcome:
        """Segment ``boxes`` and write the result (blocking; ``pump`` keeps a UI responsive)."""
        job = self.start_segment(volume_node, boxes, segmentation_node)
        job.wait(pump)
        return job.finish()

    def start_propagate(self, volume_node: Any, box: Prompt | Sequence[Prompt], segmentation_node: Any | None = None,
                        direction: int = 0, max_steps: int | None = None) -> Job[RunOutcome]:
        """Submit propagation of ``box`` through neighbouring slices (stops on vanishing/uncertain masks).

        ``box`` may be several boxes (one per leg, ``prompts.propagation_starts``): each walks on its own, one
        after the other on the worker, and the slices they keep run as one Segment. The stop notes then name
        each walk by the side of the image its box lies on.
        """
        self._check_idle()
        s = self.session(volume_node)
        starts = self._boxes(volume_node, list(box) if isinstance(box, (list, tuple)) else [box])
        seg_node, before, locked = self._before(volume_node, segmentation_node)
        for start in starts:
            if start.label in locked:
                raise InputError(f"{muscle_names()[start.label]['name']} is locked (completed); unlock it to propagate it")
        current = geometry.to_canonical(before, s.volume)
        seg = s.segmenter
        started = time.perf_counter()
        earlier = s.earlier_windows()
        # the midline the engine's leg crops use where it has them: each walk is named after its crop's side
        midline = seg.layout.midline if seg.layout is not None else midline_column(s.prediction, s.volume.canonical_array)
        names = prompts.walk_names(starts, midline)

        def note(name: str, stop) -> str:  # one walk's stop, at the slice number the user sees
            return name + stop.summary(geometry.stored_slice_index(s.volume, stop.stopped_at))

        def work(cancel):
            walks = [propagate_box(seg.predict_box, start, seg.shape[0], direction=direction, max_steps=max_steps,
                                   cancel=cancel, slice_shape=seg.shape[1:],
                                   min_iou_pred=seg.ensemble.spec.propagation_min_iou_pred) for start in starts]
            boxes = [p.box for res in walks for p in res.predictions]
            if not boxes:
                raise InputError("propagation found nothing to keep: " + "; ".join(
                    note(name, next(iter(res.stops.values()))) for name, res in zip(names, walks)))
            result = segment_volume(seg, boxes, current=current, locked=locked, cancel=cancel, earlier=earlier)
            return result, walks, boxes

        def finish(out) -> RunOutcome:
            result, walks, boxes = out
            stops = {d: "; ".join(note(name, res.stops[d]) for name, res in zip(names, walks) if d in res.stops)
                     for d in (1, -1) if any(d in res.stops for res in walks)}
            return self._apply(volume_node, seg_node, s, before, boxes, result, stops, started)

        future, cancel = self.worker.submit(work)
        self._job = Job(future, cancel, finish, self._close, what="propagation")
        return self._job

    def propagate(self, volume_node: Any, box: Prompt | Sequence[Prompt], segmentation_node: Any | None = None,
                  direction: int = 0, max_steps: int | None = None, pump: Callable[[], Any] | None = None) -> RunOutcome:
        """Propagate ``box`` (or several, see :meth:`start_propagate`) and write the result (blocking; ``pump``
        keeps a UI responsive)."""
        job = self.start_propagate(volume_node, box, segmentation_node, direction, max_steps)
        job.wait(pump)
        return job.finish()

    def _apply(self, volume_node: Any, seg_node: Any | None, s: Session, before: np.ndarray, boxes: list[BoxPrompt],
               result: VolumeResult, stops: dict[int, str], started: float, action: str | None = None) -> RunOutcome:
        """Main thread: merge the run into the session and write segments, maps and the review table."""
        touched = s.merge(result)
        s.boxes.extend(boxes)
        s.log.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "action": action or ("propagate" if stops else "segment"),
                      "boxes": [{"label": b.label, "slice": b.slice, "xyxy": list(b.xyxy), "source": b.source,
                                 **({"points": [list(p) for p in b.points]} if b.points else {})} for b in boxes],
                      "rejected": len(result.rejected), "seconds": round(time.perf_counter() - started, 3)})
        after = geometry.to_stored(result.labels, s.volume)
        if seg_node is None:
            seg_node = self.segmentation_for(volume_node) or segments.new_segmentation(volume_node)
            seg_node.SetAttribute("MuscleSAM.Role", "segmentation")
            seg_node.SetAttribute("MuscleSAM.VolumeID", volume_node.GetID())
        else:
            segments.prepare_segmentation(seg_node, volume_node)
        changed = segments.write_changes(seg_node, volume_node, before, after)
        diff = np.flatnonzero(before != after)
        s.undo_runs[-1].segmentation_changes = (diff, before.reshape(-1)[diff], after.reshape(-1)[diff])
        predicted = sorted({b.label for b in boxes})
        flagged = s.flagged(self.flag_uncertainty_nats)
        segments.set_statuses(seg_node, {lab: segments.STATUS_FLAGGED if lab in flagged else segments.STATUS_IN_PROGRESS
                                         for lab in predicted})
        heat, prob, table = self._write_maps(volume_node, s)
        rejected = [(b.source or f"label {b.label} slice {b.slice}", why) for b, why in result.rejected]
        return RunOutcome(seg_node, heat, prob, table, boxes, changed, sorted(flagged & set(predicted)), rejected,
                          [geometry.stored_slice_index(s.volume, k) for k in touched], time.perf_counter() - started, stops,
                          self._dixon_warnings(volume_node, s))

    def _dixon_warnings(self, volume_node: Any, s: Session) -> list[str]:
        """The CLI's swapped-pair rule on the session's prediction, when a fat image is set."""
        from ..dixon_checks import swapped_after_segmentation  # noqa: PLC0415

        fat = self._fat_array(volume_node, s)
        why = swapped_after_segmentation(s.prediction, fat, s.volume.canonical_array) if fat is not None else None
        return [f"Dixon pair of '{volume_node.GetName()}': {why}"] if why else []

    def _write_maps(self, volume_node: Any, s: Session) -> tuple[Any, Any, Any]:
        """Heatmap, probability volume, agreement outlines and review table from the session's maps."""
        heat = self._show_heatmap(volume_node, s)
        prob = overlays.write_float_volume(volume_node, "probability", f"{volume_node.GetName()} probability",
                                           geometry.to_stored(s.probability, s.volume))
        overlays.style_probability(prob)
        if self.display.agreement_outlines and s.runs:
            self.show_agreement_outlines(volume_node, True)
        table = review_table.write_review_table(volume_node, s, self._fat_array(volume_node, s))
        click_markers.write_click_markers(volume_node, s)
        return heat, prob, table

    # ------------------------------------------------------------------ clicks (issue 17)
    def start_add_click(self, volume_node: Any, label: Any, ras_point: Sequence[float], positive: bool = True,
                        segmentation_node: Any | None = None, slice_index: int | None = None) -> Job[ClickOutcome]:
        """Submit a click on muscle ``label`` at world point ``ras_point`` (``positive``: "this is muscle", else
        "this is not"); finish() writes the scene and returns a :class:`ClickOutcome`.

        The click refines the box the last run used for that muscle on the slice under the point (of two boxes,
        the one whose answer window holds the point, else the nearest); all of that muscle's boxes there run
        again through the path a box run uses (mask, heatmap, review scores, Undo run). The run changes only
        that muscle, never a voxel the user painted or erased, never a locked muscle. ``slice_index``: the
        slice the view shows (the node's K); a point on another slice is refused. Every refusal names the
        point and changes nothing.
        """
        self._check_idle()
        s = self.session(volume_node)
        lab = parse_label(label)
        k, x, y = clicks.click_pixel(s.volume, ras_point, slice_index)
        plan = clicks.plan_click(s, lab, k, x, y, bool(positive), ras_point)
        return self._submit_boxes(volume_node, s, list(plan.boxes), segmentation_node, plan)

    def add_click(self, volume_node: Any, label: Any, ras_point: Sequence[float], positive: bool = True,
                  segmentation_node: Any | None = None, slice_index: int | None = None,
                  pump: Callable[[], Any] | None = None) -> ClickOutcome:
        """Add a click and write the result (blocking; see :meth:`start_add_click`)."""
        job = self.start_add_click(volume_node, label, ras_point, positive, segmentation_node, slice_index)
        job.wait(pump)
        return job.finish()

    def start_undo_click(self, volume_node: Any, label: Any, slice_index: int,
                         segmentation_node: Any | None = None) -> Job[ClickOutcome]:
        """Submit taking back the last click on muscle ``label`` on slice ``slice_index`` (the node's K): the
        earlier answer comes from the engine's cache (no decoder call while clicks remain on that box)."""
        self._check_idle()
        s = self.session(volume_node)
        lab = parse_label(label)
        plan = clicks.plan_undo(s, lab, clicks.canonical_slice(s.volume, slice_index))
        return self._submit_boxes(volume_node, s, list(plan.boxes), segmentation_node, plan)

    def undo_click(self, volume_node: Any, label: Any, slice_index: int, segmentation_node: Any | None = None,
                   pump: Callable[[], Any] | None = None) -> ClickOutcome:
        """Take back the last click and write the result (blocking; see :meth:`start_undo_click`)."""
        job = self.start_undo_click(volume_node, label, slice_index, segmentation_node)
        job.wait(pump)
        return job.finish()

    def _apply_click(self, volume_node: Any, seg_node: Any | None, s: Session, before: np.ndarray, current: np.ndarray,
                     plan: clicks.ClickPlan, result: VolumeResult, started: float) -> ClickOutcome:
        """Main thread: a click run, held to its muscle and the user's edits, then written as any run."""
        if result.rejected:
            _, why = result.rejected[0]
            raise InputError(f"the click on {clicks.muscle_name(plan.label)} was not used: {why}; nothing changed")
        k = plan.slice
        kept = clicks.keep_edits_and_neighbours(result.labels[k], result.model_labels[k], current[k], s.prediction[k],
                                                plan.label)
        outcome = self._apply(volume_node, seg_node, s, before, list(plan.boxes), result, {}, started,
                              action="click" if plan.added else "undo click")
        box = plan.boxes[plan.index]
        slice_k = geometry.stored_slice_index(s.volume, k)
        x, y, sign = plan.point
        s.log[-1]["click"] = {"slice": slice_k, "label": plan.label, "xyxy": list(box.xyxy), "added": plan.added,
                              "point": [x, y, sign]}
        changes = s.undo_runs[-1].segmentation_changes
        followed = s.segmenter.followed_last_click(box) if plan.added else None
        caveat = NOT_FOLLOWED if followed is False else ("" if s.segmenter.ensemble.trained_for_clicks
                                                         else NOT_CLICK_TRAINED)
        return ClickOutcome(outcome, plan.label, slice_k, geometry.canonical_to_ras(s.volume, x, y, k), bool(sign),
                            plan.added, len(box.points), int(changes[0].size) if changes is not None else 0, kept,
                            caveat, followed)

    def suggested_click(self, volume_node: Any, label: Any, slice_index: int) -> tuple[float, float, float] | None:
        """World RAS of the suggested next click for muscle ``label`` on slice ``slice_index`` (the node's K): the
        centre of the most uncertain region of that muscle's own ensemble there; None when there is no
        prediction of it there or nothing is uncertain."""
        s = self._existing_session(volume_node)
        if s is None:
            return None
        k = clicks.canonical_slice(s.volume, slice_index)
        xy = clicks.suggestion(s, parse_label(label), k)
        return None if xy is None else geometry.canonical_to_ras(s.volume, xy[0], xy[1], k)

    def show_suggested_click(self, volume_node: Any, label: Any | None = None,
                             slice_index: int | None = None) -> tuple[float, float, float] | None:
        """Put the suggested-click marker (a yellow star) at :meth:`suggested_click`; with no ``label`` (or no
        suggestion) take it away. Returns where it is."""
        ras = None if label is None or slice_index is None else self.suggested_click(volume_node, label, slice_index)
        click_markers.write_suggestion(volume_node, ras)
        return ras

    def clicks_on_slice(self, volume_node: Any, slice_index: int, label: Any | None = None) -> list[dict[str, Any]]:
        """The clicks in effect on slice ``slice_index`` (the node's K): label, RAS, positive; one muscle with ``label``."""
        s = self._existing_session(volume_node)
        if s is None:
            return []
        k = clicks.canonical_slice(s.volume, slice_index)
        lab = None if label is None else parse_label(label)
        return [{"label": lb, "ras": geometry.canonical_to_ras(s.volume, x, y, kk), "positive": bool(sign)}
                for kk, lb, (x, y, sign) in click_markers.clicks_in_effect(s) if kk == k and lab in (None, lb)]

    @staticmethod
    def click_marker_points(volume_node: Any) -> dict[str, list[tuple[float, float, float]]]:
        """World RAS of the markers shown: "positive" and "negative" clicks (every slice) and "suggested"."""
        return {key: click_markers.marker_points(volume_node, role) for key, role in
                (("positive", click_markers.POSITIVE), ("negative", click_markers.NEGATIVE),
                 ("suggested", click_markers.SUGGESTED))}

    def undo_run(self, volume_node: Any, segmentation_node: Any | None = None) -> list[int]:
        """Take back the last Segment/Propagate run: the voxels it wrote that nobody edited since go back
        to what they were, and the prediction, maps, review scores and prompts to their state before it.

        Voxels painted or erased after the run stay as they are, and so does every voxel a locked
        muscle holds or held before the run (a locked muscle is never changed by a run or its undo). Returns the
        slices (stored K) it restored; :class:`InputError` when there is no run to undo.
        """
        self._check_idle()
        s = self._sessions.get(volume_node.GetID()) if volume_node is not None else None
        if s is None or not s.undo_runs:
            raise InputError("no Segment or Propagate run to undo on this image")
        seg_node = segmentation_node or self.segmentation_for(volume_node)
        changes = s.undo_runs[-1].segmentation_changes
        if seg_node is not None and changes is not None:
            index, was, wrote = changes
            now = segments.read_labels(seg_node, volume_node)
            target = now.copy()
            flat = target.reshape(-1)
            locked = sorted(segments.locked_labels(seg_node))
            untouched = (flat[index] == wrote) & ~np.isin(wrote, locked) & ~np.isin(was, locked)
            flat[index[untouched]] = was[untouched]
            segments.write_changes(seg_node, volume_node, now, target)
        _, slices = s.undo_last_run()
        s.log.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "action": "undo run",
                      "slices": [geometry.stored_slice_index(s.volume, k) for k in slices]})
        self._write_maps(volume_node, s)
        return [geometry.stored_slice_index(s.volume, k) for k in slices]

    def clear_muscle(self, volume_node: Any, label: Any, slice_index: int | None = None,
                     segmentation_node: Any | None = None) -> int:
        """Erase muscle ``label`` on axial slice ``slice_index`` (the node's own K; None: every slice);
        returns the voxels erased. An edit like any other (it shows in the edit map); a locked muscle is refused.
        """
        lab = parse_label(label)
        seg_node = segmentation_node or self.segmentation_for(volume_node)
        if seg_node is None:
            raise InputError("nothing to clear yet: segment first")
        if lab in segments.locked_labels(seg_node):
            raise InputError(f"{muscle_names()[lab]['name']} is locked (finished); unlock it to clear it")
        now = segments.read_labels(seg_node, volume_node)
        where = slice(None) if slice_index is None else int(slice_index)
        if slice_index is not None and not 0 <= int(slice_index) < now.shape[0]:
            raise InputError(f"slice {slice_index} does not exist ({now.shape[0]} slices)")
        target = now.copy()
        hit = target[where] == lab
        target[where][hit] = 0
        if hit.any():
            segments.write_changes(seg_node, volume_node, now, target)
        return int(hit.sum())

    def slice_of(self, volume_node: Any, ras: Sequence[float]) -> tuple[int, int]:
        """(axial slice through world point ``ras`` as the node's own K, number of slices)."""
        s = self._sessions.get(volume_node.GetID())
        vol = s.volume if s is not None else geometry.volume_from_node(volume_node)
        n = vol.canonical_array.shape[0]
        k = int(np.clip(np.floor(geometry.ras_to_canonical(vol, np.array([ras], float))[0, 2] + 0.5), 0, n - 1))
        return geometry.stored_slice_index(vol, k), n

    @staticmethod
    def segmentation_digest(volume_node: Any, segmentation_node: Any) -> str:
        """A fingerprint of the muscle labels and statuses (a front end asks before discarding unsaved work)."""
        import hashlib  # noqa: PLC0415

        labels = segments.read_labels(segmentation_node, volume_node)
        statuses = sorted((lab, segments.segment_status(segmentation_node, lab)) for lab in segments.muscle_segment_ids(segmentation_node))
        return hashlib.sha1(labels.tobytes() + repr(statuses).encode()).hexdigest()

    @staticmethod
    def segment_summary(volume_node: Any, segmentation_node: Any) -> list[dict[str, Any]]:
        """Per muscle segment: label, voxels, status, visible, fill opacity (for a segment list)."""
        labels = segments.read_labels(segmentation_node, volume_node)
        counts = np.bincount(labels.ravel(), minlength=256)
        display = segmentation_node.GetDisplayNode()
        out = []
        for lab, sid in sorted(segments.muscle_segment_ids(segmentation_node).items()):
            out.append({"label": lab, "voxels": int(counts[lab]), "status": segments.segment_status(segmentation_node, lab),
                        "visible": bool(display.GetSegmentVisibility(sid)) if display is not None else True,
                        "opacity": float(display.GetSegmentOpacity2DFill(sid)) if display is not None else 1.0})
        return out

    def set_window_level(self, volume_node: Any, preset: str) -> tuple[float, float]:
        """Window the MRI by a named preset (see overlays.WINDOW_PRESETS); returns (low, high)."""
        geometry.check_volume_node(volume_node)
        return overlays.set_window_level(volume_node, preset)

    @staticmethod
    def set_segment_display(segmentation_node: Any, label: Any, visible: bool | None = None,
                            opacity: float | None = None) -> None:
        """Show/hide a muscle's segment or set its fill opacity (0..1) in the views."""
        segments.set_segment_display(segmentation_node, parse_label(label), visible, opacity)

    def read_out(self, volume_node: Any, ras: Sequence[float]) -> dict[str, Any] | None:
        """What lies at world point ``ras``: stored voxel (i, j, k), intensity, muscle, total uncertainty;
        None outside the image."""
        geometry.check_volume_node(volume_node)
        s = self._sessions.get(volume_node.GetID())
        vol = s.volume if s is not None else geometry.volume_from_node(volume_node)
        col, row, k = (int(np.floor(v + 0.5)) for v in geometry.ras_to_canonical(vol, np.array([ras], float))[0])
        n, rows, cols = vol.canonical_array.shape
        if not (0 <= k < n and 0 <= row < rows and 0 <= col < cols):
            return None
        out: dict[str, Any] = {"slice": geometry.stored_slice_index(vol, k),
                               "intensity": float(vol.canonical_array[k, row, col]), "muscle": "", "uncertainty": None}
        seg_node = self.segmentation_for(volume_node)
        if seg_node is not None:
            label = int(geometry.to_canonical(segments.read_labels(seg_node, volume_node), vol)[k, row, col])
            out["muscle"] = muscle_names().get(label, {}).get("abbrev", "") if label else ""
        if s is not None and s.runs:
            out["uncertainty"] = float(s.uncertainty(self.display.kind)[k, row, col])
        return out

    # ------------------------------------------------------------------ display
    def show_uncertainty(self, volume_node: Any, kind: str | None = None, opacity: float | None = None,
                         threshold: float | None = None, window_max: float | None = None) -> Any:
        """Write/refresh the heatmap of ``kind`` and show it over the MRI (settings are remembered)."""
        s = self._session_with_run(volume_node)
        d = self.display
        if kind is not None and kind not in overlays.KINDS:
            raise InputError(f"unknown uncertainty kind {kind!r}; use one of {', '.join(overlays.KINDS)}")
        d.kind = kind or d.kind
        d.opacity = d.opacity if opacity is None else float(opacity)
        d.threshold = d.threshold if threshold is None else float(threshold)
        d.window_max = d.window_max if window_max is None else float(window_max)
        return self._show_heatmap(volume_node, s)

    def _show_heatmap(self, volume_node: Any, s: Session) -> Any:
        d = self.display
        node = overlays.write_float_volume(volume_node, "uncertainty", f"{volume_node.GetName()} uncertainty",
                                           geometry.to_stored(s.uncertainty(d.kind), s.volume))
        node.SetAttribute("MuscleSAM.UncertaintyKind", d.kind)
        overlays.style_heatmap(node, d.threshold, d.window_max)
        legend = overlays.add_color_legend(node, f"{d.kind} uncertainty (nats)")
        if legend is not None and not d.legend_in_views:
            overlays.hide_color_legend(node)
        overlays.show_as_foreground(volume_node, node, d.opacity)
        return node

    def show_agreement_outlines(self, volume_node: Any, show: bool = True) -> Any | None:
        """'All members agree' / 'any member' outlines (a separate segmentation); hidden when ``show`` is False."""
        self.display.agreement_outlines = bool(show)
        existing = find_owned_node(volume_node.GetScene(), "vtkMRMLSegmentationNode", "agreement", volume_node.GetID())
        if not show:
            if existing is not None and existing.GetDisplayNode() is not None:
                existing.GetDisplayNode().SetVisibility(False)
            return existing
        s = self._session_with_run(volume_node)
        node = overlays.write_agreement(volume_node, geometry.to_stored(s.all_agree.astype(np.uint8), s.volume),
                                        geometry.to_stored(s.any_member.astype(np.uint8), s.volume))
        node.GetDisplayNode().SetVisibility(True)
        return node

    def _session_with_run(self, volume_node: Any) -> Session:
        s = self._existing_session(volume_node)
        if s is None or not s.runs:
            raise InputError("no prediction yet for this volume: place a box and press Segment first")
        return s

    # ------------------------------------------------------------------ review
    def set_fat_image(self, volume_node: Any, fat_node: Any | None) -> str | None:
        """Use ``fat_node`` (Dixon fat, on ``volume_node``'s grid; None: none) for the fat fraction columns.

        Returns a one-line warning for the front end to show when the pair looks implausible (the CLI's
        rule, :mod:`MuscleSAMLib.dixon_checks`: the same image twice, a label map as fat), else None."""
        from ..dixon_checks import implausibility  # noqa: PLC0415

        geometry.check_volume_node(volume_node)
        if fat_node is None:
            self._fat_nodes.pop(volume_node.GetID(), None)
            return None
        self._check_fat_grid(volume_node, fat_node)
        self._fat_nodes[volume_node.GetID()] = fat_node
        why = implausibility(geometry.volume_from_node(fat_node), geometry.volume_from_node(volume_node))
        return f"Dixon pair '{fat_node.GetName()}' / '{volume_node.GetName()}': {why}" if why else None

    @staticmethod
    def _check_fat_grid(volume_node: Any, fat_node: Any) -> None:
        """Refuse a fat node off ``volume_node``'s grid; geometry only (no voxel copy: it runs before every
        Segment in the desktop module)."""
        geometry.check_volume_node(fat_node)
        same = (tuple(fat_node.GetImageData().GetDimensions()) == tuple(volume_node.GetImageData().GetDimensions())
                and np.allclose(geometry.ijk_to_world(fat_node), geometry.ijk_to_world(volume_node), atol=1e-4))
        if not same:
            raise InputError(f"fat image '{fat_node.GetName()}' is not on the grid of '{volume_node.GetName()}'; "
                             "choose the fat image of the same Dixon acquisition")

    def _fat_array(self, volume_node: Any, s: Session) -> np.ndarray | None:
        """The set fat image (canonical), or None: none set, removed from the scene, or no longer on the grid."""
        fat_node = self._fat_nodes.get(volume_node.GetID())
        if fat_node is None or fat_node.GetScene() is None:
            return None
        try:
            fat = geometry.volume_from_node(fat_node)
        except MuscleSAMError:  # emptied or made invalid since it was chosen: no fat fraction columns
            return None
        return fat.canonical_array if fat.same_grid(s.volume) else None

    def review_table(self, volume_node: Any) -> Any:
        """The review table node of ``volume_node`` (refreshed; fat fraction columns when a fat image is set)."""
        s = self._session_with_run(volume_node)
        return review_table.write_review_table(volume_node, s, self._fat_array(volume_node, s))

    def next_uncertain(self, volume_node: Any, jump: bool = True) -> review_table.ReviewTarget | None:
        """The next most uncertain (slice, muscle) not yet visited; slice views jump there when ``jump``."""
        s = self._session_with_run(volume_node)
        target = review_table.review_target(s)
        if target is not None:
            s.log.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "action": "review", "slice": target.slice,
                          "label": target.label, "uncertainty_nats": round(target.uncertainty, 4)})
        if target is not None and jump:
            review_table.jump_slices(volume_node.GetScene(), target.ras)
            review_table.mark_target(volume_node, target)
        return target

    def review_target_at(self, volume_node: Any, rank: int, jump: bool = True) -> review_table.ReviewTarget:
        """The review table's row ``rank`` (1 = most uncertain) as a target, marked visited; slice views
        jump there when ``jump``."""
        s = self._session_with_run(volume_node)
        target = review_table.review_target(s, rank=int(rank))
        if target is None:
            raise InputError(f"the review table has no row {rank}")
        s.log.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "action": "review", "slice": target.slice,
                      "label": target.label, "uncertainty_nats": round(target.uncertainty, 4)})
        if jump:
            review_table.jump_slices(volume_node.GetScene(), target.ras)
            review_table.mark_target(volume_node, target)
        return target

    def remaining_reviews(self, volume_node: Any) -> int:
        """How many review places are left (for the "Next most uncertain (N)" button)."""
        s = self._existing_session(volume_node)
        return s.remaining() if s is not None else 0

    # ------------------------------------------------------------------ segments and export
    @staticmethod
    def lock_segment(segmentation_node: Any, label: Any, locked: bool = True) -> None:
        """Mark a muscle completed (locked: never overwritten) or back to in progress."""
        lab = parse_label(label)
        segments.set_segment_status(segmentation_node, lab, segments.STATUS_COMPLETED if locked else segments.STATUS_IN_PROGRESS)

    @staticmethod
    def spare_locked(segmentation_node: Any, modifier_labelmap: Any, edited_segment_id: str | None) -> bool:
        """Before a paint/erase stroke is applied: clear the stroke where a locked muscle (other than the
        edited one) lies, so painting never erases a finished muscle; True when part of it was cleared."""
        return segments.spare_locked(segmentation_node, modifier_labelmap, edited_segment_id)

    @staticmethod
    def locked_labels(segmentation_node: Any | None) -> frozenset[int]:
        """Muscles marked finished (locked) in ``segmentation_node`` (none when it is None)."""
        return segments.locked_labels(segmentation_node) if segmentation_node is not None else frozenset()

    # ------------------------------------------------------------------ scene helpers (front ends call these, never the submodules)
    @staticmethod
    def add_volume(scene: Any, volume: Any, name: str) -> Any:
        """A scalar volume node in ``scene`` for an engine Volume (read by the engine's reader), exact geometry."""
        return geometry.add_volume_node(scene, volume, name)

    @staticmethod
    def remove_case(scene: Any, volume_node: Any | None) -> None:
        """Remove ``volume_node`` and every node MuscleSAM made for it (segments, maps, table, box ROIs)."""
        remove_owned_nodes(scene, volume_node)

    def slice_number(self, volume_node: Any, canonical_slice: int) -> int:
        """The slice number users see (the node's own axial index K) of an engine (canonical) slice."""
        return geometry.stored_slice_index(self._volume(volume_node), canonical_slice)

    def box_roi(self, volume_node: Any, box: BoxPrompt, thickness: float = 1.0) -> Any:
        """A markups ROI exactly over ``box``, ``thickness`` slices thick, in the volume node's scene."""
        return prompts.roi_for_box(volume_node.GetScene(), self._volume(volume_node), box, thickness=thickness)

    def precompute(self, volume_node: Any, canonical_slice: int | None = None, radius: int = 1) -> None:
        """Encode a slice (the middle one when None) and its neighbours on the worker, in the background,
        so the first box there only runs the decoders."""
        seg = self.session(volume_node).segmenter
        seg.precompute(seg.shape[0] // 2 if canonical_slice is None else int(canonical_slice), radius=radius)

    def run_history(self, volume_node: Any) -> tuple[int, bool]:
        """(runs so far, whether the last can be undone) on ``volume_node``; (0, False) before any run."""
        s = self._existing_session(volume_node)
        return (s.runs, bool(s.undo_runs)) if s is not None else (0, False)

    @staticmethod
    def hide_uncertainty(volume_node: Any) -> None:
        """Take the heatmap off every slice view (the MRI stays as the background)."""
        overlays.show_as_foreground(volume_node, None, 0.0)

    @staticmethod
    def segment_id(segmentation_node: Any | None, label: Any) -> str | None:
        """The segment ID of muscle ``label`` in ``segmentation_node`` (None when it has none)."""
        return None if segmentation_node is None else segments.muscle_segment_ids(segmentation_node).get(parse_label(label))

    @staticmethod
    def bundle_folder(parent: str | Path, volume_name: str) -> Path:
        """The desktop module's bundle folder for a volume: ``parent``/<volume name, made a safe file name>_musclesam
        (DICOM series names hold ':' and other characters Windows refuses)."""
        return Path(parent).expanduser() / f"{safe_file_name(volume_name or 'case', 'case')}_musclesam"

    def export_corrected(self, volume_node: Any, segmentation_node: Any, folder: str | Path, fat_node: Any | None = None,
                         dicom_files: Sequence[str | Path] | None = None) -> Path:
        """Write the (user-edited) segmentation as a bundle folder, atomically (see export.py).

        ``dicom_files``: the DICOM files the volume was loaded from (default: looked up in desktop
        Slicer's DICOM database); when known, the bundle also holds the corrected labels as DICOM SEG.
        """
        return self.prepare_export(volume_node, segmentation_node, folder, fat_node, dicom_files)()

    def prepare_export(self, volume_node: Any, segmentation_node: Any, folder: str | Path, fat_node: Any | None = None,
                       dicom_files: Sequence[str | Path] | None = None) -> Callable[[], Path]:
        """Read what an export needs from the scene now (calling thread); the returned call writes the bundle.

        The call touches no MRML and works on copies, so a front end may run it on another thread while
        the user goes on (the web app does); see :meth:`export_corrected` for the arguments.
        """
        geometry.check_volume_node(volume_node)
        if segmentation_node is None:
            raise InputError("no segmentation to export: segment first or choose a segmentation")
        s = self._existing_session(volume_node)
        vol = s.volume if s is not None else geometry.volume_from_node(volume_node)
        fat = None
        if fat_node is not None:
            self._check_fat_grid(volume_node, fat_node)
            fat = geometry.volume_from_node(fat_node)
        from .export import export_bundle  # noqa: PLC0415

        stored = segments.read_labels(segmentation_node, volume_node)
        statuses = {lab: segments.segment_status(segmentation_node, lab) for lab in segments.muscle_segment_ids(segmentation_node)}
        files = [Path(f) for f in dicom_files] if dicom_files else dicom_files_of(volume_node)
        corrected, snapshot, loaded, name = geometry.to_canonical(stored, vol), s.snapshot() if s else None, self.loaded, volume_node.GetName()
        return lambda: export_bundle(folder, vol, corrected, snapshot, loaded, statuses, name, fat, files)

    def edit_check_summary(self, bundle: str | Path) -> str:
        """One line for the user after an export: did the uncertainty point at what they edited?"""
        from ..outputs.bundle import edit_check_summary

        return edit_check_summary(bundle)

    def shutdown(self) -> None:
        """Cancel work, stop observing scenes and stop the worker thread (module cleanup)."""
        self.cancel()
        for scene, tag in self._watched:
            scene.RemoveObserver(tag)
        self._watched.clear()
        self.worker.shutdown(wait=False)


def _place_mode(scene: Any, node: Any, class_name: str, persistent: bool) -> None:
    """The scene's interaction node in place mode with ``node`` (of ``class_name``) as the active place node."""
    selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    interaction = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    if selection is not None and interaction is not None:
        selection.SetReferenceActivePlaceNodeClassName(class_name)
        selection.SetActivePlaceNodeID(node.GetID())
        interaction.SetPlaceModePersistence(1 if persistent else 0)
        interaction.SetCurrentInteractionMode(interaction.Place)
