"""Segmentation losses on the decoder's low-resolution logits (METHODS.md step 6).

* :func:`dice_bce`: soft Dice + BCE (1:1); targets may be soft (area-downsampled masks).
* :func:`iou_head_loss`: MSE between SAM's IoU prediction and the IoU of (sigmoid > 0.5) vs truth.
* :class:`AutoWeightedLoss`: U-MedSAM-style sum of pixel MSE, soft Dice, BCE and a boundary
  (signed-distance) term, each weighted as exp(-s_k) L_k + s_k with learnable s_k.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per sample (sums over the last two dims), averaged over the batch."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum((-2, -1))
    den = p.sum((-2, -1)) + target.sum((-2, -1))
    return (1.0 - (2.0 * inter + eps) / (den + eps)).mean()


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits."""
    return F.binary_cross_entropy_with_logits(logits, target)


def dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice + BCE, 1:1."""
    return soft_dice_loss(logits, target) + bce_loss(logits, target)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of (sigmoid(logits) > 0.5) with (target > 0.5), per sample (empty vs empty = 1)."""
    p = logits > 0
    g = target > 0.5
    inter = (p & g).sum((-2, -1)).float()
    union = (p | g).sum((-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def iou_head_loss(iou_pred: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE(iou_pred, IoU(sigmoid(logits) > 0.5, target)), the IoU treated as a constant."""
    return F.mse_loss(iou_pred, mask_iou(logits.detach(), target))


def signed_distance(target: np.ndarray) -> np.ndarray:
    """Normalised signed distance of binary masks (N, H, W): < 0 inside, > 0 outside, |.| <= 1."""
    out = np.zeros(target.shape, dtype=np.float32)
    for i, m in enumerate(np.asarray(target) > 0.5):
        if not m.any() or m.all():
            continue
        d = ndimage.distance_transform_edt(~m) - ndimage.distance_transform_edt(m)
        out[i] = d / max(np.abs(d).max(), 1.0)
    return out


def boundary_loss(logits: torch.Tensor, sdf: torch.Tensor) -> torch.Tensor:
    """Kervadec boundary loss: mean of sigmoid(logits) x signed distance (minimal when p = mask)."""
    return (torch.sigmoid(logits) * sdf).mean()


class AutoWeightedLoss(nn.Module):
    """exp(-s_k) L_k + s_k over k in (pixel MSE, soft Dice, BCE, boundary); s_k learnable (start 0)."""

    TERMS = ("mse", "dice", "bce", "boundary")

    def __init__(self) -> None:
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(len(self.TERMS)))

    def terms(self, logits: torch.Tensor, target: torch.Tensor, sdf: torch.Tensor | None = None) -> torch.Tensor:
        """The unweighted terms as a (4,) tensor."""
        if sdf is None:
            sdf = torch.as_tensor(signed_distance(target.detach().cpu().numpy()), device=logits.device)
        return torch.stack([
            F.mse_loss(torch.sigmoid(logits), target),
            soft_dice_loss(logits, target),
            bce_loss(logits, target),
            boundary_loss(logits, sdf),
        ])

    def param_group(self, **settings) -> dict:
        """The optimiser group of the learned term weights: never weight-decayed (decay would pull every
        s_k towards 0, i.e. equal weights); ``settings`` adds e.g. the group's ``base_lr``."""
        return {"params": list(self.parameters()), **settings, "weight_decay": 0.0}

    def forward(self, logits: torch.Tensor, target: torch.Tensor, sdf: torch.Tensor | None = None) -> torch.Tensor:
        t = self.terms(logits, target, sdf)
        return (torch.exp(-self.log_vars) * t + self.log_vars).sum()
