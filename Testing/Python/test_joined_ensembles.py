"""Joined ensembles (the manifest's ``join``): members of different recipes answer every box together."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from musclesam_test_helpers import write_random_decoder_ensemble
from MuscleSAMLib.engine.boxes import boxes_from_labels
from MuscleSAMLib.engine.segmenter import Segmenter
from MuscleSAMLib.engine.types import BoxPrompt
from MuscleSAMLib.engine.volume_run import segment_volume
from MuscleSAMLib.errors import InputError, WeightsError
from MuscleSAMLib.models.loading import installed_spec, load_ensemble, read_manifest
from MuscleSAMLib.models.manifest import load_manifest, save_manifest
from MuscleSAMLib.phantoms import make_thigh_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_thigh_phantom(seed=2, shape=(4, 96, 144), spacing=(6.0, 2.0, 2.0))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Entries: 'slice' (2 members), 'legs' (3 members, other weights, legs geometry), 'both' = slice + legs."""
    folder = tmp_path_factory.mktemp("joined")
    path = write_random_decoder_ensemble(folder / "a", members=2, seed=1)
    legs_path = write_random_decoder_ensemble(folder / "b", members=3, seed=7, prompt_geometry="legs")
    a, b = (_moved(load_manifest(p).get(), sub) for p, sub in ((path, "a"), (legs_path, "b")))
    entries = [dataclasses.replace(a, name="slice", default=False), dataclasses.replace(b, name="legs", default=False),
               dataclasses.replace(a, name="both", join=("legs",), default=True)]
    out = folder / "manifest.json"
    save_manifest(out, entries)
    return out


def _moved(spec, sub: str):
    """The entry with its files named from the folder above (one manifest for both entries)."""
    wf = lambda f: dataclasses.replace(f, file=f"{sub}/{f.file}")  # noqa: E731
    return dataclasses.replace(spec, base=wf(spec.base), members=tuple(wf(m) for m in spec.members))


def test_a_joined_answer_is_each_ensembles_own_answer_on_the_primarys_window(phantom, manifest):
    both = load_ensemble("both", manifest, "cpu").ensemble
    assert [e.spec.name for e in both.joined] == ["legs"] and both.member_maps == 5
    seg = Segmenter(both, phantom.water)
    assert seg.members == 5
    boxes = boxes_from_labels(phantom.labels, slices=[1])[:4]
    clicked = BoxPrompt(boxes[0].label, 1, boxes[0].xyxy, "clicked", ((boxes[0].xyxy[0] + 2, boxes[0].xyxy[1] + 2, 1),))
    got = seg.predict_slice(1, boxes + [clicked]).boxes
    plain = Segmenter(load_ensemble("slice", manifest, "cpu").ensemble, phantom.water).predict_slice(1, boxes + [clicked]).boxes
    legs = Segmenter(load_ensemble("legs", manifest, "cpu").ensemble, phantom.water).predict_slice(1, boxes + [clicked]).boxes
    assert seg.stats.boxes == 5  # the same boxes, answered by both ensembles, count once
    for g, p, q in zip(got, plain, legs):
        assert g.window == p.window and g.member_probs.shape == (5, *p.window.shape)
        np.testing.assert_array_equal(g.member_probs[:2], p.member_probs)
        w, v = g.window, q.window  # the legs entry keeps its answer inside its leg's crop
        inner = g.member_probs[2:, v.r0 - w.r0:v.r1 - w.r0, v.c0 - w.c0:v.c1 - w.c0]
        np.testing.assert_allclose(inner, q.member_probs, atol=1e-6)
        assert g.member_probs[2:].sum() == pytest.approx(q.member_probs.sum(), rel=1e-5)  # 0 outside its crop
        np.testing.assert_allclose(g.iou_pred, np.concatenate([p.iou_pred, q.iou_pred]), atol=1e-6)
    res = segment_volume(Segmenter(both, phantom.water), boxes_from_labels(phantom.labels, slices=[2]))
    assert res.predictions[2].boxes[0].member_probs.shape[0] == 5  # the volume run, uncertainty and scores use all


def test_with_the_mirrored_view_every_joined_ensemble_answers_both_views(phantom, manifest, tmp_path):
    """``mirror_view`` on a joined entry: its own members, their mirrored view, then each joined ensemble's
    members and their mirrored view; each block is that ensemble's own answer (mirrored view included)."""
    raw = json.loads(manifest.read_text())
    raw["ensembles"][2]["mirror_view"] = True
    path = manifest.parent / "mirrored_join.json"
    path.write_text(json.dumps(raw))
    both = load_ensemble("both", path, "cpu").ensemble
    assert both.member_maps == 10
    seg = Segmenter(both, phantom.water)
    assert seg.members == 10
    assert seg._joined[0]._mirrored.image is seg._mirrored.image  # one mirrored copy of the volume, shared
    boxes = boxes_from_labels(phantom.labels, slices=[1])[:4]
    got = seg.predict_slice(1, boxes).boxes
    plain = Segmenter(load_ensemble("slice", manifest, "cpu").ensemble, phantom.water, mirror=True).predict_slice(1, boxes).boxes
    legs = Segmenter(load_ensemble("legs", manifest, "cpu").ensemble, phantom.water, mirror=True).predict_slice(1, boxes).boxes
    assert seg.stats.boxes == 4
    for g, p, q in zip(got, plain, legs):
        assert g.member_probs.shape == (10, *p.window.shape)
        np.testing.assert_array_equal(g.member_probs[:4], p.member_probs)
        w, v = g.window, q.window
        np.testing.assert_allclose(g.member_probs[4:, v.r0 - w.r0:v.r1 - w.r0, v.c0 - w.c0:v.c1 - w.c0],
                                   q.member_probs, atol=1e-6)
        assert not np.allclose(q.member_probs[:3], q.member_probs[3:])  # the mirrored view is another look
    pre = Segmenter(both, phantom.water)
    assert pre.precompute(center=0, radius=0)[0].result(timeout=60) == [0]
    assert pre.stats.encoder_calls == 6  # slice, mirrored slice, each leg's crop, each mirrored leg's crop
    pre.predict_slice(0, boxes_from_labels(phantom.labels, slices=[0])[:3])
    assert pre.stats.encoder_calls == 6


def test_precompute_encodes_for_every_joined_ensemble(phantom, manifest):
    seg = Segmenter(load_ensemble("both", manifest, "cpu").ensemble, phantom.water)
    fut, _ = seg.precompute(center=0, radius=0)
    assert fut.result(timeout=60) == [0] and seg.stats.encoder_calls == 3  # the slice, then each leg's crop
    seg.predict_slice(0, boxes_from_labels(phantom.labels, slices=[0])[:3])
    assert seg.stats.encoder_calls == 3


def test_the_manifest_checks_join_names_before_any_weights_load(manifest, tmp_path):
    raw = json.loads(manifest.read_text())
    assert raw["ensembles"][2]["join"] == ["legs"]
    cases = [({2: {"join": ["nope"]}}, "join names 'nope', which is not another entry"),
             ({2: {"join": ["both"]}}, "join names 'both', which is not another entry"),
             ({1: {"join": ["slice"]}}, "join names 'legs', which joins or mirrors itself"),
             ({1: {"mirror_view": True}}, "join names 'legs', which joins or mirrors itself"),
             ({2: {"join": "legs"}}, "join must be a list of other entries' names"),
             ({2: {"join": ["legs", "legs"]}}, "join names an entry twice")]
    for i, (change, message) in enumerate(cases):
        bad = json.loads(json.dumps(raw))
        for k, fields in change.items():
            bad["ensembles"][k].update(fields)
        path = manifest.parent / f"bad{i}.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(WeightsError, match=message):
            load_manifest(path)


def test_a_joined_entry_whose_partner_is_missing_is_not_installed(manifest, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(manifest.parent, copy)
    (copy / "b" / "member1.safetensors").unlink()
    with pytest.raises(WeightsError, match="ensemble 'both' is not installed: missing .*member1"):
        installed_spec(read_manifest(copy / "manifest.json"), "both")


def test_learning_from_corrections_refuses_a_joined_base(manifest, tmp_path):
    from MuscleSAMLib.corrections.learning import plan_learning

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    with pytest.raises(InputError, match="joins legs: learning from corrections fine-tunes one ensemble"):
        plan_learning([bundle], "both", manifest)


def test_a_box_or_click_the_legs_partner_cannot_see_is_refused_alone_with_its_reason(phantom, manifest):
    """The whole-slice entry would take a click on the other leg, its legs partner cannot: only that box is
    refused (named), the slice's other boxes still run."""
    both = Segmenter(load_ensemble("both", manifest, "cpu").ensemble, phantom.water)
    layout = both._joined[0].layout
    box = next(b for b in boxes_from_labels(phantom.labels, slices=[1]) if layout.side_of(b.xyxy) == 0)
    other_leg = int(layout.windows[0][3]) + 3
    clicked = BoxPrompt(box.label, 1, box.xyxy, "box #2", ((other_leg, box.xyxy[1], 1),))
    in_air = BoxPrompt(box.label, 1, (2, 0, 8, 4), "box #3")  # above both legs' crops on this phantom
    assert in_air.xyxy[3] <= min(w[0] for w in layout.windows) or in_air.xyxy[2] <= min(w[2] for w in layout.windows)
    res = both.predict_slice(1, [box, clicked, in_air])
    assert [p.box for p in res.boxes] == [box]
    reasons = {b.source: why for b, why in res.rejected}
    assert "outside the box's leg" in reasons["box #2"]
    assert "lies outside its leg's crop" in reasons["box #3"]


def test_the_partners_geometry_note_reaches_the_joined_segmenter(manifest):
    img = np.zeros((2, 64, 64), np.float32)
    img[:, 10:54, 8:56] = 200.0  # no gap between the legs: the legs partner falls back to whole slices
    seg = Segmenter(load_ensemble("both", manifest, "cpu").ensemble, img)
    assert "no gap between the thighs" in seg.stats.extra.get("geometry", "")


def test_the_selector_calls_a_joined_entry_not_installed_when_its_partner_is_missing(manifest, tmp_path):
    import shutil

    from MuscleSAMLib.scene_bridge.logic import MuscleSAMLogic

    copy = tmp_path / "copy"
    shutil.copytree(manifest.parent, copy)
    (copy / "b" / "member2.safetensors").unlink()
    choices = {c.name: c for c in MuscleSAMLogic.ensemble_choices(copy / "manifest.json")}
    assert choices["slice"].installed and not choices["legs"].installed and not choices["both"].installed
    assert any(p.endswith("member2.safetensors") for p in choices["both"].missing)
