"""Fine-tuned trunks stored as int8 differences from the packaged base: half the bytes, the same model."""

from __future__ import annotations

import pytest
import torch

from MuscleSAMLib.errors import WeightsError
from MuscleSAMLib.models.weight_deltas import (DELTA_SUFFIX, SCALE_SUFFIX, decode_int8_deltas, encode_int8_deltas,
                                               holds_deltas)


def _pair(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(64, 128, generator=g), "conv": torch.randn(32, 16, 3, 3, generator=g),
            "bias": torch.randn(64, generator=g), "steps": torch.tensor(3)}
    tuned = {k: (v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v) for k, v in base.items()}
    tuned["new"] = torch.randn(80, 80, generator=g)  # a weight the base lacks stays whole
    return base, tuned


def test_large_weights_become_int8_differences_within_half_a_step_of_each_row():
    base, tuned = _pair()
    stored = encode_int8_deltas(tuned, base)
    assert stored["w" + DELTA_SUFFIX].dtype == torch.int8 and stored["w" + SCALE_SUFFIX].shape == (64,)
    assert stored["conv" + DELTA_SUFFIX].shape == (32, 16, 3, 3)
    assert stored["bias"].dtype == torch.float16 and stored["new"].dtype == torch.float16 and "w" not in stored
    assert holds_deltas(stored) and not holds_deltas(tuned)
    back = decode_int8_deltas(stored, base)
    for key in ("w", "conv"):
        step = stored[key + SCALE_SUFFIX].reshape(-1, *([1] * (tuned[key].ndim - 1)))
        assert ((back[key] - tuned[key]).abs() <= step / 2 + 1e-6).all()
        assert (back[key] - tuned[key]).abs().max() < 0.01 * 0.05  # far below the fine-tune's own change
    assert torch.equal(back["steps"], tuned["steps"])
    bytes_fp16 = sum(tuned[k].numel() * 2 for k in ("w", "conv"))
    bytes_int8 = sum(v.numel() * v.element_size() for k, v in stored.items() if k.startswith(("w:", "conv:")))
    assert bytes_int8 < 0.55 * bytes_fp16


def test_an_unchanged_row_decodes_exactly():
    base, tuned = _pair()
    tuned["w"][5] = base["w"][5]
    back = decode_int8_deltas(encode_int8_deltas(tuned, base), base)
    assert torch.equal(back["w"][5], base["w"][5])


def test_differences_on_another_base_or_a_damaged_file_are_one_line_errors():
    base, tuned = _pair()
    stored = encode_int8_deltas(tuned, base)
    other = dict(base, w=torch.randn(32, 128))
    with pytest.raises(WeightsError, match="trunk.safetensors: w is a difference from a base weight .* another base"):
        decode_int8_deltas(stored, other, "trunk.safetensors")
    with pytest.raises(WeightsError, match="another base"):
        decode_int8_deltas(stored, {k: v for k, v in base.items() if k != "conv"})
    no_scale = {k: v for k, v in stored.items() if k != "w" + SCALE_SUFFIX}
    with pytest.raises(WeightsError, match="without a matching per-row scale"):
        decode_int8_deltas(no_scale, base)
    no_delta = {k: v for k, v in stored.items() if k != "w" + DELTA_SUFFIX}
    with pytest.raises(WeightsError, match="no int8 difference beside it"):
        decode_int8_deltas(no_delta, base)
