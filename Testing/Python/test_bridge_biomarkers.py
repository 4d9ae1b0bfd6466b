"""Biomarkers in the scene bridge: fat fraction with member intervals in the review table and the bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from musclesam_test_helpers import import_declared, write_random_decoder_ensemble

slicer = import_declared("slicer", "slicer-core")

from MuscleSAMLib.biomarkers import fat_fraction_map  # noqa: E402
from MuscleSAMLib.engine.boxes import boxes_from_labels  # noqa: E402
from MuscleSAMLib.engine.segmenter import Segmenter  # noqa: E402
from MuscleSAMLib.engine.volume_run import member_label_masks, segment_volume  # noqa: E402
from MuscleSAMLib.errors import InputError  # noqa: E402
from MuscleSAMLib.sample_data import sample_case  # noqa: E402
from MuscleSAMLib.scene_bridge import geometry as G  # noqa: E402
from MuscleSAMLib.scene_bridge.headless import headless_scene  # noqa: E402
from MuscleSAMLib.scene_bridge.logic import MuscleSAMLogic  # noqa: E402
from MuscleSAMLib.scene_bridge.review_table import COLUMNS  # noqa: E402
from MuscleSAMLib.volumes import Volume, read_volume  # noqa: E402

REGION = (slice(40, 264), slice(168, 352), slice(6, 9))  # one thigh, three slices of the sample (i, j, k)


@pytest.fixture(scope="module")
def logic(tmp_path_factory):
    lg = MuscleSAMLogic()
    lg.load_ensemble("random-test", write_random_decoder_ensemble(tmp_path_factory.mktemp("ens"), members=3, seed=2), "cpu")
    yield lg
    lg.shutdown()


@pytest.fixture(scope="module")
def dixon() -> tuple[Volume, Volume, Volume]:
    case = sample_case()
    crop = lambda p, **kw: Volume(read_volume(p, **kw).image[REGION], str(p))  # noqa: E731
    return crop(case.water), crop(case.fat), crop(case.labels, allow_labels=True)


@pytest.fixture
def mrml():
    h = headless_scene()
    yield h
    h.scene.Clear(1)


def _table(node) -> list[dict[str, str]]:
    cols = [node.GetColumnName(c) for c in range(node.GetNumberOfColumns())]
    return [{cols[c]: node.GetCellText(r, c) for c in range(len(cols))} for r in range(node.GetNumberOfRows())]


def test_review_table_shows_fat_fraction_with_member_intervals(mrml, logic, dixon):
    water, fat, labels = dixon
    node = G.add_volume_node(mrml.scene, water, "water")
    fat_node = G.add_volume_node(mrml.scene, fat, "fat")
    boxes = boxes_from_labels(labels.canonical_array.astype(np.uint8), values=[2, 3], slices=[0, 1, 2])
    logic.set_fat_image(node, fat_node)
    out = logic.segment(node, boxes)
    rows = _table(out.table_node)
    assert [rows and list(rows[0])][0] == list(COLUMNS)
    # the same run through the engine directly: full-volume member masks (the CLI's path)
    engine = segment_volume(Segmenter(logic.loaded.ensemble, water.canonical_array, "direct", spacing=water.canonical_spacing), boxes)
    ff = fat_fraction_map(fat.canonical_array, water.canonical_array)
    members = member_label_masks(engine, engine.labels.shape)
    for label, name in ((2, "rectus femoris"), (3, "vastus lateralis")):
        mine = [r for r in rows if r["muscle"] == name]
        assert mine, f"{name} missing from the review table"
        mask = engine.labels == label
        expected = 100 * np.nanmean(ff[mask])
        per_member = [100 * np.nanmean(ff[m]) for m in members[label] if m.any()] + [expected]  # interval holds its value
        for r in mine:  # every row of that muscle carries the muscle's values
            assert float(r["muscle fat fraction (%)"]) == pytest.approx(expected, abs=0.06)
            assert float(r["muscle fat fraction low (%)"]) == pytest.approx(min(per_member), abs=0.06)
            assert float(r["muscle fat fraction high (%)"]) == pytest.approx(max(per_member), abs=0.06)
    logic.set_fat_image(node, None)  # no fat image: the columns stay, empty
    assert all(r["muscle fat fraction (%)"] == "" for r in _table(logic.review_table(node)))


def test_fat_image_on_another_grid_is_refused(mrml, logic, dixon):
    water, fat, _ = dixon
    node = G.add_volume_node(mrml.scene, water, "water")
    shifted = sitk.Image(fat.image)
    shifted.SetOrigin(tuple(o + 4.0 for o in fat.image.GetOrigin()))
    other = G.add_volume_node(mrml.scene, Volume(shifted, "shifted fat"), "fat elsewhere")
    with pytest.raises(InputError, match="not on the grid of 'water'"):
        logic.set_fat_image(node, other)


def test_bridge_bundle_has_prediction_biomarkers_with_intervals(mrml, logic, dixon, tmp_path: Path):
    water, fat, labels = dixon
    node = G.add_volume_node(mrml.scene, water, "water")
    fat_node = G.add_volume_node(mrml.scene, fat, "fat")
    out = logic.segment(node, boxes_from_labels(labels.canonical_array.astype(np.uint8), values=[3], slices=[1]))
    target = logic.next_uncertain(node)
    dest = logic.export_corrected(node, out.segmentation_node, tmp_path / "bundle", fat_node)
    log = json.loads((dest / "interaction_log.json").read_text())
    assert [e["action"] for e in log] == ["segment", "review", "export"]
    assert log[1]["slice"] == target.slice and log[1]["label"] == target.label
    assert log[2]["edits"] == {"added": 0, "removed": 0, "relabelled": 0}  # exported as predicted
    report = json.loads((dest / "report.json").read_text())
    vl = [b for b in report["biomarkers_prediction"] if b["label"] == 3 and b["side"] == "both"][0]
    lo, hi = vl["volume_ml_interval"]
    assert lo <= hi and lo > 0
    ff_lo, ff_hi = vl["fat_fraction_mean_interval"]
    assert 0 <= ff_lo <= ff_hi <= 1


def test_prepared_export_is_unchanged_by_a_later_run(mrml, logic, dixon, tmp_path: Path):
    """The web app writes the bundle on another thread: what was read at Export time is what gets written."""
    water, _, labels = dixon
    node = G.add_volume_node(mrml.scene, water, "water")
    lab = labels.canonical_array.astype(np.uint8)
    out = logic.segment(node, boxes_from_labels(lab, values=[3], slices=[1]))
    write = logic.prepare_export(node, out.segmentation_node, tmp_path / "bundle")
    logic.segment(node, boxes_from_labels(lab, values=[2], slices=[1]), out.segmentation_node)  # the user goes on
    dest = write()
    pred = read_volume(dest / "prediction_labels.nii.gz", allow_labels=True).canonical_array
    assert (pred == 3).any() and not (pred == 2).any()
    assert len(json.loads((dest / "prompts.json").read_text())["canonical"]) == 1


def test_implausible_dixon_pair_gets_the_clis_warning_in_the_gui(mrml, logic, dixon):
    """Issue 13: the GUIs share the CLI's Dixon rule: the water image or the label map chosen as the fat image
    is accepted with a one-line warning for the panel; the real pair gets none."""
    from bad_input_table import record

    water, fat, labels = dixon
    node = G.add_volume_node(mrml.scene, water, "water")
    with record("scene bridge", "fat image = the water image / the label map: warning returned"):
        assert logic.set_fat_image(node, G.add_volume_node(mrml.scene, fat, "fat")) is None
        same = logic.set_fat_image(node, G.add_volume_node(mrml.scene, water, "water again"))
        assert same is not None and "same image" in same and "'water again'" in same
        lab = logic.set_fat_image(node, G.add_volume_node(mrml.scene, labels, "labels"))
        assert lab is not None and "label map" in lab


def test_review_table_volumes_come_from_the_prediction_label_map(mrml, logic, dixon):
    """Issue 13: the GUIs' volume figures are the label map's (as the CLI's report and biomarkers.csv), and each
    [low, high] holds its volume; the slice volume is that muscle's voxels on that slice of the same map."""
    from bad_input_table import record
    from MuscleSAMLib.scene_bridge.review_table import stored_slice_index

    water, _, labels = dixon
    node = G.add_volume_node(mrml.scene, water, "water")
    out = logic.segment(node, boxes_from_labels(labels.canonical_array.astype(np.uint8), values=[2, 3], slices=[0, 1, 2]))
    prediction = logic.session(node).prediction
    sk, sr, sc = water.canonical_spacing
    voxel_ml = sk * sr * sc / 1000.0
    with record("scene bridge", "review table volumes = the prediction label map's; intervals hold them"):
        rows = _table(out.table_node)
        assert rows
        for r in rows:
            vol, lo, hi = (float(r[k]) for k in ("volume (ml)", "volume low (ml)", "volume high (ml)"))
            assert lo - 0.05 <= vol <= hi + 0.05, r
            label = {"rectus femoris": 2, "vastus lateralis": 3}[r["muscle"]]
            assert vol == pytest.approx(float((prediction == label).sum()) * voxel_ml, abs=0.05)
            k = [s for s in range(prediction.shape[0]) if str(stored_slice_index(water, s)) == r["slice"]][0]
            assert float(r["slice volume (ml)"]) == pytest.approx(float((prediction[k] == label).sum()) * voxel_ml, abs=0.005)


def test_swapped_dixon_pair_is_named_after_a_gui_run(mrml, logic, dixon):
    """Issue 13: the CLI's swapped-pair rule in the GUIs: a run on the fat image with the water image as 'fat'
    returns a one-line warning for the panel; the right pair returns none."""
    from bad_input_table import record

    water, fat, labels = dixon
    boxes = boxes_from_labels(labels.canonical_array.astype(np.uint8), values=[2, 3, 5], slices=[0, 1, 2])
    with record("scene bridge", "fat and water swapped: the run returns a warning; the right pair none"):
        node = G.add_volume_node(mrml.scene, water, "water")
        logic.set_fat_image(node, G.add_volume_node(mrml.scene, fat, "fat"))
        assert logic.segment(node, boxes).warnings == []
        swapped = G.add_volume_node(mrml.scene, fat, "fat as water")
        logic.set_fat_image(swapped, G.add_volume_node(mrml.scene, water, "water as fat"))
        warnings = logic.segment(swapped, boxes).warnings
        assert len(warnings) == 1 and "look swapped" in warnings[0] and "'fat as water'" in warnings[0]
