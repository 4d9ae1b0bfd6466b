"""Intensity augmentation of training slices: what changes (contrast, shading, inversion, noise), what must
not (the field-of-view zeros, the 0..255 scale, reproducibility by seed), and that the LiteMedSAM recipe's
``augment`` really feeds the trained encoder stages a different image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MuscleSAMLib.models.litemedsam import CHECKPOINT_SHA256, checkpoint_path
from MuscleSAMLib.models.safe_load import load_state_dict
from MuscleSAMLib.phantoms import make_thigh_phantom
from MuscleSAMLib.training.augment import MILD, STRONG, IntensityAugment, augment_slice, bias_field
from MuscleSAMLib.training.decoder_finetune import (DecoderRecipe, SliceEntry, TrainingSet, _decoder, _ensemble,
                                                     _tail_input, train_decoder)
from MuscleSAMLib.training.embedding_store import DixonCase
from MuscleSAMLib.training.encoder_tail import head_features

NEUTRAL = IntensityAugment(bias=0.0, gamma=(1.0, 1.0), invert_prob=0.0, noise=0.0, blur_prob=0.0)


@pytest.fixture(scope="module")
def case() -> DixonCase:
    ph = make_thigh_phantom(seed=3, shape=(2, 96, 144), spacing=(8.0, 1.5, 1.5), grade="moderate", muscles=(1, 2))
    return DixonCase("P", ph.water.astype(np.float32), ph.fat.astype(np.float32), ph.labels.astype(np.uint8))


def test_augmented_slice_keeps_the_field_of_view_and_the_scale(case):
    s = case.contrast("water")[0]
    s[:10] = 0.0  # outside the field of view
    for seed in range(20):
        a = augment_slice(s, np.random.default_rng(seed))
        assert a.shape == s.shape and a.dtype == np.float32
        assert a.min() >= 0.0 and a.max() <= 255.0
        assert (a[s == 0] == 0).all()
    np.testing.assert_array_equal(augment_slice(s, np.random.default_rng(7)), augment_slice(s, np.random.default_rng(7)))
    assert not np.allclose(augment_slice(s, np.random.default_rng(7)), augment_slice(s, np.random.default_rng(8)))


def test_neutral_ranges_and_zero_strength_leave_the_slice_alone(case):
    s = case.contrast("water")[0]
    np.testing.assert_allclose(augment_slice(s, np.random.default_rng(0), NEUTRAL), s, atol=1e-3)
    np.testing.assert_allclose(augment_slice(s, np.random.default_rng(0), MILD.scaled(0.0)), s, atol=1e-3)
    assert MILD.scaled(2.0).contrast == pytest.approx(0.3) and MILD.scaled(2.0).gamma[1] == pytest.approx(np.exp(0.6))


def test_inversion_swaps_bright_fat_and_dark_muscle_inside_the_body(case):
    s = case.contrast("fat")[0]
    muscle, fat = case.labels[0] > 0, s > np.percentile(s[s > 0], 90)
    assert s[fat].mean() > s[muscle].mean()
    inv = augment_slice(s, np.random.default_rng(0), IntensityAugment(bias=0.0, gamma=(1.0, 1.0), invert_prob=1.0,
                                                                      noise=0.0, blur_prob=0.0))
    assert inv[fat].mean() < inv[muscle].mean()
    assert (inv[s == 0] == 0).all()


def test_bias_field_is_smooth_shading_within_its_amplitude():
    for seed in range(10):
        f = bias_field((64, 80), 0.3, np.random.default_rng(seed))
        assert np.abs(np.log(f)).max() <= 0.3 + 1e-6
        assert np.abs(np.diff(np.log(f), axis=1)).max() < 0.05  # no edges: it must not draw new structures


def test_strong_augmentation_changes_contrast_more_than_the_mild_one(case):
    s = case.contrast("water")[0]
    body = s > 0.05 * 255

    def change(aug) -> float:
        return float(np.mean([np.abs(augment_slice(s, np.random.default_rng(i), aug) - s)[body].mean() for i in range(30)]))

    assert change(STRONG) > change(MILD) > 0.5


def test_recipe_augment_feeds_the_trained_stages_an_augmented_image(case):
    base = load_state_dict(checkpoint_path(), CHECKPOINT_SHA256)
    enc = _decoder("litemedsam", base).image_encoder.eval()
    pre = _ensemble("litemedsam", base, [{}]).preprocess
    train = TrainingSet([case], ["water"], "no stored embeddings")  # entries come from stored files: none
    train.entries = [SliceEntry(0, "water", 0)]
    feats = [head_features(enc, pre(case.contrast("water")[0])[0], 1).clone()]
    plain = _tail_input(enc, 1, feats, train, DecoderRecipe(encoder_stages=1), None)(0)
    with torch.no_grad():
        aug = _tail_input(enc, 1, feats, train, DecoderRecipe(encoder_stages=1, augment=1.0), pre)(0)
        again = _tail_input(enc, 1, feats, train, DecoderRecipe(encoder_stages=1), None)(0)
    assert aug.shape == plain.shape and not torch.allclose(aug, plain, atol=1e-3)
    torch.testing.assert_close(again, plain)  # stored features: the plain image every time
    with pytest.raises(ValueError, match="preprocess"):
        _tail_input(enc, 1, feats, train, DecoderRecipe(encoder_stages=1, augment=0.5), None)
    with pytest.raises(ValueError, match="share of steps"):
        train_decoder(base, train, [], "unused", "unused", DecoderRecipe(encoder_stages=1, augment=1.5))
    with pytest.raises(ValueError, match="needs encoder_stages"):  # never silently ignored
        train_decoder(base, train, [], "unused", "unused", DecoderRecipe(augment=0.5))


def test_augmented_steps_run_the_frozen_stages_as_inference_does_while_the_tail_trains(case):
    """With the tail in training mode, the frozen stages still use (and keep) their running statistics:
    a neutral variant gives exactly the stored features' embedding."""
    base = load_state_dict(checkpoint_path(), CHECKPOINT_SHA256)
    sam = _decoder("litemedsam", base)
    enc = sam.image_encoder
    pre = _ensemble("litemedsam", base, [{}]).preprocess
    train = TrainingSet([case], ["water"], "no stored embeddings")
    train.entries = [SliceEntry(0, "water", 0)]
    feats = [head_features(enc, pre(case.contrast("water")[0])[0], 1).clone()]
    stats = {k: v.clone() for k, v in enc.state_dict().items() if "running" in k}
    sam.train()
    import MuscleSAMLib.training.decoder_finetune as df
    neutral = lambda s, rng: np.asarray(s, np.float32)  # noqa: E731 (the augmentation replaced by identity)
    real, df.augment_slice = df.augment_slice, neutral
    try:
        with torch.no_grad():
            got = _tail_input(enc, 1, feats, train, DecoderRecipe(encoder_stages=1, augment=1.0), pre)(0)
            enc.layers[-1].eval(), enc.neck.eval()
            want = _tail_input(enc, 1, feats, train, DecoderRecipe(encoder_stages=1), None)(0)
            got = _tail_input(enc, 1, feats, train, DecoderRecipe(encoder_stages=1, augment=1.0), pre)(0)
    finally:
        df.augment_slice = real
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert enc.patch_embed.training and enc.layers[0].training  # their modes are given back
    for k, v in enc.state_dict().items():
        if "running" in k and not k.startswith(("layers.3.", "neck.")):  # the tail's own may move: it trains
            assert torch.equal(v, stats[k]), k  # the frozen batch norms' statistics untouched
