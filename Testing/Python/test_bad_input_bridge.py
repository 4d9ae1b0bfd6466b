"""Bad-input suite, scene-bridge part: MuscleSAMLogic on real MRML (slicer-core) fed broken inputs.

Every case must end in the project's own error type (InputError / GeometryError / WeightsError / Busy)
whose message names the input (a fragment is asserted), leave the MRML scene exactly as it was (same
node IDs, same voxels in every volume and segmentation, same segment statuses), leave no partial file
and run no planted code. Recorded under "scene bridge" in the one table (``bad_input_table``) that is
printed at the end of the session with the CLI and web cases.
"""

from __future__ import annotations

import shutil
import threading
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from bad_input_table import record
from musclesam_test_helpers import (damage_ensemble, fill_disk, import_declared, read_only_folder, scene_state, small_disk, unmount,
                                    write_random_decoder_ensemble)

slicer = import_declared("slicer", "slicer-core")

from MuscleSAMLib.engine.types import BoxPrompt  # noqa: E402
from MuscleSAMLib.errors import GeometryError, InputError, MuscleSAMError, WeightsError  # noqa: E402
from MuscleSAMLib.scene_bridge import geometry as G  # noqa: E402
from MuscleSAMLib.scene_bridge import prompts as P  # noqa: E402
from MuscleSAMLib.scene_bridge import segments as S  # noqa: E402
from MuscleSAMLib.scene_bridge.headless import headless_scene  # noqa: E402
from MuscleSAMLib.scene_bridge.jobs import Busy, Cancelled  # noqa: E402
from MuscleSAMLib.scene_bridge.logic import MuscleSAMLogic  # noqa: E402
from MuscleSAMLib.scene_bridge.mrml import VOLUME_ATTR, numpy_to_matrix  # noqa: E402
from MuscleSAMLib.volumes import volume_from_array  # noqa: E402

ENTRY = "scene bridge"
SHAPE = (3, 48, 48)  # (k, j, i) of the good volume: 3 axial slices of 48 x 48 voxels
SPACING = (1.0, 1.0, 4.0)


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A random 2-member decoder ensemble (manifest + files) to load and to damage (copies)."""
    return write_random_decoder_ensemble(tmp_path_factory.mktemp("ens") / "w", members=2, seed=3)


@pytest.fixture(scope="module")
def logic(weights):
    """One logic for the module, the random ensemble loaded through the manifest on the worker."""
    lg = MuscleSAMLogic()
    lg.load_ensemble("random-test", weights, "cpu")
    yield lg
    lg.shutdown()


@pytest.fixture(autouse=True)
def idle_after(logic):
    """A case that failed with a run still in flight must not leave the module's logic busy."""
    yield
    for _ in range(600):
        if not logic.busy:
            return
        logic.cancel()  # closes a job whose worker is done; a running one stops at its next check
        threading.Event().wait(0.05)
    raise AssertionError("the bridge stayed busy")


@pytest.fixture
def mrml():
    h = headless_scene()
    yield h
    h.scene.Clear(1)


@dataclass
class Case:
    """A scene with the good volume, its muscle segmentation (user paint: VL on slice 1, VM on slice 0)."""

    scene: Any
    volume: Any
    seg: Any
    tmp: Path


@pytest.fixture
def case(mrml, logic, tmp_path) -> Case:
    scene = mrml.scene
    arr = np.random.default_rng(0).uniform(10, 100, SHAPE).astype(np.float32)
    volume = _add_volume(scene, "water", arr)
    seg = S.new_segmentation(volume)
    seg.SetAttribute("MuscleSAM.Role", "segmentation")
    seg.SetAttribute(VOLUME_ATTR, volume.GetID())
    painted = np.zeros(SHAPE, np.uint8)
    painted[1, 10:30, 8:20] = 3
    painted[0, 5:15, 30:44] = 5
    S.write_changes(seg, volume, np.zeros(SHAPE, np.uint8), painted)
    logic.session(volume)  # built before the snapshot: sessions are engine state, not scene state
    return Case(scene, volume, seg, tmp_path)


def _add_volume(scene: Any, name: str, arr: np.ndarray, spacing=SPACING, origin=(0.0, 0.0, 0.0)) -> Any:
    return G.add_volume_node(scene, volume_from_array(arr, spacing, origin), name)


# ---------------------------------------------------------------------------------------------- checks
_scene_state = scene_state


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _refused(c: Case, logic: MuscleSAMLogic, action: Callable[[], Any], error: type[BaseException], fragment: str,
             watch: Path | None = None) -> str:
    """Run ``action``: it must raise ``error`` with ``fragment`` in its one-line message, change nothing in
    the scene, leave the bridge idle, and leave ``watch`` (default: the test's tmp folder) as it was."""
    watch = watch or c.tmp
    before, files = _scene_state(c.scene), _files(watch)
    loaded = logic.loaded
    with pytest.raises(error) as info:
        action()
    message = str(info.value)
    assert fragment in message, message
    assert isinstance(info.value, MuscleSAMError) and "\n" not in message, message
    assert _scene_state(c.scene) == before, "the scene changed"
    assert _files(watch) == files, "files were left behind"
    assert not logic.busy and logic.loaded is loaded
    return message


def _box(c: Case, label: Any = "VL", size=(8.0, 8.0, 1.0), offset=(0.0, 0.0, 0.0), name: str | None = None) -> Any:
    """An ROI on canonical slice 1 around voxel (col 24, row 24), moved by ``offset`` mm (RAS)."""
    vol = G.volume_from_node(c.volume)
    centre = np.array(G.canonical_to_ras(vol, 24, 24, 1)) + np.asarray(offset)
    return P.new_box_roi(c.scene, label, center=centre, size=size, name=name)


GOOD_BOX = BoxPrompt(3, 1, (10, 10, 30, 30), "good box")


def _hold_worker(logic: MuscleSAMLogic) -> threading.Event:
    """Keep the worker busy until the returned gate is set (a run submitted now stays in flight)."""
    gate = threading.Event()
    logic.worker.submit(lambda cancel: gate.wait(30))
    return gate


def _damaged(weights: Path, tmp: Path, change: str) -> Path:
    """A copy of the random ensemble with one defect; returns its manifest."""
    folder = Path(shutil.copytree(weights.parent, tmp / f"weights_{change}"))
    manifest = folder / weights.name
    return damage_ensemble(manifest, change, tmp / "PWNED")


# ---------------------------------------------------------------------------------------------- volumes
def test_volume_without_image_data(case, logic):
    with record(ENTRY, "volume node without image data"):
        empty = case.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "no data")
        _refused(case, logic, lambda: logic.start_segment(empty, [GOOD_BOX]), InputError, "'no data' has no voxels loaded")


def test_single_sagittal_slice(case, logic):
    with record(ENTRY, "2D volume: one sagittal slice (no axial slice)"):
        flat = _add_volume(case.scene, "sagittal 2D", np.random.default_rng(1).uniform(1, 9, (20, 40, 1)).astype(np.float32))
        _refused(case, logic, lambda: logic.start_segment(flat, [GOOD_BOX]), InputError,
                 "'sagittal 2D' is a single sagittal slice (1 x 40 x 20 voxels): it has no axial slice")
        coronal = _add_volume(case.scene, "coronal 2D", np.random.default_rng(1).uniform(1, 9, (20, 1, 40)).astype(np.float32))
        _refused(case, logic, lambda: logic.initialize(coronal), InputError, "'coronal 2D' is a single coronal slice")


def test_single_axial_slice_is_one_slice_volume(mrml, logic):
    """Not refused: a one-slice axial image (mid-thigh protocols) is segmented like the CLI does."""
    with record(ENTRY, "2D volume: one axial slice is segmented (as the CLI)"):
        node = _add_volume(mrml.scene, "axial 2D", np.random.default_rng(2).uniform(10, 100, (1, 48, 48)).astype(np.float32))
        out = logic.segment(node, [BoxPrompt(3, 0, (10, 10, 30, 30), "one-slice box")])
        assert out.changed_labels == [3] and out.slices == [0]
        assert S.read_labels(out.segmentation_node, node).shape == (1, 48, 48)


def test_vector_volume(case, logic):
    with record(ENTRY, "vector volume node (3 components per voxel)"):
        rgb = case.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
        slicer.util.updateVolumeFromArray(rgb, np.zeros((*SHAPE, 3), np.uint8))
        _refused(case, logic, lambda: logic.start_segment(rgb, [GOOD_BOX]), InputError, "'rgb' has 3 components per voxel")


@pytest.mark.parametrize("value, count", [(np.nan, 1), (np.inf, 2)])
def test_non_finite_voxels(case, logic, value, count):
    name = "NaN voxels" if np.isnan(value) else "inf voxels"
    with record(ENTRY, name):
        arr = np.random.default_rng(3).uniform(10, 100, SHAPE).astype(np.float32)
        arr.flat[[7, 4000][:count]] = value
        bad = _add_volume(case.scene, name, arr)
        _refused(case, logic, lambda: logic.start_segment(bad, [GOOD_BOX]), InputError,
                 f"'{name}' has {count} NaN/inf voxels; fix or mask them")


def test_huge_dimensions_refused_before_copying(case, logic):
    """2048^3 voxels announced by the image (only 10 values behind them): refused from the header alone."""
    from vtkmodules.vtkCommonCore import vtkFloatArray
    from vtkmodules.vtkCommonDataModel import vtkImageData

    with record(ENTRY, "huge dimensions (refused before copying voxels)"):
        node = case.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "huge")
        image, values = vtkImageData(), vtkFloatArray()
        image.SetDimensions(2048, 2048, 2048)
        values.SetNumberOfTuples(10)
        image.GetPointData().SetScalars(values)
        node.SetAndObserveImageData(image)
        tracemalloc.start()
        try:
            _refused(case, logic, lambda: logic.start_segment(node, [GOOD_BOX]), InputError,
                     "'huge' has 8589934592 voxels (2048 x 2048 x 2048), above the limit")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 64 << 20, f"{peak} bytes allocated before refusing"


def test_voxel_array_shorter_than_its_dimensions(case, logic):
    from vtkmodules.vtkCommonCore import vtkFloatArray
    from vtkmodules.vtkCommonDataModel import vtkImageData

    with record(ENTRY, "voxel array shorter than the image dimensions"):
        node = case.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "short")
        image, values = vtkImageData(), vtkFloatArray()
        image.SetDimensions(48, 48, 3)
        values.SetNumberOfTuples(10)
        image.GetPointData().SetScalars(values)
        node.SetAndObserveImageData(image)
        _refused(case, logic, lambda: logic.start_segment(node, [GOOD_BOX]), InputError,
                 "'short' holds 10 voxel values for its 6912 voxels")


def test_volume_under_nonlinear_transform(case, logic):
    with record(ENTRY, "volume under a non-linear transform"):
        warped = _add_volume(case.scene, "warped", np.random.default_rng(4).uniform(10, 100, SHAPE).astype(np.float32))
        grid = case.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
        warped.SetAndObserveTransformNodeID(grid.GetID())
        _refused(case, logic, lambda: logic.start_segment(warped, [GOOD_BOX]), GeometryError,
                 "volume 'warped' is under a non-linear transform; harden")


# ---------------------------------------------------------------------------------------------- boxes
def test_roi_degenerate(case, logic):
    with record(ENTRY, "ROI degenerate (under 2 x 2 voxels)"):
        roi = _box(case, size=(0.5, 0.5, 1.0), name="tiny")
        _refused(case, logic, lambda: logic.start_segment(case.volume, [roi]), GeometryError,
                 "ROI 'tiny': box covers only 1 x 1 voxels")


def test_roi_outside_the_image(case, logic):
    with record(ENTRY, "ROI outside the image (beside it)"):
        roi = _box(case, offset=(300.0, 0.0, 0.0), name="beside")
        _refused(case, logic, lambda: logic.start_segment(case.volume, [roi]), GeometryError,
                 "ROI 'beside': box lies outside the volume")
    with record(ENTRY, "ROI outside the image (above the last slice)"):
        roi = _box(case, offset=(0.0, 0.0, 40.0), name="above")
        _refused(case, logic, lambda: logic.start_segment(case.volume, [roi]), GeometryError,
                 "ROI 'above': box lies on slice 11, outside the volume's 3 axial slices")


def test_roi_tilted(case, logic):
    with record(ENTRY, "ROI tilted 40 degrees (non-axial)"):
        roi = _box(case, name="tilted")
        m = np.eye(4)
        m[:2, :2] = [[np.cos(0.7), -np.sin(0.7)], [np.sin(0.7), np.cos(0.7)]]
        m[:3, 3] = G.canonical_to_ras(G.volume_from_node(case.volume), 24, 24, 1)
        roi.SetAndObserveObjectToNodeMatrix(numpy_to_matrix(m))
        _refused(case, logic, lambda: logic.start_segment(case.volume, [roi]), GeometryError,
                 "ROI 'tilted' is rotated 40 degrees against the volume's axial slices")


def test_roi_drawn_on_a_sagittal_view(case, logic):
    with record(ENTRY, "ROI drawn on a sagittal view (no axial extent)"):
        roi = _box(case, size=(0.0, 8.0, 12.0), name="sagittal")
        _refused(case, logic, lambda: logic.start_segment(case.volume, [roi]), GeometryError,
                 "(drawn on a sagittal or coronal view?)")


def test_roi_unplaced_or_without_muscle(case, logic):
    with record(ENTRY, "ROI not placed yet"):
        roi = MuscleSAMLogic.start_box_placement(case.scene, "SA")
        _refused(case, logic, lambda: logic.start_segment(case.volume, [roi]), InputError,
                 f"ROI '{roi.GetName()}' is not placed yet")
    with record(ENTRY, "ROI without a muscle"):
        plain = case.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "plain")
        _refused(case, logic, lambda: logic.start_segment(case.volume, [plain]), InputError, "ROI 'plain' has no muscle")
    with record(ENTRY, "no box at all"):
        _refused(case, logic, lambda: logic.start_segment(case.volume, []), InputError, "no box: place a box")


def test_unknown_label_on_an_roi(case, logic):
    with record(ENTRY, "unknown label (ROI tagged 99, name 'XX')"):
        roi = _box(case, name="odd")
        roi.SetAttribute("MuscleSAM.Label", "99")
        _refused(case, logic, lambda: logic.start_segment(case.volume, [roi]), InputError, "unknown muscle label '99'")
        _refused(case, logic, lambda: logic.new_box_roi(case.scene, "XX"), InputError, "unknown muscle label 'XX'")


BAD_BOX_PROMPTS = [  # (table row, box, error type, message fragment)
    ("box prompt: unknown label 99", BoxPrompt(99, 1, (10, 10, 30, 30), "box #1"), InputError, "box #1: unknown muscle label 99"),
    ("box prompt: inverted (x1 < x0)", BoxPrompt(3, 1, (30, 30, 10, 10), "box #2"), GeometryError,
     "box #2: box (30, 30, 10, 10) is degenerate (zero or negative size)"),
    ("box prompt: outside the image", BoxPrompt(3, 1, (40, 40, 90, 90), "box #3"), GeometryError,
     "box #3: box (40, 40, 90, 90) extends outside the 48 x 48 slice"),
    ("box prompt: slice that does not exist", BoxPrompt(3, 9, (10, 10, 30, 30), "box #4"), GeometryError,
     "box #4: slice 9 does not exist (3 slices)"),
]


@pytest.mark.parametrize("name, box, error, fragment", BAD_BOX_PROMPTS)
def test_box_prompt_check(case, logic, name, box, error, fragment):
    """prompts.check_box: canonical BoxPrompts (the web app's drawn boxes, label-map boxes) checked like ROIs."""
    vol = logic.session(case.volume).volume
    with pytest.raises(error) as info:
        P.check_box(vol, box)
    assert fragment in str(info.value), str(info.value)
    assert P.check_box(vol, GOOD_BOX) is GOOD_BOX


@pytest.mark.parametrize("name, box, error, fragment", BAD_BOX_PROMPTS)
def test_box_prompt_refused_by_the_bridge(case, logic, name, box, error, fragment):
    """A bad BoxPrompt next to a good one: the whole run is refused before anything is submitted."""
    with record(ENTRY, name):
        _refused(case, logic, lambda: logic.start_segment(case.volume, [GOOD_BOX, box]), error, fragment)


def test_locked_segment(case, logic):
    logic.lock_segment(case.seg, "VL")
    with record(ENTRY, "segmenting a locked (completed) muscle"):
        _refused(case, logic, lambda: logic.start_segment(case.volume, [GOOD_BOX]), InputError,
                 "vastus lateralis is locked (completed); unlock it to segment it again")
    with record(ENTRY, "propagating a locked (completed) muscle"):
        _refused(case, logic, lambda: logic.start_propagate(case.volume, GOOD_BOX), InputError,
                 "vastus lateralis is locked (completed); unlock it to propagate it")


# ---------------------------------------------------------------------------------------------- ensembles
@pytest.mark.parametrize("name, change, error, fragment", [
    ("ensemble: missing member file", "missing_member", WeightsError,
     "ensemble 'random-test' is not installed: missing {folder}/member1.safetensors"),
    ("ensemble: wrong checksum", "wrong_checksum", WeightsError, "{folder}/member0.safetensors has sha256"),
    ("ensemble: wrong architecture", "wrong_architecture", WeightsError,
     "{folder}/encoder.safetensors does not match architecture demo_s"),
    ("ensemble: pickled code in a .pth member", "pickled_code", WeightsError,
     "{folder}/member0.pth contains Python objects other than tensors; refused"),
])
def test_damaged_ensemble(case, logic, weights, name, change, error, fragment):
    with record(ENTRY, name):
        manifest = _damaged(weights, case.tmp, change)
        _refused(case, logic, lambda: logic.load_ensemble("random-test", manifest=manifest, device="cpu"),
                 error, fragment.format(folder=manifest.parent))
        assert not (case.tmp / "PWNED").exists(), "planted code ran"
        assert logic.segment(case.volume, [GOOD_BOX]).changed_labels  # the loaded ensemble still works


# ---------------------------------------------------------------------------------------------- export
def test_export_fat_on_another_grid(case, logic):
    with record(ENTRY, "export: Dixon fat image on another grid"):
        fat = _add_volume(case.scene, "fat", np.ones(SHAPE, np.float32), origin=(3.0, 0.0, 0.0))
        _refused(case, logic, lambda: logic.export_corrected(case.volume, case.seg, case.tmp / "bundle", fat_node=fat),
                 InputError, "fat image 'fat' is not on the grid of 'water'")


def test_export_without_segmentation(case, logic):
    with record(ENTRY, "export: no segmentation chosen"):
        _refused(case, logic, lambda: logic.export_corrected(case.volume, None, case.tmp / "bundle"), InputError,
                 "no segmentation to export")


def test_export_folder_with_nul(case, logic):
    with record(ENTRY, "export: folder name with NUL"):
        _refused(case, logic, lambda: logic.export_corrected(case.volume, case.seg, str(case.tmp / "a\x00b")), InputError,
                 "invalid output path (empty or contains a NUL byte)")


def test_export_into_a_file(case, logic):
    with record(ENTRY, "export: into a file, not a folder"):
        blocker = case.tmp / "a_file"
        blocker.write_text("x")
        _refused(case, logic, lambda: logic.export_corrected(case.volume, case.seg, blocker / "bundle"), InputError,
                 f"{blocker}: cannot write")


def test_export_into_a_read_only_folder(case, logic):
    folder = case.tmp / "read_only"
    how = read_only_folder(folder)  # chmod, or a read-only mount where chmod does not bind (root)
    try:
        with record(ENTRY, "export: read-only folder"):
            _refused(case, logic, lambda: logic.export_corrected(case.volume, case.seg, folder / "bundle"), InputError,
                     f"{folder}: cannot write here (")
    finally:
        unmount(folder) if how == "mount" else folder.chmod(0o755)


def test_export_onto_a_full_disk_keeps_the_previous_bundle(case, logic):
    disk = case.tmp / "disk"
    if not small_disk(disk, 2048):
        pytest.skip("mounting a small tmpfs needs root: the full-disk case runs on CI and as root")
    try:
        with record(ENTRY, "export: disk fills up mid-write"):
            dest = logic.export_corrected(case.volume, case.seg, disk / "bundle")
            before = {p.name: p.read_bytes() for p in dest.iterdir()}
            fill_disk(disk, leave_bytes=12 * 1024)
            _refused(case, logic, lambda: logic.export_corrected(case.volume, case.seg, disk / "bundle"), InputError,
                     f"{disk / 'bundle'}: no space left on the device")
            assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
            assert sorted(p.name for p in disk.iterdir()) == ["bundle", "filler.bin"]
    finally:
        unmount(disk)


# ---------------------------------------------------------------------------------------------- one run at a time
def test_second_run_while_one_is_in_flight(case, logic):
    with record(ENTRY, "second run while one is in flight (Busy)"):
        before = _scene_state(case.scene)
        gate = _hold_worker(logic)
        job = logic.start_segment(case.volume, [GOOD_BOX])
        try:
            for start in (lambda: logic.start_segment(case.volume, [GOOD_BOX]),
                          lambda: logic.start_propagate(case.volume, GOOD_BOX),
                          lambda: logic.initialize(case.volume),
                          lambda: logic.load_ensemble("random-test", manifest=logic.loaded.manifest_path)):
                with pytest.raises(Busy, match="a prediction is already running; wait for it or press Cancel"):
                    start()
                assert logic.busy and _scene_state(case.scene) == before
        finally:
            logic.cancel()
            gate.set()
        assert job.wait(timeout=30)
        with pytest.raises(Cancelled, match="scene was not changed"):
            job.finish()
        assert not logic.busy and _scene_state(case.scene) == before
