"""Clicks as SAM's sparse point prompt, and a previous answer as its dense mask prompt (training and
inference build both with these functions).

Objects in one decoder batch may have different numbers of clicks: shorter lists are padded with
SAM's "not a point" label -1 (the prompt encoder zeroes their position encoding and adds its
``not_a_point_embed``), so one batched call serves every object.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def point_prompt(clicks_model: Sequence[np.ndarray], device: torch.device | str = "cpu"
                 ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per object a (P_i, 3) array of (x, y, 1 | 0) in model-input pixel indices -> SAM's
    (coords (N, P, 2) float32, labels (N, P) int64), padded with label -1; None when no object has a click."""
    longest = max((len(c) for c in clicks_model), default=0)
    if longest == 0:
        return None
    n = len(clicks_model)
    coords = torch.zeros((n, longest, 2), dtype=torch.float32)
    labels = torch.full((n, longest), -1, dtype=torch.int64)
    for i, c in enumerate(clicks_model):
        if len(c):
            a = torch.as_tensor(np.asarray(c, np.float64), dtype=torch.float32)
            coords[i, :len(c)] = a[:, :2]
            labels[i, :len(c)] = a[:, 2].round().long()
    return coords.to(device), labels.to(device)


def previous_answer_prompt(member_logits: np.ndarray | torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Dense mask prompt from a previous answer: the members' mean low-res logit (M, N, L, L) -> (N, L, L),
    times ``temperature`` because shipped member heads carry logits / T while the decoder was trained on
    its raw logits. One prompt for all members keeps the trunk shared (one pass, not M)."""
    t = torch.as_tensor(np.asarray(member_logits) if not isinstance(member_logits, torch.Tensor) else member_logits,
                        dtype=torch.float32)
    return t.mean(0) * float(temperature)
