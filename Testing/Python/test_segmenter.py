"""The engine on real volumes with random-weight ensembles: cache reuse, batching, cancel, outputs on grid."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from musclesam_test_helpers import DIRECTIONS, write_random_decoder_ensemble
from MuscleSAMLib.engine.boxes import boxes_from_labels
from MuscleSAMLib.engine.segmenter import Segmenter
from MuscleSAMLib.engine.types import BoxPrompt
from MuscleSAMLib.engine.volume_run import segment_volume
from MuscleSAMLib.engine.worker import CancelledByUser
from MuscleSAMLib.models.ensemble import Ensemble
from MuscleSAMLib.phantoms import make_thigh_phantom

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def phantom():
    return make_thigh_phantom(seed=1, shape=(4, 96, 144), spacing=(6.0, 2.0, 2.0))


@pytest.fixture(scope="module")
def ensemble():
    return Ensemble.random("demo_xs", "decoder", members=3, seed=0)


def test_second_box_on_a_slice_runs_no_encoder(phantom, ensemble):
    seg = Segmenter(ensemble, phantom.water)
    boxes = boxes_from_labels(phantom.labels, slices=[1])
    seg.predict_slice(1, boxes[:1])
    assert seg.stats.encoder_calls == 1
    res = seg.predict_slice(1, boxes[1:3])
    assert seg.stats.encoder_calls == 1 and seg.stats.decoder_calls == 2  # cached: decoders only, batched
    assert len(res.boxes) == 2
    for bp in res.boxes:
        assert bp.member_probs.shape[0] == 3 and bp.member_probs.shape[1:] == bp.window.shape
        assert 0 <= bp.member_probs.min() and bp.member_probs.max() <= 1


def test_batched_boxes_equal_one_by_one(phantom, ensemble):
    seg = Segmenter(ensemble, phantom.water)
    boxes = boxes_from_labels(phantom.labels, slices=[2])[:4]
    together = seg.predict_slice(2, boxes).boxes
    alone = [seg.predict_slice(2, [b]).boxes[0] for b in boxes]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.member_probs, b.member_probs, atol=1e-4)


def test_bad_box_reported_good_ones_run(phantom, ensemble):
    seg = Segmenter(ensemble, phantom.water)
    good = boxes_from_labels(phantom.labels, slices=[0])[0]
    bad = BoxPrompt(label=3, slice=0, xyxy=(10, 10, 10, 30), source="box #7")
    gone = BoxPrompt(label=3, slice=99, xyxy=(10, 10, 20, 30), source="box #8")
    out = seg.predict([good, bad, gone])
    rejected = [r for p in out.values() for r in p.rejected]
    assert {b.source for b, _ in rejected} == {"box #7", "box #8"}
    assert sum(len(p.boxes) for p in out.values()) == 1


def test_precompute_on_worker_then_cancel(phantom, ensemble):
    seg = Segmenter(ensemble, phantom.water)
    fut, _ = seg.precompute(center=1, radius=1)
    assert sorted(fut.result(timeout=60)) == [0, 1, 2]
    assert seg.stats.encoder_calls == 3
    seg.predict_slice(0, boxes_from_labels(phantom.labels, slices=[0])[:1])
    assert seg.stats.encoder_calls == 3  # precomputed slice used
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledByUser):
        seg.predict(boxes_from_labels(phantom.labels), cancel=cancel)


@pytest.mark.parametrize("kind", ["decoder", "full", "lora"])
def test_box_crop_geometry_caches_per_crop(phantom, kind):
    """All crops of a slice: one encoder batch, one batched decode, equal to SAM's box-by-box decode."""
    ens = Ensemble.random("demo_xs", kind, members=2, seed=1, prompt_geometry="box_crop", box_mask_prompt=True)
    seg = Segmenter(ens, phantom.water)
    boxes = boxes_from_labels(phantom.labels, slices=[1])[:3]
    res = seg.predict_slice(1, boxes)
    assert seg.stats.encoder_calls == 1  # all crops of a slice in one encoder batch
    seg.predict_slice(1, boxes[:1])
    assert seg.stats.encoder_calls == 1
    direct = ens.predict(seg.image[1], np.array([b.xyxy for b in boxes], float))
    for n, bp in enumerate(res.boxes):
        np.testing.assert_allclose(bp.full_slice((96, 144), members=True), direct.probs[:, n], atol=1e-4)


def test_volume_run_gives_maps_scores_and_queue(phantom, ensemble):
    seg = Segmenter(ensemble, phantom.water, spacing=(6.0, 2.0, 2.0))
    boxes = boxes_from_labels(phantom.labels, slices=[1, 2])
    res = segment_volume(seg, boxes)
    assert res.labels.shape == phantom.labels.shape
    assert res.uncertainty_total.max() <= np.log(2) + 1e-6 and res.uncertainty_epistemic.min() >= 0
    assert res.queue and res.queue[0].mean_uncertainty >= res.queue[-1].mean_uncertainty
    assert seg.stats.encoder_calls == 2  # one encoder pass per slice for all its boxes


@pytest.mark.parametrize("orientation", ["LPS", "RAS", "oblique"])
def test_segment_cli_writes_outputs_on_the_input_grid(tmp_path, phantom, orientation):
    manifest = write_random_decoder_ensemble(tmp_path / "weights", members=2)
    img = sitk.GetImageFromArray(phantom.water)
    img.SetSpacing((2.0, 2.0, 6.0))
    img.SetDirection(DIRECTIONS[orientation])
    img.SetOrigin((-100.0, 50.0, 10.0))
    image_path = tmp_path / "water.nrrd"
    sitk.WriteImage(img, str(image_path))
    # a box around muscle 3 on stored slice 2 (ijk: stored axes i, j; canonical mapping inside)
    ys, xs = np.nonzero(phantom.labels[2] == 3)
    left = xs < phantom.labels.shape[2] // 2
    box = [int(xs[left].min()), int(ys[left].min()), int(xs[left].max()), int(ys[left].max())]
    boxes = {"boxes": [{"label": 3, "slice": 2, "xyxy": box}, {"label": 3, "slice": 2, "xyxy": [1, 1, 1, 1]}]}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "MuscleSAMLib.cli", "segment", str(image_path), "--boxes",
                           str(tmp_path / "boxes.json"), "--out", str(out), "--manifest", str(manifest), "--quiet",
                           "--threshold", "1e-6"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "box #1 skipped" in proc.stderr
    for name in ("labels.nii.gz", "labels.seg.nrrd", "probability.nii.gz", "uncertainty_total.nii.gz",
                 "uncertainty_epistemic.nii.gz", "report.json", "overlay.png"):
        assert (out / name).is_file(), name
    lab = sitk.ReadImage(str(out / "labels.nii.gz"))
    assert lab.GetSize() == img.GetSize()
    np.testing.assert_allclose(lab.GetDirection(), img.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(lab.GetOrigin(), img.GetOrigin(), atol=1e-4)
    arr = sitk.GetArrayFromImage(lab)
    # threshold 0 labels every voxel the box's window covers: the prediction sits on the drawn box
    inside = arr[2, box[1]:box[3] + 1, box[0]:box[2] + 1]
    assert (inside == 3).all()
    assert (arr[[0, 1, 3]] == 0).all()  # nothing on other slices
    report = json.loads((out / "report.json").read_text())
    assert report["provenance"]["manifest_sha256"] and report["boxes_used"] == 1
    assert report["boxes_rejected"][0]["box"].endswith("box #1")
    assert report["per_muscle"]["3"]["interval_minmax_ml"][0] <= report["per_muscle"]["3"]["interval_minmax_ml"][1]


@pytest.mark.parametrize("geometry", ["slice", "box_crop", "legs"])
def test_the_mirrored_view_is_the_same_members_on_the_mirrored_slice_mirrored_back(phantom, geometry):
    """Members M..2M-1 are exactly what the plain engine answers for the mirrored box on the mirrored volume,
    mirrored back; members 0..M-1 are the plain answer. Clicks mirror with their box; the mirrored view costs
    one more encoder pass a slice (whole-slice geometry) and nothing more for a second box."""
    from MuscleSAMLib.engine.segmenter import mirror_box

    ens = Ensemble.random("demo_xs", "decoder", members=2, seed=3, prompt_geometry=geometry,
                          box_mask_prompt=geometry == "box_crop")
    cols = phantom.water.shape[2]
    boxes = boxes_from_labels(phantom.labels, slices=[1])[:3]
    boxes[1] = BoxPrompt(boxes[1].label, 1, boxes[1].xyxy, "clicked", ((boxes[1].xyxy[0] + 2, boxes[1].xyxy[1] + 3, 0),))
    both = Segmenter(ens, phantom.water, mirror=True)
    assert both.members == 4 and Segmenter(ens, phantom.water).members == 2
    assert (both.layout is not None) == (geometry == "legs")  # legs: answered in the legs' crops, not whole slices
    got = both.predict_slice(1, boxes).boxes
    plain = Segmenter(ens, phantom.water).predict_slice(1, boxes).boxes
    both_layout = None if both.layout is None else both.layout.mirrored(cols)  # legs: the mirrored crops
    mirrored = Segmenter(ens, np.ascontiguousarray(phantom.water[:, :, ::-1]), layout=both_layout).predict_slice(
        1, [mirror_box(b, cols) for b in boxes]).boxes
    for g, p, m in zip(got, plain, mirrored):
        assert g.box is p.box and g.window == p.window and g.member_probs.shape == (4, *p.window.shape)
        np.testing.assert_array_equal(g.member_probs[:2], p.member_probs)
        np.testing.assert_allclose(g.member_probs[2:], m.member_probs[:, :, ::-1], atol=1e-6)
        np.testing.assert_allclose(g.iou_pred, np.concatenate([p.iou_pred, m.iou_pred]), atol=1e-6)
    assert both.stats.boxes == 3  # the same boxes, answered in both views, count once
    clicked = got[1].box
    mirrored_followed = Segmenter(ens, np.ascontiguousarray(phantom.water[:, :, ::-1]), layout=both_layout)
    mirrored_followed.predict_slice(1, [mirror_box(clicked, cols)])
    plain_followed = Segmenter(ens, phantom.water)
    plain_followed.predict_slice(1, [clicked])
    expect = (plain_followed.followed_last_click(clicked)
              and mirrored_followed.followed_last_click(mirror_box(clicked, cols)))
    assert both.followed_last_click(clicked) == expect  # followed only when both views followed the click
    if geometry == "slice":
        assert both.stats.encoder_calls == 2  # the slice and its mirror image; the second box reuses both
        both.predict_slice(1, boxes[:1])
        assert both.stats.encoder_calls == 2
        both.cache.clear()  # one cache holds both views: clearing it (a new ensemble, memory) drops both
        both.predict_slice(1, boxes[:1])
        assert both.stats.encoder_calls == 4


def test_a_segmenter_uses_the_cache_it_is_given_even_while_empty(phantom, ensemble):
    from MuscleSAMLib.engine.embedding_cache import EmbeddingCache

    shared = EmbeddingCache()
    assert len(shared) == 0
    one, two = Segmenter(ensemble, phantom.water, "a", cache=shared), Segmenter(ensemble, phantom.water, "b", cache=shared)
    assert one.cache is shared and two.cache is shared  # one memory budget for every open volume
    one.predict_slice(1, boxes_from_labels(phantom.labels, slices=[1])[:1])
    assert len(shared) == 1


def test_mirror_box_maps_pixels_and_half_open_columns():
    from MuscleSAMLib.engine.segmenter import mirror_box

    b = BoxPrompt(4, 2, (10, 5, 30, 25), "b", ((10, 6, 1), (29, 24, 0)))
    m = mirror_box(b, 100)
    assert m.xyxy == (70, 5, 90, 25) and m.points == ((89, 6, 1), (70, 24, 0))  # the edge pixels stay the edges
    assert mirror_box(m, 100) == b


def test_a_manifest_entry_with_mirror_view_turns_it_on(phantom, tmp_path):
    import dataclasses

    from MuscleSAMLib.models.loading import load_ensemble
    from MuscleSAMLib.models.manifest import load_manifest, save_manifest

    manifest = write_random_decoder_ensemble(tmp_path / "w", members=2, seed=4)
    spec = load_manifest(manifest).get()
    save_manifest(manifest, [spec, dataclasses.replace(spec, name="mirrored", mirror_view=True, default=False)])
    assert json.loads(manifest.read_text())["ensembles"][1]["mirror_view"] is True
    seg = Segmenter(load_ensemble("mirrored", manifest, "cpu").ensemble, phantom.water)
    res = segment_volume(seg, boxes_from_labels(phantom.labels, slices=[2])[:2])
    assert seg.members == 4 and res.predictions[2].boxes[0].member_probs.shape[0] == 4
    assert Segmenter(load_ensemble(spec.name, manifest, "cpu").ensemble, phantom.water).members == 2
