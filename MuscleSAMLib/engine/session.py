"""What MuscleSAM remembers about one volume between runs (pure numpy; no MRML).

Each run predicts only its own boxes (so a user's edits of other muscles, and of the same muscle on
the other leg, are never re-predicted away). Its maps are merged into the session's canonical maps
inside the windows its predictions covered; its review scores replace the scores of the same (slice,
muscle). The review queue and the "visited" set follow from the merged scores; muscle volumes come from
the prediction label map (:meth:`biomarkers`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ..biomarkers import Biomarkers, muscle_biomarkers
from .assembly import LabelProbabilities, combine_label_predictions, replaced_parts, run_reach, untouched_boxes
from .member_masks import MemberMasks, MemberWindows, member_window
from .review import MuscleSliceScore, ReviewItem, flagged_labels, next_review_item, review_queue, score_slice
from .segmenter import Segmenter
from .types import BoxPrompt, Window
from .volume_run import VolumeResult
from ..uncertainty import uncertainty_maps
from ..volumes import Volume

MAX_RUN_UNDO = 10  # runs that "Undo run" can take back, most recent first


@dataclass
class Session:
    """One volume's engine, prompts, merged maps (canonical) and review state."""

    key: tuple
    volume: Volume
    segmenter: Segmenter
    probability: np.ndarray = field(init=False)
    total: np.ndarray = field(init=False)
    epistemic: np.ndarray = field(init=False)
    all_agree: np.ndarray = field(init=False)
    any_member: np.ndarray = field(init=False)
    prediction: np.ndarray = field(init=False)
    scores: dict[tuple[int, int], MuscleSliceScore] = field(default_factory=dict)
    boxes: list[BoxPrompt] = field(default_factory=list)
    visited: set[tuple[int, int]] = field(default_factory=set)
    log: list[dict] = field(default_factory=list)  # interaction log (runs, boxes, times) for the bundle
    runs: int = 0
    # (canonical slice, label) -> (window slices, (M, h, w) bool): each member's own mask, for intervals
    member_windows: MemberWindows = field(default_factory=dict)
    # (canonical slice, label) -> that muscle's latest combined prediction there (the maps are recomposed from these)
    label_probs: dict[tuple[int, int], LabelProbabilities] = field(default_factory=dict)
    undo_runs: list["_RunUndo"] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        shape = self.segmenter.shape
        self.probability = np.zeros(shape, np.float32)
        self.total = np.zeros(shape, np.float32)
        self.epistemic = np.zeros(shape, np.float32)
        self.all_agree = np.zeros(shape, bool)
        self.any_member = np.zeros(shape, bool)
        self.prediction = np.zeros(shape, np.uint8)

    @property
    def aleatoric(self) -> np.ndarray:
        """Expected member entropy = total - epistemic (nats)."""
        return np.clip(self.total - self.epistemic, 0.0, None)

    def uncertainty(self, kind: str) -> np.ndarray:
        """The canonical map of ``kind`` ('total', 'epistemic' or 'aleatoric')."""
        maps = {"total": self.total, "epistemic": self.epistemic}
        if kind == "aleatoric":
            return self.aleatoric
        if kind not in maps:
            raise ValueError(f"unknown uncertainty kind {kind!r}; use total, epistemic or aleatoric")
        return maps[kind]

    def merge(self, result: VolumeResult) -> list[int]:
        """Fold one run into the session; returns the canonical slices it touched.

        The prediction layer only ever holds what runs predicted: on each slice the run's labels
        replace those labels' earlier prediction where their new boxes reach (``assembly.replaced_parts``:
        a box for one leg leaves the same muscle's prediction, boxes and scores on the other leg standing),
        other labels keep theirs, and voxels the run took over from the user's segmentation
        (``result.labels`` carries them) never enter it. The maps (probability, uncertainty) are
        recomposed from every muscle's latest prediction on the slice (:meth:`_recompose`), so a later
        overlapping run never wipes an earlier muscle's heatmap.
        """
        touched = []
        predicted: set[tuple[int, int]] = set()
        rescored: dict[tuple[int, int], LabelProbabilities] = {}
        model = result.model_labels if result.model_labels is not None else result.labels
        undo = _RunUndo(self)
        for k, pred in sorted(result.predictions.items()):
            if not pred.boxes:
                continue
            touched.append(k)
            undo.keep_slice(self, k)
            covered = np.zeros(pred.shape, bool)
            agree = np.zeros(pred.shape, bool)
            anyone = np.zeros(pred.shape, bool)
            for bp in pred.boxes:
                w = bp.window.slices
                covered[w] = True
                members = bp.member_probs >= 0.5
                agree[w] |= members.all(axis=0)
                anyone[w] |= members.any(axis=0)
            self.all_agree[k][covered] = agree[covered]
            self.any_member[k][covered] = anyone[covered]
            ran = result.predicted_labels.get(k, frozenset(result.combined.get(k, {})))
            predicted.update((k, int(label)) for label in ran)
            layer = self.prediction[k]
            reach: dict[int, list[Window]] = {}
            for label in sorted(ran):  # the parts the run reaches; the other leg keeps its prediction
                old = self.label_probs.get((k, label))
                reach[label] = run_reach([bp.window for bp in pred.boxes if bp.box.label == label],
                                         [b.window for b in old.boxes] if old is not None else ())
                layer[replaced_parts(layer, label, reach[label])] = 0
            mine = model[k] > 0
            layer[mine] = model[k][mine]
            for label, per in result.combined.get(k, {}).items():
                if label in ran:
                    merged = self._with_untouched_boxes(k, label, per, reach[label])
                    self.label_probs[(k, label)] = merged
                    self.member_windows[(k, label)] = member_window(merged)
                    if merged is not per:
                        rescored[(k, label)] = merged
            present = {int(v) for v in np.unique(layer)}
            for key in [key for key in self.member_windows if key[0] == k and key[1] not in present]:
                del self.member_windows[key]  # a muscle the run took off this slice has no member masks here
            self._recompose(k)
        for key in predicted:
            self.scores.pop(key, None)
        for s in result.scores:
            self.scores[(s.slice, s.label)] = s
        for (k, label), per in rescored.items():  # scored as one run of all its boxes there would score it
            self.scores[(k, label)] = score_slice(per.boxes, self.prediction.shape[1:], combined={label: per})[0]
        self.visited -= predicted
        self.runs += 1
        self.undo_runs.append(undo)
        del self.undo_runs[:-MAX_RUN_UNDO]
        return touched

    def earlier_windows(self) -> dict[tuple[int, int], list[Window]]:
        """{(canonical slice, label): the answer windows of that muscle's latest boxes there}, for a run's
        ``earlier`` (what it replaces: ``assembly.run_reach``)."""
        return {key: [b.window for b in lp.boxes] for key, lp in self.label_probs.items()}

    def _with_untouched_boxes(self, k: int, label: int, new: LabelProbabilities,
                              reach: list[Window]) -> LabelProbabilities:
        """``label``'s prediction on slice ``k`` after a run whose answer for it is ``new`` and whose reach is
        ``reach``: the run's boxes plus the earlier boxes it left standing (the other leg's;
        ``assembly.untouched_boxes``), combined as one run of all of them would combine them."""
        old = self.label_probs.get((k, label))
        kept = untouched_boxes(old.boxes, reach) if old is not None else []
        return combine_label_predictions([*kept, *new.boxes])[label] if kept else new

    def _recompose(self, k: int) -> None:
        """Probability and uncertainty of slice ``k`` from each muscle's latest prediction there.

        At each voxel the maps are those of the muscle the prediction shows there, else (background)
        of the muscle with the highest ensemble-mean probability, as one run of all boxes reports them.
        """
        per_label = {label: lp for (kk, label), lp in self.label_probs.items() if kk == k}
        shape = self.prediction.shape[1:]
        for arr in (self.probability, self.total, self.epistemic):
            arr[k] = 0.0
        if not per_label:
            return
        labels = sorted(per_label)
        stack = np.zeros((len(labels), *shape), np.float32)
        for i, label in enumerate(labels):
            stack[(i, *per_label[label].window.slices)] = per_label[label].mean
        chosen = np.argmax(stack, axis=0)
        for i, label in enumerate(labels):
            chosen[self.prediction[k] == label] = i
        members = np.zeros((next(iter(per_label.values())).members.shape[0], *shape), np.float32)
        for i, label in enumerate(labels):
            lp = per_label[label]
            sel = chosen[lp.window.slices] == i
            members[(slice(None), *lp.window.slices)][:, sel] = lp.members[:, sel]
        covered = stack.max(axis=0) > 0
        unc = uncertainty_maps(members)
        self.probability[k] = np.take_along_axis(stack, chosen[None], axis=0)[0]
        self.total[k] = np.where(covered, unc.total, 0.0)
        self.epistemic[k] = np.where(covered, unc.epistemic, 0.0)

    def current_prompts(self) -> list[BoxPrompt]:
        """The prompts as they stand: ``boxes`` is the history (a box, then the box with one click more,
        ...); per (label, slice, box) only its latest version counts, in the order they were last used."""
        latest: dict[tuple, BoxPrompt] = {}
        for b in self.boxes:
            key = (b.label, b.slice, b.xyxy)
            latest.pop(key, None)
            latest[key] = b
        return list(latest.values())

    def undo_last_run(self) -> tuple[int, list[int]] | None:
        """Put the prediction layer, maps, scores and prompts back as they were before the last run.

        Returns (runs left, canonical slices restored), or None when there is no run to undo.
        """
        if not self.undo_runs:
            return None
        undo = self.undo_runs.pop()
        undo.restore(self)
        return self.runs, sorted(undo.slices)

    @property
    def queue(self) -> list[ReviewItem]:
        """All merged scores ranked for review (most uncertain first)."""
        return review_queue(self.scores.values())

    def snapshot(self) -> "Session":
        """A copy whose maps, prompts and log later runs cannot change (for an export on another thread)."""
        out = copy.copy(self)
        for name in ("probability", "total", "epistemic", "all_agree", "any_member", "prediction"):
            setattr(out, name, getattr(self, name).copy())
        out.scores, out.boxes, out.visited = dict(self.scores), list(self.boxes), set(self.visited)
        out.log, out.member_windows = [dict(e) for e in self.log], dict(self.member_windows)
        out.label_probs, out.undo_runs = dict(self.label_probs), []
        return out

    @property
    def member_masks(self) -> Mapping[int, np.ndarray]:
        """{label: (M, slices, rows, cols) bool} each member's own mask, built on demand per label."""
        return MemberMasks(self.member_windows, self.prediction.shape)

    def biomarkers(self, fat: np.ndarray | None = None, by_side: bool = False) -> list[Biomarkers]:
        """Predicted per-muscle biomarkers with member intervals; fat fraction when ``fat`` (canonical) is given.

        The session's image is the water image of the Dixon pair (fat fraction = fat / (fat + water)).
        """
        water = self.volume.canonical_array
        return muscle_biomarkers(self.prediction, self.segmenter.spacing, member_masks=self.member_masks,
                                 fat=fat, water=water if fat is not None else None, by_side=by_side, image=water)

    def next_item(self) -> ReviewItem | None:
        """The most uncertain (slice, muscle) not visited yet (NaN-uncertainty items excluded)."""
        item = next_review_item(self.queue, self.visited)
        if item is None or math.isnan(item.mean_uncertainty):
            return None
        return item

    def remaining(self) -> int:
        """How many queue items with a finite uncertainty are not visited yet."""
        return sum(1 for q in self.queue if q.key not in self.visited and not math.isnan(q.mean_uncertainty))

    def flagged(self, threshold_nats: float) -> set[int]:
        """Muscles with a scored slice whose mean uncertainty exceeds ``threshold_nats`` (review's one rule)."""
        return flagged_labels(self.scores.values(), threshold_nats)

    def centre_of(self, slice_index: int, label: int) -> tuple[float, float]:
        """(col, row) centre of ``label`` on a canonical slice: its largest predicted part, else its boxes."""
        from scipy import ndimage  # noqa: PLC0415

        parts, n = ndimage.label(self.prediction[slice_index] == label)
        if n:  # the largest part: a muscle on both legs is two parts, and their joint centre lies between the legs
            rows, cols = np.nonzero(parts == int(np.argmax(np.bincount(parts.ravel())[1:])) + 1)
        else:
            rows = cols = np.zeros(0, int)
        if rows.size:
            return float(cols.mean()), float(rows.mean())
        boxes = [b for b in self.boxes if b.slice == slice_index and b.label == label]
        if boxes:
            c0, r0, c1, r1 = boxes[-1].xyxy
            return (c0 + c1 - 1) / 2.0, (r0 + r1 - 1) / 2.0
        _, h, w = self.prediction.shape
        return (w - 1) / 2.0, (h - 1) / 2.0


_MAPS = ("prediction", "probability", "total", "epistemic", "all_agree", "any_member")


class _RunUndo:
    """What one run changed in a :class:`Session`, to put it back (the slices it touched, scores, prompts)."""

    def __init__(self, session: Session) -> None:
        self.slices: dict[int, dict[str, np.ndarray]] = {}
        self.keyed: dict[tuple[int, int], tuple] = {}
        self.scores = dict(session.scores)
        self.visited = set(session.visited)
        self.n_boxes, self.runs = len(session.boxes), session.runs
        # what the run wrote into the segmentation (stored flat indices, value before, value after); the bridge sets it
        self.segmentation_changes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def keep_slice(self, session: Session, k: int) -> None:
        self.slices[k] = {name: getattr(session, name)[k].copy() for name in _MAPS}
        for store in (session.label_probs, session.member_windows):
            for key in [key for key in store if key[0] == k]:
                self.keyed.setdefault(key, (session.label_probs.get(key), session.member_windows.get(key)))

    def restore(self, session: Session) -> None:
        for k, maps in self.slices.items():
            for name, arr in maps.items():
                getattr(session, name)[k] = arr
            for store in (session.label_probs, session.member_windows):
                for key in [key for key in store if key[0] == k]:
                    del store[key]
        for key, (lp, mw) in self.keyed.items():
            if lp is not None:
                session.label_probs[key] = lp
            if mw is not None:
                session.member_windows[key] = mw
        session.scores, session.visited, session.runs = self.scores, self.visited, self.runs
        del session.boxes[self.n_boxes:]
