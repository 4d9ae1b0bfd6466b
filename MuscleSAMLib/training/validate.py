"""Validation exactly as inference runs: tight boxes from the labels, no jitter, per-member
probabilities on the slice grid, mean over members, multi-muscle argmax (>= 0.5), DSC per muscle per
patient (mean over muscles), plus ECE (15 bins) / AUROC(total uncertainty -> wrong voxel) over the
box regions (each muscle's own tight boxes, binary per muscle).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from segment_anything.modeling import Sam

from ..engine.boxes import boxes_from_labels
from ..metrics.calibration import ece
from ..metrics.overlap import dice_per_label, mean_dice
from ..metrics.uncertainty_quality import auroc_error
from ..slice_geometry import model_to_slice
from .data import Case
from .model_io import forward, prepare_box


@torch.no_grad()
def predict_boxes(models: Sequence[Sam], case: Case, boxes, geometry: str, margin: float, box_mask: bool,
                  box_mask_logit: float, chunk: int = 64):
    """Per box: (window, member probabilities (M, h, w)); each model runs its own encoder."""
    m0 = models[0]
    size = m0.image_encoder.img_size
    mean, std = m0.pixel_mean.flatten().cpu(), m0.pixel_std.flatten().cpu()
    dev = next(m0.parameters()).device
    prep = [prepare_box(case.image[b.slice], b.xyxy, size, margin, geometry, mean, std, case.legs) for b in boxes]
    out = []
    for s in range(0, len(prep), chunk):
        part = prep[s:s + chunk]
        x = torch.stack([p[0] for p in part]).to(dev)
        bx = torch.stack([p[1] for p in part]).to(dev)
        probs = torch.stack([torch.sigmoid(forward(m, x, bx, box_mask, box_mask_logit)[0].float()).cpu()
                             for m in models], 1)  # (B, M, g, g)
        out.extend(_to_slices(probs, part))
    return out


def _to_slices(probs: torch.Tensor, part) -> list:
    """Low-res member probabilities -> (window, (M, h, w)) on the slice grid (bilinear on logits)."""
    res = []
    for i, (_, _, geo, win) in enumerate(part):
        p = model_to_slice(torch.logit(probs[i].clamp(1e-6, 1 - 1e-6)), geo).sigmoid().numpy()
        res.append((win, p.astype(np.float32)))
    return res


def evaluate_case(models: Sequence[Sam], case: Case, geometry: str, margin: float, box_mask: bool,
                  box_mask_logit: float, values: Sequence[int] = (), calibration: bool = False,
                  shared_encoder: bool = False, temperature: float = 1.0) -> dict:
    """DSC per muscle (and optionally ECE/AUROC) of the ensemble ``models`` on one patient."""
    boxes, preds = predict_case(models, case, geometry, margin, box_mask, box_mask_logit, values, shared_encoder)
    return score_case(case, boxes, preds, calibration, temperature)


def predict_case(models, case: Case, geometry: str, margin: float, box_mask: bool, box_mask_logit: float,
                 values: Sequence[int] = (), shared_encoder: bool = False):
    """Tight boxes of ``case`` and their per-member probabilities (see :func:`predict_boxes`)."""
    boxes = boxes_from_labels(case.labels, values=values or None)
    if shared_encoder and len(models) > 1:
        return boxes, _predict_shared(models, case, boxes, geometry, margin, box_mask, box_mask_logit)
    return boxes, predict_boxes(models, case, boxes, geometry, margin, box_mask, box_mask_logit)


def _tempered(mp: np.ndarray, temperature: float) -> np.ndarray:
    if temperature == 1.0:
        return mp
    p = np.clip(mp, 1e-6, 1 - 1e-6)
    return 1.0 / (1.0 + np.exp(-np.log(p / (1 - p)) / temperature))


def score_case(case: Case, boxes, preds, calibration: bool = False, temperature: float = 1.0) -> dict:
    """Assemble (max per muscle, argmax >= 0.5 across muscles) and score one patient."""
    labels = sorted({b.label for b in boxes})
    lut = {v: i for i, v in enumerate(labels)}
    slices = sorted({b.slice for b in boxes})
    prob = {k: np.zeros((len(labels),) + case.image.shape[1:], np.float32) for k in slices}
    cal_p, cal_y, cal_u = [], [], []
    for b, (win, mp) in zip(boxes, preds):
        r0, r1, c0, c1 = win
        mean = _tempered(mp, temperature).mean(0)
        tgt = prob[b.slice][lut[b.label], r0:r1, c0:c1]
        np.maximum(tgt, mean, out=tgt)
        if calibration:
            x0, y0, x1, y1 = b.xyxy
            p = mean[y0 - r0:y1 - r0, x0 - c0:x1 - c0].astype(np.float64)
            y = case.labels[b.slice, y0:y1, x0:x1] == b.label
            pc = np.clip(p, 1e-7, 1 - 1e-7)
            cal_p.append(p.ravel()), cal_y.append(y.ravel())
            cal_u.append((-(pc * np.log(pc) + (1 - pc) * np.log(1 - pc))).ravel())
    pred = np.zeros(case.labels.shape, np.uint8)
    for k, pk in prob.items():
        best = pk.argmax(0)
        pred[k] = np.where(pk.max(0) >= 0.5, np.asarray(labels, np.uint8)[best], 0)
    truth = np.where(np.isin(case.labels, labels), case.labels, 0)
    per = dice_per_label(pred, truth, labels)
    res = {"dsc": float(mean_dice(per)), "per_muscle": {str(k): float(v) for k, v in per.items()}}
    if calibration and cal_p:
        p, y, u = np.concatenate(cal_p), np.concatenate(cal_y), np.concatenate(cal_u)
        res["ece_box_15"] = float(ece(p, y, n_bins=15))
        res["auroc_error"] = float(auroc_error(u, p >= 0.5, y))
        pc = np.clip(p, 1e-7, 1 - 1e-7)
        res["nll_box"] = float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
    return res


TEMPERATURES = (0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0)


def fit_temperature(models, cases: Sequence[Case], cfg, shared_encoder: bool = False) -> tuple[float, dict]:
    """The logit temperature (grid) minimising box-region NLL on ``cases``; returns (T, scores per T)."""
    preds = [predict_case(models, c, cfg.prompt_geometry, cfg.crop_margin, cfg.box_mask_prompt, cfg.box_mask_logit,
                          cfg.labels, shared_encoder) for c in cases]
    table = {}
    for t in TEMPERATURES:
        rs = [score_case(c, b, p, True, t) for c, (b, p) in zip(cases, preds)]
        table[t] = {k: float(np.mean([r[k] for r in rs])) for k in ("nll_box", "ece_box_15", "auroc_error", "dsc")}
    best = min(table, key=lambda t: table[t]["nll_box"])
    return best, table


def bake_temperature(state: dict, temperature: float) -> dict:
    """Divide the mask logits by ``temperature`` inside the weights (the hypernetworks' last layer)."""
    out = dict(state)
    for k, v in state.items():
        if k.startswith("mask_decoder.output_hypernetworks_mlps.") and ".layers.2." in k:
            out[k] = v / temperature
    return out


def _predict_shared(models, case, boxes, geometry, margin, box_mask, box_mask_logit):
    """Decoder-kind ensembles: one encoder pass (the first model's) for all members."""
    m0 = models[0]
    size = m0.image_encoder.img_size
    mean, std = m0.pixel_mean.flatten().cpu(), m0.pixel_std.flatten().cpu()
    out = []
    with torch.no_grad():
        prep = [prepare_box(case.image[b.slice], b.xyxy, size, margin, geometry, mean, std, case.legs) for b in boxes]
        for s in range(0, len(prep), 64):
            part = prep[s:s + 64]
            x = torch.stack([p[0] for p in part])
            bx = torch.stack([p[1] for p in part])
            emb = m0.image_encoder(x)
            probs = torch.stack([torch.sigmoid(forward(m, x, bx, box_mask, box_mask_logit, emb=emb)[0]) for m in models], 1)
            out.extend(_to_slices(probs, part))
    return out


def evaluate(models, cases: Sequence[Case], cfg, calibration: bool = False, shared_encoder: bool = False,
             temperature: float = 1.0) -> dict:
    """Mean over patients of :func:`evaluate_case` (keys: dsc, per_case, and calibration keys)."""
    for m in models:
        m.eval()
    per_case = {c.name: evaluate_case(models, c, cfg.prompt_geometry, cfg.crop_margin, cfg.box_mask_prompt,
                                      cfg.box_mask_logit, cfg.labels, calibration, shared_encoder,
                                      temperature) for c in cases}
    out = {"dsc": float(np.mean([r["dsc"] for r in per_case.values()])) if per_case else math.nan,
           "per_case": per_case}
    for k in ("ece_box_15", "auroc_error", "nll_box"):
        vals = [r[k] for r in per_case.values() if k in r]
        if vals:
            out[k] = float(np.mean(vals))
    return out
