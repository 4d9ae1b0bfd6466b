"""Multi-muscle assembly of one axial slice: per-box ensemble predictions -> one label map.

Conventions (METHODS.md "Multi-muscle", DESIGN.md "Multi-muscle"):

- Per label, the per-voxel ensemble-mean probability is the **maximum over that label's boxes** (a
  muscle on both legs is two boxes; where two boxes of one label overlap, the larger mean wins). The
  label's member probabilities at a voxel are the member maps of the box whose *mean* is highest there
  (so members stay consistent with the mean). Exact ties between boxes of one label go to the first
  box in canonical order (sorted by ``xyxy``, then window), never to the order of the input list.
- Label map: argmax over labels of the mean probability where that maximum is ``>= threshold``;
  contested voxels go to the highest mean probability; exact ties between labels go to the lower
  label id. Reversing or shuffling the input list gives the identical result.
- Locked labels (segments the user marked finished): voxels where ``current`` holds a locked label keep
  it and no other label may take them; a locked label's boxes are never used (returned in
  ``ignored_locked``). Locked voxels are user-confirmed: probability 1, uncertainty 0.
- Labels of ``current`` that are neither locked nor predicted in this call (e.g. painted by hand) are
  kept where no predicted label reaches the threshold (``keep_unpredicted=True``, the default), so a
  new box never wipes an unrelated segment; a predicted label may take their voxels (lock a label to
  protect it).
- A label predicted in this call replaces only its **parts that its run reaches**
  (:func:`replaced_parts` of :func:`run_reach`): every 8-connected part of it in ``current`` that
  touches one of its new boxes' windows, or the window of an earlier box of it that those replace.
  Its other parts (the other leg, with the user's edits there) are kept like an unpredicted label, so
  a box for one leg never wipes the same muscle on the other leg.
- Everything else is background (0) unless predicted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..uncertainty import UncertaintyMaps, uncertainty_maps
from .types import BoxPrediction, BoxPrompt, Window


@dataclass
class LabelProbabilities:
    """One label's combined probabilities inside ``window`` (the bounding window of its boxes).

    ``mean`` (h, w) float32: max over the label's boxes of the ensemble mean (0 where no box).
    ``members`` (M, h, w) float32: the member maps of the box with the highest mean at each voxel.
    ``owner`` (h, w) int32: index into ``boxes`` of that box (-1 where no box covers the voxel).
    ``boxes``: the label's predictions in canonical order (sorted by ``xyxy``, then window).
    """

    label: int
    window: Window
    mean: np.ndarray
    members: np.ndarray
    owner: np.ndarray
    boxes: list[BoxPrediction]

    def full_mean(self, shape: tuple[int, int]) -> np.ndarray:
        """The mean pasted into a zero (rows, cols) float32 slice."""
        out = np.zeros(shape, np.float32)
        out[self.window.slices] = self.mean
        return out

    def full_members(self, shape: tuple[int, int]) -> np.ndarray:
        """The member maps pasted into a zero (M, rows, cols) float32 slice."""
        out = np.zeros((self.members.shape[0], *shape), np.float32)
        out[(slice(None), *self.window.slices)] = self.members
        return out


@dataclass
class AssembledSlice:
    """The assembled label map of one slice, with its probability and uncertainty.

    ``labels`` (rows, cols) uint8 (uint16 when a label exceeds 255): 0 = background.
    ``top_label`` (rows, cols) same dtype: the label whose probability/uncertainty is reported at each
    voxel: the winning label, or where background the most probable predicted label (0 where no box
    covers the voxel); at locked voxels the locked label.
    ``probability`` (rows, cols) float32: ensemble-mean probability of ``top_label`` (1.0 at locked
    voxels, 0.0 where no box).
    ``uncertainty``: :class:`UncertaintyMaps` (nats) of ``top_label`` from its member probabilities
    (0 at locked voxels and where no box).
    ``per_label_mean``: {label: (rows, cols) float32 full-slice mean probability} for every label
    predicted in this call (full slices, not cropped: 11 muscles at 512x512 is about 11 MB).
    ``ignored_locked``: the box prompts of locked labels, not used.
    ``kept_from_current``: labels copied from ``current`` (locked, unpredicted, or a predicted label's
    parts its new boxes do not reach).
    ``model_labels`` (rows, cols) same dtype: the labels the model itself assigned in this call (0 where
    it assigned none: below threshold, locked, or copied from ``current``), so a caller can keep the
    model's prediction apart from the user's edits that ``labels`` carries along.
    """

    labels: np.ndarray
    top_label: np.ndarray
    probability: np.ndarray
    uncertainty: UncertaintyMaps
    per_label_mean: dict[int, np.ndarray] = field(default_factory=dict)
    ignored_locked: list[BoxPrompt] = field(default_factory=list)
    kept_from_current: frozenset[int] = frozenset()
    model_labels: np.ndarray | None = None


def _canonical_key(pred: BoxPrediction) -> tuple:
    w = pred.window
    return (tuple(pred.box.xyxy), (w.r0, w.r1, w.c0, w.c1), pred.box.slice)


def _check_prediction(pred: BoxPrediction, shape: tuple[int, int] | None) -> None:
    w = pred.window
    mp = pred.member_probs
    if mp.ndim != 3 or mp.shape[1:] != w.shape:
        raise ValueError(
            f"box {pred.box.xyxy} (label {pred.box.label}): member_probs shape {mp.shape} "
            f"does not match window shape {w.shape}"
        )
    if shape is not None and not (0 <= w.r0 <= w.r1 <= shape[0] and 0 <= w.c0 <= w.c1 <= shape[1]):
        raise ValueError(f"box {pred.box.xyxy} (label {pred.box.label}): window {w} outside slice {shape}")


def combine_label_predictions(preds: Iterable[BoxPrediction]) -> dict[int, LabelProbabilities]:
    """Group predictions by label and combine each label's boxes (max of means; see module doc).

    Independent of input order. All predictions must have the same member count M (else ValueError).
    """
    by_label: dict[int, list[BoxPrediction]] = {}
    n_members: int | None = None
    for p in preds:
        _check_prediction(p, None)
        m = p.member_probs.shape[0]
        if n_members is None:
            n_members = m
        elif m != n_members:
            raise ValueError(f"predictions have different member counts ({n_members} and {m})")
        by_label.setdefault(int(p.box.label), []).append(p)

    out: dict[int, LabelProbabilities] = {}
    for label in sorted(by_label):
        boxes = sorted(by_label[label], key=_canonical_key)
        r0 = min(b.window.r0 for b in boxes)
        r1 = max(b.window.r1 for b in boxes)
        c0 = min(b.window.c0 for b in boxes)
        c1 = max(b.window.c1 for b in boxes)
        win = Window(r0, r1, c0, c1)
        mean = np.zeros(win.shape, np.float32)
        members = np.zeros((n_members or 1, *win.shape), np.float32)
        owner = np.full(win.shape, -1, np.int32)
        for i, b in enumerate(boxes):
            sl = (slice(b.window.r0 - r0, b.window.r1 - r0), slice(b.window.c0 - c0, b.window.c1 - c0))
            bm = b.member_probs.astype(np.float32, copy=False)
            bmean = bm.mean(axis=0)
            cur_mean = mean[sl]
            cur_owner = owner[sl]
            # strictly greater: on exact ties the earlier box (canonical order) keeps the voxel;
            # owner < 0 claims uncovered voxels even where the mean is 0
            take = (bmean > cur_mean) | (cur_owner < 0)
            cur_mean[take] = bmean[take]
            cur_owner[take] = i
            members[(slice(None), *sl)][:, take] = bm[:, take]
        out[label] = LabelProbabilities(label, win, mean, members, owner, boxes)
    return out


def windows_overlap(a: Window, b: Window) -> bool:
    """True when two windows share at least one voxel."""
    return a.r0 < b.r1 and b.r0 < a.r1 and a.c0 < b.c1 and b.c0 < a.c1


def replaced_parts(label_map: np.ndarray, label: int, windows: Iterable[Window]) -> np.ndarray:
    """(rows, cols) bool: the voxels of ``label`` that new boxes with answer ``windows`` replace.

    THE rule for what a run of a muscle's boxes takes over on a slice: every 8-connected part of
    ``label_map == label`` that has at least one voxel inside one of ``windows``. A part that lies
    wholly outside them (the same muscle on the other leg) is not replaced. Measured on the thigh
    labels: the two legs' windows (box + 25 %, >= 8 px a side) never overlap and never reach the other
    leg's muscle (all 217 slice-muscle pairs with a part on each leg, both subjects).
    """
    from scipy import ndimage  # noqa: PLC0415

    windows = list(windows)
    mine = np.asarray(label_map) == int(label)
    if not windows or not mine.any():
        return np.zeros(mine.shape, bool)
    parts, n = ndimage.label(mine, structure=np.ones((3, 3), bool))
    reached = np.zeros(n + 1, bool)
    for w in windows:
        reached[np.unique(parts[w.slices])] = True
    reached[0] = False
    return reached[parts]


def run_reach(new_windows: Sequence[Window], earlier_windows: Iterable[Window] = ()) -> list[Window]:
    """Where a run of a muscle's boxes replaces that muscle on a slice: its new boxes' windows plus the
    windows of the earlier boxes it replaces, i.e. those overlapping a window of the reach, grown until no
    earlier window is added (two overlapping boxes of one leg go together). So a smaller new window (a
    tighter box, a click taken back) leaves nothing of the earlier answer behind."""
    reach, rest = list(new_windows), list(earlier_windows)
    grew = True
    while grew:
        grew = False
        for w in list(rest):
            if any(windows_overlap(w, r) for r in reach):
                reach.append(w)
                rest.remove(w)
                grew = True
    return reach


def untouched_boxes(boxes: Iterable[BoxPrediction], reach: Sequence[Window]) -> list[BoxPrediction]:
    """The earlier box predictions a run leaves standing: those whose window overlaps no window of its
    :func:`run_reach` (the other leg's box; see :func:`replaced_parts`)."""
    return [b for b in boxes if not any(windows_overlap(b.window, w) for w in reach)]


def _label_dtype(max_label: int) -> type:
    if max_label < 0:
        raise ValueError("labels must be >= 0")
    if max_label <= np.iinfo(np.uint8).max:
        return np.uint8
    if max_label <= np.iinfo(np.uint16).max:
        return np.uint16
    raise ValueError(f"label {max_label} does not fit in uint16")


def assemble_slice(
    preds: Sequence[BoxPrediction],
    shape: tuple[int, int],
    *,
    current: np.ndarray | None = None,
    locked: frozenset[int] = frozenset(),
    threshold: float = 0.5,
    keep_unpredicted: bool = True,
    combined: Mapping[int, LabelProbabilities] | None = None,
    earlier: Mapping[int, Sequence[Window]] | None = None,
) -> AssembledSlice:
    """Assemble one slice's box predictions into a label map (conventions in the module docstring).

    ``preds``: predictions of one slice (all ``box.slice`` equal), windows inside ``shape`` (rows, cols).
    ``current``: the slice's previous label map (rows, cols) or None. ``locked``: finished labels.
    ``threshold``: a voxel is labelled when its highest mean probability is ``>= threshold``.
    ``combined``: :func:`combine_label_predictions` of ``preds`` if the caller has it already.
    ``earlier``: {label: windows of that label's earlier boxes on this slice}, for :func:`run_reach`.
    """
    shape = (int(shape[0]), int(shape[1]))
    locked = frozenset(int(k) for k in locked)
    if 0 in locked:
        raise ValueError("label 0 (background) cannot be locked")
    slices_seen = {int(p.box.slice) for p in preds}
    if len(slices_seen) > 1:
        raise ValueError(f"predictions from several slices {sorted(slices_seen)}; assemble one slice at a time")
    for p in preds:
        _check_prediction(p, shape)
    if current is not None:
        current = np.asarray(current)
        if current.shape != shape:
            raise ValueError(f"current label map shape {current.shape} != slice shape {shape}")
        if current.size and (current.min() < 0):
            raise ValueError("current label map has negative labels")

    ignored = sorted((p for p in preds if int(p.box.label) in locked), key=_canonical_key)
    ignored_locked = [p.box for p in ignored]
    active = [p for p in preds if int(p.box.label) not in locked]
    combined = ({lab: v for lab, v in combined.items() if lab not in locked} if combined is not None
                else combine_label_predictions(active))
    label_ids = np.array(sorted(combined), dtype=np.int64)
    n_members = active[0].member_probs.shape[0] if active else 1

    max_label = max([0, *label_ids.tolist(), int(current.max()) if current is not None and current.size else 0])
    dtype = _label_dtype(max_label)

    # top label per voxel among predicted (unlocked) labels
    if label_ids.size:
        stack = np.zeros((label_ids.size, *shape), np.float32)
        for i, k in enumerate(label_ids):
            lp = combined[int(k)]
            stack[(i, *lp.window.slices)] = lp.mean
        top_idx = np.argmax(stack, axis=0)  # first maximum -> lower label id on exact ties
        top_prob = np.take_along_axis(stack, top_idx[None], axis=0)[0]
        top_label = np.where(top_prob > 0, label_ids[top_idx], 0).astype(dtype)
    else:
        top_idx = np.zeros(shape, np.int64)
        top_prob = np.zeros(shape, np.float32)
        top_label = np.zeros(shape, dtype)

    locked_mask = np.zeros(shape, bool)
    if current is not None and locked:
        locked_mask = np.isin(current, np.array(sorted(locked)))

    labels = np.zeros(shape, dtype)
    kept: set[int] = set()
    if current is not None and keep_unpredicted:
        carry = (current != 0) & ~locked_mask
        for k in label_ids:  # a predicted label keeps the parts its new boxes do not reach (the other leg)
            reach = run_reach([b.window for b in combined[int(k)].boxes], (earlier or {}).get(int(k), ()))
            carry &= ~replaced_parts(current, int(k), reach)
        labels[carry] = current[carry]
        kept.update(int(v) for v in np.unique(current[carry]))
    predicted = (top_prob >= threshold) & (top_prob > 0) & ~locked_mask
    labels[predicted] = top_label[predicted]
    model_labels = np.where(predicted, top_label, 0).astype(dtype)
    if locked_mask.any():
        labels[locked_mask] = current[locked_mask]
        top_label[locked_mask] = current[locked_mask]
        kept.update(int(v) for v in np.unique(current[locked_mask]))
    if kept:
        # carried labels that a prediction took over completely are no longer "kept"
        kept = {k for k in kept if np.any(labels == k)}

    # member probabilities of the top label (from the box that owns each voxel)
    members_top = np.zeros((n_members, *shape), np.float32)
    for i, k in enumerate(label_ids):
        lp = combined[int(k)]
        sel = top_idx[lp.window.slices] == i
        members_top[(slice(None), *lp.window.slices)][:, sel] = lp.members[:, sel]
    members_top[:, locked_mask] = 1.0
    unc = uncertainty_maps(members_top)
    if locked_mask.any():  # user-confirmed voxels: exactly zero (not the 1e-6 of the clipped logs)
        for arr in (unc.total, unc.aleatoric, unc.epistemic, unc.variance):
            arr[locked_mask] = 0.0
    probability = top_prob.astype(np.float32, copy=True)
    probability[locked_mask] = 1.0

    per_label_mean = {int(k): stack[i] for i, k in enumerate(label_ids)} if label_ids.size else {}
    return AssembledSlice(
        labels=labels,
        top_label=top_label,
        probability=probability,
        uncertainty=unc,
        per_label_mean=per_label_mean,
        ignored_locked=ignored_locked,
        kept_from_current=frozenset(kept),
        model_labels=model_labels,
    )
