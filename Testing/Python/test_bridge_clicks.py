"""Clicks through the scene bridge on real MRML (slicer-core): a click re-runs only its muscle on its slice,
keeps the user's edits and other muscles, updates maps, review and markers; Undo click brings the mask back
exactly (from the engine's cache); a locked muscle and bad points are refused with the point named and
nothing changes (rows of the bad-input table); the suggested next click lies in that muscle's answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bad_input_table import record
from musclesam_test_helpers import import_declared, scene_state, write_random_decoder_ensemble

slicer = import_declared("slicer", "slicer-core")

from MuscleSAMLib.engine.boxes import boxes_from_labels  # noqa: E402
from MuscleSAMLib.engine.clicks import MAX_CLICKS  # noqa: E402
from MuscleSAMLib.engine.types import BoxPrompt  # noqa: E402
from MuscleSAMLib.errors import InputError  # noqa: E402
from MuscleSAMLib.sample_data import sample_case  # noqa: E402
from MuscleSAMLib.scene_bridge import click_markers as M  # noqa: E402
from MuscleSAMLib.scene_bridge import geometry as G  # noqa: E402
from MuscleSAMLib.scene_bridge import segments as S  # noqa: E402
from MuscleSAMLib.scene_bridge.headless import headless_scene  # noqa: E402
from MuscleSAMLib.scene_bridge.logic import MuscleSAMLogic  # noqa: E402
from MuscleSAMLib.scene_bridge.outcomes import NOT_CLICK_TRAINED, NOT_FOLLOWED  # noqa: E402
from MuscleSAMLib.volumes import Volume, read_volume  # noqa: E402

VL, VM, SM = 3, 5, 9
K = 1  # the canonical slice the boxes are on


@pytest.fixture(scope="module")
def logic(tmp_path_factory):
    lg = MuscleSAMLogic()
    lg.load_ensemble("random-test", write_random_decoder_ensemble(tmp_path_factory.mktemp("ens"), members=3, seed=1), "cpu")
    yield lg
    lg.shutdown()


@pytest.fixture(scope="module")
def sample_crop() -> tuple[Volume, Volume]:
    """Three axial slices of one thigh of the embedded sample (water image + labels)."""
    case = sample_case()
    region = (slice(40, 264), slice(168, 352), slice(6, 9))
    return (Volume(read_volume(case.water).image[region], "water"),
            Volume(read_volume(case.labels, allow_labels=True).image[region], "labels"))


class Case:
    """A scene with the crop segmented: VL, VM and SM boxes on slice K."""

    def __init__(self, logic: MuscleSAMLogic, sample_crop: tuple[Volume, Volume], extra: list[BoxPrompt] = ()) -> None:
        self.mrml = headless_scene()
        self.logic = logic
        self.node = G.add_volume_node(self.mrml.scene, sample_crop[0], "water")
        boxes = [b for b in boxes_from_labels(sample_crop[1].canonical_array, slices=[K]) if b.label in (VL, VM, SM)]
        self.seg = logic.segment(self.node, [*boxes, *extra]).segmentation_node
        self.s = logic.session(self.node)
        self.slice = logic.slice_number(self.node, K)

    def labels(self) -> np.ndarray:
        return G.to_canonical(S.read_labels(self.seg, self.node), self.s.volume)

    def ras(self, x: float, y: float, k: int = K) -> tuple[float, float, float]:
        return G.canonical_to_ras(self.s.volume, x, y, k)

    def inside(self, label: int) -> tuple[float, float, float]:
        """RAS of a pixel the prediction gives ``label`` (its middle one, in row-major order)."""
        rows, cols = np.nonzero(self.s.prediction[K] == label)
        i = len(rows) // 2
        return self.ras(cols[i], rows[i])

    def maps(self) -> dict[str, np.ndarray]:
        return {n: getattr(self.s, n).copy() for n in ("prediction", "probability", "total", "epistemic")}


@pytest.fixture
def case(logic, sample_crop):
    c = Case(logic, sample_crop)
    yield c
    c.mrml.scene.Clear(1)


def test_a_click_reruns_only_its_muscle_and_undo_brings_it_back_exactly(case, logic):
    before, maps, scores = case.labels(), case.maps(), dict(case.s.scores)
    runs = logic.run_history(case.node)[0]
    out = logic.add_click(case.node, "VL", case.inside(VL), positive=False, slice_index=case.slice)
    after = case.labels()
    assert out.added and not out.positive and out.clicks == 1 and out.label == VL and out.slice == case.slice
    assert out.run.slices == [case.slice] and set(out.run.changed_labels) <= {VL}
    assert out.changed_voxels == int((after != before).sum()) > 0  # the random ensemble answers the click
    # the user is told when the model left the clicked spot as it was, else that it had no click training
    assert out.followed in (True, False)
    assert out.caveat == (NOT_FOLLOWED if out.followed is False else NOT_CLICK_TRAINED)
    changed = after != before
    assert set(np.unique(before[changed])) | set(np.unique(after[changed])) <= {0, VL}  # only VL's voxels
    for other in (VM, SM):
        assert np.array_equal(after == other, before == other)
        assert (K, other) in case.s.scores and case.s.scores[(K, other)] == scores[(K, other)]
    assert np.array_equal(case.s.prediction[K] == VM, maps["prediction"][K] == VM)
    assert not np.array_equal(case.s.total[K], maps["total"][K])  # the heatmap follows the answer
    assert case.s.scores[(K, VL)] != scores[(K, VL)] and logic.run_history(case.node) == (runs + 1, True)
    assert logic.clicks_on_slice(case.node, case.slice) == [{"label": VL, "ras": pytest.approx(out.ras), "positive": False}]
    assert len(M.marker_points(case.node, M.NEGATIVE)) == 1 and M.marker_points(case.node, M.POSITIVE) == []

    # a second click costs one decoder call; taking it back costs none (the engine's cache)
    second = logic.add_click(case.node, "VL", case.inside(VL), positive=True, slice_index=case.slice)
    assert second.clicks == 2 and len(M.marker_points(case.node, M.POSITIVE)) == 1
    calls = case.s.segmenter.stats.decoder_calls
    logic.undo_click(case.node, "VL", case.slice)
    assert case.s.segmenter.stats.decoder_calls == calls
    assert np.array_equal(case.labels(), after)
    back = logic.undo_click(case.node, "VL", case.slice)
    assert not back.added and back.clicks == 0 and back.followed is None
    assert np.array_equal(case.labels(), before)
    for name, arr in case.maps().items():
        np.testing.assert_allclose(arr, maps[name], atol=1e-6, err_msg=name)
    assert M.marker_points(case.node, M.NEGATIVE) == [] and M.marker_points(case.node, M.POSITIVE) == []
    with pytest.raises(InputError, match="no click to undo for vastus lateralis"):
        logic.undo_click(case.node, "VL", case.slice)
    # Undo run takes back a click run like any run (here the last Undo click)
    logic.undo_run(case.node)
    assert logic.clicks_on_slice(case.node, case.slice, "VL")[0]["positive"] is False


def test_user_edits_are_kept_and_the_prediction_stays_the_models(case, logic):
    before = case.labels()
    erased = tuple(np.argwhere(before[K] == VL)[0])  # a VL voxel the user erased
    painted = tuple(np.argwhere((before[K] == 0) & (case.s.prediction[K] == 0))[-1])  # background painted as VL
    edited = before.copy()
    edited[K][erased] = 0
    edited[K][painted] = VL
    S.write_changes(case.seg, case.node, S.read_labels(case.seg, case.node), G.to_stored(edited, case.s.volume))
    out = logic.add_click(case.node, VL, case.inside(VL), positive=True)
    now = case.labels()
    assert now[K][erased] == 0 and now[K][painted] == VL  # the user's edits survive the click
    assert case.s.prediction[K][painted] == 0  # the prediction layer never takes the paint in as the model's
    assert out.kept_edits >= 1


def test_locked_muscle_and_bad_points_are_refused_and_nothing_changes(case, logic):
    S.set_segment_status(case.seg, VL, S.STATUS_COMPLETED)
    n, rows, cols = case.s.volume.canonical_array.shape
    cases = [
        ("click: on a locked (finished) muscle", lambda: logic.add_click(case.node, VL, case.inside(VL)), "is locked"),
        ("click: NaN coordinate", lambda: logic.add_click(case.node, VM, (float("nan"), 0.0, 0.0)), "NaN"),
        ("click: outside the image", lambda: logic.add_click(case.node, VM, case.ras(cols + 20, 5)), "outside the image"),
        ("click: not three numbers", lambda: logic.add_click(case.node, VM, (1.0, 2.0)), "three numbers"),
        ("click: on another slice than the view's", lambda: logic.add_click(case.node, VM, case.ras(50, 50, 0), True, None,
                                                                            case.slice), "not on slice"),
        ("click: muscle with no box on that slice", lambda: logic.add_click(case.node, "RF", case.inside(VM)),
         f"draw a box for rectus femoris on slice {case.slice} first"),
        ("click: muscle with no box on another slice", lambda: logic.add_click(case.node, VM, case.ras(50, 50, 2)),
         f"draw a box for vastus medialis on slice {logic.slice_number(case.node, 2)} first"),
        ("undo click: no click there", lambda: logic.undo_click(case.node, VM, case.slice), "no click to undo"),
        ("undo click: slice that does not exist", lambda: logic.undo_click(case.node, VM, 99), "slice 99 does not exist"),
    ]
    for name, action, fragment in cases:
        with record("scene bridge", name):
            state, maps, log = scene_state(case.mrml.scene), case.maps(), len(case.s.log)
            with pytest.raises(InputError) as info:
                action()
            assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)
            assert scene_state(case.mrml.scene) == state and len(case.s.log) == log and not logic.busy
            assert all(np.array_equal(a, maps[k]) for k, a in case.maps().items())


def test_more_than_32_clicks_on_one_box_is_refused(logic, sample_crop):
    full = tuple((20 + i, 40, 1) for i in range(MAX_CLICKS))
    c = Case(logic, sample_crop)
    try:
        vm = next(b for b in c.s.boxes if b.label == VM)
        c.logic.segment(c.node, [BoxPrompt(VM, K, vm.xyxy, "VM with 32 clicks", full)])
        with record("scene bridge", "click: the 33rd click on one box"):
            state = scene_state(c.mrml.scene)
            with pytest.raises(InputError, match="already has 32 clicks") as info:
                logic.add_click(c.node, VM, c.inside(VM))
            assert "click at RAS (" in str(info.value)
            assert scene_state(c.mrml.scene) == state
    finally:
        c.mrml.scene.Clear(1)


def test_two_boxes_of_one_muscle_the_click_goes_to_the_nearer_box(logic, sample_crop):
    c = Case(logic, sample_crop, extra=[BoxPrompt(VL, K, (150, 150, 175, 175), "second VL box")])
    try:
        out = logic.add_click(c.node, VL, c.ras(160, 160), positive=False)
        assert out.clicks == 1
        boxes = {b.box.source: b.box for b in c.s.label_probs[(K, VL)].boxes}
        assert boxes["second VL box"].points == ((160, 160, 0),) and not boxes["label 3 slice 1"].points
        assert len(c.s.label_probs[(K, VL)].boxes) == 2  # the other leg's box still answers
    finally:
        c.mrml.scene.Clear(1)


def test_suggested_click_lies_in_the_muscles_answer_and_the_marker_follows(case, logic):
    ras = logic.suggested_click(case.node, VL, case.slice)
    assert ras is not None
    k, x, y = (int(round(v)) for v in G.ras_to_canonical(case.s.volume, np.array([ras]))[0][[2, 0, 1]])
    lp = case.s.label_probs[(K, VL)]
    w = lp.window
    assert k == K and w.c0 <= x < w.c1 and w.r0 <= y < w.r1
    assert logic.show_suggested_click(case.node, VL, case.slice) == ras
    assert M.marker_points(case.node, M.SUGGESTED) == [pytest.approx(ras)]
    assert logic.suggested_click(case.node, "RF", case.slice) is None  # RF was never predicted here
    logic.show_suggested_click(case.node)  # hidden
    assert M.marker_points(case.node, M.SUGGESTED) == []
    logic.remove_case(case.mrml.scene, case.node)  # the markers go with the case
    assert not any(n.GetAttribute("MuscleSAM.Role") in (M.SUGGESTED, M.NEGATIVE, M.POSITIVE)
                   for n in (case.mrml.scene.GetNthNode(i) for i in range(case.mrml.scene.GetNumberOfNodes())))


def test_click_before_any_run_names_the_muscle_and_slice(logic, sample_crop, tmp_path: Path):
    h = headless_scene()
    try:
        node = G.add_volume_node(h.scene, sample_crop[0], "water")
        vol = logic.session(node).volume
        with pytest.raises(InputError, match=f"draw a box for vastus lateralis on slice {logic.slice_number(node, 1)} first"):
            logic.add_click(node, VL, G.canonical_to_ras(vol, 40, 40, 1))
        assert logic.suggested_click(node, VL, logic.slice_number(node, 1)) is None
    finally:
        h.scene.Clear(1)
