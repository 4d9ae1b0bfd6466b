"""Train a deep ensemble and write its manifest entry (``musclesam train --members M``).

Kinds (DESIGN.md): ``decoder`` = train one model (E+D or LoRA-merged) once, precompute its image
embeddings of augmented renders, then fine-tune M prompt-encoder + mask-decoder heads from it with
different seeds (D mode, cheap); ``full`` = M complete models differing in seed (and optionally fold).
``lora`` = M members trained as LoRA adapters (encoder and decoder attention, plus decoder heads) on
one frozen base, shipped merged as kind ``full`` (adapter-only member files: see what's left).
Checkpoints (``last.pt``, ``best.safetensors`` per model) live in ``out``; the shipped files go beside
the manifest (``--manifest``, default ``out/manifest.json``). Under torchrun, a single model trains data-parallel and members are spread over ranks; rank 0 writes
the files and the manifest (atomically, after every member is done).
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from ..models.lora import apply_lora, merge_lora
from ..models.manifest_writer import add_entry
from ..models.manifest import EnsembleSpec, WeightFile
from ..models.safe_load import load_into, load_state_dict, save_safetensors_atomic, sha256_file
from ..models.architectures import build_sam
from ..version import __version__
from .config import TrainConfig
from .data import Case, kfold, load_case, make_samples, phantom_cases
from .distributed import DistContext, barrier, init_distributed
from .trainer import RunResult, decoder_state, precompute, train_one
from .validate import bake_temperature, evaluate, fit_temperature


def load_cases(cfg: TrainConfig, fold: int | None = None) -> tuple[list[Case], list[Case]]:
    """Read the train/val patients (K-fold over all of them when ``cfg.folds`` > 1)."""
    if cfg.folds:
        every = [load_case(c) for c in (*cfg.train, *cfg.val)]
        tr, va = kfold([c.name for c in every], cfg.folds, cfg.fold if fold is None else fold, cfg.seed)
        return [every[i] for i in tr] + phantom_cases(cfg.phantoms, cfg.seed), [every[i] for i in va]
    return [load_case(c) for c in cfg.train] + phantom_cases(cfg.phantoms, cfg.seed), [load_case(c) for c in cfg.val]


def _plain_state(path: Path, cfg: TrainConfig, seed: int) -> dict:
    """A best.safetensors as a plain Sam state (LoRA adapters merged in)."""
    state = load_state_dict(path)
    if not any(".lora_" in k for k in state):
        return state
    sam = build_sam(cfg.arch_spec)
    apply_lora(sam, rank=cfg.lora_rank, members=1, alpha=cfg.lora_alpha, seed=seed)
    load_into(sam, state, strict=True, what=str(path))
    return merge_lora(sam, 0).state_dict()


def _models_from_states(cfg: TrainConfig, states: list[dict]) -> list:
    models = []
    for st in states:
        m = build_sam(cfg.arch_spec)
        load_into(m, st, strict=True, what="member", arch=cfg.arch_spec.name)
        models.append(m.eval())
    return models


def train_ensemble(cfg: TrainConfig, out: str | os.PathLike, *, resume: bool = False,
                   manifest: str | os.PathLike | None = None, progress: bool = True,
                   ctx: DistContext | None = None, command: str = "") -> dict[str, Any]:
    """Train ``cfg.members`` members into ``out`` and write/merge the manifest entry (rank 0).

    Returns the manifest entry's ``training`` record (metrics, seeds, timing) on rank 0.
    """
    ctx = ctx or init_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out)
    t0 = time.perf_counter()
    train_cases, val_cases = load_cases(cfg)
    make_samples(train_cases, cfg.labels)  # fails early when the labels hold no boxes
    runs: list[RunResult] = []
    states: list[dict] = []
    mine = [m for m in range(cfg.members) if m % ctx.world == ctx.rank]
    if cfg.ensemble_kind == "decoder":
        shared = train_one(cfg, train_cases, val_cases, out / "shared", mode=cfg.mode, seed=cfg.seed, steps=cfg.steps,
                           lr=cfg.lr, resume=resume, ctx=ctx, data_parallel=True, desc="shared", progress=progress)
        barrier(ctx)
        shared_state = _plain_state(shared.best_path, cfg, cfg.seed)
        cfg_d = replace_cfg(cfg, init=None)
        pre = None
        if cfg.member_steps > 0 and mine:
            enc = _models_from_states(cfg, [shared_state])[0]
            pre = precompute(enc, train_cases, make_samples(train_cases, cfg.labels), cfg, cfg.member_variants, cfg.seed)
        for m in mine:
            if cfg.member_steps == 0:
                continue
            runs_m = train_one(cfg_d, train_cases, val_cases, out / f"member_{m}", mode="D", seed=cfg.seed + 1 + m,
                               steps=cfg.member_steps, lr=cfg.member_lr, init_state=shared_state, precomputed=pre,
                               resume=resume, ctx=ctx, data_parallel=False, desc=f"member {m}", progress=progress)
            runs.append(runs_m)
        barrier(ctx)
        if not ctx.main:
            return {}
        for m in range(cfg.members):
            p = out / f"member_{m}" / "best.safetensors"
            st = dict(shared_state)
            if cfg.member_steps > 0:
                st.update(decoder_state(load_state_dict(p)))
            states.append(st)
        runs = [shared] + runs
    else:
        single = cfg.members == 1
        for m in (range(1) if single else mine):
            fold = (cfg.fold + m) % cfg.folds if cfg.member_folds else None
            tr, va = (train_cases, val_cases) if fold is None else load_cases(cfg, fold)
            mode = cfg.mode
            r = train_one(cfg, tr, va, out / f"member_{m}", mode=mode, seed=cfg.seed + m, steps=cfg.steps, lr=cfg.lr,
                          resume=resume, ctx=ctx, data_parallel=single, desc=f"member {m}", progress=progress)
            runs.append(r)
        barrier(ctx)
        if not ctx.main:
            return {}
        states = [_plain_state(out / f"member_{m}" / "best.safetensors", cfg, cfg.seed + m) for m in range(cfg.members)]
    shared_enc = cfg.ensemble_kind == "decoder"
    metrics: dict[str, Any] = {}
    temperature = cfg.temperature
    if temperature == 0:
        temperature, table = fit_temperature(_models_from_states(cfg, states), val_cases, cfg, shared_enc)
        metrics["temperature_fit"] = {str(t): v for t, v in table.items()}
    if temperature != 1.0:
        states = [bake_temperature(st, temperature) for st in states]
    metrics["temperature"] = temperature
    models = _models_from_states(cfg, states)
    if val_cases:
        ev = evaluate(models, val_cases, cfg, calibration=True, shared_encoder=shared_enc)
        metrics = {**metrics, "validation": {k: v for k, v in ev.items()},
                   "members_val_dsc": [None if math.isinf(r.best_dsc) or math.isnan(r.best_dsc) else round(r.best_dsc, 4)
                                       for r in runs]}
    record = _training_record(cfg, runs, metrics, time.perf_counter() - t0, command, ctx)
    _write_files_and_manifest(cfg, out, states, record, Path(manifest) if manifest else out / "manifest.json")
    return record


def replace_cfg(cfg: TrainConfig, **changes) -> TrainConfig:
    import dataclasses
    return dataclasses.replace(cfg, **changes)


def _training_record(cfg: TrainConfig, runs: list[RunResult], metrics: dict, seconds: float, command: str,
                     ctx: DistContext) -> dict[str, Any]:
    data = {"train": [{"name": c.name, "image": Path(c.image).name, "labels": Path(c.labels).name,
                       "image_sha256": sha256_file(c.image), "labels_sha256": sha256_file(c.labels)} for c in cfg.train],
            "val": [{"name": c.name, "image": Path(c.image).name, "labels": Path(c.labels).name} for c in cfg.val]}
    return {"software": f"musclesam {__version__}", "command": command, "config": cfg.to_dict(), "data": data,
            "seeds": [cfg.seed] + [cfg.seed + 1 + m for m in range(cfg.members)] if cfg.ensemble_kind == "decoder"
            else [cfg.seed + m for m in range(cfg.members)],
            "runs": [{"best_val_dsc": None if not math.isfinite(r.best_dsc) else round(r.best_dsc, 4),
                      "best_step": r.best_step, "steps": r.steps_done, "seconds": round(r.seconds, 1)} for r in runs],
            "seconds": round(seconds, 1), "world_size": ctx.world, "torch": torch.__version__,
            "machine": f"{platform.machine()} {os.cpu_count()} cpus", **metrics}


def _write_files_and_manifest(cfg: TrainConfig, out: Path, states: list[dict], record: dict, manifest: Path) -> None:
    """Member (and base) files as safetensors beside the manifest, then its entry (merged, atomic)."""
    name = cfg.manifest_name or cfg.name
    mdir = manifest.resolve().parent
    out = mdir

    def rel(p: Path) -> str:
        return os.path.relpath(p.resolve(), mdir)

    files: list[WeightFile] = []
    base = None
    if cfg.ensemble_kind == "decoder":
        bp = out / f"{name}_base.safetensors"
        enc = {k: v for k, v in states[0].items() if k.startswith("image_encoder.")}
        base = WeightFile(rel(bp), bp.resolve(), save_safetensors_atomic(enc, bp, {"ensemble": name, "part": "encoder"}))
        for m, st in enumerate(states):
            p = out / f"{name}_member{m}.safetensors"
            files.append(WeightFile(rel(p), p.resolve(), save_safetensors_atomic(decoder_state(st), p, {"ensemble": name, "member": str(m)})))
    else:
        for m, st in enumerate(states):
            p = out / f"{name}_member{m}.safetensors"
            files.append(WeightFile(rel(p), p.resolve(), save_safetensors_atomic(st, p, {"ensemble": name, "member": str(m)})))
    arch = cfg.arch_spec
    spec = EnsembleSpec(name=name, kind="full" if cfg.ensemble_kind == "lora" else cfg.ensemble_kind, arch=arch,
                        arch_name=cfg.arch if isinstance(cfg.arch, str) else arch.name, input_size=arch.img_size,
                        pixel_mean=arch.pixel_mean, pixel_std=arch.pixel_std, members=tuple(files), base=base,
                        prompt_geometry=cfg.prompt_geometry,
                        crop_margin=cfg.crop_margin if cfg.prompt_geometry == "box_crop" else 0.0,
                        box_mask_prompt=cfg.box_mask_prompt, box_mask_logit=cfg.box_mask_logit, training=record,
                        licence=cfg.licence, version=cfg.version, description=cfg.description, default=cfg.default)
    add_entry(manifest, spec, replace=True)  # THE manifest writer: locked read-modify-write
