"""``musclesam export``: write the corrections bundle for a case the user corrected."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cmd_segment import add_series_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write the corrections bundle (corrected labels, prediction, uncertainty, edits)",
                       description="Bundle a corrected case: corrected labels (.seg.nrrd + NIfTI on the input grid, and a DICOM "
                                   "SEG referencing the images when IMAGE is a DICOM series folder), the model's "
                                   "prediction and uncertainty maps (from a `musclesam segment` output folder), prompts, edit "
                                   "map, biomarkers for prediction and correction, whether the uncertainty pointed at the "
                                   "edits, and provenance. Written atomically: nothing partial, a previous bundle kept on error.")
    p.add_argument("image", metavar="IMAGE", type=Path, help="the MRI that was segmented (file or DICOM series folder)")
    p.add_argument("--corrected", required=True, type=Path, help="corrected label map (NIfTI/NRRD/.seg.nrrd label map) on IMAGE's grid")
    p.add_argument("--prediction", type=Path, help="the `musclesam segment` output folder of this case")
    p.add_argument("--fat", type=Path, help="Dixon fat image (fat fraction biomarkers)")
    p.add_argument("--out", required=True, type=Path, help="bundle folder to create (or a previous bundle to replace; a folder holding other files is refused)")
    add_series_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..label_maps import muscle_label_array
    from ..outputs.bundle import write_bundle
    from ..outputs.prediction_folder import read_prediction_folder
    from ..result_folders import check_replaceable
    from ..volumes import check_same_grid, dicom_series_files, read_dixon_pair, read_volume

    check_replaceable(args.out, "bundle")  # before any work: never over the user's own files
    image = read_volume(args.image, series=args.series)
    fat = read_dixon_pair(args.fat, args.image, fat_series=args.fat_series, water_series=args.series)[0] if args.fat else None
    corrected = read_volume(args.corrected, allow_labels=True)
    check_same_grid(image, corrected, "image", "corrected labels")
    corrected_labels = muscle_label_array(corrected, "corrected labels")
    kw = read_prediction_folder(args.prediction, image) if args.prediction is not None else {}
    if args.image.is_dir():  # a DICOM series: the bundle also gets a DICOM SEG referencing it
        kw["dicom_source"] = dicom_series_files(args.image, args.series)
    dest = write_bundle(args.out, image, corrected_labels, fat=fat,
                        interaction_log=[{"event": "export", "tool": "musclesam export"}], **kw)
    report = json.loads((dest / "report.json").read_text())  # just written by us
    if "skipped" in report.get("dicom_seg", {}):
        print(f"warning: no DICOM SEG in the bundle: {report['dicom_seg']['skipped']}", file=sys.stderr)
    if "uncertainty_vs_edits" in report:
        u = report["uncertainty_vs_edits"]
        print(f"edited voxels: {u['edited_voxels']}; AUROC of uncertainty for edits: {u['auroc_edit']}; "
              f"share of edits in the top 10% most uncertain: {u['edit_share_top10pct']}")
    print(f"wrote {dest}")
    return 0
