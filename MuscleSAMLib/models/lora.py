"""LoRA adapters for M ensemble members that run as ONE batched forward pass.

A :class:`MemberLoRALinear` replaces a frozen ``nn.Linear`` (keeping its ``weight``/``bias`` under the
same state-dict names, so base checkpoints still load) and adds, per member m, the low-rank update
``scale * x @ A_m^T @ B_m^T`` with ``scale = alpha / rank`` and B initialised to zero (the adapted
model starts equal to the base). Batched mode expects the leading batch dimension laid out
members-major: ``B_total = M * b``, rows ``m*b .. (m+1)*b - 1`` belong to member m. Window attention in
SAM's encoder keeps the image index outermost, so an image batch repeated M times stays members-major
in every layer.

Targets (METHODS.md: rank 4 on the q and v projections of encoder attention and of all decoder
attentions): ``encoder_qv`` adapts the q and v thirds of each encoder block's fused ``qkv`` Linear
(separate A/B per slice), ``decoder_qv`` the ``q_proj`` and ``v_proj`` of every decoder Attention.
``encoder_qkv`` / ``decoder_qkv`` also adapt k.

Parameter shapes: ``lora_A`` (M, S*r, in), ``lora_B`` (M, S*o, r) for S adapted output slices of
width o each (S=1 for a plain Linear: A (M, r, in), B (M, out, r)); slice s uses rows s*r.. of A and
rows s*o.. of B. An adapter-only file (one member) holds ``<module>.lora_A`` (S*r, in) and
``<module>.lora_B`` (S*o, r) under the module's path in the Sam model.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention as EncoderAttention
from segment_anything.modeling.transformer import Attention as DecoderAttention
from torch import nn

from ..errors import WeightsError

LORA_TARGETS = ("encoder_qv", "encoder_qkv", "decoder_qv", "decoder_qkv")
DEFAULT_TARGETS = ("encoder_qv", "decoder_qv")


class MemberLoRALinear(nn.Module):
    """A frozen Linear plus M per-member low-rank updates on chosen output slices."""

    def __init__(self, base: nn.Linear, members: int, rank: int, alpha: float | None = None,
                 out_slices: Sequence[tuple[int, int]] | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if members < 1 or rank < 1:
            raise ValueError("members and rank must be >= 1")
        self.in_features = base.in_features
        self.out_features = base.out_features
        # Same Parameter objects and names as the wrapped Linear: base checkpoints keep loading.
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        slices = tuple((int(a), int(b)) for a, b in (out_slices or [(0, self.out_features)]))
        widths = {b - a for a, b in slices}
        if len(widths) != 1 or any(not 0 <= a < b <= self.out_features for a, b in slices):
            raise ValueError(f"out_slices {slices} must be equal-width ranges inside 0..{self.out_features}")
        self.out_slices = slices
        self.slice_width = widths.pop()
        self.members = int(members)
        self.rank = int(rank)
        self.alpha = float(alpha if alpha is not None else rank)
        self.scale = self.alpha / self.rank
        s = len(slices)
        a = torch.empty(members, s * rank, self.in_features, device=base.weight.device, dtype=base.weight.dtype)
        bound = 1.0 / math.sqrt(self.in_features)  # nn.Linear's default (kaiming-uniform, a=sqrt(5)) bound
        a.uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(torch.zeros(members, s * self.slice_width, rank,
                                               device=base.weight.device, dtype=base.weight.dtype))
        #: None = all members batched (members-major batch); an int = only that member, any batch.
        self.active_member: int | None = None

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, members={self.members}, rank={self.rank}, "
                f"scale={self.scale:g}, slices={self.out_slices}")

    def _delta(self, x: torch.Tensor) -> torch.Tensor:
        """Low-rank update, shape (*x.shape[:-1], S, o)."""
        s, o, r = len(self.out_slices), self.slice_width, self.rank
        lead = x.shape[:-1]
        m = self.active_member
        if m is None:
            mm = self.members
            if x.shape[0] % mm:
                raise ValueError(f"batch {x.shape[0]} is not members-major for {mm} LoRA members")
            h = torch.bmm(x.reshape(mm, -1, self.in_features), self.lora_A.transpose(1, 2))  # (M, T, S*r)
            d = torch.einsum("mtsr,msor->mtso", h.reshape(mm, -1, s, r), self.lora_B.reshape(mm, s, o, r))
        else:
            if not 0 <= m < self.members:
                raise IndexError(f"LoRA member {m} out of range 0..{self.members - 1}")
            h = x.reshape(-1, self.in_features) @ self.lora_A[m].t()  # (T, S*r)
            d = torch.einsum("tsr,sor->tso", h.reshape(-1, s, r), self.lora_B[m].reshape(s, o, r))
        return (d * self.scale).reshape(*lead, s, o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        d = self._delta(x)
        if len(self.out_slices) == 1 and self.out_slices[0] == (0, self.out_features):
            return out + d[..., 0, :]
        full = torch.zeros_like(out)
        for i, (a, b) in enumerate(self.out_slices):
            full[..., a:b] = d[..., i, :]
        return out + full

    def merged_linear(self, member: int) -> nn.Linear:
        """A plain Linear equal to this layer for one member (W + scale * B_m A_m on each slice)."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        s, o, r = len(self.out_slices), self.slice_width, self.rank
        with torch.no_grad():
            w = self.weight.detach().clone()
            a = self.lora_A[member].reshape(s, r, self.in_features)
            b = self.lora_B[member].reshape(s, o, r)
            for i, (lo, hi) in enumerate(self.out_slices):
                w[lo:hi] += self.scale * (b[i] @ a[i])
            lin.weight.copy_(w)
            if self.bias is not None:
                lin.bias.copy_(self.bias.detach())
        lin.requires_grad_(False)
        return lin


def _set_child(root: nn.Module, dotted: str, new: nn.Module) -> None:
    """Replace the sub-module at ``dotted`` (e.g. 'blocks.0.attn.qkv')."""
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def apply_lora(sam: nn.Module, rank: int = 4, members: int = 1, alpha: float | None = None,
               targets: Sequence[str] = DEFAULT_TARGETS, *, freeze_base: bool = True,
               seed: int | None = None) -> list[str]:
    """Wrap the targeted Linears of a Sam in place; returns the wrapped module paths.

    ``freeze_base`` sets requires_grad=False on every non-LoRA parameter (training code unfreezes the
    decoder heads it trains). ``seed`` makes the A initialisation reproducible.
    """
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if unknown:
        raise WeightsError(f"unknown LoRA targets {unknown}; known: {', '.join(LORA_TARGETS)}")
    if any(isinstance(m, MemberLoRALinear) for m in sam.modules()):
        raise ValueError("model already has LoRA adapters")
    if freeze_base:
        sam.requires_grad_(False)
    gen = None
    if seed is not None:
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
    plan: list[tuple[str, nn.Linear, list[tuple[int, int]] | None]] = []
    for name, mod in sam.named_modules():
        if isinstance(mod, EncoderAttention) and ({"encoder_qv", "encoder_qkv"} & set(targets)):
            dim = mod.qkv.in_features
            parts = [0, 1, 2] if "encoder_qkv" in targets else [0, 2]
            plan.append((f"{name}.qkv", mod.qkv, [(p * dim, (p + 1) * dim) for p in parts]))
        elif isinstance(mod, DecoderAttention) and ({"decoder_qv", "decoder_qkv"} & set(targets)):
            projs = ["q_proj", "k_proj", "v_proj"] if "decoder_qkv" in targets else ["q_proj", "v_proj"]
            plan.extend((f"{name}.{p}", getattr(mod, p), None) for p in projs)
    for path, lin, slices in plan:
        if gen is not None and lin.weight.device.type != "cpu":
            raise ValueError("seeded LoRA initialisation needs a CPU model; move it to the device afterwards")
        _set_child(sam, path, MemberLoRALinear(lin, members, rank, alpha, slices, generator=gen))
    return [p for p, _, _ in plan]


def lora_modules(model: nn.Module) -> list[tuple[str, MemberLoRALinear]]:
    """All LoRA layers with their module paths."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MemberLoRALinear)]


@contextlib.contextmanager
def lora_member(model: nn.Module, member: int | None) -> Iterator[None]:
    """Within the block, run only ``member`` (an int) or all members batched (None); restores after."""
    mods = [m for _, m in lora_modules(model)]
    before = [m.active_member for m in mods]
    try:
        for m in mods:
            m.active_member = member
        yield
    finally:
        for m, b in zip(mods, before):
            m.active_member = b


def lora_state_dict(model: nn.Module, member: int | None = None) -> dict[str, torch.Tensor]:
    """Adapter tensors only: all members stacked (member=None) or one member's (for a member file)."""
    out: dict[str, torch.Tensor] = {}
    for name, mod in lora_modules(model):
        a, b = mod.lora_A.detach(), mod.lora_B.detach()
        if member is not None:
            a, b = a[member], b[member]
        out[f"{name}.lora_A"] = a.clone()
        out[f"{name}.lora_B"] = b.clone()
    return out


def is_lora_key(key: str) -> bool:
    """True for adapter tensor names (``*.lora_A`` / ``*.lora_B``)."""
    return key.endswith(".lora_A") or key.endswith(".lora_B")


def load_lora_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], member: int | None = None,
                         *, what: str = "") -> list[str]:
    """Load adapter tensors (stacked, or one ``member``'s slot); non-adapter keys are ignored.

    Every adapter of the model must be present and every adapter key must fit a layer, with the
    right shape; otherwise WeightsError names the keys (no silent strict=False). Returns the keys used.
    """
    mods = dict(lora_modules(model))
    wanted = {f"{n}.{p}": (m, p) for n, m in mods.items() for p in ("lora_A", "lora_B")}
    given = {k for k in state if is_lora_key(k)}
    missing = sorted(set(wanted) - given)
    unexpected = sorted(given - set(wanted))
    shapes = []
    for k in sorted(given & set(wanted)):
        mod, p = wanted[k]
        target = getattr(mod, p)
        expect = tuple(target.shape if member is None else target.shape[1:])
        if tuple(state[k].shape) != expect:
            shapes.append(f"{k} {tuple(state[k].shape)} vs {expect}")
    if missing or unexpected or shapes:
        parts = [f"{label} {len(v)}: {', '.join(v[:10])}" + (" ..." if len(v) > 10 else "")
                 for label, v in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", shapes)) if v]
        raise WeightsError(f"LoRA adapters {what or '(in memory)'} do not match the model: " + "; ".join(parts))
    with torch.no_grad():
        for k in given:
            mod, p = wanted[k]
            target = getattr(mod, p)
            (target if member is None else target[member]).copy_(state[k])
    return sorted(given)


def merge_lora(module: nn.Module, member: int) -> nn.Module:
    """Deep copy of ``module`` with every LoRA layer folded into a plain Linear for one member."""
    out = copy.deepcopy(module)
    for name, mod in lora_modules(out):
        merged = mod.merged_linear(member)
        if name:
            _set_child(out, name, merged)
        else:
            return merged
    return out
