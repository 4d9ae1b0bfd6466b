"""Corrections bundle: contents on the input grid, edit map, uncertainty-vs-edit check, atomic replace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from musclesam_test_helpers import DIRECTIONS, make_image, write_random_decoder_ensemble
from MuscleSAMLib.outputs.bundle import check_bundle, edit_map, uncertainty_edit_check, write_bundle
from MuscleSAMLib.errors import GeometryError, InputError
from MuscleSAMLib.volumes import volume_from_array

ROOT = Path(__file__).resolve().parents[2]


def _case():
    img = np.random.default_rng(0).uniform(10, 100, (3, 30, 40)).astype(np.float32)
    ref = make_image(img, DIRECTIONS["RAS"])
    vol = volume_from_array(img, ref.GetSpacing(), ref.GetOrigin(), ref.GetDirection(), source="case.nii.gz")
    pred = np.zeros(vol.canonical_array.shape, np.uint8)
    pred[1, 5:15, 5:15] = 3
    corr = pred.copy()
    corr[1, 5:15, 15:18] = 3   # added 30 voxels
    corr[1, 5:7, 5:15] = 0     # removed 20 voxels
    return vol, pred, corr


def test_edit_map_codes():
    pred = np.array([0, 3, 3, 0, 5])
    corr = np.array([3, 0, 3, 0, 6])
    np.testing.assert_array_equal(edit_map(pred, corr), [1, 2, 0, 0, 3])


def test_uncertainty_that_points_at_the_edits_scores_high():
    _, pred, corr = _case()
    edits = edit_map(pred, corr)
    unc = (edits > 0).astype(np.float32) + 0.01 * np.random.default_rng(1).random(pred.shape)
    good = uncertainty_edit_check(unc, edits, pred, corr)
    assert good["auroc_edit"] == 1.0 and good["edited_voxels"] == 50
    bad = uncertainty_edit_check(1.0 - unc, edits, pred, corr)
    assert bad["auroc_edit"] == 0.0


def test_bundle_contents_on_the_input_grid(tmp_path):
    vol, pred, corr = _case()
    unc = np.zeros(pred.shape, np.float32)
    dest = write_bundle(tmp_path / "bundle", vol, corr, prediction=pred, uncertainty_total=unc, probability=unc,
                        interaction_log=[{"event": "paint"}], provenance={"ensemble": "x"})
    for f in ("corrected_labels.nii.gz", "corrected_labels.seg.nrrd", "prediction_labels.nii.gz", "edit_map.nii.gz",
              "prompts.json", "interaction_log.json", "provenance.json", "report.json", "biomarkers_corrected.csv"):
        assert (dest / f).is_file(), f
    back = sitk.ReadImage(str(dest / "corrected_labels.nii.gz"))
    np.testing.assert_allclose(back.GetDirection(), vol.image.GetDirection())
    assert back.GetSize() == vol.image.GetSize()
    report = json.loads((dest / "report.json").read_text())
    assert report["edits"] == {"added": 30, "removed": 20, "relabelled": 0}
    assert report["edits_per_muscle"]["3"] == {"added": 30, "removed": 20}
    assert json.loads((dest / "provenance.json").read_text())["ensemble"] == "x"
    assert check_bundle(dest, vol) == dest


def test_failed_write_leaves_previous_bundle_untouched(tmp_path):
    vol, pred, corr = _case()
    dest = write_bundle(tmp_path / "bundle", vol, corr)
    before = sorted(p.name for p in dest.iterdir())
    with pytest.raises(GeometryError):
        write_bundle(tmp_path / "bundle", vol, corr[:, :5])  # wrong grid: refused before writing
    with pytest.raises(Exception):
        write_bundle(tmp_path / "bundle", vol, corr, prediction=pred, probability=np.full(pred.shape, np.nan),
                     member_masks={3: "not an array"})  # fails midway
    assert sorted(p.name for p in dest.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temp folders left behind


def test_bundle_missing_files_refused(tmp_path):
    vol, pred, corr = _case()
    dest = write_bundle(tmp_path / "b", vol, corr)
    os.remove(dest / "prompts.json")
    with pytest.raises(InputError, match="incomplete bundle, missing prompts.json"):
        check_bundle(dest)


def test_segment_then_export_cli(tmp_path):
    from MuscleSAMLib.phantoms import make_thigh_phantom

    ph = make_thigh_phantom(seed=2, shape=(3, 96, 144), spacing=(6.0, 2.0, 2.0))
    manifest = write_random_decoder_ensemble(tmp_path / "w", members=2)
    img = sitk.GetImageFromArray(ph.water)
    sitk.WriteImage(img, str(tmp_path / "water.nii.gz"))
    boxes = {"boxes": [{"label": 3, "slice": 1, "xyxy": [10, 30, 40, 70]}]}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    run = lambda *a: subprocess.run([sys.executable, "-m", "MuscleSAMLib.cli", *a], cwd=ROOT, capture_output=True, text=True, timeout=600)  # noqa: E731
    seg = run("segment", str(tmp_path / "water.nii.gz"), "--boxes", str(tmp_path / "boxes.json"), "--out", str(tmp_path / "pred"),
              "--manifest", str(manifest), "--quiet")
    assert seg.returncode == 0, seg.stderr
    corrected = sitk.ReadImage(str(tmp_path / "pred" / "labels.nii.gz"))
    arr = sitk.GetArrayFromImage(corrected)
    arr[1, 40:50, 20:30] = 3  # the user paints an edit
    edited = sitk.GetImageFromArray(arr)
    edited.CopyInformation(corrected)
    sitk.WriteImage(edited, str(tmp_path / "corrected.nii.gz"))
    exp = run("export", str(tmp_path / "water.nii.gz"), "--corrected", str(tmp_path / "corrected.nii.gz"),
              "--prediction", str(tmp_path / "pred"), "--out", str(tmp_path / "bundle"))
    assert exp.returncode == 0, exp.stderr
    report = json.loads((tmp_path / "bundle" / "report.json").read_text())
    assert report["uncertainty_vs_edits"]["edited_voxels"] == int(((arr == 3) & (sitk.GetArrayFromImage(corrected) != 3)).sum())
    prompts = json.loads((tmp_path / "bundle" / "prompts.json").read_text())
    assert prompts["ijk"]["boxes"][0]["xyxy"] == [10, 30, 40, 70]
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "bundle" / "corrected_labels.nii.gz")))
    assert (back[1, 40:50, 20:30] == 3).all()  # the edit is in the bundle
    # the prediction's biomarkers keep the member intervals segment computed (member_masks.npz carries them over)
    at_segment = json.loads((tmp_path / "pred" / "report.json").read_text())["biomarkers"]
    in_bundle = report["biomarkers_prediction"]
    assert in_bundle and all(b["volume_ml_interval"] is not None for b in in_bundle)
    key = lambda b: (b["label"], b["side"])  # noqa: E731
    assert {key(b): b["volume_ml_interval"] for b in in_bundle} == {key(b): b["volume_ml_interval"] for b in at_segment}


def test_edit_check_summary_line(tmp_path):
    vol, pred, corr = _case()
    unc = (edit_map(pred, corr) > 0).astype(np.float32)
    dest = write_bundle(tmp_path / "b", vol, corr, prediction=pred, uncertainty_total=unc)
    from MuscleSAMLib.outputs.bundle import edit_check_summary

    line = edit_check_summary(dest)
    assert "AUROC 1.00 over 50 edited voxels" in line and "\n" not in line
    assert "nothing to compare" in edit_check_summary(write_bundle(tmp_path / "c", vol, corr))
