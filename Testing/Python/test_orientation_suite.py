"""Orientation suite: one phantom stored LPS, RAS, with flipped and permuted axes and obliquely gives the
same segmentation in physical space (the most common defect family of SAM tools in Slicer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from musclesam_test_helpers import oblique_direction
from MuscleSAMLib.engine.boxes import parse_boxes
from MuscleSAMLib.engine.segmenter import Segmenter
from MuscleSAMLib.engine.volume_run import segment_volume
from MuscleSAMLib.models.ensemble import Ensemble
from MuscleSAMLib.phantoms import make_thigh_phantom
from MuscleSAMLib.volumes import read_volume, write_like


def _reference() -> sitk.Image:
    ph = make_thigh_phantom(seed=4, shape=(3, 96, 144), spacing=(6.0, 2.0, 2.0))
    img = sitk.GetImageFromArray(ph.water)
    img.SetSpacing((2.0, 2.0, 6.0))
    img.SetOrigin((-140.0, -90.0, 30.0))
    return img


def _restore(img: sitk.Image, orientation: str) -> sitk.Image:
    """The same physical image stored with another axis order/sign (exact: permutation and flips)."""
    return sitk.DICOMOrient(img, orientation)


def _rotate(img: sitk.Image) -> sitk.Image:
    """The same voxels with an oblique direction (a different physical pose, so compare in index space)."""
    out = sitk.Image(img)
    out.SetDirection(oblique_direction(10.0))
    return out


STORAGES = {"LPS": "LPS", "RAS": "RAS", "flipped_SI": "LPI", "permuted_axial_first": "SLP", "permuted_RAI": "PRS"}


@pytest.fixture(scope="module")
def ensemble():
    return Ensemble.random("demo_xs", "decoder", members=2, seed=7)


def _segment(path: Path, ensemble, boxes_doc: dict) -> sitk.Image:
    vol = read_volume(path)
    boxes, rejected = parse_boxes(boxes_doc, vol)
    assert not rejected, rejected
    seg = Segmenter(ensemble, vol.canonical_array)
    res = segment_volume(seg, boxes, threshold=0.3)
    out = path.with_name(path.name.replace(".nrrd", "_labels.nrrd"))
    write_like(res.labels, vol, out)
    return sitk.ReadImage(str(out))


def test_same_segmentation_in_physical_space_for_every_storage(tmp_path, ensemble):
    ref = _reference()
    # a box in physical millimetres (LPS corners on the middle slice): the same anatomy in every storage
    p0 = ref.TransformIndexToPhysicalPoint((15, 30, 1))
    p1 = ref.TransformIndexToPhysicalPoint((60, 75, 1))
    boxes_doc = {"coordinates": "lps", "boxes": [{"label": 3, "corners": [list(p0), list(p1)]}]}
    results = {}
    for name, code in STORAGES.items():
        path = tmp_path / f"{name}.nrrd"
        stored = _restore(ref, code)
        sitk.WriteImage(stored, str(path))
        labels = _segment(path, ensemble, boxes_doc)
        assert labels.GetSize() == stored.GetSize()
        results[name] = sitk.GetArrayFromImage(sitk.DICOMOrient(labels, "LPS"))  # back to one storage to compare
    base = results["LPS"]
    assert (base == 3).sum() > 50  # the box produced a segmentation at all
    for name, arr in results.items():
        np.testing.assert_array_equal(arr, base, err_msg=f"{name} differs from LPS")


def test_oblique_storage_segments_the_same_voxels(tmp_path, ensemble):
    ref = _reference()
    plain, oblique = tmp_path / "plain.nrrd", tmp_path / "oblique.nrrd"
    sitk.WriteImage(ref, str(plain))
    sitk.WriteImage(_rotate(ref), str(oblique))
    doc = {"coordinates": "ijk", "boxes": [{"label": 5, "slice": 1, "xyxy": [20, 25, 60, 70]}]}
    a = sitk.GetArrayFromImage(_segment(plain, ensemble, doc))
    b = sitk.GetArrayFromImage(_segment(oblique, ensemble, doc))
    assert (a == 5).sum() > 50
    np.testing.assert_array_equal(a, b)
