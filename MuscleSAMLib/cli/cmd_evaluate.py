"""``musclesam evaluate``: the ensemble vs a label map, with tight boxes derived from the labels."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import InputError
from .cmd_segment import add_ensemble_arguments, add_series_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate the ensemble against a label map with boxes derived from it",
                       description="Prompt the ensemble with one tight box per muscle per leg per slice taken from LABELS, "
                                   "compare with LABELS (DSC, NSD 2 mm, HD95, ECE, NLL, Brier, AUROC of uncertainty for "
                                   "errors) and with the fill-the-box and GrowCut baselines on the same boxes. Writes "
                                   "report.json, reliability.png and overlay PNGs into OUT.")
    p.add_argument("image", metavar="IMAGE", type=Path, help="MRI (for Dixon, the water image)")
    p.add_argument("labels", metavar="LABELS", type=Path, help="label map on the same grid (muscle values 1-11)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--no-growcut", action="store_true", help="skip the GrowCut baseline")
    p.add_argument("--clicks", type=int, default=0, metavar="N",
                   help="also simulate N corrective clicks per object after its box and report the mean DSC after "
                        "each click and NoC@90, for clicks at the largest error and at the tool's suggestion")
    p.add_argument("--click-update", choices=("local", "global"), default="local",
                   help="how a click's answer replaces the previous one: 'local' (the tools' way: only in the "
                        "changed region that holds the click) or 'global' (the whole re-decoded answer), for comparison")
    add_series_arguments(p, fat=False)
    add_ensemble_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # heavy imports here so `musclesam --help` and input errors answer fast
    from ..pipelines.evaluate import evaluate_case
    from ..models.loading import load_ensemble
    from ..label_maps import muscle_label_array
    from ..result_folders import check_replaceable
    from ..volumes import check_same_grid, read_volume
    if not 0 <= args.clicks <= 32:
        raise InputError(f"--clicks {args.clicks}: give 0 to 32 clicks per object")
    check_replaceable(args.out, "evaluate")  # before any work: never over the user's own files
    image = read_volume(args.image, series=args.series)
    labels = read_volume(args.labels, allow_labels=True)
    check_same_grid(image, labels, "image", "label map")  # before the (slower) ensemble load
    muscle_label_array(labels, "label map")  # an MRI given as LABELS is refused here, not after hours of boxes
    loaded = load_ensemble(args.ensemble, args.manifest, args.device)
    report = evaluate_case(image, labels, loaded, args.out, show_progress=not args.quiet, use_growcut=not args.no_growcut,
                           threshold=args.threshold, clicks=args.clicks,
                           click_update=args.click_update)
    print_metrics(report)
    print(f"wrote {args.out}")
    return 0


def print_metrics(report: dict) -> None:
    """Mean metrics beside the baselines."""
    from ..pipelines.evaluate import METRIC_KEYS

    mean = report["mean"]
    print(f"{report['ensemble']} on {Path(report['image']).name} ({report['boxes']} boxes):")
    for key in METRIC_KEYS:
        v = mean.get(key, float("nan"))
        print(f"  {key:14s} {'nan' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.4f}'}")
    if "clicks" in report:
        c = report["clicks"]
        print("  clicks         " + "  ".join(f"{j}: {v:.4f}" for j, v in enumerate(c["dsc_after"]))
              + f"   NoC@90 {c['noc90']:.2f}")
        print("  suggested      " + "  ".join(f"{j}: {v:.4f}" for j, v in enumerate(c["dsc_after_suggested"]))
              + f"   NoC@90 {c['noc90_suggested']:.2f}")
    for name in ("baseline_boxfill", "baseline_growcut"):
        if name in report:
            print(f"  {name:18s} dsc {report[name]['mean']['dsc']:.4f}")
