"""The interactive segmentation engine: a volume + box prompts -> per-member probabilities, fast.

One :class:`Segmenter` per loaded volume and ensemble. It normalises the volume once, encodes slices
(or box crops) through the ensemble with an :class:`EmbeddingCache` so a second box on a slice runs
only the decoders, precomputes the current slice and its neighbours on ONE persistent worker thread
(cancellable), and batches all boxes of a slice (all members) into one decoder call. An ensemble may
also answer on the mirrored slice (``mirror_view``) and be joined by other ensembles (``join``): their
member maps follow its own in every answer.

A box with clicks (``BoxPrompt.points``) is answered as the interactive tool answered it: the box
alone, then one re-decode per click with every click so far and, for an ensemble trained with clicks
(:attr:`~MuscleSAMLib.models.ensemble.Ensemble.trained_for_clicks`), the previous answer as SAM's mask
prompt. A decoder never trained with mask prompts loses its answer when fed it back (MODEL_CARD.md,
"Clicks": the shipped box-only decoder drops from DSC 0.79 to 0.62 with its own answer and no click),
so such an ensemble gets the box and the clicks only. Each click's re-decode then replaces the previous
answer only in the region, holding the click, that it moved to the clicked side
(:attr:`Segmenter.click_update` "local",
:func:`~.clicks.merge_click_answer`; "global" takes the whole re-decode, for comparison), and the
engine records whether the model moved the clicked pixel to the clicked side
(:meth:`Segmenter.followed_last_click`). So a box and its clicks always give the same mask, whether
clicked live or read from a boxes file. Answers (a box's own, and each click's) are kept (:data:`ANSWER_CACHE`, least recently used),
so a click on a box just answered costs one decoder call, an undo none, and never an encoder pass.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..intensity import IntensityWindow, intensity_window, normalize_mri
from ..leg_layout import LegLayout, leg_layout
from ..models.decode_result import DecodeResult
from ..models.ensemble import Ensemble
from ..slice_geometry import box_window
from .boxes import validate_box
from .clicks import merge_click_answer
from .embedding_cache import EmbeddingCache
from .types import BoxPrediction, BoxPrompt, SlicePrediction, Window
from .worker import CancelledByUser, PersistentWorker

STORE_MARGIN = 0.25  # probabilities are kept in the box grown by 25 % per side (>= 8 px); ~0 outside
ANSWER_CACHE = 64  # answers to (box, clicks so far) kept for the next click or an undo (~1.3 MB each)


@dataclass
class EngineStats:
    """Counters for the UI, reports and tests (e.g. a cached slice runs no encoder)."""

    encoder_calls: int = 0
    decoder_calls: int = 0
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    boxes: int = 0
    extra: dict = field(default_factory=dict)


class Segmenter:
    """Box prompts on one volume -> :class:`SlicePrediction` objects (see module docstring).

    ``image`` is the canonical (slices, rows, cols) MRI array (any intensity scale; it is normalised
    here per METHODS.md). ``volume_id`` names the volume in the shared cache. ``mirror``: also answer every
    box on the left-right mirrored slice (default: the ensemble's ``mirror_view``; see :meth:`members`).
    An ensemble of the "legs" prompt geometry answers each box in its leg's crop (one encoder pass per leg and
    slice, shared by that leg's boxes; its probabilities are kept as with whole slices): ``layout`` gives the
    crops, by default :func:`~MuscleSAMLib.leg_layout.leg_layout` of ``image``.
    """

    def __init__(self, ensemble: Ensemble, image: np.ndarray, volume_id: str = "volume",
                 cache: EmbeddingCache | None = None, worker: PersistentWorker | None = None,
                 window: IntensityWindow | None = None, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 mirror: bool | None = None, layout: LegLayout | None = None,
                 _normalised: np.ndarray | None = None, _normalised_mirror: np.ndarray | None = None,
                 _inner: str = "") -> None:
        if image.ndim != 3:
            raise ValueError(f"expected a canonical (slices, rows, cols) volume, got shape {image.shape}")
        self.ensemble = ensemble
        self.window = window or intensity_window(image)
        self.image = normalize_mri(image, self.window) if _normalised is None else _normalised
        self.volume_id = volume_id
        self.spacing = tuple(float(v) for v in spacing)  # canonical (slice, row, col) mm, for volumes
        self.cache = cache if cache is not None else EmbeddingCache()  # an empty cache is falsy: share it anyway
        self._worker = worker
        self._lock = threading.RLock()  # one model call at a time (the worker and the caller share it)
        self.stats = EngineStats()
        self._answers: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        #: "local": a click changes the answer only in the region, holding it, moved to its side
        #: (:func:`~.clicks.merge_click_answer`); "global": the re-decode replaces the whole answer.
        self.click_update = "local"
        #: Answer keys whose last click the model did not follow (its pixel stayed on the other side).
        self.unfollowed: set[tuple] = set()
        #: The same ensemble on the left-right mirrored volume (its own cache keys; this one's lock, worker
        #: and counters), whose answers, mirrored back, are this segmenter's members M..2M-1.
        self._mirrored: Segmenter | None = None
        #: The joined ensembles (``Ensemble.joined``) on this volume, each with its own weights, geometry and
        #: calibration (this one's lock, worker and counters): their members follow this one's (and the mirror's).
        self._joined: list[Segmenter] = []
        #: "legs" geometry: each leg's crop window (None: whole slices, also when the legs are not told apart).
        self.layout: LegLayout | None = None
        if ensemble.spec.prompt_geometry == "legs":
            # the mirrored view takes the mirror of its segmenter's layout, even none (_inner "mirror")
            self.layout = layout if layout is not None or _inner == "mirror" else leg_layout(self.image)
            if self.layout is None:
                self.stats.extra["geometry"] = ("no gap between the thighs: whole slices are used, at a scale "
                                                "this ensemble was not trained on")
        if ensemble.spec.mirror_view if mirror is None else mirror:
            m = Segmenter(ensemble, image, f"{volume_id} (mirrored)", self.cache, worker, self.window, spacing,
                          mirror=False, layout=None if self.layout is None else self.layout.mirrored(self.shape[2]),
                          _normalised=(np.ascontiguousarray(self.image[:, :, ::-1]) if _normalised_mirror is None
                                       else _normalised_mirror), _inner="mirror")
            self._mirrored = m
            self._share(m)
        for other in () if _inner else ensemble.joined:  # one level: joined segmenters join nothing themselves
            # ... but answer the mirrored view too when this one does, so every member map has both views
            j = Segmenter(other, image, volume_id, self.cache, worker, self.window, spacing,
                          mirror=self._mirrored is not None, _normalised=self.image,
                          _normalised_mirror=None if self._mirrored is None else self._mirrored.image, _inner="join")
            self.stats.extra.update(j.stats.extra)  # e.g. its geometry note, before the counters are shared
            self._share(j)
            self._joined.append(j)

    def _share(self, inner: "Segmenter") -> None:
        """``inner`` (and its own mirrored view) take this segmenter's lock and counters: one model call at a
        time, and each box counted once."""
        for seg in (inner, inner._mirrored):
            if seg is not None:
                seg._lock, seg.stats = self._lock, self.stats

    @property
    def members(self) -> int:
        """Member maps in every answer: the ensemble's M (twice with the mirrored view: M heads x 2 views),
        then the joined ensembles' members (each in both views too, with the mirrored view)."""
        own = self.ensemble.members * (2 if self._mirrored is not None else 1)
        return own + sum(j.members for j in self._joined)

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]

    @property
    def crops(self) -> bool:
        """True when the ensemble's prompt geometry is one crop around each box."""
        return self.ensemble.spec.prompt_geometry == "box_crop"

    def _crop_window(self, box: BoxPrompt) -> Window:
        r0, r1, c0, c1 = box_window(box.xyxy, self.shape[1:], margin=self.ensemble.spec.crop_margin)
        return Window(r0, r1, c0, c1)

    def _view(self, box: BoxPrompt) -> Window | None:
        """The crop a box is answered in (None: the whole slice): its own crop (box_crop) or its leg's (legs)."""
        if self.crops:
            return self._crop_window(box)
        if self.layout is not None:
            return Window(*self.layout.window_of(box.xyxy))
        return None

    def _view_reason(self, box: BoxPrompt) -> str | None:
        """Why a box cannot run here, for this ensemble or one it joins: a crop-based ensemble sees only the
        box's crop window (its neighbourhood, or its leg), so the box must reach into it and its clicks lie in it."""
        for seg in (self, *self._joined):
            reason = seg._own_view_reason(box)
            if reason:
                return reason
        return None

    def _own_view_reason(self, box: BoxPrompt) -> str | None:
        w = self._view(box)
        if w is None:
            return None
        x0, y0, x1, y1 = box.xyxy
        if not self.crops and (min(x1, w.c1) <= max(x0, w.c0) or min(y1, w.r1) <= max(y0, w.r0)):
            return (f"{box.source or 'box'} lies outside its leg's crop (columns {w.c0}-{w.c1 - 1}, rows "
                    f"{w.r0}-{w.r1 - 1}), where there is no body to segment; draw it on the muscle")
        seen = "the box's neighbourhood" if self.crops else "the box's leg"
        fix = "draw a larger box" if self.crops else "click on the leg the box is on"
        for n, (x, y, _) in enumerate(box.points):
            if not (w.c0 <= x < w.c1 and w.r0 <= y < w.r1):
                return (f"{box.source or 'click'} point #{n + 1} ({x}, {y}) lies outside {seen} "
                        f"(columns {w.c0}-{w.c1 - 1}, rows {w.r0}-{w.r1 - 1}) that this ensemble sees; {fix}")
        return None

    def _store_window(self, box: BoxPrompt, view: Window | None = None) -> Window:
        """Where a box's probabilities are kept (whole-slice and legs geometry): the box and its clicks,
        grown by STORE_MARGIN, inside the crop it is answered in (``view``; the model sees nothing outside)."""
        w = Window(*box_window(_hull(box), self.shape[1:], margin=STORE_MARGIN))
        return w if view is None else w.intersect(view)

    # ------------------------------------------------------------------ encoder with cache
    def _cache_key(self, k: int, crop: Window | None) -> tuple:
        return (self.volume_id, int(k), self.ensemble.group_key, None if crop is None else (crop.r0, crop.r1, crop.c0, crop.c1))

    def embedding(self, k: int, crop: Window | None = None):
        """Cached (embeddings, ResizePad) of slice ``k`` (or of ``crop`` of it)."""
        key = self._cache_key(k, crop)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        with self._lock:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
            pixels = self.image[k] if crop is None else self.image[k][crop.slices]
            t0 = time.perf_counter()
            x, geo = self.ensemble.preprocess(pixels)
            emb = self.ensemble.encode(x)
            self.stats.encode_seconds += time.perf_counter() - t0
            self.stats.encoder_calls += 1
            self.cache.put(key, (emb, geo))
            return emb, geo

    def _encode_crops(self, k: int, crops: Sequence[Window], cancel: threading.Event | None) -> None:
        """Encode the not-yet-cached crops of slice ``k`` as one encoder batch and cache each."""
        todo = [c for c in dict.fromkeys(crops) if self._cache_key(k, c) not in self.cache]
        if not todo:
            return
        _check_cancel(cancel)
        with self._lock:
            t0 = time.perf_counter()
            prepared = [self.ensemble.preprocess(self.image[k][c.slices]) for c in todo]
            emb = self.ensemble.encode(torch.cat([x for x, _ in prepared]))
            self.stats.encode_seconds += time.perf_counter() - t0
            self.stats.encoder_calls += 1
            for i, (c, (_, geo)) in enumerate(zip(todo, prepared)):
                one = emb[i:i + 1] if self.ensemble.kind == "decoder" else emb[:, i:i + 1]
                self.cache.put(self._cache_key(k, c), (one.clone(), geo))

    # ------------------------------------------------------------------ prediction
    def predict_slice(self, k: int, boxes: Sequence[BoxPrompt], cancel: threading.Event | None = None) -> SlicePrediction:
        """Predict every box of slice ``k``: one encoder pass (cached) and one batched decoder call.

        Boxes that cannot run (degenerate, outside, wrong slice) are listed in ``rejected`` with a
        reason; the others still run.
        """
        result = SlicePrediction(slice=int(k), shape=self.shape[1:])
        good: list[BoxPrompt] = []
        for b in boxes:
            reason = validate_box(b, self.shape) if b.slice == k else f"box is on slice {b.slice}, not {k}"
            reason = reason or self._view_reason(b)
            if reason:
                result.rejected.append((b, reason))
            else:
                good.append(b)
        if not good:
            return result
        t0 = time.perf_counter()
        clicked = [b for b in good if b.points]
        plain = [b for b in good if not b.points]
        if plain and self.crops:
            crops = [self._crop_window(b) for b in plain]
            self._encode_crops(k, crops, cancel)
            _check_cancel(cancel)
            cached = [self.embedding(k, c) for c in crops]
            axis = 0 if self.ensemble.kind == "decoder" else 1
            emb = torch.cat([e for e, _ in cached], dim=axis)
            local = np.array([[b.xyxy[0] - c.c0, b.xyxy[1] - c.r0, b.xyxy[2] - c.c0, b.xyxy[3] - c.r0]
                              for b, c in zip(plain, crops)], float)
            with self._lock:
                t1 = time.perf_counter()
                probs, iou, lowres = self.ensemble.decode_crops(emb, [g for _, g in cached], local)
                self.stats.decode_seconds += time.perf_counter() - t1
                self.stats.decoder_calls += 1
            for n, (b, crop) in enumerate(zip(plain, crops)):
                result.boxes.append(BoxPrediction(b, crop, probs[n], iou[:, n]))
                self._remember(self._answer_key(k, b, 0), lowres[:, n:n + 1], iou[:, n:n + 1])
        elif plain:
            views: dict[Window | None, list[BoxPrompt]] = {}
            for b in plain:  # whole slice: one group; legs: one group (one encoder pass) per leg
                views.setdefault(self._view(b), []).append(b)
            for view, group in views.items():
                _check_cancel(cancel)
                emb, geo = self.embedding(k, view)
                _check_cancel(cancel)
                xyxy = np.array([_local_box(b.xyxy, view) for b in group], dtype=np.float64)
                out = self._decode(emb, geo, xyxy)
                for n, b in enumerate(group):
                    result.boxes.append(self._stored(b, out, n, view))
                    self._remember(self._answer_key(k, b, 0), out.logits_lowres[:, n:n + 1], out.iou_pred[:, n:n + 1])
            if len(views) > 1:  # keep the caller's box order
                order = {id(b): i for i, b in enumerate(plain)}
                result.boxes.sort(key=lambda p: order[id(p.box)])
        for b in clicked:
            _check_cancel(cancel)
            result.boxes.append(self._clicked_prediction(k, b))
        if clicked:  # keep the caller's box order
            order = {id(b): i for i, b in enumerate(good)}
            result.boxes.sort(key=lambda p: order[id(p.box)])
        if self._mirrored is not None:
            self._add_mirrored_view(k, result, cancel)
        for joined in self._joined:
            self._add_joined(joined, k, result, cancel)
        result.timings["seconds"] = time.perf_counter() - t0
        self.stats.boxes += len(good)
        return result

    def _add_mirrored_view(self, k: int, result: SlicePrediction, cancel: threading.Event | None) -> None:
        """Append each answer's mirrored-view members: the mirrored box (and clicks) answered on the mirrored
        slice, mirrored back. Windows mirror exactly (box_window is symmetric), so the maps line up voxel by voxel."""
        cols = self.shape[2]
        views = self._inner_answers(self._mirrored, k, [mirror_box(p.box, cols) for p in result.boxes], cancel,
                                    "the mirrored view")
        for p, q in zip(result.boxes, views):
            w = q.window
            if Window(w.r0, w.r1, cols - w.c1, cols - w.c0) != p.window:
                raise RuntimeError(f"slice {k}: mirrored window {w} does not mirror {p.window}")
            p.member_probs = np.concatenate([p.member_probs, q.member_probs[:, :, ::-1]], axis=0)
            p.iou_pred = np.concatenate([np.asarray(p.iou_pred), np.asarray(q.iou_pred)])

    def _inner_answers(self, inner: "Segmenter", k: int, boxes: list[BoxPrompt], cancel: threading.Event | None,
                       what: str) -> list[BoxPrediction]:
        """``inner`` (the mirrored view or a joined ensemble) answers ``boxes``, each of which this segmenter
        already accepted and checked for it (:meth:`_view_reason`), so a refusal is a bug, not a user error."""
        inner.click_update = self.click_update
        answers = inner.predict_slice(k, boxes, cancel)
        self.stats.boxes -= len(answers.boxes)  # shared counters: the same boxes, answered twice, count once
        if answers.rejected or len(answers.boxes) != len(boxes):
            raise RuntimeError(f"slice {k}: {what} refused {[why for _, why in answers.rejected]}")
        return answers.boxes

    def _add_joined(self, joined: "Segmenter", k: int, result: SlicePrediction, cancel: threading.Event | None) -> None:
        """Append a joined ensemble's members to each answer, on this answer's window (its own window may be
        cut differently by its geometry: outside it, that ensemble's probability is 0, as stored)."""
        answers = self._inner_answers(joined, k, [p.box for p in result.boxes], cancel,
                                      f"joined ensemble {joined.ensemble.spec.name}")
        for p, q in zip(result.boxes, answers):
            p.member_probs = np.concatenate([p.member_probs, _recut(q.member_probs, q.window, p.window)], axis=0)
            p.iou_pred = np.concatenate([np.asarray(p.iou_pred), np.asarray(q.iou_pred)])

    # ------------------------------------------------------------------ clicks
    def _clicked_prediction(self, k: int, box: BoxPrompt) -> BoxPrediction:
        """The answer after the box and all its clicks (see the module docstring), as a BoxPrediction."""
        view = self._view(box)
        emb, geo = self.embedding(k, view)
        logits, iou = self._answer(k, box, emb, geo, view, len(box.points))
        res = DecodeResult(logits, iou, geo=geo)
        if self.crops:
            return BoxPrediction(box, view, res.probs[:, 0], iou[:, 0])
        return self._stored(box, res, 0, view)

    def _stored(self, box: BoxPrompt, res: DecodeResult, n: int, view: Window | None) -> BoxPrediction:
        """Answer ``n`` of a decode in ``view`` (None: the whole slice) as kept: its probabilities on the box's
        store window (:meth:`_store_window`), in slice coordinates."""
        win = self._store_window(box, view)
        dx, dy = (0, 0) if view is None else (view.c0, view.r0)
        return BoxPrediction(box, win, res.probs_window(n, win.r0 - dy, win.r1 - dy, win.c0 - dx, win.c1 - dx),
                             res.iou_pred[:, n])

    def _answer_key(self, k: int, box: BoxPrompt, n_clicks: int) -> tuple:
        """Cache key of the answer to ``box`` and its first ``n_clicks`` clicks on slice ``k``."""
        return (self.volume_id, int(k), self.ensemble.group_key, box.xyxy, box.points[:n_clicks])

    def _remember(self, key: tuple, logits: np.ndarray, iou: np.ndarray) -> None:
        """Keep an answer (its own copy) so the next click, or undoing the last, decodes at most once."""
        with self._lock:
            self._answers[key] = (logits.copy(), iou.copy())
            self._answers.move_to_end(key)
            while len(self._answers) > ANSWER_CACHE:
                self.unfollowed.discard(self._answers.popitem(last=False)[0])  # kept for kept answers only

    def _answer(self, k: int, box: BoxPrompt, emb, geo, crop: Window | None, n_clicks: int
                ) -> tuple[np.ndarray, np.ndarray]:
        """Member logits (M, 1, L, L) and IoU (M, 1) after the box and its first ``n_clicks`` clicks
        (``crop``: the window the box is answered in, None for the whole slice)."""
        clicks = box.points[:n_clicks]
        key = self._answer_key(k, box, n_clicks)
        with self._lock:
            hit = self._answers.get(key)
            if hit is not None:
                self._answers.move_to_end(key)
                return hit
        previous = self._answer(k, box, emb, geo, crop, n_clicks - 1) if n_clicks else None
        prompt = None
        if previous is not None and self.ensemble.trained_for_clicks:
            prompt = self.ensemble.answer_prompt(previous[0])
        dx, dy = (crop.c0, crop.r0) if crop is not None else (0, 0)
        xyxy = np.array([_local_box(box.xyxy, crop)], np.float64)
        pts = [np.array([(x - dx, y - dy, s) for x, y, s in clicks], np.float64).reshape(-1, 3)] if clicks else None
        with self._lock:
            t0 = time.perf_counter()
            if not self.crops:  # whole slice, or a leg's crop: the slice path with crop-local coordinates
                out = self.ensemble.decode(emb, geo, xyxy, prompt, pts)
                answer = (out.logits_lowres, out.iou_pred)
            else:
                _, iou, lowres = self.ensemble.decode_crops(emb, [geo], xyxy, pts, prompt)
                answer = (lowres, iou)
            self.stats.decode_seconds += time.perf_counter() - t0
            self.stats.decoder_calls += 1
        if previous is not None:
            x, y, sign = clicks[-1]
            merged, followed = merge_click_answer(previous[0], answer[0], self._lowres_rc(geo, x - dx, y - dy), sign)
            if self.click_update == "local":
                answer = (merged, answer[1])
            with self._lock:
                (self.unfollowed.discard if followed else self.unfollowed.add)(key)
        self._remember(key, *answer)
        return answer

    def followed_last_click(self, box: BoxPrompt) -> bool | None:
        """Whether the model followed ``box``'s last click (None: no clicks, or not answered here yet); with the
        mirrored view or joined ensembles, only when every one of them followed it."""
        if not box.points:
            return None
        key = self._answer_key(box.slice, box, len(box.points))
        with self._lock:
            if key not in self._answers:
                return None
            followed = key not in self.unfollowed
        if self._mirrored is not None:
            other = self._mirrored.followed_last_click(mirror_box(box, self.shape[2]))
            followed = followed and other is not False
        for joined in self._joined:
            followed = followed and joined.followed_last_click(box) is not False
        return followed

    def _lowres_rc(self, geo, x: float, y: float) -> tuple[int, int]:
        """A slice (or crop) pixel -> (row, col) on the ensemble's low-resolution logit grid."""
        L, size = self.ensemble.lowres_size, self.ensemble.input_size
        mx, my = geo.point_to_model(np.array([x, y], np.float64))
        to_low = lambda m: int(min(max(np.floor((m + 0.5) * L / size), 0), L - 1))  # noqa: E731
        return to_low(my), to_low(mx)

    def _decode(self, emb, geo, xyxy: np.ndarray):
        with self._lock:
            t0 = time.perf_counter()
            out = self.ensemble.decode(emb, geo, xyxy)
            self.stats.decode_seconds += time.perf_counter() - t0
            self.stats.decoder_calls += 1
        return out

    def predict(self, boxes: Iterable[BoxPrompt], cancel: threading.Event | None = None,
                progress: Callable[[int, int], None] | None = None) -> dict[int, SlicePrediction]:
        """Predict boxes on any slices, grouped per slice (one encoder pass per slice). Cancellable."""
        by_slice: dict[int, list[BoxPrompt]] = {}
        rejected: list[tuple[BoxPrompt, str]] = []
        for b in boxes:
            if 0 <= b.slice < self.shape[0]:
                by_slice.setdefault(b.slice, []).append(b)
            else:
                rejected.append((b, f"slice {b.slice} does not exist ({self.shape[0]} slices)"))
        results: dict[int, SlicePrediction] = {}
        for i, k in enumerate(sorted(by_slice)):
            _check_cancel(cancel)
            results[k] = self.predict_slice(k, by_slice[k], cancel)
            if progress:
                progress(i + 1, len(by_slice))
        if rejected:
            k0 = min(results) if results else -1
            holder = results.setdefault(k0, SlicePrediction(slice=k0, shape=self.shape[1:]))
            holder.rejected.extend(rejected)
        return results

    def predict_box(self, box: BoxPrompt) -> BoxPrediction:
        """One box (e.g. for propagation); raises ValueError with the reason if it cannot run."""
        res = self.predict_slice(box.slice, [box])
        if res.rejected:
            raise ValueError(f"{box.source or box.xyxy}: {res.rejected[0][1]}")
        return res.boxes[0]

    # ------------------------------------------------------------------ background work
    @property
    def worker(self) -> PersistentWorker:
        """The one persistent worker thread (created on first use)."""
        if self._worker is None:
            self._worker = PersistentWorker()
        return self._worker

    def _views(self) -> list[Window | None]:
        """Every crop a slice is encoded in, box-independent: the whole slice, or each leg's window."""
        if self.layout is None:
            return [None]
        return [Window(*w) for w in self.layout.windows]

    def precompute(self, center: int, radius: int = 1) -> tuple[Future, threading.Event]:
        """Encode slice ``center`` and its neighbours in the background (whole-slice or legs geometry)."""
        order = [center] + [center + s * d for d in range(1, radius + 1) for s in (1, -1)]
        order = [k for k in order if 0 <= k < self.shape[0]]

        # box crops depend on the box: nothing to precompute for such an ensemble
        inner = [s for j in self._joined for s in (j, j._mirrored)]
        encoders = [seg for seg in (self, self._mirrored, *inner) if seg is not None and not seg.crops]

        def job(cancel: threading.Event) -> list[int]:
            done = []
            for k in order if encoders else ():
                for seg in encoders:
                    for view in seg._views():
                        _check_cancel(cancel)
                        seg.embedding(k, view)
                done.append(k)
            return done

        return self.worker.submit(job)

    def submit(self, boxes: Sequence[BoxPrompt]) -> tuple[Future, threading.Event]:
        """Run :meth:`predict` on the worker; returns (future, cancel event)."""
        return self.worker.submit(lambda cancel: self.predict(boxes, cancel=cancel))

    def cancel(self) -> None:
        """Cancel whatever the worker is doing or has queued."""
        if self._worker is not None:
            self._worker.cancel_all()


def mirror_box(box: BoxPrompt, cols: int) -> BoxPrompt:
    """``box`` and its clicks on the slice mirrored left-right (``cols`` columns): pixel x -> cols - 1 - x, so
    the half-open columns [x0, x1) -> [cols - x1, cols - x0)."""
    x0, y0, x1, y1 = box.xyxy
    return BoxPrompt(box.label, box.slice, (cols - x1, y0, cols - x0, y1), box.source,
                     tuple((cols - 1 - x, y, sign) for x, y, sign in box.points))


def _local_box(xyxy: tuple[int, int, int, int], view: Window | None) -> tuple[int, int, int, int]:
    """A box in the coordinates of the crop it is answered in, clipped to it as training clips its boxes
    (``training/data.py``); unchanged for the whole slice. A box crop always holds its box."""
    if view is None:
        return tuple(xyxy)  # type: ignore[return-value]
    x0, y0, x1, y1 = xyxy
    h, w = view.shape
    return (min(max(x0 - view.c0, 0), w), min(max(y0 - view.r0, 0), h),
            min(max(x1 - view.c0, 0), w), min(max(y1 - view.r0, 0), h))


def _recut(probs: np.ndarray, src: Window, dst: Window) -> np.ndarray:
    """(M, h, w) probabilities stored on window ``src`` -> the same maps on window ``dst`` (0 where ``src``
    did not reach)."""
    if src == dst:
        return probs
    out = np.zeros((probs.shape[0], *dst.shape), np.float32)
    both = src.intersect(dst)
    if both.r1 > both.r0 and both.c1 > both.c0:
        out[:, both.r0 - dst.r0:both.r1 - dst.r0, both.c0 - dst.c0:both.c1 - dst.c0] = \
            probs[:, both.r0 - src.r0:both.r1 - src.r0, both.c0 - src.c0:both.c1 - src.c0]
    return out


def _hull(box: BoxPrompt) -> tuple[int, int, int, int]:
    """The box grown to hold its clicks (half-open xyxy)."""
    x0, y0, x1, y1 = box.xyxy
    for x, y, _ in box.points:
        x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x + 1), max(y1, y + 1)
    return (x0, y0, x1, y1)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledByUser("cancelled by the user")
