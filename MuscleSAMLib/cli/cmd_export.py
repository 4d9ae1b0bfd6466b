"""``musclesam export``: write the corrections bundle for a case the user corrected."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..outputs.bundle import write_bundle
    from ..engine.types import BoxPrompt
    from ..errors import InputError
    from ..result_folders import check_replaceable
    from ..volumes import check_same_grid, dicom_series_files, read_dixon_pair, read_volume

    check_replaceable(args.out, "bundle")  # before any work: never over the user's own files
    image = read_volume(args.image)
    fat = read_dixon_pair(args.fat, args.image)[0] if args.fat else None
    corrected = read_volume(args.corrected, allow_labels=True)
    check_same_grid(image, corrected, "image", "corrected labels")
    kw: dict = {}
    if args.prediction is not None:
        pdir = args.prediction
        labels_file = pdir / "labels.nii.gz"
        if not labels_file.is_file():
            raise InputError(f"{pdir}: not a `musclesam segment` output folder (no labels.nii.gz)")
        pred = read_volume(labels_file, allow_labels=True)
        check_same_grid(image, pred, "image", "prediction")
        kw["prediction"] = np.rint(pred.canonical_array).astype(np.uint8)
        for key, fname in (("probability", "probability.nii.gz"), ("uncertainty_total", "uncertainty_total.nii.gz"),
                           ("uncertainty_epistemic", "uncertainty_epistemic.nii.gz")):
            if (pdir / fname).is_file():
                v = read_volume(pdir / fname, allow_labels=True)
                check_same_grid(image, v, "image", fname)
                kw[key] = v.canonical_array
        if (pdir / "member_masks.npz").is_file():  # the prediction's biomarkers get member intervals
            from ..outputs.member_masks import read_member_masks

            kw["member_masks"] = read_member_masks(pdir / "member_masks.npz", kw["prediction"].shape)
        if (pdir / "prompts.json").is_file():
            doc = json.loads((pdir / "prompts.json").read_text())
            kw["prompts"] = [BoxPrompt(int(b["label"]), int(b["slice"]), tuple(b["xyxy_half_open"]), b.get("source", ""))
                             for b in doc.get("canonical", [])]
        if (pdir / "report.json").is_file():
            kw["provenance"] = {"prediction": json.loads((pdir / "report.json").read_text()).get("provenance")}
    if args.image.is_dir():  # a DICOM series: the bundle also gets a DICOM SEG referencing it
        kw["dicom_source"] = dicom_series_files(args.image)
    dest = write_bundle(args.out, image, np.rint(corrected.canonical_array).astype(np.uint8), fat=fat,
                        interaction_log=[{"event": "export", "tool": "musclesam export"}], **kw)
    report = json.loads((dest / "report.json").read_text())
    if "skipped" in report.get("dicom_seg", {}):
        print(f"warning: no DICOM SEG in the bundle: {report['dicom_seg']['skipped']}", file=sys.stderr)
    if "uncertainty_vs_edits" in report:
        u = report["uncertainty_vs_edits"]
        print(f"edited voxels: {u['edited_voxels']}; AUROC of uncertainty for edits: {u['auroc_edit']}; "
              f"share of edits in the top 10% most uncertain: {u['edit_share_top10pct']}")
    print(f"wrote {dest}")
    return 0
