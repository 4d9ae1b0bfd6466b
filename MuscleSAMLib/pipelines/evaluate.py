"""Evaluate an ensemble on a labelled case with tight boxes derived from the labels (METHODS.md "Metrics").

Prompts: one tight box per muscle per leg per axial slice (no jitter), exactly what ``musclesam
evaluate`` and the baselines use. Per muscle (label), binary metrics of that muscle's ensemble-mean
probability p_k (max over its boxes; 0 outside their windows) against truth y_k = (labels == k):

* ``dsc``, ``nsd_2mm``, ``hd95_mm`` on the assembled label map (3D, physical spacing);
* ``ece_box_15`` / ``nll_box`` / ``brier_box`` over the voxels inside that muscle's boxes;
  ``ece_volume_15`` over the whole volume (dominated by easy background: reported for contrast);
* ``auroc_error``: AUROC of the total uncertainty H(p_k) for wrong voxels ((p_k >= 0.5) != y_k) in the boxes.

``mean`` = nanmean over the muscles present in the truth (background never included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import write_json_atomic
from ..outputs.figures import new_figure, save_png
from ..baselines.boxfill import boxfill_labels
from ..engine.boxes import boxes_from_labels
from ..engine.segmenter import Segmenter
from ..engine.types import BoxPrompt
from ..engine.volume_run import VolumeResult, segment_volume
from ..errors import InputError
from ..label_maps import muscle_label_array
from ..metrics import brier, dice, ece, hd95, nll, nsd, reliability_curve
from ..metrics.uncertainty_quality import auroc, error_share_in_top
from ..outputs.overlay import write_overlay
from ..result_folders import publish_folder
from ..sample_data import muscle_names
from ..models.loading import LoadedEnsemble
from .segment import build_report, case_biomarkers
from ..uncertainty import binary_entropy
from ..volumes import Volume, check_same_grid

METRIC_KEYS = ("dsc", "nsd_2mm", "hd95_mm", "ece_box_15", "ece_volume_15", "nll_box", "brier_box", "auroc_error")
CONVENTIONS = {
    "prompts": "one tight box per muscle per connected component (leg) per axial slice, from LABELS, no jitter",
    "dsc": "2|P and G|/(|P|+|G|) per muscle on the assembled 3D label map; both empty = NaN, one empty = 0",
    "nsd_2mm": "area-weighted fraction of both surfaces within 2 mm of the other (physical spacing)",
    "hd95_mm": "max over directions of the area-weighted 95th percentile surface distance (mm)",
    "ece_box_15": "15 equal-width bins over [0,1] of max(p,1-p), correctness 1[(p>=0.5)==y], voxels inside the muscle's boxes",
    "ece_volume_15": "same over the whole volume (dominated by easy background)",
    "nll_box": "mean -[y log p + (1-y) log(1-p)], p clipped to [1e-7, 1-1e-7], inside the boxes",
    "brier_box": "mean (p-y)^2 inside the boxes",
    "auroc_error": "AUROC of total uncertainty H(p) for wrong voxels inside the boxes (ties count half)",
    "mean": "nanmean over muscles present in the truth; background never included",
    "probability": "p = ensemble mean of member probabilities (max over the muscle's boxes)",
    "fractions": "all metrics are fractions, not percent",
}


def label_boxes(labels: np.ndarray, values: Sequence[int] | None = None) -> list[BoxPrompt]:
    """The evaluation prompts (tight boxes per muscle per leg per slice) for a canonical label map."""
    return boxes_from_labels(labels.astype(np.int32), values=values)


def _box_region(boxes: Sequence[BoxPrompt], shape: tuple[int, int, int]) -> np.ndarray:
    region = np.zeros(shape, bool)
    for b in boxes:
        c0, r0, c1, r1 = b.xyxy
        region[b.slice, r0:r1, c0:c1] = True
    return region


def label_probability(combined: dict[int, dict], label: int, shape: tuple[int, int, int]) -> np.ndarray:
    """3D ensemble-mean probability of one muscle (max over its boxes; 0 outside their windows).

    ``combined`` is the run's ``VolumeResult.combined`` (each slice's boxes combined once per muscle).
    """
    vol = np.zeros(shape, np.float32)
    for k, per_label in combined.items():
        per = per_label.get(label)
        if per is not None:
            vol[k][per.window.slices] = per.mean
    return vol


def segmentation_metrics(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float]) -> dict:
    """dsc, nsd_2mm, hd95_mm of two boolean 3D masks."""
    return {"dsc": dice(pred, truth), "nsd_2mm": nsd(pred, truth, spacing, 2.0), "hd95_mm": hd95(pred, truth, spacing)}


def evaluate_result(result: VolumeResult, truth: np.ndarray, boxes: Sequence[BoxPrompt],
                    spacing: tuple[float, float, float]) -> tuple[dict, dict]:
    """Per-muscle metrics and pooled box-region (p, y) for the reliability diagram."""
    shape = truth.shape
    per_muscle: dict[str, dict] = {}
    pooled_p, pooled_y = [], []
    combined = result.combined
    for label in sorted(int(v) for v in np.unique(truth) if v != 0):
        y = truth == label
        m = segmentation_metrics(result.labels == label, y, spacing)
        p = label_probability(combined, label, shape)
        region = _box_region([b for b in boxes if b.label == label], shape)
        if region.any():
            m["ece_box_15"] = ece(p, y, 15, region)
            m["ece_box_10"] = ece(p, y, 10, region)
            m["nll_box"] = nll(p, y, region)
            m["brier_box"] = brier(p, y, region)
            wrong = (p >= 0.5) != y
            m["auroc_error"] = auroc(binary_entropy(p), wrong, region)
            pooled_p.append(p[region])
            pooled_y.append(y[region])
        else:
            m.update({k: float("nan") for k in ("ece_box_15", "ece_box_10", "nll_box", "brier_box", "auroc_error")})
        m["ece_volume_15"] = ece(p, y, 15)
        per_muscle[str(label)] = m
    pooled = {"p": np.concatenate(pooled_p) if pooled_p else np.zeros(0), "y": np.concatenate(pooled_y) if pooled_y else np.zeros(0, bool)}
    return per_muscle, pooled


def _nanmean(values: list[float]) -> float:
    arr = np.array([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def mean_metrics(per_muscle: dict[str, dict]) -> dict:
    """nanmean of every metric over muscles (infinite HD95 of a missed muscle excluded from the mean, counted)."""
    keys = sorted({k for m in per_muscle.values() for k in m})
    out = {k: _nanmean([m.get(k, float("nan")) for m in per_muscle.values()]) for k in keys}
    out["hd95_missed_muscles"] = int(sum(1 for m in per_muscle.values() if m.get("hd95_mm") == float("inf")))
    return out


def baseline_scores(image: np.ndarray, truth: np.ndarray, boxes: Sequence[BoxPrompt], spacing, use_growcut: bool = True) -> dict:
    """DSC of the non-learned baselines on the same boxes (fill-the-box; Slicer GrowCut from box seeds)."""
    out = {}
    fills = {"baseline_boxfill": boxfill_labels(boxes, truth.shape)}
    if use_growcut:
        from ..baselines.growcut import growcut_labels, slicer_growcut_available

        if slicer_growcut_available():
            fills["baseline_growcut"] = growcut_labels(image, boxes, truth.shape)
    for name, lab in fills.items():
        per = {str(v): {"dsc": dice(lab == v, truth == v)} for v in sorted(int(x) for x in np.unique(truth) if x != 0)}
        out[name] = {"mean": {"dsc": _nanmean([m["dsc"] for m in per.values()])}, "per_muscle": per}
    return out


def reliability_plot(p: np.ndarray, y: np.ndarray, path: str | Path, title: str) -> Path:
    """Reliability diagram (15 bins, box region, pooled over muscles) with counts."""
    curve = reliability_curve(p, y, 15)
    centers = (curve.edges[:-1] + curve.edges[1:]) / 2
    fig, (ax, ax2) = new_figure(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ok = curve.counts > 0
    ax.bar(centers[ok], curve.accuracy[ok], width=1 / 15, edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.plot(curve.confidence[ok], curve.accuracy[ok], "o-", color="C3", ms=3, label="per bin")
    ax.set_xlim(0.45, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("accuracy")
    ax.set_title(title + f"\nECE(15) = {ece(p, y, 15):.3f}")
    ax.legend(loc="upper left", fontsize=8)
    ax2.bar(centers[ok], curve.counts[ok], width=1 / 15, edgecolor="k", color="gray")
    ax2.set_yscale("log")
    ax2.set_xlabel("confidence max(p, 1-p)")
    ax2.set_ylabel("voxels")
    fig.tight_layout()
    return save_png(fig, path, dpi=100)


def uncertainty_quality(result: VolumeResult, truth: np.ndarray, region: np.ndarray, wrong: np.ndarray,
                        metrics: dict[str, dict], segment_per_muscle: dict[str, dict], boxes: Sequence[BoxPrompt],
                        spacing: tuple[float, float, float]) -> dict:
    """Does the uncertainty tell the truth? (METHODS.md "Uncertainty usefulness"; issue targets.)

    - ``epistemic_share_wrong`` / ``_right``: mean of epistemic / total uncertainty over wrong / right
      voxels of ``region`` (voxels with total > 1e-6 nats); members should disagree where they are wrong.
    - ``expected_dsc_abs_error``: mean over muscles of |mean expected DSC - real DSC|.
    - ``volume_interval_coverage``: share of muscles whose member [min, max] volume interval holds the
      label map's volume over the same slices (``coverage_normal``: the mean +- 1.96 sd interval).
    """
    tot = result.uncertainty_total[region]
    epi = result.uncertainty_epistemic[region]
    w = wrong[region]
    ok = tot > 1e-6
    share = np.where(ok, epi / np.where(ok, tot, 1.0), np.nan)
    errs, cover, cover_n = [], [], []
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for key, m in metrics.items():
        seg = segment_per_muscle.get(key)
        if seg is None:
            continue
        if seg.get("mean_expected_dsc") is not None and m.get("dsc") is not None and not np.isnan(m["dsc"]):
            errs.append(abs(seg["mean_expected_dsc"] - m["dsc"]))
        label = int(key)
        slices = sorted({b.slice for b in boxes if b.label == label})
        true_ml = float((truth[slices] == label).sum()) * voxel_ml if slices else 0.0
        lo, hi = seg.get("interval_minmax_ml") or (None, None)
        if lo is not None and hi is not None:
            cover.append(lo <= true_ml <= hi)
        lo, hi = seg.get("interval_normal_ml") or (None, None)
        if lo is not None and hi is not None:
            cover_n.append(lo <= true_ml <= hi)
    return {
        "epistemic_share_wrong": float(np.nanmean(share[w & ok])) if (w & ok).any() else float("nan"),
        "epistemic_share_right": float(np.nanmean(share[~w & ok])) if (~w & ok).any() else float("nan"),
        "mean_epistemic_wrong_nats": float(epi[w].mean()) if w.any() else float("nan"),
        "mean_epistemic_right_nats": float(epi[~w].mean()) if (~w).any() else float("nan"),
        "expected_dsc_abs_error": float(np.mean(errs)) if errs else float("nan"),
        "volume_interval_coverage": float(np.mean(cover)) if cover else float("nan"),
        "volume_interval_coverage_normal": float(np.mean(cover_n)) if cover_n else float("nan"),
        "region": "union of all boxes; wrong = assembled label map differs from the labels",
    }


def evaluate_case(image: Volume, labels: Volume, loaded: LoadedEnsemble, out_dir: str | Path, *,
                  show_progress: bool = True, use_growcut: bool = True, threshold: float = 0.5,
                  clicks: int = 0, click_update: str = "local") -> dict:
    """Run the ensemble with label-derived boxes, compare with the labels, write report + pictures.
    ``clicks`` > 0 adds the clicks-to-quality protocol (:mod:`.click_eval`) as ``report["clicks"]``,
    each click answered with ``click_update`` (:attr:`Segmenter.click_update`)."""
    check_same_grid(image, labels, "image", "label map")
    truth = muscle_label_array(labels, "label map").astype(np.int32)
    if not (truth > 0).any():
        raise InputError(f"{labels.source}: label map has no muscle labels (all zero or negative)")
    boxes = label_boxes(truth)
    seg = Segmenter(loaded.ensemble, image.canonical_array, volume_id=image.source, spacing=image.canonical_spacing)
    result = segment_volume(seg, boxes, show_progress=show_progress, threshold=threshold)
    spacing = image.canonical_spacing
    per_muscle, pooled = evaluate_result(result, truth, boxes, spacing)
    flat_unc = result.uncertainty_total
    union = _box_region(boxes, truth.shape)
    wrong = (result.labels != truth)
    report = {
        "image": image.source,
        "labels": labels.source,
        "ensemble": loaded.ensemble.spec.name,
        "mean": mean_metrics(per_muscle),
        "per_muscle": per_muscle,
        "assembled": {
            "auroc_error_total_uncertainty": auroc(flat_unc, wrong, union),
            "error_share_top5pct": error_share_in_top(flat_unc, wrong, 0.05, union),
            "error_share_top10pct": error_share_in_top(flat_unc, wrong, 0.10, union),
            "region": "union of all boxes; label map vs truth; total uncertainty of the winning muscle",
        },
        **baseline_scores(seg.image, truth, boxes, spacing, use_growcut),
        "conventions": CONVENTIONS,
        "boxes": len(boxes),
        "muscle_names": {str(k): v["name"] for k, v in muscle_names().items()},
        "segment_report": build_report(image, result, loaded, boxes, [], *reversed(case_biomarkers(image, result))),
    }
    report["uncertainty_quality"] = uncertainty_quality(result, truth, union, wrong, report["per_muscle"],
                                                        report["segment_report"]["per_muscle"], boxes, spacing)
    if clicks > 0:
        from .click_eval import click_report

        seg.click_update = click_update
        report["clicks"] = click_report(seg, boxes, truth, clicks, threshold)
    with publish_folder(out_dir, "evaluate") as out:  # all or nothing; never over a user's files
        _write_pictures(seg, result, boxes, pooled, image, loaded, out)
        write_json_atomic(out / "report.json", report)
    return report


def _write_pictures(seg, result: VolumeResult, boxes: Sequence[BoxPrompt], pooled: dict, image: Volume,
                    loaded: LoadedEnsemble, out: Path) -> None:
    reliability_plot(pooled["p"], pooled["y"], out / "reliability.png", f"{Path(image.source).name}: {loaded.ensemble.spec.name}")
    slices = sorted({b.slice for b in boxes})
    pick = [slices[i] for i in sorted({int(round(x)) for x in np.linspace(0, len(slices) - 1, min(3, len(slices)))})]
    for k in pick:
        write_overlay(seg.image, result.labels, result.uncertainty_total / np.log(2.0), [k], out / f"overlay_slice{k:02d}.png",
                      muscle_names(), title=f"slice {k}: prediction outlines, uncertainty heat")
