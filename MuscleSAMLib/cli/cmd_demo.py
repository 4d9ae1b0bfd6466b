"""``musclesam demo``: the main job on the shipped default (embedded sample thigh + default ensemble).

Segments the embedded real thigh (water image) with its stored boxes, writes everything
``musclesam segment`` writes, and compares the result with the sample's silver-standard labels
beside the fill-the-box baseline on the same boxes, so the numbers come with their context.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..sample_data import SAMPLE_DIR, sample_case
from .cmd_segment import add_ensemble_arguments, print_summary

SAMPLE_BOXES = SAMPLE_DIR / "Thigh_001_boxes.json"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run MuscleSAM on the embedded sample thigh (default ensemble)",
                       description="Segment the embedded real thigh Dixon sample (water image) with its stored boxes using the "
                                   "default ensemble; write labels, .seg.nrrd, probability and uncertainty maps, "
                                   "report.json and overlay.png to OUT (default ./musclesam_demo), plus agreement.json "
                                   "(DSC against the sample's silver labels, beside fill-the-box).")
    p.add_argument("--image", type=Path, help="use this MRI instead of the sample (needs --boxes)")
    p.add_argument("--boxes", type=Path, help="boxes JSON for --image (default: the sample's stored boxes)")
    p.add_argument("--out", type=Path, default=Path("musclesam_demo"), help="output folder (default: %(default)s)")
    add_ensemble_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # heavy imports here so `musclesam --help` and input errors answer fast
    import numpy as np
    from ..engine.boxes import load_boxes_file
    from ..engine.segmenter import Segmenter
    from ..engine.volume_run import segment_volume
    from ..pipelines.evaluate import baseline_scores, evaluate_result, mean_metrics
    from ..models.loading import load_ensemble
    from ..pipelines.segment import write_case_outputs
    from ..volumes import read_volume
    case = sample_case()
    if args.image is not None and args.boxes is None:
        from ..errors import InputError
        raise InputError("--image needs --boxes (the stored boxes belong to the sample)")
    volume = read_volume(args.image or case.water)
    boxes, rejected = load_boxes_file(args.boxes or SAMPLE_BOXES, volume)
    for where, why in rejected:
        print(f"musclesam demo: warning: {where} skipped: {why}", file=sys.stderr)
    loaded = load_ensemble(args.ensemble, args.manifest, args.device)
    seg = Segmenter(loaded.ensemble, volume.canonical_array, volume_id=volume.source, spacing=volume.canonical_spacing)
    result = segment_volume(seg, boxes, show_progress=not args.quiet, threshold=args.threshold)
    fat = read_volume(case.fat) if args.image is None else None  # the sample is a Dixon pair
    extra, agreement = {}, None
    if args.image is None:
        truth = np.rint(read_volume(case.labels, allow_labels=True).canonical_array).astype(np.int32)
        per_muscle, _ = evaluate_result(result, truth, boxes, volume.canonical_spacing)
        agreement = {
            "what": "agreement with the sample's silver-standard labels (another model's output, not a radiologist's); "
                    "the default ensemble was trained on this subject, so this is not a validation score (see weights/MODEL_CARD.md)",
            "ensemble": {"mean": mean_metrics(per_muscle), "per_muscle": per_muscle},
            **baseline_scores(seg.image, truth, boxes, volume.canonical_spacing, use_growcut=False),
        }
        extra["agreement.json"] = agreement  # published with the rest (one complete set)
    report = write_case_outputs(volume, result, seg, loaded, args.out, boxes=boxes, rejected_input=rejected, fat=fat,
                                extra_json=extra)
    print_summary(report, args.out)
    if agreement is not None:
        print(f"mean DSC vs silver labels: ensemble {agreement['ensemble']['mean']['dsc']:.3f}, "
              f"fill-the-box {agreement['baseline_boxfill']['mean']['dsc']:.3f} (same boxes)")
    print(json.dumps({"out": str(args.out), "timings": report["timings"]}, indent=None))
    return 0
