"""Segment one case from box prompts and write the results on the input's grid.

The headless job behind ``musclesam segment`` and ``musclesam demo``: read the image, load the
ensemble (checksums verified), run the boxes, and write ``labels.nii.gz``, ``labels.seg.nrrd``,
``probability.nii.gz``, ``uncertainty_total.nii.gz``, ``uncertainty_epistemic.nii.gz`` (float32,
nats), ``report.json`` and ``overlay.png`` into the output folder (each file written atomically).
"""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..atomic import write_json_atomic
from ..engine.review import flagged_labels
from ..engine.segmenter import Segmenter
from ..engine.types import BoxPrompt
from ..biomarkers import Biomarkers, muscle_biomarkers
from ..dixon_checks import swapped_after_segmentation
from ..errors import warn_input
from ..hashing import sha256_of_file
from ..outputs.bundle import prompts_document
from ..engine.volume_run import VolumeResult, member_label_masks, segment_volume, summarise_slices
from ..models.loading import LoadedEnsemble
from ..outputs.seg_nrrd import write_seg_nrrd
from ..result_folders import publish_folder
from ..sample_data import muscle_names
from ..version import __version__
from ..volumes import Volume, write_like

OUTPUT_FILES = ("labels.nii.gz", "labels.seg.nrrd", "probability.nii.gz", "uncertainty_total.nii.gz",
                "uncertainty_epistemic.nii.gz", "report.json", "overlay.png", "biomarkers.csv", "biomarkers.png", "prompts.json")


def run_case(volume: Volume, boxes: Sequence[BoxPrompt], loaded: LoadedEnsemble, out_dir: str | Path, *,
             rejected_input: Sequence[tuple[str, str]] = (), show_progress: bool = True,
             threshold: float = 0.5, fat: Volume | None = None) -> dict:
    """Segment ``boxes`` on ``volume`` and write every output file; returns the report dict."""
    with torch.no_grad():  # scoped: a global switch would break training later in the same process
        seg = Segmenter(loaded.ensemble, volume.canonical_array, volume_id=volume.source, spacing=volume.canonical_spacing)
        result = segment_volume(seg, boxes, show_progress=show_progress, threshold=threshold)
    return write_case_outputs(volume, result, seg, loaded, out_dir, boxes=boxes, rejected_input=rejected_input, fat=fat)


def write_case_outputs(volume: Volume, result: VolumeResult, seg: Segmenter, loaded: LoadedEnsemble,
                       out_dir: str | Path, *, boxes: Sequence[BoxPrompt] = (),
                       rejected_input: Sequence[tuple[str, str]] = (), fat: Volume | None = None,
                       extra_json: dict[str, Any] | None = None) -> dict:
    """Write the label map, .seg.nrrd, float maps, report and overlay into ``out_dir`` (all or nothing;
    ``extra_json``: more ``{file name: object}`` published with them)."""
    from ..outputs.biomarker_files import write_biomarker_csv, write_biomarker_plot  # matplotlib: only when writing
    from ..outputs.member_masks import write_member_masks
    from ..outputs.overlay import write_overlay

    with publish_folder(out_dir, "segment") as out:  # all files or none; never over a user's files
        names = muscle_names()
        write_like(result.labels, volume, out / "labels.nii.gz")
        status = {label: "flagged" for label in flagged_labels(result.scores)}
        write_seg_nrrd(result.labels, volume, out / "labels.seg.nrrd", names, status=status)
        write_like(result.probability.astype(np.float32), volume, out / "probability.nii.gz")
        write_like(result.uncertainty_total.astype(np.float32), volume, out / "uncertainty_total.nii.gz")
        write_like(result.uncertainty_epistemic.astype(np.float32), volume, out / "uncertainty_epistemic.nii.gz")
        slices_with_boxes = sorted({b.slice for b in boxes}) or list(range(volume.canonical_array.shape[0]))
        shown = [slices_with_boxes[i] for i in sorted({int(round(x)) for x in np.linspace(0, len(slices_with_boxes) - 1, min(4, len(slices_with_boxes)))})]
        write_overlay(seg.image, result.labels, result.uncertainty_total / np.log(2.0), shown, out / "overlay.png", names,
                      title=f"{Path(volume.source).name}: {loaded.ensemble.spec.name}", boxes=boxes)
        members, rows = case_biomarkers(volume, result, fat)
        swapped = swapped_after_segmentation(result.labels, fat.canonical_array, volume.canonical_array) if fat is not None else None
        if swapped:
            warn_input(f"Dixon pair fat {fat.source} / water {volume.source}: {swapped}")
        write_member_masks(out / "member_masks.npz", members, result.labels.shape)  # for export's intervals
        report = build_report(volume, result, loaded, boxes, rejected_input, rows, members)
        for name, doc in (extra_json or {}).items():
            write_json_atomic(out / name, doc)
        write_biomarker_csv(rows, names, out / "biomarkers.csv")
        write_biomarker_plot(rows, names, out / "biomarkers.png", title=Path(volume.source).name)
        write_json_atomic(out / "prompts.json", prompts_document(boxes, volume))
        write_json_atomic(out / "report.json", report)
    return report


def case_biomarkers(volume: Volume, result: VolumeResult, fat: Volume | None = None) -> tuple[dict[int, np.ndarray], list[Biomarkers]]:
    """Each member's own masks and the biomarker rows of the label map ``result.labels`` (the one that is
    written): every volume figure (printed table, report.json, biomarkers.csv) comes from these rows."""
    members = member_label_masks(result, result.labels.shape)
    rows = muscle_biomarkers(result.labels, volume.canonical_spacing, member_masks=members,
                             fat=fat.canonical_array if fat is not None else None,
                             water=volume.canonical_array if fat is not None else None, image=volume.canonical_array)
    return members, rows


def build_report(volume: Volume, result: VolumeResult, loaded: LoadedEnsemble, boxes: Sequence[BoxPrompt],
                 rejected_input: Sequence[tuple[str, str]], rows: Sequence[Biomarkers],
                 members: Mapping[int, np.ndarray] | None = None) -> dict:
    """The JSON report: per-muscle volume +- interval (from ``rows``, both sides; with ``members``, each
    member's own volume and the mean +- 1.96 sd interval too), uncertainty scores, biomarkers, review
    queue, timings, provenance."""
    names = muscle_names()
    spec = loaded.ensemble.spec
    per_muscle = {}
    for row in (r for r in rows if r.side == "both"):
        label = row.label
        item = {"label": label, "volume_ml": row.volume_ml,
                "interval_minmax_ml": list(row.volume_ml_interval or (row.volume_ml, row.volume_ml)), "n_slices": row.n_slices,
                "name": names.get(label, {}).get("name", str(label))}
        if members is not None and label in members:
            mv = members[label].reshape(members[label].shape[0], -1).sum(axis=1) * float(np.prod(volume.canonical_spacing)) / 1000
            sd = float(mv.std(ddof=1)) if mv.size >= 2 else float("nan")
            item.update({"member_volumes_ml": [float(v) for v in mv],
                         "interval_normal_ml": [float(mv.mean() - 1.96 * sd), float(mv.mean() + 1.96 * sd)]})
        scores = [s for s in result.scores if s.label == label]
        item["mean_uncertainty_nats"] = float(np.nanmean([s.mean_uncertainty for s in scores])) if scores else None
        item["mean_expected_dsc"] = float(np.nanmean([s.expected_dsc for s in scores])) if scores else None
        ious = result.iou_pred.get(str(label), [])
        item["mean_iou_pred"] = float(np.mean(ious)) if ious else None
        per_muscle[str(label)] = item
    rejected = [{"box": src, "reason": why} for src, why in rejected_input]
    rejected += [{"box": b.source or f"label {b.label} slice {b.slice} {list(b.xyxy)}", "reason": why} for b, why in result.rejected]
    return {
        "image": volume.source,
        **({"image_sha256": sha256_of_file(volume.source)} if Path(volume.source).is_file() else {}),
        "threshold": result.threshold,
        "boxes_used": len(boxes) - len(result.rejected),
        "boxes_rejected": rejected,
        "per_muscle": per_muscle,
        "slices": summarise_slices(result),
        "review_queue": [q.as_dict() for q in result.queue],
        "biomarkers": [b.as_dict() for b in rows],
        "scores": [s.as_dict() for s in result.scores],
        "timings": result.timings,
        "conventions": {
            "uncertainty": "nats; total = entropy of the ensemble-mean probability, epistemic = total - mean member entropy",
            "maps": "probability/uncertainty of the winning muscle (or the most probable one on background)",
            "orientation": "outputs are on the input image's grid (same size, spacing, origin, direction)",
            "volumes": "measured on the written labels.nii.gz (voxel count x voxel volume); interval = min-max over "
                       "the members' own masks (member probability >= threshold), widened to contain the volume",
            "biomarkers": "per muscle and side (patient right = low canonical columns; midline = the gap between the "
                          "thighs in the MRI); intervals as for volumes; fat fraction = fat/(fat+water) per voxel",
        },
        "provenance": {
            "software": f"musclesam {__version__}",
            "ensemble": spec.name,
            "ensemble_version": spec.version,
            "kind": spec.kind,
            "members": loaded.ensemble.members,
            "mirror_view": spec.mirror_view,
            "join": list(spec.join),
            "member_maps": loaded.ensemble.member_maps,
            "manifest": str(loaded.manifest_path) if loaded.manifest_path else None,
            "manifest_sha256": loaded.manifest_sha256,
            "device": str(loaded.ensemble.device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "licence": spec.licence,
            "intended_use": "research and demonstration only; not for clinical use",
        },
    }
