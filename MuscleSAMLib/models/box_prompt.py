"""The box as SAM's dense mask prompt (training and inference build it with this one function)."""

from __future__ import annotations

import torch

from .manifest import DEFAULT_BOX_MASK_LOGIT


def box_mask_prompt(boxes_model: torch.Tensor, input_size: int, grid: int,
                    value: float = DEFAULT_BOX_MASK_LOGIT) -> torch.Tensor:
    """Dense mask prompt from boxes: (N, 4) model-space boxes -> (N, 1, grid, grid) logits.

    The grid covers the padded model input (like SAM's low-res logits): a cell whose centre lies in the
    half-open box gets +value, every other cell -value (value 4 -> sigmoid 0.98). The cell holding the
    box centre is always inside, so a box smaller than a cell still shows. Training must build the
    prompt with this same function.
    """
    b = torch.as_tensor(boxes_model, dtype=torch.float32)
    cell = input_size / grid
    centres = (torch.arange(grid, dtype=torch.float32, device=b.device) + 0.5) * cell
    inx = (centres[None, :] >= b[:, 0:1]) & (centres[None, :] < b[:, 2:3])  # (N, grid) columns
    iny = (centres[None, :] >= b[:, 1:2]) & (centres[None, :] < b[:, 3:4])  # (N, grid) rows
    cx = ((b[:, 0] + b[:, 2]) / 2 / cell).long().clamp(0, grid - 1)
    cy = ((b[:, 1] + b[:, 3]) / 2 / cell).long().clamp(0, grid - 1)
    idx = torch.arange(b.shape[0], device=b.device)
    inx[idx, cx] = True
    iny[idx, cy] = True
    inside = iny[:, :, None] & inx[:, None, :]
    return torch.where(inside, value, -value).to(torch.float32)[:, None]
