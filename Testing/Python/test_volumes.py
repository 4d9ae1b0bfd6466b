"""Volumes: exact geometry round trips, axial-axis choice, and one-line errors for bad files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from musclesam_test_helpers import DIRECTIONS, make_image
from MuscleSAMLib.errors import GeometryError, InputError
from MuscleSAMLib.volumes import (axial_array_axis, read_dixon_pair, read_volume, volume_from_array,
                                  write_like)


@pytest.mark.parametrize("name", ["LPS", "RAS", "oblique", "axial_first"])
@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_prediction_written_back_lies_on_the_input_grid(tmp_path: Path, ramp_array, name, ext):
    """A result computed on the canonical array is written back voxel-for-voxel on the input grid."""
    src = tmp_path / f"img{ext}"
    sitk.WriteImage(make_image(ramp_array, DIRECTIONS[name]), str(src))
    vol = read_volume(src)
    # "prediction of ones" on a region, plus the identity of each voxel, to prove exact voxel mapping
    result = vol.canonical_array.astype(np.int32)
    out = write_like(result, vol, tmp_path / f"pred{ext}")
    back = sitk.ReadImage(str(out))
    assert back.GetSize() == vol.image.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), vol.image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), vol.image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), vol.image.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), ramp_array)
    ones = write_like(np.ones_like(result, dtype=np.uint8), vol, tmp_path / f"ones{ext}")
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(ones))).min() == 1


@pytest.mark.parametrize("name", ["LPS", "RAS", "oblique", "axial_first"])
def test_canonical_slices_are_axial_whatever_the_storage(ramp_array, name):
    """Canonical axis 0 is the superior-inferior axis, and each voxel keeps its physical position."""
    img = make_image(ramp_array, DIRECTIONS[name])
    vol = volume_from_array(ramp_array, img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    canon = vol.canonical_image
    d = np.array(canon.GetDirection()).reshape(3, 3)
    assert np.argmax(np.abs(d[2, :])) == 2  # canonical k axis runs S-I
    assert d[2, 2] > 0  # and increases superiorly (LPS)
    # one voxel: same value at the same physical point
    k, j, i = 3, 7, 11
    phys = vol.image.TransformIndexToPhysicalPoint((i, j, k))
    ci = canon.TransformPhysicalPointToIndex(phys)
    assert vol.canonical_array[ci[2], ci[1], ci[0]] == ramp_array[k, j, i]


def test_axial_axis_read_from_direction_matrix():
    assert axial_array_axis(DIRECTIONS["LPS"]) == 0
    assert axial_array_axis(DIRECTIONS["axial_first"]) == 2
    assert axial_array_axis(DIRECTIONS["oblique"]) == 0


def test_canonical_index_maps_stored_index(ramp_array):
    img = make_image(ramp_array, DIRECTIONS["RAS"])
    vol = volume_from_array(ramp_array, img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    col, row, sl = vol.canonical_index_of([[4, 5, 2]])[0]
    assert vol.canonical_array[int(round(sl)), int(round(row)), int(round(col))] == ramp_array[2, 5, 4]


def test_real_sample_reads_as_lps_with_16_axial_slices():
    from MuscleSAMLib.sample_data import sample_case

    case = sample_case()
    fat, water = read_dixon_pair(case.fat, case.water)
    assert water.orientation == "LPS"
    assert water.canonical_array.shape == (16, 512, 512)
    assert water.canonical_spacing[0] == pytest.approx(24.0, abs=0.01)


# ---------------------------------------------------------------- bad input: one clear line each
def _write(tmp_path: Path, arr: np.ndarray, name: str = "bad.nii.gz", **kw) -> Path:
    p = tmp_path / name
    img = sitk.GetImageFromArray(arr, **kw)
    sitk.WriteImage(img, str(p))
    return p


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"nope\.nii\.gz: file not found"):
        read_volume(tmp_path / "nope.nii.gz")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.nii.gz"
    p.write_bytes(b"")
    with pytest.raises(InputError, match="empty.nii.gz: file is empty"):
        read_volume(p)


def test_corrupt_file(tmp_path):
    p = tmp_path / "corrupt.nii.gz"
    p.write_bytes(b"this is not an image" * 20)
    with pytest.raises(InputError, match="corrupt.nii.gz: cannot read image"):
        read_volume(p)


def test_truncated_file(tmp_path, ramp_array):
    good = _write(tmp_path, ramp_array.astype(np.float32) * 1.5, "good.nii")
    data = good.read_bytes()
    p = tmp_path / "truncated.nii"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated.nii: file is truncated"):
        read_volume(p)
    pz = tmp_path / "truncated.nii.gz"
    packed = gzip.compress(data)
    pz.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(InputError, match="truncated.nii.gz: file is truncated"):
        read_volume(pz)


def test_2d_image_refused(tmp_path):
    p = _write(tmp_path, np.arange(100, dtype=np.float32).reshape(10, 10), "flat.nrrd")
    with pytest.raises(InputError, match=r"flat.nrrd: expected a 3D image, got 2D"):
        read_volume(p)


def test_4d_image_refused(tmp_path):
    p = _write(tmp_path, np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5), "time.nii.gz", isVector=False)
    with pytest.raises(InputError, match=r"time.nii.gz: expected a 3D image, got 4D"):
        read_volume(p)


def test_vector_image_refused(tmp_path):
    p = _write(tmp_path, np.random.default_rng(0).random((3, 4, 5, 3)).astype(np.float32), "rgb.mha", isVector=True)
    with pytest.raises(InputError, match="rgb.mha: expected a scalar image"):
        read_volume(p)


def test_nan_voxels_refused(tmp_path):
    arr = np.ones((3, 4, 5), np.float32)
    arr[1, 2, 3] = np.nan
    arr[0, 0, 0] = np.inf
    p = _write(tmp_path, arr, "nan.nrrd")  # (ITK's NIfTI reader itself turns NaN into 0)
    with pytest.raises(InputError, match="nan.nrrd: image has 2 NaN/inf voxels"):
        read_volume(p)


def test_huge_image_refused_before_reading(tmp_path, ramp_array):
    p = _write(tmp_path, ramp_array, "big.nii.gz")
    with pytest.raises(InputError, match="big.nii.gz: image has 3600 voxels"):
        read_volume(p, max_voxels=1000)


def test_dixon_pair_on_different_grids_names_both_files(tmp_path, ramp_array):
    fat = tmp_path / "fat.nii.gz"
    water = tmp_path / "water.nii.gz"
    sitk.WriteImage(make_image(ramp_array, DIRECTIONS["LPS"]), str(fat))
    sitk.WriteImage(make_image(ramp_array, DIRECTIONS["LPS"], spacing=(0.8, 0.9, 6.0)), str(water))
    with pytest.raises(GeometryError, match=r"fat image .*fat.nii.gz and water image .*water.nii.gz are on different grids \(spacing"):
        read_dixon_pair(fat, water)


def test_write_into_read_only_folder_leaves_nothing(tmp_path, ramp_array):
    import os

    src = _write(tmp_path, ramp_array, "img.nii.gz")
    vol = read_volume(src)
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions: simulate with a file where a folder should be
            blocker = tmp_path / "blocker"
            blocker.write_text("x")
            target = blocker / "pred.nii.gz"
        else:
            target = ro / "pred.nii.gz"
        with pytest.raises(InputError, match="cannot write"):
            write_like(vol.canonical_array, vol, target)
    finally:
        os.chmod(ro, 0o755)
    assert list(ro.iterdir()) == []


def test_dicom_series_folder_reads_with_its_geometry(tmp_path):
    """A DICOM series (one file per slice) reads as one 3D volume with spacing and origin kept."""
    arr = (np.arange(4 * 12 * 10, dtype=np.int16).reshape(4, 12, 10) + 1)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.9, 5.0))
    img.SetOrigin((-10.0, 20.0, 30.0))
    folder = tmp_path / "series"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(arr.shape[0]):
        sl = img[:, :, k]
        origin = img.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (("0010|0010", "Phantom^Thigh"), ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"),
                           ("0020|000e", "1.2.826.0.1.3680043.2.1125.2"), ("0008|0060", "MR"),
                           ("0020|0032", "\\".join(f"{v:.4f}" for v in origin)), ("0020|0013", str(k + 1)),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0018|0050", "5.0"), ("0028|0030", "0.9\\0.8")):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
    vol = read_volume(folder)
    assert vol.image.GetSize() == (10, 12, 4)
    np.testing.assert_allclose(vol.image.GetSpacing(), (0.8, 0.9, 5.0), atol=1e-3)
    np.testing.assert_allclose(vol.image.GetOrigin(), (-10.0, 20.0, 30.0), atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(vol.image), arr)


def test_folder_without_dicom_is_refused(tmp_path):
    with pytest.raises(InputError, match="holds no DICOM series"):
        read_volume(tmp_path)


def test_a_name_too_long_for_the_file_system_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="cannot access"):
        read_volume(tmp_path / ("x" * 5000 + ".nii.gz"))
