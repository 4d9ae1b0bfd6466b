"""``musclesam segment``: segment an image from box prompts with the ensemble."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .arg_types import probability_threshold


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment an image from box prompts with the ensemble",
                       description="Segment muscles in IMAGE from the box prompts in BOXES.json (format in README.md) and "
                                   "write labels.nii.gz, labels.seg.nrrd, probability.nii.gz, uncertainty_total.nii.gz, "
                                   "uncertainty_epistemic.nii.gz, report.json and overlay.png into OUT on the input's grid.")
    p.add_argument("image", metavar="IMAGE", type=Path, help="MRI (NIfTI, NRRD, MHA, or a DICOM series folder); for Dixon, the water image")
    p.add_argument("--boxes", required=True, type=Path, help="boxes JSON file")
    p.add_argument("--fat", type=Path, help="Dixon fat image on the same grid as IMAGE (adds per-muscle fat fraction)")
    p.add_argument("--out", required=True, type=Path,
                   help="output folder: new, empty, or a previous segment result (a folder holding other files is refused)")
    add_series_arguments(p)
    add_ensemble_arguments(p)
    p.set_defaults(func=run)


def add_series_arguments(p: argparse.ArgumentParser, fat: bool = True) -> None:
    """--series (and --fat-series): which DICOM series of a folder holding several (UID or description)."""
    p.add_argument("--series", metavar="UID_OR_DESCRIPTION",
                   help="when IMAGE is a DICOM folder holding several series: the series to use (the error lists them)")
    if fat:
        p.add_argument("--fat-series", metavar="UID_OR_DESCRIPTION", help="the same for --fat (e.g. the same Dixon folder)")


def add_ensemble_arguments(p: argparse.ArgumentParser) -> None:
    """--ensemble/--manifest/--device/--threshold/--quiet, shared by segment, demo and evaluate."""
    p.add_argument("--ensemble", help="ensemble name in the manifest (default: the manifest's default)")
    p.add_argument("--manifest", type=Path, help="weights manifest (default: the shipped weights/manifest.json)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="compute device (default: CUDA if present)")
    p.add_argument("--threshold", type=probability_threshold, default=0.5,
                   help="mean probability needed to label a voxel, in (0, 1) (default 0.5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    # heavy imports here so `musclesam --help` and input errors answer fast
    from ..engine.boxes import load_boxes_file
    from ..models.loading import load_ensemble
    from ..pipelines.segment import run_case
    from ..result_folders import check_replaceable
    from ..volumes import read_dixon_pair, read_volume
    check_replaceable(args.out, "segment")  # before any work: never over the user's own files
    volume = read_volume(args.image, series=args.series)
    fat = None
    if args.fat is not None:
        fat, volume = read_dixon_pair(args.fat, args.image, fat_series=args.fat_series, water_series=args.series)
    boxes, rejected = load_boxes_file(args.boxes, volume)
    for where, why in rejected:
        print(f"musclesam segment: warning: {where} skipped: {why}", file=sys.stderr)
    loaded = load_ensemble(args.ensemble, args.manifest, args.device)
    report = run_case(volume, boxes, loaded, args.out, rejected_input=rejected, show_progress=not args.quiet, fat=fat,
                      threshold=args.threshold)
    print_summary(report, args.out)
    return 0


def print_summary(report: dict, out: Path) -> None:
    """A short human-readable table of what was segmented."""
    print(f"{'muscle':28s} {'volume ml':>10s} {'interval (min-max)':>20s} {'uncertainty':>12s}")
    for label, m in report["per_muscle"].items():
        lo, hi = m["interval_minmax_ml"]
        unc = m["mean_uncertainty_nats"]
        print(f"{label + ' ' + m['name']:28s} {m['volume_ml']:10.1f} {f'{lo:.1f}-{hi:.1f}':>20s} {unc if unc is None else round(unc, 3)!s:>12s}")
    if report["review_queue"]:
        top = report["review_queue"][0]
        print(f"review first: slice {top['slice']}, label {top['label']}")
    if report["boxes_rejected"]:
        print(f"{len(report['boxes_rejected'])} box(es) rejected: see report.json")
    print(f"wrote {out}")
