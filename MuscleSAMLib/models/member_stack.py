"""Running M members of identical structure as one call: a prompt head per member, stacked (one concern).

:class:`PromptHead` is one member's prompt encoder + mask decoder; :class:`MemberStack` runs M of them
(or M encoders) on one input either as ``torch.func.vmap`` over stacked parameters or as a loop.
Members that differ only in output heads use :mod:`.shared_trunk` instead.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn


class PromptHead(nn.Module):
    """One member's prompt encoder + mask decoder: boxes (and optional dense mask prompt) -> logits."""

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def forward(self, image_embedding: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor | None = None,
                coords: torch.Tensor | None = None, labels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, C, h, w) embedding, (N, 4) model-space boxes, (N, 1, L, L) mask logits or None, optional
        SAM point prompt (N, P, 2) coords + (N, P) labels (-1 = padding) -> (N, 1, L, L) low-res logits
        and (N, 1) IoU predictions (single-mask output)."""
        points = None if coords is None else (coords, labels)
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=masks)
        return self.mask_decoder(image_embeddings=image_embedding, image_pe=self.prompt_encoder.get_dense_pe(),
                                 sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                 multimask_output=False)


class MemberStack:
    """M modules of identical structure run on one input as one call (vmap) or as a loop.

    ``vmap`` uses ``torch.func.stack_module_state`` + ``functional_call`` over a meta-device skeleton;
    ``loop`` keeps the modules. ``keep`` says which representations to hold ("vmap", "loop", "both").
    """

    def __init__(self, modules: Sequence[nn.Module], keep: str = "both") -> None:
        self.count = len(modules)
        self.modules: list[nn.Module] | None = list(modules) if keep in ("loop", "both") else None
        self.params: dict[str, torch.Tensor] | None = None
        self.buffers: dict[str, torch.Tensor] | None = None
        self.skeleton: nn.Module | None = None
        if keep in ("vmap", "both"):
            self.params, self.buffers = torch.func.stack_module_state(list(modules))
            self.skeleton = copy.deepcopy(modules[0]).to("meta")

    def __call__(self, args: Sequence[Any], per_member: Sequence[bool], mode: str) -> Any:
        """Run every member on ``args``; ``per_member[i]`` says args[i] has a leading member axis.

        Returns the members' outputs stacked on a new leading axis (tuples stacked element-wise).
        """
        if mode == "vmap" and self.skeleton is None:
            mode = "loop"
        if mode == "loop" and self.modules is None:
            mode = "vmap"
        if mode == "vmap":
            skeleton = self.skeleton

            def one(p: dict, b: dict, *a: Any) -> Any:
                return torch.func.functional_call(skeleton, (p, b), tuple(a))

            in_dims = (0, 0) + tuple(0 if pm and a is not None else None for a, pm in zip(args, per_member))
            return torch.func.vmap(one, in_dims=in_dims)(self.params, self.buffers, *args)
        assert self.modules is not None
        outs = [mod(*[a[m] if pm and a is not None else a for a, pm in zip(args, per_member)])
                for m, mod in enumerate(self.modules)]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(parts) for parts in zip(*outs))
        return torch.stack(outs)

    def to(self, device: torch.device) -> "MemberStack":
        """Move every held representation to ``device``."""
        if self.modules is not None:
            self.modules = [m.to(device) for m in self.modules]
        if self.params is not None:
            self.params = {k: v.to(device) for k, v in self.params.items()}
            self.buffers = {k: v.to(device) for k, v in (self.buffers or {}).items()}
        return self
