"""The one model-input convention shared by training and validation (and matched by inference).

Per box: ``box_window(box, shape, crop_margin)`` crop of the normalised slice (box_crop geometry), its
leg's crop (legs geometry, :mod:`MuscleSAMLib.leg_layout`) or the whole slice; :func:`resize_pad` to the model size; SAM pixel normalisation on the resized area,
padding left at 0 (SamPredictor normalises, then pads); 3 identical channels. The box prompt is in
model-input pixels; the optional dense mask prompt is the runtime's own
:func:`MuscleSAMLib.models.ensemble.box_mask_prompt` (box filled on the low-res grid, +/-logit). Decoding is batched with one image per
prompt (segment_anything's ``predict_masks`` repeats each image per prompt, so it is re-assembled
here from the decoder's own sub-modules).
"""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.modeling import Sam

from ..leg_layout import LegLayout
from ..models.box_prompt import box_mask_prompt
from ..models.batched_decode import decode_per_image
from ..slice_geometry import ResizePad, box_window, resize_pad


def normalise_input(x: torch.Tensor, geo: ResizePad | None, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(1 or 3, S, S) 0..255 -> (3, S, S) SAM-normalised; padding (outside ``geo``'s resized area) = 0."""
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    out = (x - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    if geo is not None:
        h, w = geo.resized_shape
        pad = torch.zeros_like(out)
        pad[:, :h, :w] = out[:, :h, :w]
        out = pad
    return out


def crop_for_box(slice2d: np.ndarray, box_xyxy, margin: float, geometry: str,
                 layout: LegLayout | None = None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The pixels the model sees for one box and their window (r0, r1, c0, c1) in the slice: the box's
    crop (box_crop), its leg's crop (legs, from the volume's ``layout``; the whole slice without one, as
    the engine does) or the whole slice."""
    if geometry == "box_crop":
        r0, r1, c0, c1 = box_window(tuple(int(v) for v in box_xyxy), slice2d.shape, margin=margin)
    elif geometry == "legs" and layout is not None:
        r0, r1, c0, c1 = layout.window_of(box_xyxy)
    else:
        r0, r1, c0, c1 = 0, slice2d.shape[0], 0, slice2d.shape[1]
    return slice2d[r0:r1, c0:c1], (r0, r1, c0, c1)


def prompt_and_decode(sam: Sam, emb: torch.Tensor, boxes_model: torch.Tensor,
                      mask_prompt: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Image embeddings (B, C, g, g) with one box each -> (low-res logits (B, 4g, 4g), iou (B,))."""
    return decode_per_image(sam.prompt_encoder, sam.mask_decoder, emb, boxes_model, mask_prompt)


def forward(sam: Sam, x: torch.Tensor, boxes_model: torch.Tensor, box_mask: bool, box_mask_logit: float,
            emb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised inputs (B, 3, S, S) (or precomputed ``emb``) + boxes -> (logits, iou)."""
    if emb is None:
        emb = sam.image_encoder(x)
    grid = 4 * emb.shape[-1]
    mp = box_mask_prompt(boxes_model, sam.image_encoder.img_size, grid, box_mask_logit).to(emb.device) if box_mask else None
    return prompt_and_decode(sam, emb, boxes_model, mp)


def prepare_box(slice2d: np.ndarray, box_xyxy, img_size: int, margin: float, geometry: str,
                mean: torch.Tensor, std: torch.Tensor, layout: LegLayout | None = None):
    """Inference-side preparation of one box (no jitter, no augmentation; ``layout``: the volume's leg crops).

    Returns (x (3, S, S), box in model pixels (4,), ResizePad, window (r0, r1, c0, c1)).
    """
    pixels, win = crop_for_box(slice2d, box_xyxy, margin, geometry, layout)
    t, geo = resize_pad(pixels, img_size)
    x = normalise_input(t, geo, mean, std)
    local = np.array([box_xyxy[0] - win[2], box_xyxy[1] - win[0], box_xyxy[2] - win[2], box_xyxy[3] - win[0]], float)
    return x, torch.as_tensor(geo.box_to_model(local), dtype=torch.float32), geo, win
