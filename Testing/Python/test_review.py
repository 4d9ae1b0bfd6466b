"""Review scores, volumes with intervals and the review queue (MuscleSAMLib.engine.review)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from MuscleSAMLib.engine.review import (
    MuscleSliceScore,
    next_review_item,
    review_queue,
    score_member_probs,
    score_slice,
)
from MuscleSAMLib.engine.types import BoxPrediction, BoxPrompt, Window

H13 = -(1 / 3) * math.log(1 / 3) - (2 / 3) * math.log(2 / 3)  # entropy of a 1-of-3 vote, nats


def square(shape, r0, r1, c0, c1):
    m = np.zeros(shape, np.float32)
    m[r0:r1, c0:c1] = 1.0
    return m


def test_expected_dsc_is_one_when_members_agree():
    sq = square((40, 40), 10, 20, 10, 20)
    s = score_member_probs(np.stack([sq, sq, sq]), slice_index=3, label=2, dilate_px=3)
    assert s.expected_dsc == 1.0
    assert s.area_px == 100 and s.member_area_px == (100, 100, 100)
    assert s.mean_uncertainty < 1e-4  # crisp agreement: nothing to review


def test_expected_dsc_and_uncertainty_when_members_disagree():
    shape = (40, 40)
    a = square(shape, 10, 20, 10, 20)
    c = square(shape, 10, 20, 15, 25)  # member 2 shifted 5 columns
    s0 = score_member_probs(np.stack([a, a, c]), slice_index=0, label=1, dilate_px=0)
    # ensemble (majority) = a; mean p: 2/3 (50 px), 1 (50 px) inside a, 1/3 (50 px) outside
    # expected DSC = 2 * (50 * 2/3 + 50) / (100 + 100) = 5/6
    assert s0.expected_dsc == pytest.approx(5 / 6)
    assert s0.area_px == 100 and s0.member_area_px == (100, 100, 100)
    # union of member masks = 10 x 15; 100 of its voxels are 2-of-3 or 1-of-3 votes
    assert s0.mean_uncertainty == pytest.approx(100 * H13 / 150, rel=1e-4)
    assert s0.mean_epistemic == pytest.approx(100 * H13 / 150, rel=1e-3)  # confident members disagree
    # dilation by 3 px (Euclidean) adds certain background to the region
    rr, cc = np.mgrid[:40, :40]
    dr = np.maximum(np.maximum(10 - rr, rr - 19), 0)
    dc = np.maximum(np.maximum(10 - cc, cc - 24), 0)
    n_region = int((dr**2 + dc**2 <= 9).sum())
    s3 = score_member_probs(np.stack([a, a, c]), slice_index=0, label=1, dilate_px=3)
    assert s3.mean_uncertainty == pytest.approx(100 * H13 / n_region, rel=1e-3)


def test_all_members_empty_gives_nan_scores():
    z = np.zeros((3, 20, 20), np.float32)
    s = score_member_probs(z, slice_index=0, label=1)
    assert math.isnan(s.expected_dsc) and math.isnan(s.mean_uncertainty)
    assert s.area_px == 0 and s.member_area_px == (0, 0, 0)
    d = s.as_dict()
    assert d["expected_dsc"] is None
    json.dumps(d, allow_nan=False)


def _pred(label, xyxy, members, slice_=4):
    c0, r0, c1, r1 = xyxy
    w = Window(r0, r1, c0, c1)
    return BoxPrediction(BoxPrompt(label, slice_, xyxy), w, np.asarray(members, np.float32), np.ones(len(members)))


def test_score_slice_combines_both_legs_and_pads_for_dilation():
    shape = (30, 60)
    one = np.ones((3, 10, 10), np.float32)
    right = _pred(7, (0, 0, 10, 10), one)  # at the slice corner: dilation clipped by the slice
    left = _pred(7, (40, 10, 50, 20), one * np.array([1, 1, 0], np.float32)[:, None, None])
    other = _pred(2, (20, 0, 30, 10), one)
    scores = score_slice([left, other, right], shape, dilate_px=2)
    assert [s.label for s in scores] == [2, 7]
    s7 = scores[1]
    assert s7.slice == 4 and s7.area_px == 200 and s7.member_area_px == (200, 200, 100)
    # mean p = 1 on the right leg (100 px), 2/3 on the left (100 px): 2 * (100 + 200/3) / (200 + 100 + 200/3)
    assert s7.expected_dsc == pytest.approx(2 * (100 + 200 / 3) / (200 + 100 + 200 / 3))
    assert s7.mean_uncertainty > scores[0].mean_uncertainty
    assert [s.label for s in score_slice([left, other, right], shape, locked={7})] == [2]


def _score(slice_, label, unc, dsc, areas, area=None):
    return MuscleSliceScore(slice_, label, unc, unc / 2, dsc, int(np.median(areas)) if area is None else area,
                            tuple(areas))


def test_review_queue_order_and_next_item():
    scores = [
        _score(5, 1, 0.10, 0.95, (10, 10)),
        _score(2, 3, 0.30, 0.80, (10, 10)),
        _score(2, 1, 0.30, 0.80, (10, 10)),  # same as above but lower label -> first
        _score(9, 2, 0.30, 0.60, (10, 10)),  # same uncertainty, lower expected DSC -> before both
        _score(1, 4, math.nan, math.nan, (0, 0), area=0),  # nothing found: last
        _score(7, 5, 0.45, 0.99, (10, 10)),  # most uncertain -> first
    ]
    q = review_queue(scores)
    assert [(i.slice, i.label) for i in q] == [(7, 5), (9, 2), (2, 1), (2, 3), (5, 1), (1, 4)]
    assert [i.rank for i in q] == list(range(6))
    assert review_queue(list(reversed(scores))) == q
    assert next_review_item(q, set()) == q[0]
    assert next_review_item(q, {(7, 5), (9, 2)}) == q[2]
    assert next_review_item(q, {i.key for i in q}) is None
    json.dumps([i.as_dict() for i in q], allow_nan=False)


def test_expected_dsc_follows_calibrated_probability_not_member_agreement():
    """Members that agree on a soft map (p = 0.6 everywhere in the box) predict a mediocre DSC, not 1."""
    from MuscleSAMLib.engine.review import expected_dsc

    shape = (40, 40)
    soft = square(shape, 10, 20, 10, 20) * 0.6
    s = score_member_probs(np.stack([soft, soft, soft]), slice_index=0, label=1, dilate_px=0)
    assert s.expected_dsc == pytest.approx(2 * 60 / (100 + 60))  # 0.75, although all members agree
    assert math.isnan(expected_dsc(np.zeros(shape)))
