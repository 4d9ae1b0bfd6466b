"""Train one model (one ensemble member, or the shared encoder of a ``decoder`` ensemble).

Modes: ``E+D`` (image encoder + mask decoder; the prompt encoder trains too when it is new: from
scratch or with the box mask prompt, whose mask-downscaling layers SAM never saw boxes with), ``D``
(decoder only, on embeddings precomputed once), ``LoRA`` (adapters on encoder/decoder attention plus
the decoder heads). Early stopping on validation DSC (per patient, then mean); the best weights are
kept; ``last.pt`` (model, optimiser, step, history) is written atomically every
``checkpoint_every`` steps so an interrupted run resumes where it was.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from segment_anything.modeling import Sam
from tqdm import tqdm

from ..atomic import atomic_path
from ..errors import WeightsError
from ..models.device import resolve_device
from ..models.architectures import build_sam
from ..models.lora import apply_lora
from ..models.safe_load import load_into, load_state_dict, save_safetensors_atomic
from .config import TrainConfig
from .data import Case, Sample, make_samples, render_batch
from .distributed import DistContext, average_gradients, broadcast_floats
from .losses import AutoWeightedLoss, dice_bce, iou_head_loss
from .model_io import forward
from .schedule import lr_factor, set_lr
from .sharpness_aware import SAMOptimizer, frozen_batch_norm_statistics
from .validate import evaluate

DECODER_PREFIXES = ("prompt_encoder.", "mask_decoder.")


@dataclass
class RunResult:
    """What one training run produced."""

    best_path: Path
    best_dsc: float
    best_step: int
    steps_done: int
    seconds: float
    history: list = field(default_factory=list)


def build_model(cfg: TrainConfig, init_state: dict | None = None) -> Sam:
    """Empty model of the config's layout, loaded from ``init_state`` or ``cfg.init`` (strict)."""
    sam = build_sam(cfg.arch_spec)
    state = init_state
    if state is None and cfg.init:
        state = load_state_dict(cfg.init)
    if state is not None:
        load_into(sam, state, strict=True, what=cfg.init or "(initial state)", arch=cfg.arch_spec.name)
    return sam


def set_trainable(sam: Sam, cfg: TrainConfig, mode: str, seed: int) -> list[torch.nn.Parameter]:
    """Freeze/unfreeze per mode; returns the trainable parameters."""
    sam.requires_grad_(False)
    new_prompt = cfg.init is None or cfg.box_mask_prompt
    if mode == "LoRA":
        apply_lora(sam, rank=cfg.lora_rank, members=1, alpha=cfg.lora_alpha, seed=seed)
        for n, p in sam.named_parameters():
            if "lora_" in n:
                p.requires_grad_(True)
        for mod in (sam.mask_decoder.output_hypernetworks_mlps, sam.mask_decoder.iou_prediction_head,
                    sam.mask_decoder.output_upscaling):
            mod.requires_grad_(True)
    else:
        sam.mask_decoder.requires_grad_(True)
        if mode == "E+D":
            sam.image_encoder.requires_grad_(True)
    if new_prompt and mode != "LoRA":
        sam.prompt_encoder.requires_grad_(True)
        sam.prompt_encoder.pe_layer.requires_grad_(False)
    return [p for p in sam.parameters() if p.requires_grad]


def _atomic_torch_save(obj, path: Path) -> None:
    """torch.save through a temp file + rename (an interrupted save never corrupts the checkpoint)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@dataclass
class Precomputed:
    """Image embeddings of augmented renders (for ``D`` mode): emb (N, C, g, g), boxes, targets."""

    emb: torch.Tensor
    boxes: torch.Tensor
    targets: torch.Tensor


@torch.no_grad()
def precompute(sam: Sam, cases: Sequence[Case], samples: Sequence[Sample], cfg: TrainConfig, variants: int,
               seed: int, chunk: int = 64) -> Precomputed:
    """Encode ``variants`` jittered/augmented renders of every sample once with ``sam``'s encoder."""
    sam.eval()
    size, grid = sam.image_encoder.img_size, 4 * (sam.image_encoder.img_size // cfg.arch_spec.patch_size)
    mean, std = sam.pixel_mean.flatten(), sam.pixel_std.flatten()
    embs, boxes, tgts = [], [], []
    idx = [i for _ in range(variants) for i in range(len(samples))]
    for s in range(0, len(idx), chunk):
        rng = np.random.default_rng([seed, 7, s])
        x, b, t = render_batch(cases, samples, idx[s:s + chunk], cfg, size, grid, mean, std, rng)
        embs.append(sam.image_encoder(x)), boxes.append(b), tgts.append(t)
    return Precomputed(torch.cat(embs), torch.cat(boxes), torch.cat(tgts))


def train_one(cfg: TrainConfig, train_cases: Sequence[Case], val_cases: Sequence[Case], out_dir: Path, *,
              mode: str, seed: int, steps: int, lr: float, init_state: dict | None = None,
              precomputed: Precomputed | None = None, resume: bool = False, ctx: DistContext = DistContext(),
              data_parallel: bool = True, desc: str = "train", progress: bool = True) -> RunResult:
    """Train one model; returns where its best weights are (``best.safetensors``) and its scores."""
    out_dir = Path(out_dir)
    dp = ctx if data_parallel else DistContext()
    torch.manual_seed(seed)
    sam = build_model(cfg, init_state)
    params = set_trainable(sam, cfg, mode, seed)
    dev = resolve_device(None)  # THE device policy: CUDA when present, else the CPU
    sam.to(dev)
    crit = AutoWeightedLoss().to(dev) if cfg.loss == "umedsam" else None
    groups = [{"params": list(params)}]
    if crit is not None:
        groups.append(crit.param_group())
        params = params + list(crit.parameters())
    opt_kw = dict(lr=lr, weight_decay=cfg.weight_decay)
    opt = SAMOptimizer(groups, torch.optim.AdamW, rho=cfg.sam_rho, **opt_kw) if cfg.sam_rho > 0 \
        else torch.optim.AdamW(groups, **opt_kw)
    samples = make_samples(train_cases, cfg.labels)
    size = sam.image_encoder.img_size
    grid = 4 * (size // cfg.arch_spec.patch_size)
    mean, std = sam.pixel_mean.flatten().cpu(), sam.pixel_std.flatten().cpu()
    step, best, best_step, history, bad = 0, -math.inf, -1, [], 0
    last, best_path = out_dir / "last.pt", out_dir / "best.safetensors"
    t_start, elapsed0 = time.perf_counter(), 0.0
    if resume and last.is_file():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        try:
            load_into(sam, ck["model"], strict=True, what=str(last), arch=cfg.arch_spec.name)
        except WeightsError as exc:
            raise WeightsError(f"cannot resume: {exc}") from None
        opt.load_state_dict(ck["opt"])
        if crit is not None and "crit" in ck:
            crit.load_state_dict(ck["crit"])
        step, best, best_step, bad = int(ck["step"]), float(ck["best"]), int(ck["best_step"]), int(ck["bad"])
        history, elapsed0 = list(ck["history"]), float(ck["seconds"])
    stop = bad >= cfg.patience

    def validate_now() -> float:
        if not val_cases:
            return math.nan
        d = evaluate([sam], val_cases, cfg)["dsc"] if ctx.main or not data_parallel else 0.0
        sam.train()
        return broadcast_floats([d], dp)[0]

    def save_last() -> None:
        if dp.main:
            _atomic_torch_save({"model": sam.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                                "best_step": best_step, "bad": bad, "history": history,
                                "crit": crit.state_dict() if crit is not None else {},
                                "seconds": elapsed0 + time.perf_counter() - t_start}, last)

    def loss_of(batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, b, t, e = batch
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cfg.amp and dev.type == "cuda"):
            logits, iou = forward(sam, x, b, cfg.box_mask_prompt, cfg.box_mask_logit, emb=e)
        logits, iou = logits.float(), iou.float()
        main = crit(logits, t) if crit is not None else dice_bce(logits, t)
        return main + cfg.iou_loss_weight * iou_head_loss(iou, logits, t), logits

    sam.train()
    bar = tqdm(total=steps, initial=step, desc=desc, disable=not (progress and dp.main), leave=False,
               mininterval=2.0)
    loss_avg = None
    while step < steps and not stop:
        rng = np.random.default_rng([seed, step, dp.rank])
        if precomputed is not None:
            idx = torch.as_tensor(rng.integers(0, len(precomputed.emb), cfg.batch_size))
            batch = (None, precomputed.boxes[idx].to(dev), precomputed.targets[idx].to(dev), precomputed.emb[idx].to(dev))
        else:
            idx = rng.integers(0, len(samples), cfg.batch_size)
            x, b, t = render_batch(train_cases, samples, idx, cfg, size, grid, mean, std, rng)
            batch = (x.to(dev), b.to(dev), t.to(dev), None)
        set_lr(opt, lr, lr_factor(step, steps, cfg.warmup_steps))
        loss, _ = loss_of(batch)
        loss.backward()
        average_gradients(params, dp)
        if isinstance(opt, SAMOptimizer):
            opt.first_step(zero_grad=True)
            with frozen_batch_norm_statistics(sam):  # the perturbed pass leaves the running statistics alone
                loss2 = loss_of(batch)[0]
            loss2.backward()
            average_gradients(params, dp)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.second_step(zero_grad=True)
        else:
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        step += 1
        lv = float(loss.detach())
        loss_avg = lv if loss_avg is None else 0.95 * loss_avg + 0.05 * lv
        if step % cfg.val_every == 0 or step == steps:
            d = validate_now()
            history.append({"step": step, "loss": round(loss_avg, 5), "val_dsc": None if math.isnan(d) else round(d, 5)})
            if math.isnan(d) or d > best:
                best, best_step, bad = (d if not math.isnan(d) else best), step, 0
                if dp.main:
                    save_safetensors_atomic(sam.state_dict(), best_path)
            else:
                bad += 1
                stop = bad >= cfg.patience
            bar.set_postfix(loss=f"{loss_avg:.4f}", dsc=f"{d:.4f}", best=f"{best:.4f}")
        elif step % 10 == 0:
            bar.set_postfix(loss=f"{loss_avg:.4f}", best=f"{best:.4f}")
        if step % cfg.checkpoint_every == 0 or step == steps or stop:
            save_last()
        bar.update(1)
    bar.close()
    if dp.main and not best_path.is_file():
        save_safetensors_atomic(sam.state_dict(), best_path)
    return RunResult(best_path, best, best_step, step, elapsed0 + time.perf_counter() - t_start, history)


def decoder_state(state: dict) -> dict:
    """The keys a ``decoder`` ensemble member file holds (prompt encoder + mask decoder)."""
    return {k: v for k, v in state.items() if k.startswith(DECODER_PREFIXES)}
