"""Uncertainty maps: the sanity cases of METHODS.md "Uncertainty"."""

from __future__ import annotations

import math

import numpy as np
import pytest

from MuscleSAMLib.uncertainty import UncertaintyMaps, binary_entropy, uncertainty_maps

LOG2 = math.log(2.0)


def test_all_members_at_half_is_pure_aleatoric() -> None:
    u = uncertainty_maps(np.full((5, 4, 3), 0.5, dtype=np.float32))
    assert isinstance(u, UncertaintyMaps)
    assert u.mean.shape == (4, 3)
    np.testing.assert_allclose(u.total, LOG2, rtol=1e-6)
    np.testing.assert_allclose(u.aleatoric, LOG2, rtol=1e-6)
    np.testing.assert_allclose(u.epistemic, 0.0, atol=1e-6)
    np.testing.assert_allclose(u.variance, 0.0, atol=1e-12)


def test_confident_disagreeing_members_are_epistemic() -> None:
    p = np.array([1.0, 1.0, 0.0, 0.0])[:, None]  # confident, split 2/2
    u = uncertainty_maps(p)
    assert u.aleatoric[0] < 1e-5
    np.testing.assert_allclose(u.total[0], LOG2, rtol=1e-5)
    np.testing.assert_allclose(u.epistemic[0], u.total[0], rtol=1e-4)
    np.testing.assert_allclose(u.variance[0], 0.25)


def test_probabilities_are_averaged_not_logits() -> None:
    p = np.array([[0.9], [0.2], [0.6]])
    u = uncertainty_maps(p)
    np.testing.assert_allclose(u.mean, [np.mean([0.9, 0.2, 0.6])])
    logit_mean = 1 / (1 + np.exp(-np.mean(np.log(p / (1 - p)))))
    assert abs(u.mean[0] - logit_mean) > 1e-3


def test_normalised_and_bounds() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((5, 32, 32)).astype(np.float32)
    p[:, :4] = 0.0  # exact zeros and ones are clipped inside the logs, never NaN
    p[:, 4:8] = 1.0
    u = uncertainty_maps(p)
    n = uncertainty_maps(p, normalised=True)
    for a in (u.total, u.aleatoric, u.epistemic, u.variance):
        assert np.isfinite(a).all() and (a >= 0).all()
    assert (u.epistemic <= u.total + 1e-6).all()
    np.testing.assert_allclose(n.total, u.total / LOG2, rtol=1e-6)
    assert n.total.max() <= 1.0 + 1e-6 and n.unit == "bits" and u.unit == "nats"
    assert u.mean.dtype == np.float32
    np.testing.assert_allclose(u.total[:8], 0.0, atol=1e-5)


def test_entropy_definition_and_single_member() -> None:
    np.testing.assert_allclose(binary_entropy(np.array([0.25])), [-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))])
    u = uncertainty_maps(np.array([[0.3, 0.7]]))
    np.testing.assert_allclose(u.total, u.aleatoric)
    np.testing.assert_allclose(u.epistemic, 0.0, atol=1e-7)
    with pytest.raises(ValueError):
        uncertainty_maps(np.zeros((0, 3)))
