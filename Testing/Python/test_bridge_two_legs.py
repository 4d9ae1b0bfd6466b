"""A muscle on both legs through the scene bridge on real MRML (slicer-core): a box for one leg replaces that
muscle only where the box reaches, so the other leg keeps its segment (with the user's edits or clearing),
its prediction, its heatmap, its review score and its box (which a click re-runs). Segment, Propagate and
Undo run alike; redrawing the same leg still replaces that leg whole."""

from __future__ import annotations

import numpy as np
import pytest

from musclesam_test_helpers import import_declared, write_random_decoder_ensemble

slicer = import_declared("slicer", "slicer-core")

from MuscleSAMLib.engine.boxes import boxes_from_labels  # noqa: E402
from MuscleSAMLib.engine.propagation import DirectionStop, PropagationResult  # noqa: E402
from MuscleSAMLib.engine.review import score_slice  # noqa: E402
from MuscleSAMLib.engine.types import BoxPrompt  # noqa: E402
from MuscleSAMLib.engine.volume_run import segment_volume  # noqa: E402
from MuscleSAMLib.sample_data import sample_case  # noqa: E402
from MuscleSAMLib.scene_bridge import geometry as G  # noqa: E402
from MuscleSAMLib.scene_bridge import segments as S  # noqa: E402
from MuscleSAMLib.scene_bridge.headless import headless_scene  # noqa: E402
from MuscleSAMLib.scene_bridge.logic import MuscleSAMLogic  # noqa: E402
from MuscleSAMLib.volumes import Volume, read_volume  # noqa: E402

VL, RF = 3, 1
K = 1  # the canonical slice of the boxes


@pytest.fixture(scope="module")
def logic(tmp_path_factory):
    lg = MuscleSAMLogic()
    lg.load_ensemble("random-test", write_random_decoder_ensemble(tmp_path_factory.mktemp("ens"), members=3, seed=1), "cpu")
    yield lg
    lg.shutdown()


@pytest.fixture(scope="module")
def both_legs() -> tuple[Volume, Volume]:
    """Three axial slices of the embedded sample with both thighs (water image + labels)."""
    case = sample_case()
    region = (slice(40, 480), slice(170, 360), slice(6, 9))
    return (Volume(read_volume(case.water).image[region], "water"),
            Volume(read_volume(case.labels, allow_labels=True).image[region], "labels"))


class Legs:
    """A scene with vastus lateralis segmented on both legs of slice K (one box per leg)."""

    def __init__(self, logic: MuscleSAMLogic, data: tuple[Volume, Volume]) -> None:
        self.mrml = headless_scene()
        self.logic = logic
        self.node = G.add_volume_node(self.mrml.scene, data[0], "water")
        self.s = logic.session(self.node)
        self.truth = data[1].canonical_array.astype(np.uint8)
        self.boxes = {k: sorted((b for b in boxes_from_labels(self.truth, values=[VL], slices=[k])),
                                key=lambda b: b.xyxy[0]) for k in range(self.truth.shape[0])}
        assert all(len(b) == 2 for b in self.boxes.values())  # one VL box per leg on every slice
        self.seg = logic.segment(self.node, self.boxes[K]).segmentation_node

    def labels(self) -> np.ndarray:
        return G.to_canonical(S.read_labels(self.seg, self.node), self.s.volume)

    def leg(self, i: int) -> tuple[slice, slice]:
        """The answer window of leg ``i``'s first box on slice K (its probabilities live there)."""
        return self.s.label_probs[(K, VL)].boxes[i].window.slices

    def write(self, canonical: np.ndarray) -> None:
        """A user edit: the segmentation becomes ``canonical``."""
        before = S.read_labels(self.seg, self.node)
        S.write_changes(self.seg, self.node, before, G.to_stored(canonical, self.s.volume))

    def redraw(self, i: int, grow: int = 0):
        """Segment again with leg ``i``'s box only (``grow`` pixels larger on each side)."""
        c0, r0, c1, r1 = self.boxes[K][i].xyxy
        return self.logic.segment(self.node, [BoxPrompt(VL, K, (c0 - grow, r0 - grow, c1 + grow, r1 + grow), f"leg {i}")])


@pytest.fixture
def legs(logic, both_legs):
    case = Legs(logic, both_legs)
    yield case
    case.mrml.scene.Clear(1)


def _other_leg_unchanged(before: np.ndarray, after: np.ndarray, window: tuple[slice, slice]) -> None:
    assert (before[K][window] == VL).any(), "the other leg had no vastus lateralis to keep"
    assert np.array_equal(after[K][window], before[K][window])


def test_a_box_for_one_leg_keeps_the_other_legs_segment_prediction_heatmap_and_score(legs, logic):
    seg0, pred0 = legs.labels(), legs.s.prediction.copy()
    total0, leg1 = legs.s.total.copy(), legs.leg(1)
    both = list(legs.s.label_probs[(K, VL)].boxes)
    legs.redraw(0, grow=3)
    _other_leg_unchanged(seg0, legs.labels(), leg1)
    _other_leg_unchanged(pred0, legs.s.prediction, leg1)
    assert np.array_equal(legs.s.total[K][leg1], total0[K][leg1])  # the heatmap still shows the other leg
    lp = legs.s.label_probs[(K, VL)]
    assert len(lp.boxes) == 2 and lp.boxes[1] is both[1]  # the other leg's box still answers
    assert not any(b is both[0] for b in lp.boxes)  # the redrawn leg's old box is gone
    # the review score is the one a single run of both boxes gives, not the redrawn leg's alone
    assert legs.s.scores[(K, VL)].as_dict() == score_slice(lp.boxes, legs.s.prediction.shape[1:])[0].as_dict()
    # the redrawn leg is exactly what a run of both current boxes predicts there
    engine = segment_volume(legs.s.segmenter, [b.box for b in lp.boxes])
    leg0 = lp.boxes[[b.box.source for b in lp.boxes].index("leg 0")].window.slices
    assert np.array_equal(legs.labels()[K][leg0] == VL, engine.labels[K][leg0] == VL)
    assert legs.s.member_masks[VL][:, K][(slice(None), *leg1)].any()  # volume intervals still count the other leg


@pytest.mark.parametrize("grow", [(3, 12), (12, 0)], ids=["larger box", "tighter box"])
def test_redrawing_the_same_leg_replaces_that_leg_whole(legs, grow):
    legs.redraw(0, grow=grow[0])
    first = legs.labels()
    legs.redraw(0, grow=grow[1])  # a second box for the same leg: its answer replaces the first one there whole
    lp = legs.s.label_probs[(K, VL)]
    assert sorted(b.box.source for b in lp.boxes) == ["label 3 slice 1", "leg 0"]
    engine = segment_volume(legs.s.segmenter, [b.box for b in lp.boxes])
    assert np.array_equal(legs.labels()[K] == VL, engine.labels[K] == VL)
    assert np.array_equal(legs.s.prediction[K] == VL, engine.labels[K] == VL)
    assert not np.array_equal(first[K] == VL, legs.labels()[K] == VL)  # the redraw did change the leg


def test_clearing_then_a_box_for_the_other_leg_keeps_the_clearing(legs, logic):
    pred0 = legs.s.prediction.copy()
    leg1 = legs.leg(1)
    logic.clear_muscle(legs.node, VL, logic.slice_number(legs.node, K))
    assert not (legs.labels()[K] == VL).any()
    legs.redraw(0)
    after = legs.labels()
    assert not (after[K][leg1] == VL).any()  # the cleared leg stays cleared: no old box is run again
    assert (after[K] == VL).any()  # the boxed leg is segmented
    _other_leg_unchanged(pred0, legs.s.prediction, leg1)  # the edit stays apart from the prediction (edit map)


def test_erase_and_paint_on_one_leg_survive_a_box_for_the_other(legs):
    leg1 = legs.leg(1)
    edited = legs.labels()
    rows, cols = np.nonzero(edited[K][leg1] == VL)
    r0, c0 = leg1[0].start, leg1[1].start
    edited[K, r0 + rows[: len(rows) // 3], c0 + cols[: len(cols) // 3]] = 0  # erase a third of it
    r, c = r0 + rows[-1], c0 + cols[-1]
    edited[K, r:r + 3, c:c + 3] = VL  # paint a little more onto it, touching it
    legs.write(edited)
    legs.redraw(0)
    assert np.array_equal(legs.labels()[K][leg1], edited[K][leg1])


def test_propagating_one_legs_box_keeps_the_other_leg_on_every_slice(legs, logic, monkeypatch):
    from MuscleSAMLib.scene_bridge import logic as logic_module

    others = [b for k in (0, 2) for b in legs.boxes[k]]
    logic.segment(legs.node, others)  # both legs on the neighbouring slices too
    seg0 = legs.labels()
    start = legs.boxes[K][0]

    def walk(predict, box, n_slices, **kw):  # the walk keeps each slice's box of the same leg
        preds = [predict(legs.boxes[k][0]) for k in range(n_slices)]
        edge = DirectionStop(1, "volume edge", n_slices - 1, n_slices - 1, "")
        return PropagationResult(start=box, predictions=preds, stops={1: edge, -1: edge})

    monkeypatch.setattr(logic_module, "propagate_box", walk)
    out = logic.propagate(legs.node, start)
    assert sorted(out.slices) == [0, 1, 2]
    after = legs.labels()
    for k in range(3):
        leg1 = legs.s.label_probs[(k, VL)].boxes[-1].window.slices  # leg 1's box (canonical order: by column)
        assert legs.boxes[k][1].xyxy in [b.box.xyxy for b in legs.s.label_probs[(k, VL)].boxes]
        assert (seg0[k][leg1] == VL).any() and np.array_equal(after[k][leg1], seg0[k][leg1]), f"slice {k}"


def test_undo_run_brings_back_the_redrawn_leg_and_its_box(legs, logic):
    seg0, pred0, scores0 = legs.labels(), legs.s.prediction.copy(), dict(legs.s.scores)
    boxes0 = list(legs.s.label_probs[(K, VL)].boxes)
    legs.redraw(0, grow=5)
    logic.undo_run(legs.node)
    assert np.array_equal(legs.labels(), seg0) and np.array_equal(legs.s.prediction, pred0)
    assert [id(b) for b in legs.s.label_probs[(K, VL)].boxes] == [id(b) for b in boxes0]
    assert {k: v.as_dict() for k, v in legs.s.scores.items()} == {k: v.as_dict() for k, v in scores0.items()}


def test_a_click_after_one_legs_box_reruns_both_legs_boxes(legs, logic):
    legs.redraw(0, grow=3)
    lp = legs.s.label_probs[(K, VL)]
    w = lp.boxes[0].window
    rows, cols = np.nonzero(legs.s.prediction[K][w.slices] == VL)
    ras = G.canonical_to_ras(legs.s.volume, w.c0 + cols[len(cols) // 2], w.r0 + rows[len(rows) // 2], K)
    leg_other = lp.boxes[1].window.slices
    before = legs.labels()
    out = logic.add_click(legs.node, VL, ras, positive=False, slice_index=logic.slice_number(legs.node, K))
    assert out.clicks == 1 and len(legs.s.label_probs[(K, VL)].boxes) == 2
    _other_leg_unchanged(before, legs.labels(), leg_other)


def test_propagating_both_legs_boxes_walks_each_and_names_them_by_side(legs, logic, monkeypatch):
    from MuscleSAMLib.scene_bridge import logic as logic_module

    walked = []

    def walk(predict, box, n_slices, **kw):  # each start box keeps its own leg's box on every slice
        leg = [b.xyxy for b in legs.boxes[box.slice]].index(box.xyxy)
        walked.append(leg)
        preds = [predict(legs.boxes[k][leg]) for k in range(n_slices)]
        stops = {1: DirectionStop(1, "volume edge", n_slices - 1, n_slices - 1, ""),
                 -1: DirectionStop(-1, "low expected quality", 0, 0, f"leg {leg}")}
        return PropagationResult(start=box, predictions=preds, stops=stops)

    monkeypatch.setattr(logic_module, "propagate_box", walk)
    out = logic.propagate(legs.node, legs.boxes[K])
    assert walked == [0, 1] and sorted(out.slices) == [0, 1, 2]
    for k in range(3):  # both legs on every slice, each from its own walk
        assert [b.box.xyxy for b in legs.s.label_probs[(k, VL)].boxes] == [b.xyxy for b in legs.boxes[k]]
    last = G.stored_slice_index(legs.s.volume, 2)
    first = G.stored_slice_index(legs.s.volume, 0)
    assert out.stop_notes == [  # canonical column order: leg 0 lies on the patient's right
        f"down: right side: low expected quality at slice {first} (leg 0); left side: low expected quality at slice "
        f"{first} (leg 1)",
        f"up: right side: volume edge at slice {last}; left side: volume edge at slice {last}"]


def test_after_one_run_per_leg_the_standing_boxes_are_both_legs(legs, logic):
    legs.redraw(1, grow=2)  # the latest run boxed leg 1 only
    ran = [b.box for b in legs.s.label_probs[(K, VL)].boxes if b.box.source == "leg 1"]
    assert [b.xyxy for b in logic.standing_boxes(legs.node, ran)] == [legs.boxes[K][0].xyxy, ran[0].xyxy]
    assert logic.standing_boxes(legs.node, [BoxPrompt(RF, K, (1, 1, 9, 9))]) == [BoxPrompt(RF, K, (1, 1, 9, 9))]


def test_propagation_that_keeps_nothing_on_either_leg_names_both(legs, logic, monkeypatch):
    from MuscleSAMLib.scene_bridge import logic as logic_module
    from MuscleSAMLib.errors import InputError

    def nothing(predict, box, n_slices, **kw):
        stop = DirectionStop(1, "mask vanished", box.slice, None, "")
        return PropagationResult(start=box, predictions=[], stops={1: stop, -1: stop})

    monkeypatch.setattr(logic_module, "propagate_box", nothing)
    before = legs.labels()
    with pytest.raises(InputError) as err:
        logic.propagate(legs.node, legs.boxes[K])
    k = G.stored_slice_index(legs.s.volume, K)
    assert str(err.value) == (f"propagation found nothing to keep: right side: mask vanished at slice {k}; "
                              f"left side: mask vanished at slice {k}")
    assert np.array_equal(legs.labels(), before)


def test_walks_are_named_after_the_leg_crop_that_answers_them(tmp_path, monkeypatch):
    """With a legs ensemble, a walk's name follows the engine's own midline (the crop its box is answered in),
    even where the midline found on the raw volume falls on the other side of the box's centre."""
    import SimpleITK as sitk

    from MuscleSAMLib.biomarkers import SIDES, midline_column
    from MuscleSAMLib.phantoms import make_thigh_phantom
    from MuscleSAMLib.scene_bridge import logic as logic_module

    lg = MuscleSAMLogic()
    lg.load_ensemble("random-test", write_random_decoder_ensemble(tmp_path / "ens", members=2, seed=3,
                                                                  prompt_geometry="legs"), "cpu")
    mrml = headless_scene()
    try:
        ph = make_thigh_phantom(seed=0)
        node = G.add_volume_node(mrml.scene, Volume(sitk.GetImageFromArray(ph.water.astype(np.float32)), "water"), "water")
        s = lg.session(node)
        layout = s.segmenter.layout
        raw = midline_column(s.prediction, s.volume.canonical_array)
        assert layout is not None and raw is not None
        # a box whose centre lies between the two midlines: the raw one puts it on the other side
        centres = [c / 2 for c in range(2 * s.volume.canonical_array.shape[2])]
        split = [c for c in centres if (c > layout.midline) != (c > raw)]
        assert split, f"the phantom's midlines agree ({raw}, {layout.midline}): pick another phantom"
        x0 = int(2 * split[0] + 1 - 12) // 2  # x0 + x1 - 1 = 2 x the centre
        near = BoxPrompt(VL, 2, (x0, 40, int(2 * split[0] + 1) - x0, 80))
        assert (near.xyxy[0] + near.xyxy[2] - 1) / 2 == split[0]
        near_side = layout.side_of(near.xyxy)
        far = BoxPrompt(RF, 2, (10, 40, 30, 80) if near_side == 1 else (160, 40, 180, 80))
        assert layout.side_of(far.xyxy) != near_side

        def walk(predict, box, n_slices, **kw):
            edge = DirectionStop(1, "volume edge", box.slice, box.slice, "")
            return PropagationResult(start=box, predictions=[predict(box)], stops={1: edge, -1: edge})

        monkeypatch.setattr(logic_module, "propagate_box", walk)
        notes = lg.propagate(node, [near, far]).stop_notes
        assert notes and notes[0].split(": ")[1] == f"{SIDES[near_side]} side", notes
    finally:
        mrml.scene.Clear(1)
        lg.shutdown()
