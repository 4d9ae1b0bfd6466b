"""Members that share the mask decoder's trunk and differ only in their output heads.

A ``decoder`` ensemble whose member files hold nothing but output heads (the mask token's hypernetwork
MLP and the IoU head) runs the expensive part of SAM's mask decoder once per box for all members:
prompt encoder, two-way transformer (about 60 % of a LiteMedSAM decode on a CPU) and upscaling (about
25 %); then each member maps the shared mask token to its own 32 weights for the upscaled features and
predicts its own IoU. M members cost about one decoder instead of M (METHODS.md, "LiteMedSAM speed").
The members still disagree where the features are ambiguous, which is where boxes go wrong.

The forward pass mirrors ``segment_anything.modeling.MaskDecoder.predict_masks`` with
``multimask_output=False`` (mask token 0); :func:`tests <Testing.Python.test_litemedsam>` pin that a
member's output equals the plain decoder built from the same weights.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

#: State-dict prefixes a member may override for the shared-trunk path (everything else is common).
MEMBER_HEAD_PREFIXES = ("mask_decoder.output_hypernetworks_mlps.0.", "mask_decoder.iou_prediction_head.")


def only_output_heads(state_keys: Sequence[str]) -> bool:
    """True when a member file overrides nothing but output heads (so the trunk can be shared)."""
    return bool(state_keys) and all(k.startswith(MEMBER_HEAD_PREFIXES) for k in state_keys)


class SharedTrunkHeads:
    """One prompt encoder + mask-decoder trunk, M (hypernetwork MLP 0, IoU head) pairs.

    Called like :class:`~.ensemble.MemberStack`: ``heads((emb, boxes, masks, coords, labels), per_member,
    mode)`` -> (logits (M, N, 1, L, L), iou (M, N, 1)); ``coords`` (N, P, 2) / ``labels`` (N, P) are
    SAM's point prompt or None (:meth:`~.ensemble.Ensemble.decode` passes boxes with equal click counts,
    so no padding token changes an answer). ``chunk`` boxes go through the trunk at a time (on a CPU one
    box at a time is fastest: the upscaled features of many boxes do not fit in cache).
    """

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module, member_decoders: Sequence[nn.Module],
                 chunk: int = 1) -> None:
        self.prompt_encoder = prompt_encoder.eval()
        self.trunk = mask_decoder.eval()
        self.hyper = [copy.deepcopy(d.output_hypernetworks_mlps[0]).eval() for d in member_decoders]
        self.iou_heads = [copy.deepcopy(d.iou_prediction_head).eval() for d in member_decoders]
        self.count = len(member_decoders)
        self.modules = None  # no per-member modules: box-crop decoding needs a MemberStack
        self.chunk = max(int(chunk), 1)

    def to(self, device: torch.device) -> "SharedTrunkHeads":
        """Move every module to ``device``."""
        self.prompt_encoder.to(device)
        self.trunk.to(device)
        for mod in self.hyper + self.iou_heads:
            mod.to(device)
        return self

    def features(self, emb: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor | None,
                 points: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shared trunk for N boxes on one (1, C, h, w) embedding -> (iou token (N, C), mask token (N, C),
        upscaled features (N, c, H, W))."""
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=masks)
        dec = self.trunk
        out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens[None].expand(sparse.shape[0], -1, -1), sparse], dim=1)
        src = torch.repeat_interleave(emb, tokens.shape[0], dim=0) + dense
        pos = torch.repeat_interleave(self.prompt_encoder.get_dense_pe(), tokens.shape[0], dim=0)
        b, c, h, w = src.shape
        hs, src = dec.transformer(src, pos, tokens)
        up = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        return hs[:, 0], hs[:, 1], up

    def member_outputs(self, iou_tok: torch.Tensor, mask_tok: torch.Tensor,
                       up: torch.Tensor, members: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each listed member's logits (len, N, 1, H, W) and IoU (len, N, 1) from the shared features."""
        n, c, hh, ww = up.shape
        flat = up.reshape(n, c, hh * ww)
        logits, ious = [], []
        for m in members:
            w = self.hyper[m](mask_tok)  # (N, c)
            logits.append(torch.bmm(w[:, None], flat).reshape(n, 1, hh, ww))
            ious.append(self.iou_heads[m](iou_tok)[:, :1])
        return torch.stack(logits), torch.stack(ious)

    def __call__(self, args: Sequence[Any], per_member: Sequence[bool], mode: str = "loop") -> tuple[torch.Tensor, torch.Tensor]:
        """See the class docstring; ``per_member[2]`` True means one dense prompt per member."""
        emb, boxes, masks = args[:3]
        coords, labels = (args[3], args[4]) if len(args) > 3 else (None, None)
        n = boxes.shape[0]
        masks_per_member = bool(per_member[2]) and masks is not None
        groups = [(list(range(self.count)), masks)] if not masks_per_member else \
            [([m], masks[m]) for m in range(self.count)]
        logits = torch.empty((self.count, n, 1) + (self.trunk_grid(emb),) * 2, dtype=emb.dtype, device=emb.device)
        iou = torch.empty((self.count, n, 1), dtype=emb.dtype, device=emb.device)
        for members, mk in groups:
            for i in range(0, n, self.chunk):
                sl = slice(i, min(i + self.chunk, n))
                feats = self.features(emb, boxes[sl], None if mk is None else mk[sl], _points(coords, labels, sl))
                lo, q = self.member_outputs(*feats, members)
                logits[members, sl] = lo
                iou[members, sl] = q
        return logits, iou

    @staticmethod
    def trunk_grid(emb: torch.Tensor) -> int:
        """Side of the logit grid: 4 x the embedding grid (SAM's two 2x upscalings)."""
        return 4 * int(emb.shape[-1])


def _points(coords: torch.Tensor | None, labels: torch.Tensor | None,
            sl: slice) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rows ``sl`` of the point prompt (None without one)."""
    return None if coords is None or labels is None else (coords[sl], labels[sl])
