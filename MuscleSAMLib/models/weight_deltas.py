"""Fine-tuned weights stored as int8 differences from the packaged base: half the bytes of fp16.

A fine-tune moves each weight a little away from the base (LiteMedSAM, installed from its package, never
committed), so the difference has a small range and 8 bits resolve it finely: each matrix row (the
first axis) gets its own scale, max |difference| / 127, and the stored value is round(difference /
scale). Reconstruction is ``base + q x scale``; the largest error of a weight is half a step, i.e.
under 0.4 % of that row's largest change. Tensors with fewer than :data:`MIN_ELEMENTS` elements
(biases, norms, scalars) are kept whole (fp16), where the saving would be nothing.

Keys: ``<name>::int8_delta`` (int8, the weight's shape) and ``<name>::delta_scale`` (float32, one value
per row) replace ``<name>``. A file holding them is only meaningful on top of the base it was made
from, whose sha256 the writer records (``base_sha256`` metadata) and the manifest pins.
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..errors import WeightsError

DELTA_SUFFIX = "::int8_delta"
SCALE_SUFFIX = "::delta_scale"
MIN_ELEMENTS = 4096


def encode_int8_deltas(state: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every large floating tensor that ``base`` also holds (same shape) as an int8 difference
    from it; other tensors as fp16 (floating) or unchanged."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        ref = base.get(key)
        if (ref is None or not value.is_floating_point() or value.numel() < MIN_ELEMENTS or value.ndim < 2
                or ref.shape != value.shape):
            out[key] = value.half() if value.is_floating_point() else value
            continue
        delta = (value.float() - ref.float()).reshape(value.shape[0], -1)
        scale = delta.abs().amax(dim=1) / 127.0
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        out[key + DELTA_SUFFIX] = torch.round(delta / safe[:, None]).clamp(-127, 127).to(torch.int8).reshape(value.shape)
        out[key + SCALE_SUFFIX] = scale.float()
    return out


def decode_int8_deltas(stored: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor],
                       what: str = "weights file") -> dict[str, torch.Tensor]:
    """Inverse of :func:`encode_int8_deltas` (float32 weights); a file without differences comes back as it
    is. A difference whose base weight is missing or of another shape is a WeightsError naming ``what``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in stored.items():
        if key.endswith(SCALE_SUFFIX):
            if key[: -len(SCALE_SUFFIX)] + DELTA_SUFFIX not in stored:
                raise WeightsError(f"{what}: {key} has no int8 difference beside it; the file is damaged")
            continue
        if not key.endswith(DELTA_SUFFIX):
            out[key] = value
            continue
        name = key[: -len(DELTA_SUFFIX)]
        ref, scale = base.get(name), stored.get(name + SCALE_SUFFIX)
        if scale is None or value.dtype != torch.int8 or scale.shape != (value.shape[0],):
            raise WeightsError(f"{what}: {name} is stored as an int8 difference without a matching per-row scale")
        if ref is None or ref.shape != value.shape:
            raise WeightsError(f"{what}: {name} is a difference from a base weight that the base lacks or shapes "
                               "differently; the file was made for another base model")
        step = scale.float().reshape(-1, *([1] * (value.ndim - 1)))
        out[name] = ref.float() + value.float() * step
    return out


def holds_deltas(stored: Mapping[str, torch.Tensor]) -> bool:
    """Whether a loaded file stores int8 differences (and so needs its base to be read)."""
    return any(k.endswith(DELTA_SUFFIX) for k in stored)
