"""LoRA adapters on the attention of LiteMedSAM's TinyViT stages, for training the encoder tail cheaply.

Recipe options ``encoder_lora_stages`` = K and ``encoder_lora_rank`` = r (:class:`~.decoder_finetune.DecoderRecipe`):
of the ``encoder_stages`` tail (:mod:`.encoder_tail`), the first K stages stay frozen and each attention's
query and value projections get a rank-r update ``scale * B @ A`` (``scale = alpha / r``, alpha = r, B starts at
zero so training starts from the base); the tail's other stages, the neck and the decoder train in full.
TinyViT's fused ``qkv`` Linear lays its output out per head as [q (key_dim), k (key_dim), v (d)], so the
adapted rows are the q and v rows of every head (:func:`qv_rows`), not contiguous thirds as in SAM's ViT
(:mod:`~MuscleSAMLib.models.lora` is the inference-time, member-batched LoRA of SAM's encoder).

The adapters act through forward hooks on the frozen Linears, so the model's state dict keeps its names:
:meth:`EncoderLoRA.merged` folds the updates into ``qkv.weight`` (what checkpoints, validation and the
published trunk store: inference runs the merged weights, at no extra cost). A resumed run starts new
adapters (B = 0) on the merged weights: the same function, only the adapters' own values restart.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn


def _attentions(stage: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path inside the stage, module) of every TinyViT attention (has fused ``qkv`` and per-head sizes)."""
    return [(n, m) for n, m in stage.named_modules()
            if isinstance(getattr(m, "qkv", None), nn.Linear) and hasattr(m, "key_dim") and hasattr(m, "num_heads")]


def qv_rows(attn: nn.Module) -> torch.Tensor:
    """Indices of the query and value rows of a TinyViT attention's fused ``qkv`` output (head-major:
    each head's block is [q (key_dim), k (key_dim), v (d)])."""
    kd, d, heads = int(attn.key_dim), int(attn.d), int(attn.num_heads)
    block = 2 * kd + d
    if block * heads != attn.qkv.out_features:
        raise ValueError(f"qkv has {attn.qkv.out_features} outputs, not {heads} heads x (2 x {kd} + {d})")
    rows = [h * block + i for h in range(heads) for i in list(range(kd)) + list(range(2 * kd, block))]
    return torch.tensor(rows, dtype=torch.long)


class EncoderLoRA(nn.Module):
    """Rank-r q/v adapters on every attention of the chosen TinyViT stages, attached by forward hooks."""

    def __init__(self, encoder: nn.Module, stages: Sequence[int], rank: int = 4, alpha: float | None = None,
                 seed: int = 0, prefix: str = "image_encoder.") -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"encoder_lora_rank must be >= 1, got {rank}")
        self.rank, self.scale = int(rank), float(alpha if alpha is not None else rank) / rank
        gen = torch.Generator().manual_seed(int(seed))
        self.stages = tuple(int(i) for i in stages)
        self.paths: list[str] = []  # state-dict path of each adapted qkv Linear
        self.A, self.B = nn.ParameterList(), nn.ParameterList()
        self._rows: list[torch.Tensor] = []
        self._targets: list[nn.Linear] = []
        for i in self.stages:
            found = _attentions(encoder.layers[i])
            if not found:
                raise ValueError(f"encoder stage {i} has no attention to adapt (TinyViT's stage 0 is convolutional)")
            for name, attn in found:
                lin, rows = attn.qkv, qv_rows(attn)
                bound = lin.in_features ** -0.5  # nn.Linear's default initialisation bound
                self.A.append(nn.Parameter(torch.empty(self.rank, lin.in_features).uniform_(-bound, bound, generator=gen)))
                self.B.append(nn.Parameter(torch.zeros(len(rows), self.rank)))
                self._rows.append(rows)
                self._targets.append(lin)
                self.paths.append(f"{prefix}layers.{i}.{name}.qkv.weight")
        self._hooks = [lin.register_forward_hook(self._hook(j)) for j, lin in enumerate(self._targets)]

    def _hook(self, j: int):
        def add_update(module: nn.Linear, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
            delta = (inputs[0] @ self.A[j].t()) @ self.B[j].t() * self.scale
            return out.index_add(-1, self._rows[j], delta.to(out.dtype))
        return add_update

    def delta(self, j: int) -> torch.Tensor:
        """The j-th adapter's update of its full ``qkv.weight`` (zero outside the q and v rows)."""
        lin = self._targets[j]
        full = torch.zeros_like(lin.weight)
        return full.index_add(0, self._rows[j], (self.B[j] @ self.A[j]).detach().to(full.dtype) * self.scale)

    def merged(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with every adapted ``qkv.weight`` replaced by base + update (the deployable weights)."""
        out = dict(state)
        for j, path in enumerate(self.paths):
            if path in out:
                out[path] = (out[path].float() + self.delta(j).float()).to(out[path].dtype)
        return out

    def remove(self) -> None:
        """Detach the hooks (the model runs its own weights again)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
