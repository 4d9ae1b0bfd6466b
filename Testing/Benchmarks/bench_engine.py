"""Engine vs the naive way, measured side by side in ONE run (``musclesam bench``).

Naive way: one upstream ``segment_anything.SamPredictor`` per ensemble member; a box on a new slice
costs M x (set_image + predict), a box on a slice already set costs M x predict. Engine: one shared
encoder pass per slice (``decoder`` kind) cached, and all members' decoders in one batched call.
Both sides use the same weights, image, boxes and threads. Also: the encoder's time against its
FLOP floor (FLOPs counted with torch.utils.flop_counter, divided by a measured fp32 matmul rate).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

import numpy as np
import torch
from segment_anything import SamPredictor
from torch.utils.flop_counter import FlopCounterMode

from MuscleSAMLib.engine.boxes import boxes_from_labels
from MuscleSAMLib.engine.embedding_cache import EmbeddingCache
from MuscleSAMLib.engine.segmenter import Segmenter
from MuscleSAMLib.intensity import normalize_mri
from MuscleSAMLib.models.architectures import build_sam, get_arch
from MuscleSAMLib.models.ensemble import Ensemble
from MuscleSAMLib.sample_data import sample_case
from MuscleSAMLib.volumes import read_volume


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_rate(n: int = 1024, repeats: int = 5) -> float:
    """Measured fp32 matmul throughput (FLOP/s) on this machine with the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = _median_time(lambda: a @ b, repeats)
    return 2 * n ** 3 / t


def encoder_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one encoder forward (matmul/conv/attention ops counted by torch's FlopCounterMode)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def run_bench(arch: str = "demo_s", members: int = 5, repeats: int = 5, threads: int | None = None,
              slice_index: int = 7) -> dict:
    """Measure and return the comparison (seconds and ratios)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = get_arch(arch)
    models = []
    for m in range(members):
        torch.manual_seed(m)
        sam = build_sam(spec).eval()
        if models:  # decoder kind: the members share one image encoder
            sam.image_encoder.load_state_dict(models[0].image_encoder.state_dict())
        models.append(sam)
    ens = Ensemble.from_models("decoder", models, arch=spec)
    case = sample_case()
    water = read_volume(case.water).canonical_array
    labels = read_volume(case.labels, allow_labels=True).canonical_array.astype(np.uint8)
    slice_boxes = boxes_from_labels(labels, slices=[slice_index])
    first, second = slice_boxes[0], slice_boxes[1]
    image_255 = normalize_mri(water)
    rgb = np.repeat(np.clip(image_255[slice_index], 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    predictors = [SamPredictor(m) for m in models]

    def naive_first() -> None:
        for p in predictors:
            p.set_image(rgb)
            p.predict(box=np.array(first.xyxy, float), multimask_output=False)

    def naive_cached() -> None:
        for p in predictors:
            p.predict(box=np.array(second.xyxy, float), multimask_output=False)

    seg_first = Segmenter(ens, water, cache=EmbeddingCache())  # normalised once, as in the app

    def engine_first() -> None:
        seg_first.cache.clear()  # a new slice: nothing cached
        seg_first.predict_slice(slice_index, [first])

    seg_cached = Segmenter(ens, water)
    seg_cached.predict_slice(slice_index, [first])

    def engine_cached() -> None:
        seg_cached.predict_slice(slice_index, [second])

    with torch.inference_mode():
        naive_first(), engine_first()  # warm-up both
        t_naive_first = _median_time(naive_first, repeats)
        t_engine_first = _median_time(engine_first, repeats)
        t_naive_cached = _median_time(naive_cached, repeats)
        t_engine_cached = _median_time(engine_cached, repeats)
        x, _ = ens.preprocess(image_255[slice_index])
        encoder = models[0].image_encoder
        t_encoder = _median_time(lambda: encoder(x), repeats)
        all_boxes_time = _median_time(lambda: seg_cached.predict_slice(slice_index, slice_boxes), repeats)
    flops = encoder_flops(encoder, x)
    rate = matmul_rate()
    floor = flops / rate
    return {
        "arch": arch,
        "members": members,
        "threads": torch.get_num_threads(),
        "input_size": spec.img_size,
        "boxes_on_slice": len(slice_boxes),
        "naive_first_box_s": t_naive_first,
        "engine_first_box_s": t_engine_first,
        "first_box_speedup": t_naive_first / t_engine_first,
        "naive_cached_box_s": t_naive_cached,
        "engine_cached_box_s": t_engine_cached,
        "cached_box_speedup": t_naive_cached / t_engine_cached,
        "engine_all_boxes_cached_slice_s": all_boxes_time,
        "encoder_s": t_encoder,
        "encoder_gflop": flops / 1e9,
        "matmul_gflop_per_s": rate / 1e9,
        "encoder_floor_s": floor,
        "encoder_floor_ratio": t_encoder / floor,
    }


def print_table(r: dict) -> None:
    """Human-readable table of :func:`run_bench`'s result."""
    print(f"MuscleSAM engine benchmark: arch {r['arch']}, {r['members']} members, input {r['input_size']}, "
          f"{r['threads']} threads, real sample slice")
    print(f"{'case':34s} {'naive (s)':>10s} {'engine (s)':>11s} {'speed-up':>9s}")
    print(f"{'first box on a new slice':34s} {r['naive_first_box_s']:10.4f} {r['engine_first_box_s']:11.4f} {r['first_box_speedup']:8.1f}x")
    print(f"{'next box on a cached slice':34s} {r['naive_cached_box_s']:10.4f} {r['engine_cached_box_s']:11.4f} {r['cached_box_speedup']:8.1f}x")
    print(f"all {r['boxes_on_slice']} boxes of the slice (cached, batched): {r['engine_all_boxes_cached_slice_s']:.4f} s")
    print(f"encoder: {r['encoder_s']:.4f} s for {r['encoder_gflop']:.2f} GFLOP at {r['matmul_gflop_per_s']:.1f} GFLOP/s "
          f"matmul -> floor {r['encoder_floor_s']:.4f} s, ratio {r['encoder_floor_ratio']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="demo_s")
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    r = run_bench(a.arch, a.members, a.repeats)
    print(json.dumps(r, indent=2) if a.json else "", end="\n" if a.json else "")
    if not a.json:
        print_table(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
