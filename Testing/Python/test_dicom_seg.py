"""DICOM SEG export: corrected labels of a DICOM MR series come back on the right slices and pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from musclesam_test_helpers import import_declared
from MuscleSAMLib.cli.main import main
from MuscleSAMLib.errors import InputError
from MuscleSAMLib.outputs.dicom_seg import write_dicom_seg
from MuscleSAMLib.sample_data import muscle_names
from MuscleSAMLib.volumes import dicom_series_files, read_volume

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_mr_series(folder: Path, arr: np.ndarray, spacing=(0.8, 0.9, 5.0), origin=(-10.0, 20.0, 30.0),
                    reverse_files: bool = True, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Path:
    """An MR series, one file per slice; file names in REVERSE slice order so order is never assumed."""
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    d = np.asarray(direction, float).reshape(3, 3)
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    n = arr.shape[0]
    for k in range(n):
        sl = img[:, :, k]
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {"0008|0016": MR_IMAGE_STORAGE, "0008|0018": f"1.2.826.0.1.3680043.2.1125.3.{k + 1}",
                "0010|0010": "Phantom^Thigh", "0010|0020": "PH001", "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
                "0020|000e": "1.2.826.0.1.3680043.2.1125.2", "0020|0052": "1.2.826.0.1.3680043.2.1125.4",
                "0008|0060": "MR", "0020|0032": "\\".join(f"{v:.4f}" for v in pos), "0020|0013": str(k + 1),
                "0020|0037": "\\".join(f"{v:g}" for v in (*d[:, 0], *d[:, 1])), "0018|0050": f"{spacing[2]}",
                "0028|0030": f"{spacing[1]}\\{spacing[0]}"}
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"img{(n - 1 - k) if reverse_files else k:03d}.dcm"))
        writer.Execute(sl)
    return folder


@pytest.fixture
def series(tmp_path: Path) -> tuple[Path, np.ndarray]:
    arr = (np.random.default_rng(3).uniform(50, 500, (4, 24, 20))).astype(np.int16)
    return write_mr_series(tmp_path / "series", arr), arr


def _labels(shape) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[1, 3:10, 2:8] = 3   # vastus lateralis on stored slice 1
    lab[2, 12:20, 10:18] = 7  # gracilis on stored slice 2
    lab[2, 3:6, 2:5] = 3
    return lab


def _read_back(path: Path, series_files: list[Path]) -> dict[str, np.ndarray]:
    """{segment label: (slices, rows, cols) mask in the SOURCE's stored slice order} via highdicom."""
    import highdicom as hd
    import pydicom

    seg = hd.seg.segread(str(path))
    sources = {pydicom.dcmread(str(f), stop_before_pixels=True).SOPInstanceUID: f for f in series_files}
    vol = read_volume(series_files[0].parent)
    out = {}
    for number in seg.segment_numbers:
        label = seg.get_segment_description(number).segment_label
        mask = np.zeros(sitk.GetArrayViewFromImage(vol.image).shape, bool)
        for uid, f in sources.items():
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
            k = int(round(vol.image.TransformPhysicalPointToContinuousIndex(tuple(map(float, ds.ImagePositionPatient)))[2]))
            try:
                frame = seg.get_pixels_by_source_instance(source_sop_instance_uids=[uid], segment_numbers=[number],
                                                          assert_missing_frames_are_empty=True)
            except (ValueError, KeyError):
                continue
            mask[k] = frame[0, :, :, 0] > 0
        out[label] = mask
    return out


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1)], ids=["LPS", "RAS"])
def test_dicom_seg_round_trip_on_the_right_slices(direction, tmp_path):
    arr = (np.random.default_rng(3).uniform(50, 500, (4, 24, 20))).astype(np.int16)
    folder = write_mr_series(tmp_path / "series", arr, direction=direction)
    vol = read_volume(folder)
    assert vol.orientation == ("LPS" if direction[0] == 1 else "RAS")
    files = dicom_series_files(folder)
    stored_labels = _labels(arr.shape)
    lab_img = sitk.GetImageFromArray(stored_labels)
    lab_img.CopyInformation(vol.image)
    canonical = sitk.GetArrayFromImage(sitk.DICOMOrient(lab_img, "LPS"))
    out = write_dicom_seg(canonical, vol, files, tmp_path / "seg.dcm", muscle_names())
    back = _read_back(out, files)
    assert set(back) == {"vastus lateralis (label 3)", "gracilis (label 7)"}
    np.testing.assert_array_equal(back["vastus lateralis (label 3)"], stored_labels == 3)
    np.testing.assert_array_equal(back["gracilis (label 7)"], stored_labels == 7)
    import pydicom

    ds = pydicom.dcmread(str(out), stop_before_pixels=True)
    assert ds.Modality == "SEG" and ds.StudyInstanceUID == "1.2.826.0.1.3680043.2.1125.1"
    assert ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "127954009"
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"


def test_series_from_another_image_is_refused(series, tmp_path):
    folder, arr = series
    other = write_mr_series(tmp_path / "other", arr, origin=(-10.0, 20.0, 60.0))
    vol = read_volume(folder)
    with pytest.raises(InputError, match="is not a slice of the segmented image"):
        write_dicom_seg(np.zeros(arr.shape, np.uint8) + 3, vol, dicom_series_files(other), tmp_path / "s.dcm", muscle_names())
    assert not (tmp_path / "s.dcm").exists()


def test_export_of_a_dicom_series_writes_a_seg_in_the_bundle(series, tmp_path):
    """`musclesam export` on a DICOM folder puts corrected_labels.dcm (SEG) next to the NIfTI and .seg.nrrd."""
    folder, arr = series
    vol = read_volume(folder)
    stored_labels = _labels(arr.shape)
    corrected = sitk.GetImageFromArray(stored_labels)
    corrected.CopyInformation(vol.image)
    sitk.WriteImage(corrected, str(tmp_path / "corrected.nii.gz"))
    assert main(["export", str(folder), "--corrected", str(tmp_path / "corrected.nii.gz"), "--out", str(tmp_path / "b")]) == 0
    bundle = tmp_path / "b"
    assert (bundle / "corrected_labels.dcm").is_file()
    report = json.loads((bundle / "report.json").read_text())
    assert report["dicom_seg"]["file"] == "corrected_labels.dcm" and report["dicom_seg"]["segments"] == 2
    back = _read_back(bundle / "corrected_labels.dcm", dicom_series_files(folder))
    np.testing.assert_array_equal(back["gracilis (label 7)"], stored_labels == 7)


def test_bridge_export_of_a_dicom_loaded_volume_writes_a_seg(series, tmp_path, monkeypatch):
    """Desktop Slicer tags DICOM-loaded volumes with their instance UIDs; the bridge finds the files and writes SEG."""
    slicer = import_declared("slicer", "slicer-core")
    import pydicom

    from MuscleSAMLib.scene_bridge import geometry as G
    from MuscleSAMLib.scene_bridge import segments as S
    from MuscleSAMLib.scene_bridge.headless import headless_scene
    from MuscleSAMLib.scene_bridge.logic import MuscleSAMLogic

    folder, arr = series
    files = dicom_series_files(folder)
    by_uid = {str(pydicom.dcmread(str(f), stop_before_pixels=True).SOPInstanceUID): str(f) for f in files}

    class FakeDatabase:  # what desktop Slicer's ctkDICOMDatabase answers
        def fileForInstance(self, uid):  # noqa: N802 - Slicer's name
            return by_uid.get(uid, "")

    monkeypatch.setattr(slicer, "dicomDatabase", FakeDatabase(), raising=False)
    h = headless_scene()
    node = G.add_volume_node(h.scene, read_volume(folder), "mr")
    node.SetAttribute("DICOM.instanceUIDs", " ".join(by_uid))
    seg = S.new_segmentation(node)
    stored = _labels(arr.shape)
    S.write_changes(seg, node, np.zeros_like(stored), stored)
    logic = MuscleSAMLogic()
    try:
        dest = logic.export_corrected(node, seg, tmp_path / "bundle")
    finally:
        logic.shutdown()
        h.scene.Clear(1)
    back = _read_back(dest / "corrected_labels.dcm", files)
    np.testing.assert_array_equal(back["vastus lateralis (label 3)"], stored == 3)


def test_a_seg_that_cannot_be_written_is_skipped_and_the_bundle_kept(series, tmp_path):
    """DICOM SEG is an extra: files of another series give a reason in the report, never a lost export."""
    from MuscleSAMLib.outputs.bundle import write_bundle

    folder, arr = series
    other = write_mr_series(tmp_path / "other", arr, origin=(-10.0, 20.0, 60.0))
    vol = read_volume(folder)
    dest = write_bundle(tmp_path / "b", vol, np.full(arr.shape, 3, np.uint8), dicom_source=dicom_series_files(other))
    report = json.loads((dest / "report.json").read_text())
    assert "is not a slice of the segmented image" in report["dicom_seg"]["skipped"]
    assert (dest / "corrected_labels.nii.gz").is_file() and not (dest / "corrected_labels.dcm").exists()
