"""The MRML scene bridge on real MRML (slicer-core): geometry, ROI boxes, runs, locks, review, export.

Also the desktop module's static checks (Slicer's Qt is not installable here): MuscleSAM.py only calls
into the bridge, and the .ui file names every widget the module uses.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from vtkmodules.vtkCommonCore import vtkStringArray

from musclesam_test_helpers import DIRECTIONS, ROOT, import_declared, write_random_decoder_ensemble

slicer = import_declared("slicer", "slicer-core")

from MuscleSAMLib.engine.boxes import boxes_from_labels  # noqa: E402
from MuscleSAMLib.engine.propagation import DirectionStop, PropagationResult  # noqa: E402
from MuscleSAMLib.engine.segmenter import Segmenter  # noqa: E402
from MuscleSAMLib.engine.types import BoxPrompt  # noqa: E402
from MuscleSAMLib.engine.volume_run import segment_volume  # noqa: E402
from MuscleSAMLib.errors import GeometryError, InputError, WeightsError  # noqa: E402
from MuscleSAMLib.sample_data import muscle_names, sample_case  # noqa: E402
from MuscleSAMLib.scene_bridge import geometry as G  # noqa: E402
from MuscleSAMLib.scene_bridge import prompts as P  # noqa: E402
from MuscleSAMLib.scene_bridge import segments as S  # noqa: E402
from MuscleSAMLib.scene_bridge.headless import headless_scene  # noqa: E402
from MuscleSAMLib.scene_bridge.jobs import Busy, Cancelled  # noqa: E402
from MuscleSAMLib.scene_bridge.logic import MuscleSAMLogic  # noqa: E402
from MuscleSAMLib.scene_bridge.mrml import matrix_to_numpy, numpy_to_matrix  # noqa: E402
from MuscleSAMLib.volumes import Volume, read_volume, volume_from_array  # noqa: E402

MODULE_DIR = ROOT / "MuscleSAM"


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def mrml():
    """A fresh slicer-core scene with the application and Segmentations logics (cheap: ~20 ms)."""
    h = headless_scene()
    yield h
    h.scene.Clear(1)


@pytest.fixture(scope="module")
def random_manifest(tmp_path_factory) -> Path:
    return write_random_decoder_ensemble(tmp_path_factory.mktemp("ens"), members=3, seed=1)


@pytest.fixture(scope="module")
def logic(random_manifest):
    """One logic for the module's tests: the random ensemble loaded through the manifest on the worker."""
    lg = MuscleSAMLogic()
    lg.load_ensemble("random-test", random_manifest, "cpu")
    yield lg
    lg.shutdown()


@pytest.fixture(scope="module")
def sample_crop() -> tuple[Volume, Volume]:
    """Three axial slices of one thigh of the embedded sample (water image + labels), exact geometry."""
    case = sample_case()
    region = (slice(40, 264), slice(168, 352), slice(6, 9))  # i, j, k of the stored image
    water = read_volume(case.water).image[region]
    labels = read_volume(case.labels, allow_labels=True).image[region]
    return Volume(water, "Thigh_001 water (crop)"), Volume(labels, "Thigh_001 labels (crop)")


def _sample_node(mrml, sample_crop):
    return G.add_volume_node(mrml.scene, sample_crop[0], "water")


def _node_count(scene) -> int:
    return scene.GetNumberOfNodes()


def _canonical_axes_ras(node) -> tuple[np.ndarray, np.ndarray]:
    """Unit RAS vectors (columns) of the canonical col (L), row (P), slice (S) axes and their voxel sizes,
    from the node's IJKToRAS alone."""
    m = G.ijk_to_ras(node)[:3, :3]
    norms = np.linalg.norm(m, axis=0)
    cols = m / norms
    targets = np.array([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]]).T  # L, P, S in RAS
    out, spacing = np.zeros((3, 3)), np.zeros(3)
    for t in range(3):
        dots = cols.T @ targets[:, t]
        a = int(np.argmax(np.abs(dots)))
        out[:, t] = cols[:, a] * np.sign(dots[a])
        spacing[t] = norms[a]
    return out, spacing


def _voxel_centres_ras(node) -> np.ndarray:
    """(k, j, i, 3) RAS centre of every stored voxel, from the node's IJKToRAS (Slicer's matrix)."""
    dims = node.GetImageData().GetDimensions()
    k, j, i = np.meshgrid(np.arange(dims[2]), np.arange(dims[1]), np.arange(dims[0]), indexing="ij")
    ijk1 = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(np.float64)
    return (ijk1 @ G.ijk_to_world(node).T)[..., :3]


def _box_voxels(volume: Volume, box) -> set[tuple[int, int, int]]:
    """Stored (k, j, i) indices of the voxels a canonical box covers (through an index volume)."""
    size = volume.image.GetSize()
    index = np.arange(int(np.prod(size)), dtype=np.int64).reshape(size[2], size[1], size[0])
    canon = G.to_canonical(index, volume)
    c0, r0, c1, r1 = box.xyxy
    flat = canon[box.slice, r0:r1, c0:c1].ravel()
    return {tuple(int(v) for v in np.unravel_index(f, index.shape)) for f in flat}


# ---------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("orientation", sorted(DIRECTIONS))
def test_volume_node_round_trip_keeps_exact_geometry(mrml, orientation):
    arr = (np.arange(6 * 20 * 30).reshape(6, 20, 30) % 251).astype(np.int16)
    vol = volume_from_array(arr, (0.8, 0.9, 5.0), (-10.0, 20.0, 30.0), DIRECTIONS[orientation])
    node = G.add_volume_node(mrml.scene, vol, orientation)
    back = G.volume_from_node(node)
    assert back.same_grid(vol, tol=1e-6)
    assert np.array_equal(back.canonical_array, vol.canonical_array)
    # RAS of voxel (i, j, k) from Slicer's matrix == LPS of ITK with x, y negated
    for ijk in ((0, 0, 0), (29, 19, 5), (3, 7, 2)):
        lps = vol.image.TransformIndexToPhysicalPoint(ijk)
        ras = G.ijk_to_ras(node) @ np.array([*ijk, 1.0])
        assert np.allclose(ras[:3], (-lps[0], -lps[1], lps[2]), atol=1e-6)
    # to_canonical / to_stored are exact inverses on this grid
    assert np.array_equal(G.to_stored(G.to_canonical(arr, back), back), arr)


def test_parent_transform_is_applied_and_nonlinear_refused(mrml):
    vol = volume_from_array(np.ones((4, 10, 12), np.int16), (1.0, 1.0, 3.0))
    node = G.add_volume_node(mrml.scene, vol, "v")
    t = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "t")
    a = np.deg2rad(10)
    m = np.eye(4)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    m[:3, 3] = (5.0, -7.0, 11.0)
    t.SetMatrixTransformToParent(numpy_to_matrix(m))
    node.SetAndObserveTransformNodeID(t.GetID())
    moved = G.volume_from_node(node)
    for ijk in ((0, 0, 0), (11, 9, 3)):
        ras = m @ G.ijk_to_ras(node) @ np.array([*ijk, 1.0])
        lps = moved.image.TransformIndexToPhysicalPoint(ijk)
        assert np.allclose(ras[:3], (-lps[0], -lps[1], lps[2]), atol=1e-6)
    grid = mrml.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    node.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(GeometryError, match="non-linear transform; harden"):
        G.volume_from_node(node)


# ---------------------------------------------------------------------------------------------- ROI boxes
@pytest.mark.parametrize("orientation", sorted(DIRECTIONS))
def test_ras_roi_lands_on_the_voxels_inside_it(mrml, orientation):
    """An ROI aligned with the axial grid covers exactly the voxels of its slice whose centres it contains."""
    arr = np.zeros((6, 20, 30), np.int16)
    vol = volume_from_array(arr + 1, (0.8, 0.9, 5.0), (-10.0, 20.0, 30.0), DIRECTIONS[orientation])
    node = G.add_volume_node(mrml.scene, vol, orientation)
    axes, spacing = _canonical_axes_ras(node)
    centres = _voxel_centres_ras(node)
    middle = centres.reshape(-1, 3).mean(axis=0)
    centre = middle + axes @ (np.array([0.37, -0.61, 0.16]) * spacing)  # off-grid on purpose
    size = np.array([7.3, 5.1, 0.2]) * spacing  # voxels along col, row; thinner than a slice
    roi = P.new_box_roi(mrml.scene, "VL")
    o2n = np.eye(4)
    o2n[:3, :3] = axes
    o2n[:3, 3] = centre
    roi.SetAndObserveObjectToNodeMatrix(numpy_to_matrix(o2n))
    roi.SetSize(*size)
    box = P.box_from_roi(G.volume_from_node(node), roi)
    local = (centres - centre) @ axes  # voxel centres in the ROI's frame
    on_slice = np.abs(local[..., 2]) <= spacing[2] / 2
    inside = on_slice & (np.abs(local[..., 0]) <= size[0] / 2) & (np.abs(local[..., 1]) <= size[1] / 2)
    expected = {tuple(int(v) for v in idx) for idx in np.argwhere(inside)}
    assert expected and _box_voxels(G.volume_from_node(node), box) == expected
    assert box.label == 3


@pytest.mark.parametrize("orientation", sorted(DIRECTIONS))
def test_one_roi_builder_gives_the_box_back_for_the_bridge_and_the_web_page(mrml, orientation):
    """roi_for_box (the bridge's, and the web page's 0.9-slice locked copy through the logic) lies exactly over the box."""
    from MuscleSAMLib.web.box_rois import box_roi

    vol = volume_from_array(np.ones((6, 20, 30), np.int16), (0.8, 0.9, 5.0), (-10.0, 20.0, 30.0), DIRECTIONS[orientation])
    node = G.add_volume_node(mrml.scene, vol, orientation)
    v = G.volume_from_node(node)
    box = BoxPrompt(5, 2, (3, 1, 11, 5))  # inside every orientation's canonical grid (axial_first: 6 rows)
    lg = MuscleSAMLogic()  # no ensemble: the ROI needs only the volume
    try:
        web_roi = box_roi(lg, node, box)
        for roi in (P.roi_for_box(mrml.scene, v, box), web_roi):
            got = P.box_from_roi(v, roi)
            assert (got.label, got.slice, got.xyxy) == (5, 2, (3, 1, 11, 5)), roi.GetName()
            assert np.linalg.det(matrix_to_numpy(roi.GetObjectToWorldMatrix())[:3, :3]) > 0  # right-handed frame
        assert web_roi.GetLocked() and web_roi.GetScene() is mrml.scene
        assert lg.slice_number(node, 2) == G.stored_slice_index(v, 2)
    finally:
        lg.shutdown()


def test_remove_case_takes_the_volume_and_what_musclesam_made_for_it_only(mrml):
    """Opening another image in the web app: the case's nodes go, other volumes and their nodes stay."""
    from MuscleSAMLib.scene_bridge.mrml import owned_node

    vol = volume_from_array(np.ones((3, 10, 12), np.int16), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0), DIRECTIONS["LPS"])
    case, other = G.add_volume_node(mrml.scene, vol, "case"), G.add_volume_node(mrml.scene, vol, "other")
    mine = owned_node(mrml.scene, "vtkMRMLSegmentationNode", "muscles", case, "case muscles")
    theirs = owned_node(mrml.scene, "vtkMRMLSegmentationNode", "muscles", other, "other muscles")
    roi = P.new_box_roi(mrml.scene, "VL")
    MuscleSAMLogic.remove_case(mrml.scene, case)
    assert [n.GetScene() is mrml.scene for n in (case, mine, roi)] == [False, False, False]
    assert other.GetScene() is mrml.scene and theirs.GetScene() is mrml.scene
    MuscleSAMLogic.remove_case(mrml.scene, None)  # nothing open yet: nothing to do


def test_roi_under_a_transform_and_rasaligned_roi_on_oblique_volume(mrml):
    vol = volume_from_array(np.ones((6, 20, 30), np.int16), (0.8, 0.9, 5.0), (-10.0, 20.0, 30.0), DIRECTIONS["oblique"])
    node = G.add_volume_node(mrml.scene, vol, "oblique")
    v = G.volume_from_node(node)
    centres = _voxel_centres_ras(node)
    mid = centres.reshape(-1, 3).mean(axis=0)
    roi = P.new_box_roi(mrml.scene, 3, center=mid, size=(8.0, 6.0, 1.0))  # RAS-aligned: 12 degrees off the grid
    box = P.box_from_roi(v, roi)
    # the voxels of that slice well inside the ROI's footprint are covered, and the box is tight
    covered = _box_voxels(v, box)
    slices = {c[0] for c in covered}
    local = centres - mid
    def footprint(margin):
        hits = np.argwhere((np.abs(local[..., 0]) <= 4.0 - margin) & (np.abs(local[..., 1]) <= 3.0 - margin))
        return {tuple(int(x) for x in idx) for idx in hits if int(idx[0]) in slices}
    assert len(slices) == 1 and footprint(1.0) <= covered
    assert len(covered) <= len(footprint(0.0)) * 1.6
    # moving the ROI with a transform by 2 columns (canonical L axis) moves the box by 2 columns
    t = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    m = np.eye(4)
    col_axis = _canonical_axes_ras(node)[0][:, 0]
    m[:3, 3] = col_axis * 2 * 0.8
    t.SetMatrixTransformToParent(numpy_to_matrix(m))
    roi2 = P.roi_for_box(mrml.scene, v, box)
    assert P.box_from_roi(v, roi2).xyxy == box.xyxy
    roi2.SetAndObserveTransformNodeID(t.GetID())
    shifted = P.box_from_roi(v, roi2)
    assert shifted.xyxy == (box.xyxy[0] + 2, box.xyxy[1], box.xyxy[2] + 2, box.xyxy[3])


def test_bad_boxes_are_refused_with_clear_messages(mrml):
    vol = volume_from_array(np.ones((6, 20, 30), np.int16), (1.0, 1.0, 4.0))
    node = G.add_volume_node(mrml.scene, vol, "v")
    v = G.volume_from_node(node)
    centre = _voxel_centres_ras(node).reshape(-1, 3).mean(axis=0)
    rotated = P.new_box_roi(mrml.scene, "RF", center=centre, size=(8, 8, 1))
    m = np.eye(4)
    m[:2, :2] = [[np.cos(0.7), -np.sin(0.7)], [np.sin(0.7), np.cos(0.7)]]
    m[:3, 3] = centre
    rotated.SetAndObserveObjectToNodeMatrix(numpy_to_matrix(m))
    with pytest.raises(GeometryError, match="rotated 40 degrees"):
        P.box_from_roi(v, rotated)
    sagittal = P.new_box_roi(mrml.scene, "RF", center=centre, size=(0.0, 8, 12))
    with pytest.raises(GeometryError, match="sagittal or coronal"):
        P.box_from_roi(v, sagittal)
    outside = P.new_box_roi(mrml.scene, "RF", center=centre + (500.0, 0, 0), size=(8, 8, 1))
    with pytest.raises(GeometryError, match="outside the volume"):
        P.box_from_roi(v, outside)
    below = P.new_box_roi(mrml.scene, "RF", center=centre + (0, 0, 400.0), size=(8, 8, 1))
    with pytest.raises(GeometryError, match="outside the volume's 6 axial slices"):
        P.box_from_roi(v, below)
    unlabelled = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "plain")
    with pytest.raises(InputError, match="has no muscle"):
        P.box_from_roi(v, unlabelled)
    with pytest.raises(InputError, match="not placed yet"):
        P.box_from_roi(v, MuscleSAMLogic.start_box_placement(mrml.scene, "SA"))
    interaction = mrml.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    assert interaction.GetCurrentInteractionMode() == interaction.Place
    with pytest.raises(GeometryError, match="one axial slice"):
        P.box_from_ras(v, "VL", centre - (3, 3, 10), centre + (3, 3, 10))
    assert P.box_from_ras(v, "VL", centre - (3, 3, 0), centre + (3, 3, 0)).width >= 6


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_leaves_the_scene_unchanged(mrml, logic):
    scene = mrml.scene
    vol = volume_from_array(np.ones((4, 10, 12), np.int16))
    node = G.add_volume_node(scene, vol, "v")
    label_map = G.add_volume_node(scene, vol, "lm", "vtkMRMLLabelMapVolumeNode")
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    slicer.util.updateVolumeFromArray(vector, np.zeros((4, 10, 12, 3), np.uint8))
    before = _node_count(scene)
    with pytest.raises(InputError, match="no volume selected"):
        logic.segment(None, [])
    with pytest.raises(InputError, match="is a label map"):
        logic.segment(label_map, [])
    with pytest.raises(InputError, match="3 components per voxel"):
        logic.segment(vector, [])
    with pytest.raises(InputError, match="no box"):
        logic.segment(node, [])
    with pytest.raises(InputError, match="no prediction yet"):
        logic.next_uncertain(node)
    assert _node_count(scene) == before
    fresh = MuscleSAMLogic()
    try:
        with pytest.raises(InputError, match="press Initialize first"):
            fresh.segment(node, [BoxPrompt(3, 0, (0, 0, 5, 5))])
        with pytest.raises(WeightsError, match="not installed: missing"):
            broken = Path(logic.loaded.manifest_path)
            doc = json.loads(broken.read_text())
            doc["ensembles"][0]["members"][0]["file"] = "gone.safetensors"
            other = broken.with_name("broken_manifest.json")
            other.write_text(json.dumps(doc))
            fresh.load_ensemble("random-test", other)
    finally:
        fresh.shutdown()
    assert _node_count(scene) == before


# ---------------------------------------------------------------------------------------------- runs
def test_segments_equal_the_engine_and_maps_overlay_the_input(mrml, logic, sample_crop):
    water, labels = sample_crop
    node = _sample_node(mrml, sample_crop)
    vol = logic.session(node).volume
    boxes = boxes_from_labels(labels.canonical_array.astype(np.uint8), values=[2, 3, 8, 10], slices=[1])
    rois = [P.roi_for_box(mrml.scene, vol, b) for b in boxes]
    assert [logic.box_from_roi(node, r).xyxy for r in rois] == [b.xyxy for b in boxes]
    out = logic.segment(node, rois)

    # the engine, run directly on the same image and boxes
    engine = segment_volume(Segmenter(logic.loaded.ensemble, water.canonical_array, "direct", spacing=water.canonical_spacing), boxes)
    seg_node = out.segmentation_node
    ids = S.muscle_segment_ids(seg_node)
    assert sorted(ids) == sorted(muscle_names())
    reference = G.to_stored(engine.labels, water)
    logic_cls = slicer.vtkSlicerSegmentationsModuleLogic
    for label, sid in ids.items():  # Slicer's own export path, one segment at a time
        lm = mrml.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"export {label}")
        names = vtkStringArray()
        names.InsertNextValue(sid)
        assert logic_cls.ExportSegmentsToLabelmapNode(seg_node, names, lm, node)
        got = slicer.util.arrayFromVolume(lm) > 0
        assert np.array_equal(got, reference == label), f"muscle {label}"
        segment = seg_node.GetSegmentation().GetSegment(sid)
        assert segment.GetName() == muscle_names()[label]["name"]
        assert np.allclose(segment.GetColor(), np.array(muscle_names()[label]["color"]) / 255.0)
    assert set(out.changed_labels) <= {2, 3, 8, 10} and out.changed_labels
    for label in (2, 3, 8, 10):
        assert S.segment_status(seg_node, label) in ("inprogress", "flagged")
        assert (S.segment_status(seg_node, label) == "flagged") == (label in out.flagged_labels)
    assert S.segment_status(seg_node, 5) == "notstarted"
    assert seg_node.GetNodeReference(seg_node.GetReferenceImageGeometryReferenceRole()) is node

    # heatmap and probability: same geometry as the input, values = the engine's maps
    for overlay in (out.heatmap_node, out.probability_node):
        assert np.allclose(G.ijk_to_ras(overlay), G.ijk_to_ras(node))
        assert overlay.GetImageData().GetDimensions() == node.GetImageData().GetDimensions()
    assert np.allclose(slicer.util.arrayFromVolume(out.heatmap_node), G.to_stored(engine.uncertainty_total, water), atol=1e-5)
    assert np.allclose(slicer.util.arrayFromVolume(out.probability_node), G.to_stored(engine.probability, water), atol=1e-5)
    display = out.heatmap_node.GetDisplayNode()
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.05)
    assert display.GetWindowLevelMin() == pytest.approx(0.0) and display.GetWindowLevelMax() == pytest.approx(np.log(2.0))
    assert display.GetColorNode().GetName() in ("Inferno", "Viridis", "MuscleSAM Inferno")
    assert slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(out.heatmap_node) is not None
    epi = logic.show_uncertainty(node, kind="epistemic", opacity=0.3, threshold=0.01)
    assert epi is out.heatmap_node
    assert np.allclose(slicer.util.arrayFromVolume(epi), G.to_stored(engine.uncertainty_epistemic, water), atol=1e-5)
    with pytest.raises(InputError, match="unknown uncertainty kind"):
        logic.show_uncertainty(node, kind="bogus")
    logic.show_uncertainty(node, kind="total", opacity=0.5, threshold=0.05)

    # review table and next most uncertain (slice views jump there)
    table = out.table_node
    assert table.GetNumberOfRows() == len(engine.queue) == 4
    assert [table.GetCellText(r, 2) for r in range(4)] == [muscle_names()[q.label]["name"] for q in engine.queue]
    slice_node = mrml.scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    visited = []
    while (target := logic.next_uncertain(node)) is not None:
        visited.append(target.label)
        from scipy import ndimage

        parts, n = ndimage.label(engine.labels[target.canonical_slice] == target.label)
        if n:  # the centre of the muscle's largest part (on both legs: one leg, not the gap between them)
            rows, cols = np.nonzero(parts == 1 + int(np.argmax([(parts == i).sum() for i in range(1, n + 1)])))
            expect = G.canonical_to_ras(water, cols.mean(), rows.mean(), target.canonical_slice)
            assert np.allclose(target.ras, expect, atol=1e-6)
        assert np.allclose(matrix_to_numpy(slice_node.GetSliceToRAS())[:3, 3], target.ras, atol=1e-3)
    assert visited == [q.label for q in engine.queue if not np.isnan(q.mean_uncertainty)]
    assert logic.remaining_reviews(node) == 0

    # agreement outlines: all-agree inside any-member
    agree = logic.show_agreement_outlines(node)
    arrays = {}
    for sid in ("all_agree", "any_member"):
        lm = mrml.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", sid)
        ids_arr = vtkStringArray()
        ids_arr.InsertNextValue(sid)
        assert logic_cls.ExportSegmentsToLabelmapNode(agree, ids_arr, lm, node)
        arrays[sid] = slicer.util.arrayFromVolume(lm) > 0
    assert arrays["any_member"].any() and not (arrays["all_agree"] & ~arrays["any_member"]).any()
    logic.show_agreement_outlines(node, False)


def test_locked_segment_survives_and_edits_elsewhere_are_kept(mrml, logic, sample_crop):
    water, labels = sample_crop
    node = _sample_node(mrml, sample_crop)
    vol = logic.session(node).volume
    canon = labels.canonical_array.astype(np.uint8)
    first = logic.segment(node, boxes_from_labels(canon, values=[3], slices=[1]))
    seg_node = first.segmentation_node
    vl_before = S.read_labels(seg_node, node) == 3
    assert vl_before.any()
    # a user edit on canonical slice 0 (muscle 5 painted by hand), then lock VL
    painted = S.read_labels(seg_node, node)
    edit_canon = np.zeros(canon.shape, np.uint8)
    edit_canon[0, :20, :] = 1
    edit = G.to_stored(edit_canon, vol) > 0
    after_paint = painted.copy()
    after_paint[edit] = 5
    S.write_changes(seg_node, node, painted, after_paint)
    logic.lock_segment(seg_node, "VL")
    assert S.locked_labels(seg_node) == frozenset({3})
    with pytest.raises(InputError, match="vastus lateralis is locked"):
        logic.segment(node, boxes_from_labels(canon, values=[3], slices=[1]), seg_node)
    # a big box of another muscle over VL's slice: VL untouched, the slice-0 edit untouched
    n_slices, rows, cols = canon.shape
    big = P.box_from_canonical_rect(vol, 4, np.array([0.0, 0.0]), np.array([cols - 1.0, rows - 1.0]), 1, "big box")
    second = logic.segment(node, [big], seg_node)
    now = S.read_labels(seg_node, node)
    assert np.array_equal(now == 3, vl_before)
    assert np.array_equal(now[edit], after_paint[edit])
    assert 3 not in second.changed_labels
    assert S.segment_status(seg_node, 3) == "completed"
    logic.lock_segment(seg_node, "VL", locked=False)
    assert S.segment_status(seg_node, 3) == "inprogress"


def test_transformed_volume_is_segmented_in_place(mrml, logic):
    """Volume under a rigid transform: box in world RAS, segments and maps follow the volume's transform."""
    rng = np.random.default_rng(0)
    arr = (rng.normal(100, 10, (2, 48, 64)) + 300 * (np.indices((2, 48, 64))[2] > 32)).astype(np.int16)
    vol = volume_from_array(arr, (1.0, 1.0, 5.0), direction=DIRECTIONS["RAS"])
    node = G.add_volume_node(mrml.scene, vol, "moved")
    t = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "rigid")
    m = np.eye(4)
    m[:2, :2] = [[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]]
    m[:3, 3] = (30.0, -12.0, 7.0)
    t.SetMatrixTransformToParent(numpy_to_matrix(m))
    node.SetAndObserveTransformNodeID(t.GetID())
    world = logic.session(node).volume
    box = BoxPrompt(6, 1, (20, 10, 50, 40))
    out = logic.segment(node, [P.roi_for_box(mrml.scene, world, box)])
    assert out.segmentation_node.GetTransformNodeID() == t.GetID() == out.heatmap_node.GetTransformNodeID()
    engine = segment_volume(Segmenter(logic.loaded.ensemble, world.canonical_array, "w", spacing=world.canonical_spacing), [box])
    assert (engine.labels == 6).any() and out.changed_labels == [6]
    assert np.array_equal(S.read_labels(out.segmentation_node, node), G.to_stored(engine.labels, world))


def test_busy_guard_and_cancel_leave_the_scene_unchanged(mrml, logic, sample_crop):
    node = _sample_node(mrml, sample_crop)
    vol = logic.session(node).volume
    box = P.box_from_canonical_rect(vol, 2, np.array([50.0, 10.0]), np.array([100.0, 40.0]), 0, "box")
    gate = threading.Event()
    logic.worker.submit(lambda cancel: gate.wait(10))  # keep the worker busy so the run is still queued
    before = _node_count(mrml.scene)
    job = logic.start_segment(node, [box])
    assert logic.busy
    with pytest.raises(Busy, match="already running"):
        logic.start_segment(node, [box])
    logic.cancel()
    gate.set()
    assert job.wait(timeout=30)
    with pytest.raises(Cancelled, match="scene was not changed"):
        job.finish()
    assert not logic.busy and _node_count(mrml.scene) == before


def test_propagation_writes_every_accepted_slice(mrml, logic, sample_crop, monkeypatch):
    """The bridge's propagate wiring (the walk's stop rules are the engine's, tested there)."""
    from MuscleSAMLib.scene_bridge import logic as logic_module

    water, labels = sample_crop
    node = _sample_node(mrml, sample_crop)
    start = boxes_from_labels(labels.canonical_array.astype(np.uint8), values=[8], slices=[1])[0]
    seen = {}

    def fake_propagate(predict, box, n_slices, **kw):
        seen.update(kw)
        preds = [predict(type(box)(box.label, k, box.xyxy, "walk")) for k in range(n_slices)]
        return PropagationResult(start=box, predictions=preds,
                                 stops={1: DirectionStop(1, "volume edge", n_slices - 1, n_slices - 1, "slice 3 outside volume"),
                                        -1: DirectionStop(-1, "low expected quality", 0, 0,
                                                          "the model's predicted IoU 0.702 < 0.750")})

    monkeypatch.setattr(logic_module, "propagate_box", fake_propagate)
    out = logic.propagate(node, P.roi_for_box(mrml.scene, logic.session(node).volume, start), max_steps=5)
    assert seen["max_steps"] == 5 and seen["slice_shape"] == water.canonical_array.shape[1:]
    assert seen["min_iou_pred"] == float("-inf")  # the random ensemble records no IoU limit: that check is off
    assert sorted(out.slices) == [0, 1, 2]
    # the user reads why and where each direction stopped, with what was measured there (not canonical indices)
    assert set(out.stops) == {1, -1} and out.stops[1] == f"volume edge at slice {G.stored_slice_index(water, 2)}"
    assert out.stops[-1] == (f"low expected quality at slice {G.stored_slice_index(water, 0)} "
                             "(the model's predicted IoU 0.702 < 0.750)")
    engine = segment_volume(Segmenter(logic.loaded.ensemble, water.canonical_array, "p", spacing=water.canonical_spacing),
                            [type(start)(8, k, start.xyxy) for k in range(3)])
    assert np.array_equal(S.read_labels(out.segmentation_node, node) == 8, G.to_stored(engine.labels, water) == 8)


def test_propagation_that_keeps_nothing_says_why_on_the_users_slice(mrml, logic, sample_crop, monkeypatch):
    """The start slice failed its checks: the error names the slice as the user numbers it and what was measured."""
    from MuscleSAMLib.scene_bridge import logic as logic_module

    water, labels = sample_crop
    node = _sample_node(mrml, sample_crop)
    start = boxes_from_labels(labels.canonical_array.astype(np.uint8), values=[8], slices=[1])[0]

    def rejects_start(predict, box, n_slices, **kw):
        stop = DirectionStop(1, "uncertainty jump", box.slice, None, "mean uncertainty 0.6930 nats > 0.6000")
        return PropagationResult(start=box, predictions=[], stops={1: stop, -1: stop})

    monkeypatch.setattr(logic_module, "propagate_box", rejects_start)
    with pytest.raises(InputError) as err:
        logic.propagate(node, P.roi_for_box(mrml.scene, logic.session(node).volume, start))
    assert str(err.value) == ("propagation found nothing to keep: uncertainty jump at slice "
                              f"{G.stored_slice_index(water, 1)} (mean uncertainty 0.6930 nats > 0.6000)")


# ---------------------------------------------------------------------------------------------- export
def test_export_round_trips_and_is_atomic(mrml, logic, sample_crop, tmp_path):
    water, labels = sample_crop
    node = _sample_node(mrml, sample_crop)
    out = logic.segment(node, boxes_from_labels(labels.canonical_array.astype(np.uint8), values=[2, 9], slices=[1]))
    seg_node = out.segmentation_node
    stored = S.read_labels(seg_node, node)
    edited = stored.copy()
    edited[edited == 9] = 0  # the user erases one muscle before exporting
    S.write_changes(seg_node, node, stored, edited)
    dest = logic.export_corrected(node, seg_node, tmp_path / "case1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case1"]
    nifti = read_volume(dest / "corrected_labels.nii.gz", allow_labels=True)
    assert nifti.same_grid(water, tol=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(nifti.image), edited)
    reread = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reread")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(dest / "corrected_labels.seg.nrrd"))
    assert storage.ReadData(reread)
    assert np.array_equal(S.read_labels(reread, node), edited)
    report = json.loads((dest / "report.json").read_text())
    assert report["edits_per_muscle"]["9"]["removed"] == int((stored == 9).sum())
    prov = json.loads((dest / "provenance.json").read_text())
    assert prov["ensemble"] == "random-test" and "not for clinical use" in prov["intended_use"]
    # a failing export leaves the previous bundle untouched and no temp folder behind
    first = (dest / "corrected_labels.nii.gz").read_bytes()
    import MuscleSAMLib.outputs.bundle as bundle

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bundle, "write_json_atomic", boom)
        with pytest.raises(InputError, match="case1: no space left on the device"):
            logic.export_corrected(node, seg_node, tmp_path / "case1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case1"]
    assert (dest / "corrected_labels.nii.gz").read_bytes() == first


def test_closing_the_scene_drops_the_previous_case_even_when_ids_are_reused(mrml, logic, sample_crop, tmp_path):
    """File > Close Scene: vtkMRMLScene::Clear resets node IDs, so the next case gets the old case's volume ID."""
    water, labels = sample_crop
    old = _sample_node(mrml, sample_crop)
    logic.segment(old, boxes_from_labels(labels.canonical_array.astype(np.uint8), values=[2, 9], slices=[1]))
    assert logic.remaining_reviews(old) > 0
    mrml.scene.Clear(0)  # what File > Close Scene does
    other = sitk.Flip(water.image, [True, False, False])  # another patient on the same grid
    new = G.add_volume_node(mrml.scene, Volume(other, "next case"), "water")
    assert new.GetID() == old.GetID()
    assert logic.remaining_reviews(new) == 0
    with pytest.raises(InputError, match="no prediction yet"):
        logic.show_uncertainty(new)
    with pytest.raises(InputError, match="no prediction yet"):
        logic.next_uncertain(new)
    seg = S.new_segmentation(new)
    blank = S.read_labels(seg, new)
    drawn = blank.copy()
    drawn[1, 80:120, 60:100] = 2  # the user paints one muscle by hand
    S.write_changes(seg, new, blank, drawn)
    dest = logic.export_corrected(new, seg, tmp_path / "next")
    assert json.loads((dest / "prompts.json").read_text())["canonical"] == []  # nothing of the old case's boxes
    assert not (dest / "prediction_labels.nii.gz").exists()
    assert json.loads((dest / "interaction_log.json").read_text())[:-1] == []


# ---------------------------------------------------------------------------------------------- packaging
def test_bridge_imports_without_slicer_or_torch():
    code = ("import sys; sys.modules['slicer'] = None; sys.modules['torch'] = None\n"
            "import MuscleSAMLib, MuscleSAMLib.scene_bridge as b\n"
            "from MuscleSAMLib.scene_bridge.dependencies import missing_requirements\n"
            "assert 'torch' in [r.module for r in missing_requirements()]\n"
            "try:\n    b.MuscleSAMLogic\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('logic imported torch-free?')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------------------------------- desktop module
ALLOWED_IMPORTS = {"__future__", "os", "sys", "typing", "logging", "time", "json", "tempfile", "qt", "ctk", "vtk", "slicer",
                   "slicer.ScriptedLoadableModule", "slicer.util", "slicer.parameterNodeWrapper", "MuscleSAMLib.scene_bridge",
                   "MuscleSAMLib.scene_bridge.dependencies", "MuscleSAMLib.sample_data", "PyTorchUtils",
                   "SampleData", "MuscleSAMSelfTest", "MuscleSAMClicks"}


def _module_tree() -> ast.Module:
    return ast.parse((MODULE_DIR / "MuscleSAM.py").read_text(encoding="utf-8"))


def test_desktop_module_only_wires_the_bridge():
    tree = _module_tree()
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS
    assert not any(m.startswith(("MuscleSAMLib.engine", "MuscleSAMLib.models", "torch")) for m in imported)
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"MuscleSAM", "MuscleSAMWidget", "MuscleSAMModuleLogic", "MuscleSAMTest"} <= set(classes)
    assert "MuscleSAMLogic" not in classes  # the bridge's class name: one MuscleSAMLogic in the project
    assert len((MODULE_DIR / "MuscleSAM.py").read_text().splitlines()) < 600  # thin: wiring only (the self-test lives in MuscleSAMSelfTest.py)
    # pip installs only from the explicit install handler (main thread), never at import
    installs = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in ("pip_install", "installTorch")]
    assert installs
    top_level_calls = [n for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
                       and getattr(n.value.func, "id", "") != "_addCloneRootToPath"]  # the clone's sys.path, nothing else
    assert not top_level_calls
    text = (MODULE_DIR / "MuscleSAM.py").read_text()
    assert "not for clinical use" in text.lower() and "licen" in text.lower()
    assert "processEvents" in text and "pump=self._pump" in text  # the bridge's Job.wait: done.wait(0.03) + pump()
    assert "done.wait(POLL_SECONDS)" in (ROOT / "MuscleSAMLib" / "scene_bridge" / "jobs.py").read_text()


def test_ui_file_and_cmake_ship_what_the_module_needs():
    # every self.ui.X exists in the .ui, and every binding is one Slicer accepts: test_desktop_ui_bindings.py
    ui = ET.parse(MODULE_DIR / "Resources" / "UI" / "MuscleSAM.ui")
    classes = {w.get("class") for w in ui.iter("widget")}
    assert {"qMRMLNodeComboBox", "qMRMLSegmentEditorWidget", "qMRMLTableView", "ctkSliderWidget"} <= classes
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in cmake and "slicer_add_python_unittest" in cmake
    assert (MODULE_DIR / "Resources" / "Icons" / "MuscleSAM.png").is_file()
    assert "MuscleSAMLib" in cmake and "Resources/UI/${MODULE_NAME}.ui" in cmake and "muscle_labels.json" in cmake
