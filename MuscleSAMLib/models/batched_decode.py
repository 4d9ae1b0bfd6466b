"""SAM's mask decoder on a batch of (image embedding, box) pairs: one embedding per box.

``segment_anything``'s ``MaskDecoder.forward`` repeats ONE image embedding for all prompts, which is
right for whole-slice geometry but not for box crops, where every box has its own embedding. This
runs the same modules (prompt encoder, two-way transformer, upscaling, hypernetwork MLPs, IoU head)
with the batch axis shared by embeddings and boxes; single-mask output only. Tested equal to the
upstream forward, box by box.
"""

from __future__ import annotations

import torch
from torch import nn


def decode_per_image(prompt_encoder: nn.Module, mask_decoder: nn.Module, emb: torch.Tensor, boxes: torch.Tensor,
                     masks: torch.Tensor | None,
                     points: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings (B, C, g, g), one box each (B, 4) model pixels, optional dense prompts (B, 1, 4g, 4g)
    and SAM point prompt ((B, P, 2), (B, P)) -> low-res logits (B, 4g, 4g) and IoU predictions (B,) of
    the first (single) mask token."""
    sparse, dense = prompt_encoder(points=points, boxes=boxes.float(), masks=masks)
    dec = mask_decoder
    b = emb.shape[0]
    tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], 0)[None].expand(b, -1, -1)
    tokens = torch.cat([tokens, sparse], 1)
    src = emb + dense
    pos = prompt_encoder.get_dense_pe().expand(b, -1, -1, -1)
    c, h, w = src.shape[1:]
    hs, src = dec.transformer(src, pos, tokens)
    iou_tok = hs[:, 0]
    mask_toks = hs[:, 1:1 + dec.num_mask_tokens]
    up = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper = torch.stack([mlp(mask_toks[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], 1)
    bu, cu, hu, wu = up.shape
    out = (hyper @ up.reshape(bu, cu, hu * wu)).reshape(bu, -1, hu, wu)
    iou = dec.iou_prediction_head(iou_tok)
    return out[:, 0], iou[:, 0]
