"""Engine vs the naive way on the shipped ensemble, measured side by side in ONE run (``musclesam bench``).

Naive way (what SAM plugins do): one upstream ``segment_anything.SamPredictor`` per ensemble member,
each a complete model (the shipped LiteMedSAM base + shared decoder + that member's heads), run one
after another: a box on a new slice costs M x (set_image + predict), a box on a slice already set
M x predict. The image set is the one the ensemble answers a box in: the slice, or for the "legs" prompt
geometry the box's leg crop (the cached box is then one on the same leg). A joined ensemble's naive side
is one predictor per member of every ensemble it joins, each on its own image. Engine: one encoder pass per slice (cached), the decoder trunk once per box for all
members (``models/shared_trunk.py``), member heads on top. Same weights, image, boxes and threads.

These machines are shared (METHODS.md "Benchmarks on a shared machine"): the two sides are interleaved
(naive, engine, naive, engine, ...), each ratio is the median of the per-pair ratios with its spread,
and the load average is recorded at start and end (a warning when it exceeded the core count).
Absolute figures: the cached-box latency (box -> member masks + uncertainty maps of its window), the
click latencies (one more corrective click on a box of a cached slice -> masks + uncertainty maps; and
the worst case, a click on a box whose own answer is no longer kept, which decodes the box alone too) and the whole embedded sample (every box of every labelled
slice) from a cold cache. Clicks are compared with the naive way too: each predictor gets the point,
the box and its own previous low-res logits as ``mask_input``, as SAM's predictor demo does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Callable

import numpy as np
import torch
from segment_anything import SamPredictor

from MuscleSAMLib.engine.boxes import boxes_from_labels
from MuscleSAMLib.engine.embedding_cache import EmbeddingCache
from MuscleSAMLib.engine.segmenter import Segmenter
from MuscleSAMLib.engine.types import BoxPrompt
from MuscleSAMLib.engine.volume_run import segment_volume
from MuscleSAMLib.intensity import normalize_mri
from MuscleSAMLib.leg_layout import leg_layout
from MuscleSAMLib.models.architectures import build_sam
from MuscleSAMLib.models.loading import load_ensemble
from MuscleSAMLib.models.ensemble import spec_states
from MuscleSAMLib.sample_data import sample_case
from MuscleSAMLib.uncertainty import uncertainty_maps
from MuscleSAMLib.volumes import read_volume


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(naive: Callable[[], object], engine: Callable[[], object], repeats: int) -> dict:
    """Alternate the two sides; median times and the median (min, max) of per-pair ratios naive/engine."""
    tn, te = [], []
    for _ in range(repeats):
        tn.append(_time(naive))
        te.append(_time(engine))
    ratios = [a / b for a, b in zip(tn, te)]
    return {"naive_s": statistics.median(tn), "engine_s": statistics.median(te),
            "speedup": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios)}


def member_models(ensemble) -> list[torch.nn.Module]:
    """Each member of ``ensemble`` as a complete SAM-family model (base + shared decoder + its heads), for the
    naive side."""
    spec = ensemble.spec
    base, members = spec_states(spec)
    models = []
    for member in members:
        sam = build_sam(spec.arch)
        state = {k: v.float() for k, v in {**base, **member}.items()}
        sam.load_state_dict(state, strict=True)
        models.append(sam.eval())
    return models


def run_bench(ensemble: str | None = None, repeats: int = 5, threads: int | None = None, slice_index: int = 7,
              manifest: str | None = None, volume: bool = True) -> dict:
    """Measure and return the comparison (seconds and ratios)."""
    if threads:
        torch.set_num_threads(threads)
    load_start = os.getloadavg()[0]
    loaded = load_ensemble(ensemble, manifest, "cpu")
    ens = loaded.ensemble
    case = sample_case()
    water = read_volume(case.water).canonical_array
    labels = read_volume(case.labels, allow_labels=True).canonical_array.astype(np.uint8)
    slice_boxes = boxes_from_labels(labels, slices=[slice_index])
    seg_first = Segmenter(ens, water, cache=EmbeddingCache())
    image_255 = normalize_mri(water)
    layout = leg_layout(image_255)  # legs geometry: the image a box is answered in is its leg's crop
    legs = layout is not None and any(e.spec.prompt_geometry == "legs" for e in (ens, *ens.joined))
    first = slice_boxes[0]
    second = next((b for b in slice_boxes[1:] if not legs or layout.side_of(b.xyxy) == layout.side_of(first.xyxy)), None)
    if second is None:
        raise ValueError(f"sample slice {slice_index} has no second box on the first box's leg; choose another slice")
    naive: list[tuple[SamPredictor, np.ndarray, np.ndarray]] = []  # (predictor, its image, slice -> image shift)
    for member_of in (ens, *ens.joined):  # one predictor per member, of every joined ensemble too
        crop = layout is not None and member_of.spec.prompt_geometry == "legs"
        r0, r1, c0, c1 = layout.window_of(first.xyxy) if crop else (0, water.shape[1], 0, water.shape[2])
        rgb = np.repeat(np.clip(image_255[slice_index, r0:r1, c0:c1], 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        naive += [(SamPredictor(m), rgb, np.array([c0, r0, c0, r0], float)) for m in member_models(member_of)]
        if member_of is ens:
            primary_image = image_255[slice_index, r0:r1, c0:c1]  # what the engine's first encoder pass sees

    def naive_first() -> None:
        for p, rgb, shift in naive:
            p.set_image(rgb)
            p.predict(box=np.array(first.xyxy, float) - shift, multimask_output=False)

    def naive_cached() -> None:
        for p, _, shift in naive:
            p.predict(box=np.array(second.xyxy, float) - shift, multimask_output=False)

    def engine_first() -> None:
        seg_first.cache.clear()  # a new slice: nothing cached
        seg_first.predict_slice(slice_index, [first])

    seg_cached = Segmenter(ens, water)
    seg_cached.predict_slice(slice_index, [first])

    def engine_cached() -> None:
        seg_cached.predict_slice(slice_index, [second])

    def engine_cached_on_screen() -> None:
        pred = seg_cached.predict_slice(slice_index, [second]).boxes[0]
        maps = uncertainty_maps(pred.member_probs)
        _ = (pred.mean_prob >= 0.5, maps.total, maps.epistemic)

    x0, y0, x1, y1 = second.xyxy
    spots = [(x0 + (x1 - x0) * (i + 1) // (repeats + 3), y0 + (y1 - y0) // 2) for i in range(repeats + 2)]
    base_click = ((spots[0][0], spots[0][1], 1),)
    seg_cached.predict_slice(slice_index, [BoxPrompt(second.label, slice_index, second.xyxy, points=base_click)])
    next_spot = iter(spots[1:] * 4)
    naive_prev: list[np.ndarray] = []  # each predictor's box answer (low-res logits), after its image is set

    def naive_click() -> None:
        x, y = spots[0]
        for (p, _, shift), prev in zip(naive, naive_prev):
            p.predict(point_coords=np.array([[x, y]], float) - shift[:2], point_labels=np.array([1]),
                      box=np.array(second.xyxy, float) - shift, mask_input=prev, multimask_output=False)

    def engine_click_on_screen() -> None:  # one more click: its prefix is cached, one decoder call
        x, y = next(next_spot)
        box = BoxPrompt(second.label, slice_index, second.xyxy, points=base_click + ((x, y, 0),))
        pred = seg_cached.predict_slice(slice_index, [box]).boxes[0]
        maps = uncertainty_maps(pred.member_probs)
        _ = (pred.mean_prob >= 0.5, maps.total, maps.epistemic)

    def engine_first_click_on_screen() -> None:  # worst case: the box's answer is not kept, decoded again too
        x, y = next(next_spot)
        box = BoxPrompt(first.label, slice_index, first.xyxy, points=((x, y, 1),))
        seg_cached._answers.clear()
        pred = seg_cached.predict_slice(slice_index, [box]).boxes[0]
        _ = uncertainty_maps(pred.member_probs)

    with torch.inference_mode():
        naive_first(), engine_first(), naive_cached(), engine_cached()  # warm-up both
        naive_prev += [p.predict(box=np.array(second.xyxy, float) - shift, multimask_output=False)[2] for p, _, shift in naive]
        first_box = interleaved(naive_first, engine_first, repeats)
        cached_box = interleaved(naive_cached, engine_cached, repeats)
        latency = statistics.median(_time(engine_cached_on_screen) for _ in range(repeats))
        click = interleaved(naive_click, engine_click_on_screen, repeats)
        first_click = statistics.median(_time(engine_first_click_on_screen) for _ in range(repeats))
        all_boxes = statistics.median(_time(lambda: seg_cached.predict_slice(slice_index, slice_boxes))
                                      for _ in range(max(1, repeats // 2)))
        x, _ = ens.preprocess(primary_image)
        encoder_s = statistics.median(_time(lambda: ens.encode(x)) for _ in range(repeats))
        sample_s, sample_boxes = float("nan"), 0
        if volume:
            boxes = boxes_from_labels(labels)
            sample_boxes = len(boxes)
            sample_s = _time(lambda: segment_volume(Segmenter(ens, water, cache=EmbeddingCache()), boxes))
    load_end = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    return {
        "arch": ens.arch.name,
        "ensemble": ens.spec.name,
        "members": ens.members,
        "member_maps": seg_first.members,
        "joined": [e.spec.name for e in ens.joined],
        "decoder_sharing": type(ens._heads).__name__,
        "threads": torch.get_num_threads(),
        "input_size": ens.input_size,
        "prompt_geometry": ens.spec.prompt_geometry,
        "boxes_on_slice": len(slice_boxes),
        "naive_first_box_s": first_box["naive_s"],
        "engine_first_box_s": first_box["engine_s"],
        "first_box_speedup": first_box["speedup"],
        "first_box_speedup_range": [first_box["speedup_min"], first_box["speedup_max"]],
        "naive_cached_box_s": cached_box["naive_s"],
        "engine_cached_box_s": cached_box["engine_s"],
        "cached_box_speedup": cached_box["speedup"],
        "cached_box_speedup_range": [cached_box["speedup_min"], cached_box["speedup_max"]],
        "cached_box_latency_s": latency,
        "naive_click_s": click["naive_s"],
        "click_latency_s": click["engine_s"],
        "click_speedup": click["speedup"],
        "click_speedup_range": [click["speedup_min"], click["speedup_max"]],
        "first_click_latency_s": first_click,
        "engine_all_boxes_cached_slice_s": all_boxes,
        "encoder_s": encoder_s,
        "sample_volume_s": sample_s,
        "sample_volume_boxes": sample_boxes,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "busy_machine_warning": max(load_start, load_end) > cores,
        "repeats": repeats,
    }


def print_table(r: dict) -> None:
    """Human-readable table of :func:`run_bench`'s result."""
    print(f"MuscleSAM engine benchmark: {r['ensemble']} ({r['arch']}, {r['members']} members, {r['decoder_sharing']}), "
          f"input {r['input_size']} ({r['prompt_geometry']} geometry), {r['threads']} threads, real sample slice, "
          f"{r['repeats']} interleaved pairs")
    print(f"{'case':30s} {'naive (s)':>10s} {'engine (s)':>11s} {'speed-up (median, range)':>26s}")
    for key, name in (("first_box", "first box on a new slice"), ("cached_box", "next box on a cached slice"),
                      ("click", "next click on a cached slice")):
        lo, hi = r[f"{key}_speedup_range"]
        engine_s = r["click_latency_s"] if key == "click" else r[f"engine_{key}_s"]
        print(f"{name:30s} {r[f'naive_{key}_s']:10.4f} {engine_s:11.4f} "
              f"{r[f'{key}_speedup']:8.1f}x ({lo:.1f}-{hi:.1f})")
    print(f"click -> mask + uncertainty on screen: {r['click_latency_s'] * 1000:.0f} ms (worst case, the box's "
          f"answer no longer kept so it is decoded too: {r['first_click_latency_s'] * 1000:.0f} ms)")
    print(f"cached box -> mask + uncertainty: {r['cached_box_latency_s'] * 1000:.0f} ms; "
          f"all {r['boxes_on_slice']} boxes of the slice: {r['engine_all_boxes_cached_slice_s']:.2f} s; "
          f"encoder {r['encoder_s']:.2f} s/slice")
    if r["sample_volume_boxes"]:
        print(f"whole sample ({r['sample_volume_boxes']} boxes) from a cold cache: {r['sample_volume_s']:.1f} s")
    print(f"load average {r['load_average_start']:.1f} -> {r['load_average_end']:.1f} on {os.cpu_count()} cores"
          + ("  WARNING: busy machine, absolute times are inflated (ratios are interleaved)" if r["busy_machine_warning"] else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ensemble", default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-volume", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    r = run_bench(a.ensemble, a.repeats, a.threads, volume=not a.no_volume)
    print(json.dumps(r, indent=2) if a.json else "", end="\n" if a.json else "")
    if not a.json:
        print_table(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
