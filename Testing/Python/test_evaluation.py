"""Evaluation: report keys and conventions, baselines side by side, perfect and empty predictions scored right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from musclesam_test_helpers import write_random_decoder_ensemble
from MuscleSAMLib.engine.types import BoxPrediction, SlicePrediction, Window
from MuscleSAMLib.engine.volume_run import VolumeResult
from MuscleSAMLib.pipelines.evaluate import METRIC_KEYS, evaluate_result, label_boxes, mean_metrics
from MuscleSAMLib.phantoms import make_thigh_phantom

ROOT = Path(__file__).resolve().parents[2]


def _result_from_probs(truth: np.ndarray, members: np.ndarray) -> VolumeResult:
    """A VolumeResult whose single box per label predicts ``members`` (M, *truth.shape) everywhere."""
    boxes = label_boxes(truth)
    preds = {}
    for b in boxes:
        win = Window(0, truth.shape[1], 0, truth.shape[2])
        mp = np.where(truth[b.slice] == b.label, members[:, b.slice], 1 - members[:, b.slice]).astype(np.float32)
        preds.setdefault(b.slice, SlicePrediction(b.slice, truth.shape[1:])).boxes.append(
            BoxPrediction(b, win, np.where(truth[b.slice] == b.label, mp, 0.0).astype(np.float32), np.ones(len(members))))
    z = np.zeros(truth.shape, np.float32)
    return VolumeResult(labels=truth.astype(np.uint8), probability=z, uncertainty_total=z, uncertainty_epistemic=z,
                        scores=[], queue=[], predictions=preds), boxes


def test_perfect_confident_prediction_scores_perfectly():
    truth = np.zeros((2, 20, 30), np.int32)
    truth[:, 5:12, 4:10] = 3
    truth[:, 8:15, 18:26] = 5
    members = np.full((3, *truth.shape), 0.99, np.float32)
    result, boxes = _result_from_probs(truth, members)
    per, pooled = evaluate_result(result, truth, boxes, (5.0, 1.0, 1.0))
    mean = mean_metrics(per)
    assert set(per) == {"3", "5"}
    assert mean["dsc"] == 1.0 and mean["nsd_2mm"] == 1.0 and mean["hd95_mm"] == 0.0
    assert mean["ece_box_15"] == pytest.approx(0.01, abs=1e-4)  # always right at confidence 0.99
    assert mean["brier_box"] == pytest.approx(0.0001, abs=1e-6)


def test_missing_muscle_counts_as_zero_dice():
    truth = np.zeros((1, 20, 30), np.int32)
    truth[0, 5:12, 4:10] = 3
    truth[0, 8:15, 18:26] = 5
    result, boxes = _result_from_probs(truth, np.full((2, *truth.shape), 0.9, np.float32))
    result.labels[result.labels == 5] = 0
    per, _ = evaluate_result(result, truth, boxes, (5.0, 1.0, 1.0))
    assert per["5"]["dsc"] == 0.0 and per["3"]["dsc"] == 1.0
    assert mean_metrics(per)["dsc"] == 0.5


def test_evaluate_cli_report_has_the_agreed_keys(tmp_path):
    ph = make_thigh_phantom(seed=3, shape=(3, 96, 144), spacing=(6.0, 2.0, 2.0))
    manifest = write_random_decoder_ensemble(tmp_path / "w", members=2)
    for name, arr in (("water.nii.gz", ph.water), ("labels.nii.gz", ph.labels)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((2.0, 2.0, 6.0))
        sitk.WriteImage(img, str(tmp_path / name))
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "MuscleSAMLib.cli", "evaluate", str(tmp_path / "water.nii.gz"),
                           str(tmp_path / "labels.nii.gz"), "--out", str(out), "--manifest", str(manifest), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert set(METRIC_KEYS) <= set(report["mean"])
    assert set(report["per_muscle"]) == {str(v) for v in range(1, 12)}
    assert 0.5 < report["baseline_boxfill"]["mean"]["dsc"] < 1.0
    assert "baseline_growcut" in report and "conventions" in report
    assert (out / "reliability.png").stat().st_size > 10_000
    assert list(out.glob("overlay_slice*.png"))


def test_evaluate_refuses_labels_on_another_grid(tmp_path):
    arr = np.random.default_rng(0).integers(1, 100, (3, 16, 16)).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    sitk.WriteImage(img, str(tmp_path / "img.nii.gz"))
    img2 = sitk.GetImageFromArray((arr > 50).astype(np.uint8))
    img2.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(img2, str(tmp_path / "lab.nii.gz"))
    proc = subprocess.run([sys.executable, "-m", "MuscleSAMLib.cli", "evaluate", str(tmp_path / "img.nii.gz"),
                           str(tmp_path / "lab.nii.gz"), "--out", str(tmp_path / "o")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "different grids" in proc.stderr
