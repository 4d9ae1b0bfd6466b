"""The corrections bundle: everything needed to audit a corrected case and to learn from it.

Published as a whole by :func:`MuscleSAMLib.result_folders.publish_folder` (staging folder beside the
destination, a marker written last, one rename): an error or a kill leaves no partial bundle and the
previous one untouched, and a folder holding the user's own files is refused, never replaced.

Contents (all images on the input's grid)::

    corrected_labels.nii.gz, corrected_labels.seg.nrrd   the user's corrected labels
    corrected_labels.dcm                                 DICOM SEG, when the input was a DICOM series
    prediction_labels.nii.gz                             the model's prediction (if any)
    probability.nii.gz, uncertainty_total.nii.gz, uncertainty_epistemic.nii.gz   (if given)
    edit_map.nii.gz     0 unchanged, 1 added (muscle where the prediction had background),
                        2 removed (background where the prediction had muscle), 3 relabelled
    prompts.json        box prompts in canonical, file-index (ijk) and RAS coordinates
    interaction_log.json   runs (boxes, seconds), review visits, and the export with the edits per muscle
    provenance.json, report.json, biomarkers_*.csv
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..atomic import write_json_atomic
from ..biomarkers import muscle_biomarkers
from ..engine.boxes import boxes_to_json
from ..engine.types import BoxPrompt
from ..errors import GeometryError, InputError, OutputWriteError
from ..hashing import sha256_of_file
from ..metrics.uncertainty_quality import auroc, error_share_in_top
from .biomarker_files import write_biomarker_csv, write_biomarker_plot
from .dicom_seg import write_dicom_seg
from .seg_nrrd import write_seg_nrrd
from ..sample_data import muscle_names
from ..result_folders import check_published, publish_folder
from ..version import __version__
from ..volumes import Volume, lps_ras, write_like

BUNDLE_FORMAT = 1
REQUIRED_FILES = ("corrected_labels.nii.gz", "prompts.json", "provenance.json", "report.json")
EDIT_CODES = {0: "unchanged", 1: "added", 2: "removed", 3: "relabelled"}


def edit_map(prediction: np.ndarray, corrected: np.ndarray) -> np.ndarray:
    """uint8 map of what the user changed (codes in :data:`EDIT_CODES`)."""
    if prediction.shape != corrected.shape:
        raise GeometryError(f"prediction {prediction.shape} and correction {corrected.shape} differ in shape")
    out = np.zeros(prediction.shape, np.uint8)
    out[(prediction == 0) & (corrected > 0)] = 1
    out[(prediction > 0) & (corrected == 0)] = 2
    out[(prediction > 0) & (corrected > 0) & (prediction != corrected)] = 3
    return out


def uncertainty_edit_check(uncertainty: np.ndarray, edits: np.ndarray, prediction: np.ndarray,
                           corrected: np.ndarray, margin_px: int = 5) -> dict:
    """Did the uncertainty map point at what the user edited?

    Region: the union of predicted and corrected muscle voxels dilated by ``margin_px`` in-plane
    (where an edit was possible to see). AUROC of total uncertainty for edited voxels, and the share
    of edited voxels among the most uncertain 5 % / 10 % of the region.
    """
    from scipy import ndimage

    region = ndimage.binary_dilation((prediction > 0) | (corrected > 0),
                                     structure=np.ones((1, 3, 3), bool), iterations=margin_px)
    edited = edits > 0
    return {
        "auroc_edit": auroc(uncertainty, edited, region),
        "edit_share_top5pct": error_share_in_top(uncertainty, edited, 0.05, region),
        "edit_share_top10pct": error_share_in_top(uncertainty, edited, 0.10, region),
        "edited_voxels": int(edited.sum()),
        "region_voxels": int(region.sum()),
        "region": f"predicted or corrected muscle, dilated {margin_px} px in-plane",
    }


def prompts_document(boxes: Sequence[BoxPrompt], volume: Volume) -> dict:
    """Prompts (boxes and their clicks) in canonical, file-index (ijk, inclusive) and RAS (mm, two corners)
    coordinates."""
    ras = []
    for b in boxes:
        c0, r0, c1, r1 = b.xyxy
        corners = []
        for c, r in ((c0 - 0.5, r0 - 0.5), (c1 - 0.5, r1 - 0.5)):
            corners.append([float(v) for v in lps_ras(volume.physical_of_canonical_index(c, r, b.slice))])
        item = {"label": b.label, "corners": corners}
        if b.points:
            item["points"] = [[float(v) for v in lps_ras(volume.physical_of_canonical_index(x, y, b.slice))] + [int(s)]
                              for x, y, s in b.points]
        ras.append(item)
    return {
        "canonical": [{"label": b.label, "slice": b.slice, "xyxy_half_open": list(b.xyxy), "source": b.source,
                       **({"points": [list(p) for p in b.points]} if b.points else {})} for b in boxes],
        "ijk": boxes_to_json(boxes, volume),
        "ras": {"coordinates": "ras", "boxes": ras},
    }


def write_bundle(dest: str | Path, image: Volume, corrected: np.ndarray, *, prediction: np.ndarray | None = None,
                 probability: np.ndarray | None = None, uncertainty_total: np.ndarray | None = None,
                 uncertainty_epistemic: np.ndarray | None = None, prompts: Sequence[BoxPrompt] = (),
                 interaction_log: Sequence[dict] = (), provenance: dict | None = None, fat: Volume | None = None,
                 member_masks: dict[int, np.ndarray] | None = None,
                 dicom_source: Sequence[str | os.PathLike] | None = None,
                 segment_status: Mapping[int, str] | None = None) -> Path:
    """Write a corrections bundle to ``dest`` (a folder) atomically; returns ``dest``.

    Arrays are canonical (slices, rows, cols) on ``image``'s grid; ``corrected`` is the user's label map.
    ``dicom_source``: the DICOM files of the segmented series, for a DICOM SEG of the corrected labels
    (none: no SEG). A SEG that cannot be written is skipped with the reason in ``report.json``.
    ``segment_status``: each muscle's Slicer segment status (``inprogress``, ``flagged``, ``completed``) as
    the user left it, written into the .seg.nrrd; muscles it does not name (or all, when None: labels
    from outside a MuscleSAM session) are marked ``completed``.
    """
    shape = image.canonical_array.shape
    for name, arr in (("corrected labels", corrected), ("prediction", prediction), ("probability", probability),
                      ("uncertainty", uncertainty_total), ("epistemic uncertainty", uncertainty_epistemic)):
        if arr is not None and tuple(arr.shape) != tuple(shape):
            raise GeometryError(f"{name} has shape {tuple(arr.shape)}, the image {image.source} has {tuple(shape)}")
    names = muscle_names()
    identity = _image_identity(image)
    with publish_folder(dest, "bundle", {"image_sha256": identity.get("image_sha256")}) as tmp:
        corrected_u8 = corrected.astype(np.uint8)
        write_like(corrected_u8, image, tmp / "corrected_labels.nii.gz")
        write_seg_nrrd(corrected_u8, image, tmp / "corrected_labels.seg.nrrd", names,
                       status={int(v): (segment_status or {}).get(int(v)) or "completed"
                               for v in np.unique(corrected_u8) if v})
        report: dict[str, Any] = {"format": BUNDLE_FORMAT, "image": image.source}
        if dicom_source:
            report["dicom_seg"] = _dicom_seg(corrected_u8, image, dicom_source, tmp / "corrected_labels.dcm", names)
        spacing = image.canonical_spacing
        ff_kw = {"fat": fat.canonical_array, "water": image.canonical_array} if fat is not None else {}
        corrected_rows = muscle_biomarkers(corrected_u8, spacing, image=image.canonical_array, **ff_kw)
        write_biomarker_csv(corrected_rows, names, tmp / "biomarkers_corrected.csv")
        report["biomarkers_corrected"] = [b.as_dict() for b in corrected_rows]
        if prediction is not None:
            pred_u8 = prediction.astype(np.uint8)
            write_like(pred_u8, image, tmp / "prediction_labels.nii.gz")
            edits = edit_map(pred_u8, corrected_u8)
            write_like(edits, image, tmp / "edit_map.nii.gz")
            report["edits"] = {code_name: int((edits == code).sum()) for code, code_name in EDIT_CODES.items() if code}
            report["edits_per_muscle"] = {
                str(v): {"added": int(((corrected_u8 == v) & (pred_u8 != v)).sum()),
                         "removed": int(((pred_u8 == v) & (corrected_u8 != v)).sum())}
                for v in sorted(set(np.unique(pred_u8)) | set(np.unique(corrected_u8))) if v}
            pred_rows = muscle_biomarkers(pred_u8, spacing, member_masks=member_masks, image=image.canonical_array, **ff_kw)
            write_biomarker_csv(pred_rows, names, tmp / "biomarkers_prediction.csv")
            write_biomarker_plot(pred_rows, names, tmp / "biomarkers_prediction.png", title="prediction")
            report["biomarkers_prediction"] = [b.as_dict() for b in pred_rows]
            if uncertainty_total is not None:
                report["uncertainty_vs_edits"] = uncertainty_edit_check(uncertainty_total, edits, pred_u8, corrected_u8)
        for fname, arr in (("probability.nii.gz", probability), ("uncertainty_total.nii.gz", uncertainty_total),
                           ("uncertainty_epistemic.nii.gz", uncertainty_epistemic)):
            if arr is not None:
                write_like(arr.astype(np.float32), image, tmp / fname)
        write_json_atomic(tmp / "prompts.json", prompts_document(prompts, image))
        export_event = {"time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "action": "export",
                        "edits": report.get("edits"), "edits_per_muscle": report.get("edits_per_muscle")}
        write_json_atomic(tmp / "interaction_log.json", [*interaction_log, export_event])
        prov = {"software": f"musclesam {__version__}", "bundle_format": BUNDLE_FORMAT,
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                **identity, **(provenance or {})}
        write_json_atomic(tmp / "provenance.json", prov)
        write_json_atomic(tmp / "report.json", report)
    return Path(os.path.abspath(dest))


def _dicom_seg(labels: np.ndarray, image: Volume, sources: Sequence[str | os.PathLike], path: Path, names: dict) -> dict:
    """Write the DICOM SEG if it can be; otherwise say why (the rest of the bundle is still written:
    the NIfTI and .seg.nrrd hold the same labels, and the user's corrections must not be lost)."""
    if not labels.any():
        return {"skipped": "no muscle in the corrected labels"}
    try:
        write_dicom_seg(labels, image, sources, path, names, series_description="MuscleSAM corrected muscles")
    except ImportError as exc:
        return {"skipped": f"highdicom is not installed ({exc.name}); install highdicom to get a DICOM SEG"}
    except OutputWriteError:  # a disk problem ends the export like any other write
        raise
    except InputError as exc:  # a series the SEG cannot describe
        return {"skipped": str(exc)}
    return {"file": path.name, "segments": int(len(np.unique(labels[labels > 0]))), "source_files": len(sources)}


def _image_identity(image: Volume) -> dict:
    """Where the image is (absolute path, so learning finds it from any folder) and its sha256."""
    src = Path(image.source)
    if not src.is_file():
        return {"image": image.source}
    return {"image": str(src.resolve()), "image_sha256": sha256_of_file(src)}


def check_bundle(path: str | Path, image: Volume | None = None) -> Path:
    """Validate a bundle folder (required files present; on ``image``'s grid if given); returns it."""
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{p}: not a corrections bundle folder")
    check_published(p, "bundle")  # a bundle cut short or altered by hand is refused
    missing = [f for f in REQUIRED_FILES if not (p / f).is_file()]
    if missing:
        raise InputError(f"{p}: incomplete bundle, missing {', '.join(missing)}")
    if image is not None:
        from ..volumes import check_same_grid, read_volume

        check_same_grid(image, read_volume(p / "corrected_labels.nii.gz", allow_labels=True), "image", "bundle labels")
    return p


def edit_check_summary(bundle: str | Path) -> str:
    """One line for the GUIs after an export: did the uncertainty point at what the user edited?

    A DICOM SEG that could not be written is mentioned (the bundle's other files hold the labels).
    """
    import json

    report = json.loads((Path(bundle) / "report.json").read_text())
    skipped = report.get("dicom_seg", {}).get("skipped")
    note = f" No DICOM SEG: {skipped}." if skipped and "no muscle" not in skipped else ""
    return _edit_check_line(report.get("uncertainty_vs_edits")) + note


def _edit_check_line(check: dict | None) -> str:
    if not check:
        return "No prediction in this bundle: nothing to compare the edits with."
    if not check.get("edited_voxels"):
        return "No voxel was edited: the prediction was accepted as it is."
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    top10 = check.get("edit_share_top10pct")
    return (f"Uncertainty vs your edits: AUROC {fmt(check.get('auroc_edit'))} over {check['edited_voxels']} edited voxels; "
            f"{'n/a' if top10 is None else f'{100 * top10:.0f}%'} of them lay in the 10% most uncertain voxels.")
