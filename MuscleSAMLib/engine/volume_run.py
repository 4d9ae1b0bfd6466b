"""Run box prompts over a whole volume: predict per slice, assemble muscles, score for review.

The result holds canonical 3D arrays (label map, probability of the reported label, total and
epistemic uncertainty in nats) plus per-slice-per-muscle scores, the ranked review queue, and every
rejected box with its reason. Muscle volumes are measured on the label map (``biomarkers``), once.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from .assembly import LabelProbabilities, assemble_slice, combine_label_predictions
from .member_masks import MemberMasks, member_window
from .review import MuscleSliceScore, ReviewItem, review_queue, score_slice
from .segmenter import Segmenter
from .types import BoxPrompt, SlicePrediction, Window


@dataclass
class VolumeResult:
    """Everything one run over a volume produced (canonical orientation)."""

    labels: np.ndarray
    probability: np.ndarray
    uncertainty_total: np.ndarray
    uncertainty_epistemic: np.ndarray
    scores: list[MuscleSliceScore]
    queue: list[ReviewItem]
    predictions: dict[int, SlicePrediction]
    rejected: list[tuple[BoxPrompt, str]] = field(default_factory=list)
    iou_pred: dict[str, list[float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _combined: dict[int, dict[int, LabelProbabilities]] | None = field(default=None, repr=False)
    # the model's own labels (0 where it assigned none; ``labels`` also carries ``current``'s voxels) and,
    # per slice, the labels this run predicted there (locked ones excluded): see Session.merge
    model_labels: np.ndarray | None = None
    predicted_labels: dict[int, frozenset[int]] = field(default_factory=dict)
    threshold: float = 0.5  # mean (and member) probability that labels a voxel

    @property
    def combined(self) -> dict[int, dict[int, LabelProbabilities]]:
        """slice -> label -> that muscle's boxes combined (see ``assembly.combine_label_predictions``), once."""
        if self._combined is None:
            self._combined = {k: combine_label_predictions(p.boxes) for k, p in self.predictions.items() if p.boxes}
        return self._combined


def segment_volume(segmenter: Segmenter, boxes: Iterable[BoxPrompt], *, current: np.ndarray | None = None,
                   locked: frozenset[int] = frozenset(), threshold: float = 0.5, show_progress: bool = False,
                   cancel: threading.Event | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   earlier: Mapping[tuple[int, int], Sequence[Window]] | None = None) -> VolumeResult:
    """Predict ``boxes`` on ``segmenter``'s volume and assemble the 3D result.

    ``current``: the existing canonical label map (e.g. the user's segmentation); voxels of
    ``locked`` labels in it are never overwritten, other labels on slices without boxes are kept, and a
    predicted muscle keeps its parts that the run does not reach (the other leg; ``assembly.run_reach``).
    ``earlier``: {(slice, label): windows of that muscle's earlier boxes there} (``Session.earlier_windows``).
    """
    t0 = time.perf_counter()
    shape = segmenter.shape
    boxes = list(boxes)
    n_slices_with_boxes = len({b.slice for b in boxes if 0 <= b.slice < shape[0]})
    bar = tqdm(total=n_slices_with_boxes, desc="segmenting slices", unit="slice", disable=not show_progress)

    def step(done: int, total: int) -> None:
        bar.update(1)
        if progress:
            progress(done, total)

    try:
        predictions = segmenter.predict(boxes, cancel=cancel, progress=step)
    finally:
        bar.close()
    labels = np.zeros(shape, np.uint8) if current is None else np.array(current, dtype=np.uint8, copy=True)
    model_labels = np.zeros(shape, np.uint8)
    predicted_labels: dict[int, frozenset[int]] = {}
    probability = np.zeros(shape, np.float32)
    total = np.zeros(shape, np.float32)
    epistemic = np.zeros(shape, np.float32)
    scores: list[MuscleSliceScore] = []
    rejected: list[tuple[BoxPrompt, str]] = []
    iou: dict[str, list[float]] = {}
    combined: dict[int, dict[int, LabelProbabilities]] = {}
    for k, pred in sorted(predictions.items()):
        rejected.extend(pred.rejected)
        if not pred.boxes:
            continue
        combined[k] = combine_label_predictions(pred.boxes)
        cur = None if current is None else current[k]
        before = {label: w for (kk, label), w in (earlier or {}).items() if kk == k}
        assembled = assemble_slice(pred.boxes, pred.shape, current=cur, locked=locked, threshold=threshold,
                                   combined=combined[k], earlier=before)
        labels[k] = assembled.labels
        model_labels[k] = assembled.model_labels
        predicted_labels[k] = frozenset(combined[k]) - frozenset(locked)
        probability[k] = assembled.probability
        total[k] = assembled.uncertainty.total
        epistemic[k] = assembled.uncertainty.epistemic
        rejected.extend((b, "label is locked (finished); box not used") for b in assembled.ignored_locked)
        scores.extend(score_slice(pred.boxes, pred.shape, locked=locked, combined=combined[k]))
        for bp in pred.boxes:
            iou.setdefault(str(bp.box.label), []).append(float(np.mean(bp.iou_pred)))
    return VolumeResult(labels=labels, probability=probability, uncertainty_total=total, uncertainty_epistemic=epistemic,
                        scores=scores, queue=review_queue(scores), threshold=threshold, predictions=predictions,
                        rejected=rejected, iou_pred=iou, _combined=combined, model_labels=model_labels,
                        predicted_labels=predicted_labels,
                        timings={"total_seconds": time.perf_counter() - t0,
                                 "encode_seconds": segmenter.stats.encode_seconds,
                                 "decode_seconds": segmenter.stats.decode_seconds,
                                 "encoder_calls": segmenter.stats.encoder_calls,
                                 "decoder_calls": segmenter.stats.decoder_calls})


def summarise_slices(result: VolumeResult) -> list[dict]:
    """Per slice: number of muscles and the mean uncertainty over its muscles (for the review table)."""
    by_slice: dict[int, list[MuscleSliceScore]] = {}
    for s in result.scores:
        by_slice.setdefault(s.slice, []).append(s)
    out = []
    for k, items in sorted(by_slice.items()):
        vals = [s.mean_uncertainty for s in items if not math.isnan(s.mean_uncertainty)]
        out.append({"slice": k, "muscles": len(items), "mean_uncertainty_nats": float(np.mean(vals)) if vals else None})
    return out


def member_label_masks(result: VolumeResult, shape: tuple[int, int, int]) -> MemberMasks:
    """{label: (M, slices, rows, cols) bool}: each member's own mask (p_m >= the run's threshold) of every muscle
    (see ``member_masks``)."""
    windows = {(k, label): member_window(per, result.threshold) for k, per_label in result.combined.items() for label, per in per_label.items()}
    return MemberMasks(windows, shape)
