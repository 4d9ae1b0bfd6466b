"""Clicks: the simulated corrective user and the suggestion rule, clicks through every ensemble kind (same
answer live or replayed, one decoder call per click, none for an undo), clicks in boxes JSON, and bad
clicks refused with a message naming the point."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from musclesam_test_helpers import DIRECTIONS, make_image
from MuscleSAMLib.engine.boxes import boxes_to_json, parse_boxes, validate_box
from MuscleSAMLib.engine.clicks import MAX_CLICKS, check_clicks, corrective_click, merge_click_answer, suggest_click
from MuscleSAMLib.engine.segmenter import Segmenter
from MuscleSAMLib.engine.types import BoxPrompt
from MuscleSAMLib.errors import InputError
from MuscleSAMLib.models.architectures import build_sam
from MuscleSAMLib.models.ensemble import Ensemble, synthetic_spec
from MuscleSAMLib.models.shared_trunk import MEMBER_HEAD_PREFIXES, SharedTrunkHeads
from MuscleSAMLib.slice_geometry import ResizePad, model_to_slice
from MuscleSAMLib.volumes import volume_from_array


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_corrective_click_goes_deep_into_the_largest_error_with_its_sign():
    truth = _disk((60, 60), 30, 30, 15)
    missed = truth & ~_disk((60, 60), 30, 42, 8)  # a bite missing on the right
    x, y, positive = corrective_click(missed, truth)
    assert positive == 1 and truth[y, x] and not missed[y, x]
    assert abs(x - 42) <= 3 and abs(y - 30) <= 3  # the centre of the bite, not its rim
    leak = truth | _disk((60, 60), 10, 10, 6)
    x, y, positive = corrective_click(leak, truth)
    assert positive == 0 and not truth[y, x] and abs(x - 10) <= 1 and abs(y - 10) <= 1
    assert corrective_click(truth, truth) is None
    rng = np.random.default_rng(0)
    for _ in range(20):  # the randomised training variant stays inside the region, away from its rim
        x, y, positive = corrective_click(leak, truth, rng)
        assert positive == 0 and (x - 10) ** 2 + (y - 10) ** 2 <= 4 ** 2


def test_suggestion_is_the_centre_of_the_most_uncertain_region():
    u = np.zeros((50, 50))
    u[5:8, 5:8] = 0.69  # small, very uncertain
    u[20:40, 25:35] = 0.5  # large, uncertain: more uncertainty in total
    x, y = suggest_click(u, fraction=0.5)
    assert 25 <= x < 35 and 20 <= y < 40 and abs(y - 29.5) <= 1.5
    assert suggest_click(np.zeros((10, 10))) is None


@pytest.mark.parametrize("points, message", [
    ([[5, 5, 1], [70, 5, 0]], "point #2 (70, 5) lies outside the 40x60 slice"),
    ([[5, float("nan"), 1]], "point #1"),
    ([[5, 5, 2]], "must be 1 (muscle) or 0"),
    ([[5, 5]], "must be [x, y, 1 | 0]"),
    ([[1, 1, 1]] * (MAX_CLICKS + 1), f"at most {MAX_CLICKS}"),
])
def test_bad_clicks_are_refused_naming_the_point(points, message):
    with pytest.raises(InputError) as err:
        check_clicks(points, (40, 60), "VL click")
    assert message in str(err.value) and "VL click" in str(err.value)


def _members(layout: str, members: int = 3, offset: float = 0.0) -> Ensemble:
    """Random demo members differing in their output heads, as head-only files ("heads": the shipped
    default's shared-trunk layout) or as whole prompt heads ("full": the per-member MemberStack path)."""
    torch.manual_seed(3)
    base = build_sam("demo_xs").state_dict()
    g = torch.Generator().manual_seed(4)
    heads = [{k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in base.items() if k.startswith(MEMBER_HEAD_PREFIXES)}
             for _ in range(members)]
    if layout == "full":
        decoder = {k: v for k, v in base.items() if k.startswith(("prompt_encoder.", "mask_decoder."))}
        heads = [{**decoder, **h} for h in heads]
    training = {"temperature": 2.0, **({"logit_offset": offset} if offset else {})}
    return Ensemble.from_states(synthetic_spec("demo_xs", "decoder", training=training), base, heads)


def test_shared_trunk_with_clicks_and_previous_answer_equals_per_member_decoders():
    fast, plain = _members("heads"), _members("full")
    assert isinstance(fast._heads, SharedTrunkHeads) and not isinstance(plain._heads, SharedTrunkHeads)
    geo = ResizePad(40, 60, fast.input_size)
    emb = fast.encode(fast.preprocess(np.random.default_rng(1).uniform(0, 255, (40, 60)))[0])
    boxes = np.array([[5, 5, 30, 30], [30, 10, 55, 35]], float)
    clicks = [np.array([[10, 12, 1]], float), np.array([[40, 20, 0], [50, 30, 1]], float)]
    first = fast.decode(emb, geo, boxes)
    prompt = fast.answer_prompt(first)
    np.testing.assert_allclose(prompt.numpy(), first.logits_lowres.mean(0) * 2.0, rtol=1e-6)  # x T, member mean
    got = fast.decode(emb, geo, boxes, prompt, clicks)
    assert np.abs(got.logits_lowres - first.logits_lowres).max() > 1e-2  # the clicks changed the answer
    ref = plain.decode(emb, geo, boxes, prompt, clicks)
    np.testing.assert_allclose(got.logits_lowres, ref.logits_lowres, atol=1e-4)
    alone = fast.decode(emb, geo, boxes[:1], prompt[:1], clicks[:1])  # a box decodes the same alone or batched
    np.testing.assert_allclose(alone.logits_lowres[:, 0], got.logits_lowres[:, 0], atol=1e-5)


def _segmenter(ens, img, update: str) -> Segmenter:
    seg = Segmenter(ens, img)
    seg.click_update = update
    return seg


@pytest.mark.parametrize("update", ["global", "local"])
@pytest.mark.parametrize("kind, geometry", [("decoder", "slice"), ("lora", "slice"), ("full", "slice"),
                                            ("decoder", "box_crop")])
def test_clicks_replay_live_one_decode_per_click_and_free_undo(kind, geometry, update):
    ens = Ensemble.random("demo_xs", kind=kind, members=3, prompt_geometry=geometry)
    img = np.random.default_rng(0).uniform(0, 100, (3, 40, 50)).astype(np.float32)
    live = _segmenter(ens, img, update)
    box = BoxPrompt(1, 1, (10, 10, 30, 30))
    clicks = ((15, 15, 1), (28, 12, 0), (7, 32, 1))
    answers = []
    live.predict_slice(1, [box])
    for n in range(1, len(clicks) + 1):
        enc, dec = live.stats.encoder_calls, live.stats.decoder_calls
        answers.append(live.predict_slice(1, [BoxPrompt(1, 1, box.xyxy, points=clicks[:n])]).boxes[0])
        assert live.stats.encoder_calls == enc  # a cached slice: no encoder pass
        assert live.stats.decoder_calls - dec == 1  # the box's own answer (and each click's) is kept
    dec = live.stats.decoder_calls
    undo = live.predict_slice(1, [BoxPrompt(1, 1, box.xyxy, points=clicks[:2])]).boxes[0]
    box_again = live.predict_slice(1, [box]).boxes[0]
    assert live.stats.decoder_calls == dec + 1  # undoing a click is free; the box alone is a plain batched call
    np.testing.assert_array_equal(undo.member_probs, answers[1].member_probs)
    first = live.predict_slice(1, [BoxPrompt(1, 1, box.xyxy, points=clicks[:1])]).boxes[0]
    assert live.stats.decoder_calls == dec + 1  # ... and it kept that answer too
    np.testing.assert_array_equal(first.member_probs, answers[0].member_probs)
    assert box_again.member_probs.shape[0] == 3
    replay = _segmenter(ens, img, update).predict_slice(1, [box, BoxPrompt(1, 1, box.xyxy, points=clicks)])
    np.testing.assert_allclose(replay.boxes[1].member_probs, answers[-1].member_probs, atol=1e-5)
    if update == "global":  # random weights rarely flip a clicked pixel, so only the global update must differ
        assert not np.allclose(answers[0].member_probs, answers[-1].member_probs[
            :, :answers[0].member_probs.shape[1], :answers[0].member_probs.shape[2]])


def test_a_click_changes_only_the_region_it_moved_to_its_side():
    prev = np.full((2, 1, 8, 8), -3.0, np.float32)
    prev[:, :, 2:5, 2:5] = 3.0  # the previous answer: a 3 x 3 square
    new = prev.copy()
    new[:, :, 2:5, 5:7] = 2.0  # the re-decode grows the square to the right ...
    new[:, :, 6:8, 0:2] = 2.0  # ... adds a far-away blob the user did not ask for ...
    new[:, :, 2, 2:4] = -1.0  # ... takes two pixels off the square, touching the growth ...
    new[:, :, 3, 3] = 2.5  # ... and changes a value inside it, not its side
    merged, followed = merge_click_answer(prev, new, (3, 5), 1)
    assert followed
    np.testing.assert_array_equal(merged[:, :, 2:5, 5:7], new[:, :, 2:5, 5:7])  # the clicked region is taken
    np.testing.assert_array_equal(merged[:, :, 6:8, 0:2], prev[:, :, 6:8, 0:2])  # the far blob is not
    np.testing.assert_array_equal(merged[:, :, 2, 2:4], prev[:, :, 2, 2:4])  # a "muscle" click removes none
    assert merged[0, 0, 3, 3] == 3.0  # nor takes any pixel whose side did not change
    merged, followed = merge_click_answer(prev, new, (2, 3), 0)  # "not muscle" where it took pixels off
    assert followed and (merged[:, :, 2, 2:4] == -1.0).all() and (merged[:, :, 2:5, 5:7] == -3.0).all()
    merged, followed = merge_click_answer(prev, new, (0, 7), 1)  # a click whose pixel the model left alone
    assert not followed
    np.testing.assert_array_equal(merged, prev)
    assert merge_click_answer(prev, new, (4, 4), 1)[1] is True  # already muscle: followed, nothing to fix
    half = prev.copy()
    half[0, :, 3, 6] = 4.0  # one member of two flips the pixel: the mean probability decides
    assert merge_click_answer(prev, half, (3, 6), 1)[1] is True
    with pytest.raises(ValueError, match="outside"):
        merge_click_answer(prev, new, (8, 0), 1)


def test_the_engine_merges_each_click_at_the_clicked_cell_of_the_logit_grid():
    ens = Ensemble.random("demo_xs", members=2, seed=3)
    img = np.random.default_rng(4).uniform(0, 100, (1, 40, 50)).astype(np.float32)
    box = BoxPrompt(1, 0, (10, 10, 30, 30))
    local, glob = _segmenter(ens, img, "local"), _segmenter(ens, img, "global")
    emb, geo = local.embedding(0)
    before = local._answer(0, box, emb, geo, None, 0)[0]
    for click in ((20, 20, 0), (20, 20, 1), (12, 28, 1), (29, 11, 0)):
        clicked = BoxPrompt(1, 0, box.xyxy, points=(click,))
        local.predict_slice(0, [clicked])
        got = local._answer(0, clicked, emb, geo, None, 1)[0]
        rc = local._lowres_rc(geo, click[0], click[1])
        want, followed = merge_click_answer(before, glob._answer(0, clicked, emb, geo, None, 1)[0], rc, click[2])
        np.testing.assert_array_equal(got, want)
        assert local.followed_last_click(clicked) is followed
        one_hot = torch.zeros(ens.lowres_size, ens.lowres_size)
        one_hot[rc] = 1.0  # the grid cell the engine merged at covers the clicked slice pixel
        up = model_to_slice(one_hot, geo).numpy()
        assert up[click[1], click[0]] >= 0.5 * up.max()
    assert local.followed_last_click(box) is None


def test_the_followed_flags_are_kept_only_for_kept_answers(monkeypatch):
    import MuscleSAMLib.engine.segmenter as segmenter_module

    monkeypatch.setattr(segmenter_module, "ANSWER_CACHE", 2)
    seg = _segmenter(Ensemble.random("demo_xs", members=2, seed=3),
                     np.random.default_rng(4).uniform(0, 100, (1, 40, 50)).astype(np.float32), "local")
    box = BoxPrompt(1, 0, (10, 10, 30, 30))
    for x in range(11, 29):  # many one-click answers; random weights rarely follow a click
        seg.predict_slice(0, [BoxPrompt(1, 0, box.xyxy, points=((x, 20, 1),))])
    assert len(seg._answers) == 2 and seg.unfollowed <= set(seg._answers)


def test_a_click_far_from_the_box_widens_the_answer_window_or_is_refused_by_a_box_crop_ensemble():
    img = np.random.default_rng(0).uniform(0, 100, (1, 60, 60)).astype(np.float32)
    far = BoxPrompt(1, 0, (10, 10, 30, 30), source="VL box", points=((50, 50, 0),))
    res = Segmenter(Ensemble.random("demo_xs", members=2), img).predict_slice(0, [far])
    assert res.boxes[0].window.c1 > 50 and res.boxes[0].window.r1 > 50
    crop = Segmenter(Ensemble.random("demo_xs", members=2, prompt_geometry="box_crop"), img).predict_slice(0, [far])
    assert crop.boxes == [] and "VL box point #1 (50, 50) lies outside the box's neighbourhood" in crop.rejected[0][1]


def test_a_bad_click_rejects_its_box_and_the_others_still_run():
    ens = Ensemble.random("demo_xs", kind="decoder", members=2)
    seg = Segmenter(ens, np.random.default_rng(0).uniform(0, 100, (2, 40, 50)).astype(np.float32))
    good = BoxPrompt(1, 0, (10, 10, 30, 30))
    bad = BoxPrompt(2, 0, (10, 10, 30, 30), source="RF box", points=((60, 5, 1),))
    assert "RF box point #1 (60, 5) lies outside" in validate_box(bad, seg.shape)
    res = seg.predict_slice(0, [good, bad])
    assert [b.box for b in res.boxes] == [good] and res.rejected[0][0] == bad


def _volume():
    arr = np.ones((5, 40, 60), np.float32)
    img = make_image(arr, DIRECTIONS["oblique"])
    return volume_from_array(arr, img.GetSpacing(), img.GetOrigin(), img.GetDirection())


def test_boxes_json_points_round_trip_in_file_indices_and_physical_points_agree():
    vol = _volume()
    doc = {"coordinates": "ijk", "boxes": [{"label": 3, "slice": 2, "xyxy": [30, 10, 44, 19],
                                            "points": [[35, 12, 1], [43, 18, 0]]}]}
    (box,), rejected = parse_boxes(doc, vol)
    assert rejected == [] and len(box.points) == 2 and [p[2] for p in box.points] == [1, 0]
    assert boxes_to_json([box], vol) == doc
    img = vol.image
    lps = [list(img.TransformIndexToPhysicalPoint((35, 12, 2))) + [1], list(img.TransformIndexToPhysicalPoint((43, 18, 2))) + [0]]
    corners = [img.TransformIndexToPhysicalPoint((30, 10, 2)), img.TransformIndexToPhysicalPoint((44, 19, 2))]
    (pbox,), rejected = parse_boxes({"coordinates": "lps", "boxes": [{"label": 3, "corners": corners, "points": lps}]}, vol)
    assert rejected == [] and pbox.points == box.points


@pytest.mark.parametrize("points, message", [
    ([[35, 12, 1], [99, 12, 1]], "box #0 point #2"),
    ([[35, 12]], "must be [x, y, 1 | 0]"),
    ([[35, 12, 1]] * (MAX_CLICKS + 1), "at most 32"),
    ("35,12", "'points' must be a list"),
])
def test_bad_points_in_a_boxes_file_reject_that_box_naming_the_point(points, message):
    vol = _volume()
    doc = {"boxes": [{"label": 3, "slice": 2, "xyxy": [30, 10, 44, 19], "points": points},
                     {"label": 4, "slice": 2, "xyxy": [30, 10, 44, 19]}]}
    good, bad = parse_boxes(doc, vol, source="boxes.json")
    assert [b.label for b in good] == [4]
    assert message in bad[0][1]


def test_a_physical_point_on_another_slice_is_refused():
    vol = _volume()
    img = vol.image
    corners = [img.TransformIndexToPhysicalPoint((30, 10, 2)), img.TransformIndexToPhysicalPoint((44, 19, 2))]
    off = list(img.TransformIndexToPhysicalPoint((35, 12, 4))) + [1]
    _, bad = parse_boxes({"coordinates": "lps", "boxes": [{"label": 3, "corners": corners, "points": [off]}]}, vol)
    assert "point #1 lies on axial slice" in bad[0][1] and "its box on slice" in bad[0][1]


def test_prompts_file_keeps_the_clicks_and_reads_them_back(tmp_path):
    import json

    from MuscleSAMLib.outputs.bundle import prompts_document
    from MuscleSAMLib.outputs.prediction_folder import _prompts

    vol = _volume()
    box = BoxPrompt(3, 2, (10, 5, 30, 25), "VL box", points=((12, 7, 1), (28, 20, 0)))
    doc = prompts_document([box, BoxPrompt(4, 2, (10, 5, 30, 25))], vol)
    assert doc["ijk"]["boxes"][0]["points"] and len(doc["ras"]["boxes"][0]["points"][1]) == 4
    (tmp_path / "prompts.json").write_text(json.dumps(doc))
    back = _prompts(tmp_path / "prompts.json")
    assert back[0] == box and back[1].points == ()
    (again,), _ = parse_boxes({"coordinates": "ras", "boxes": doc["ras"]["boxes"][:1]}, vol)
    assert again.points == box.points  # the RAS copy means the same voxels


def test_exported_prompts_hold_each_box_once_with_its_clicks_as_they_stand():
    from MuscleSAMLib.engine.session import Session

    arr = np.zeros((2, 20, 20), np.float32)
    s = Session(("case",), volume_from_array(arr, (1.0, 1.0, 1.0)), Segmenter(Ensemble.random("demo_xs", members=2), arr))
    vl, rf = BoxPrompt(3, 0, (2, 2, 10, 10)), BoxPrompt(2, 0, (5, 5, 15, 15))
    s.boxes += [vl, rf, replace(vl, points=((4, 4, 1),)), replace(vl, points=((4, 4, 1), (8, 8, 0))),
                replace(vl, points=((4, 4, 1),))]  # box, another box, two clicks, one undone
    assert s.current_prompts() == [rf, replace(vl, points=((4, 4, 1),))]


def test_an_ensemble_says_whether_it_was_trained_with_clicks():
    assert not Ensemble.random("demo_xs", members=2).trained_for_clicks
    trained = synthetic_spec("demo_xs", "decoder", training={"recipe": {"click_prob": 0.75}})
    base = build_sam("demo_xs").state_dict()
    assert Ensemble.from_states(trained, base, [{}]).trained_for_clicks


def test_a_click_trained_ensemble_gets_its_previous_answer_as_the_mask_prompt_and_others_do_not():
    base = build_sam("demo_xs").state_dict()
    img = np.random.default_rng(2).uniform(0, 100, (1, 40, 50)).astype(np.float32)
    clicks = ((15, 15, 1), (28, 12, 0))
    answers = {}
    for trained in (False, True):
        spec = synthetic_spec("demo_xs", "decoder", training={"recipe": {"click_prob": 1.0 if trained else 0.0}})
        ens = Ensemble.from_states(spec, base, [{}, {}])
        assert ens.trained_for_clicks is trained
        live = _segmenter(ens, img, "global")
        for n in range(len(clicks) + 1):
            last = live.predict_slice(0, [BoxPrompt(1, 0, (10, 10, 30, 30), points=clicks[:n])]).boxes[0]
        replay = _segmenter(ens, img, "global").predict_slice(0, [BoxPrompt(1, 0, (10, 10, 30, 30), points=clicks)]).boxes[0]
        np.testing.assert_allclose(replay.member_probs, last.member_probs, atol=1e-5)
        answers[trained] = last.member_probs
        if not trained:  # box + clicks only: the same as one decode of the box with both clicks
            emb, geo = live.embedding(0)
            plain = ens.decode(emb, geo, np.array([[10, 10, 30, 30]], float), None, [np.array(clicks, float)])
            w = last.window
            np.testing.assert_allclose(plain.probs_window(0, w.r0, w.r1, w.c0, w.c1), last.member_probs, atol=1e-5)
    assert np.abs(answers[True] - answers[False]).max() > 1e-3  # the previous answer changed the trained one's


def test_logit_offset_moves_every_answer_alike_and_the_fed_back_prompt_stays_raw():
    plain, shifted = _members("heads"), _members("heads", offset=0.8)
    assert plain.logit_offset == 0.0 and shifted.logit_offset == 0.8
    geo = ResizePad(40, 60, plain.input_size)
    emb = plain.encode(plain.preprocess(np.random.default_rng(1).uniform(0, 255, (40, 60)))[0])
    boxes = np.array([[5, 5, 30, 30], [30, 10, 55, 35]], float)
    a, b = plain.decode(emb, geo, boxes), shifted.decode(emb, geo, boxes)
    np.testing.assert_allclose(b.logits_lowres, a.logits_lowres + 0.8, atol=1e-5)
    assert (b.probs >= a.probs - 1e-6).all() and (b.probs > a.probs + 1e-3).any()  # larger masks, nothing smaller
    # the decoder gets its previous answer back as it was trained on it: the offset taken out again
    np.testing.assert_allclose(shifted.answer_prompt(b).numpy(), plain.answer_prompt(a).numpy(), atol=1e-4)
    probs, _, lowres = _members("full", offset=0.8).decode_crops(emb, [geo], boxes[:1])  # the box-crop path too
    ref_probs, _, ref_lowres = _members("full").decode_crops(emb, [geo], boxes[:1])
    np.testing.assert_allclose(lowres, ref_lowres + 0.8, atol=1e-5)
    assert (probs[0] >= ref_probs[0] - 1e-6).all()
