"""Time-bounded fuzzing of the image and boxes loaders: any input ends in a result or a clear InputError.

Short by default (part of the suite); set MUSCLESAM_FUZZ_EXAMPLES=5000 for a longer run on demand.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from MuscleSAMLib.engine.boxes import parse_boxes
from MuscleSAMLib.errors import InputError
from MuscleSAMLib.volumes import read_volume, volume_from_array

EXAMPLES = int(os.environ.get("MUSCLESAM_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_VOLUME = volume_from_array(np.arange(4 * 20 * 30, dtype=np.float32).reshape(4, 20, 30) + 1)

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                      st.text(max_size=8))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
                          max_leaves=20)
box_like = st.fixed_dictionaries({}, optional={
    "label": st.one_of(st.integers(-3, 15), st.sampled_from(["VL", "sartorius", "xx", ""]), json_leaf),
    "slice": st.one_of(st.integers(-2, 6), json_leaf),
    "xyxy": st.one_of(st.lists(st.one_of(st.integers(-50, 80), st.floats(-1e3, 1e3)), min_size=0, max_size=5), json_leaf),
    "corners": st.one_of(st.lists(st.lists(st.floats(-1e4, 1e4), min_size=3, max_size=3), min_size=2, max_size=2), json_leaf),
})


@FUZZ
@given(doc=st.one_of(json_value, st.fixed_dictionaries({"coordinates": st.sampled_from(["ijk", "lps", "ras", "xyz"]),
                                                        "boxes": st.lists(box_like, max_size=6)})))
def test_boxes_parser_never_crashes(doc):
    try:
        good, bad = parse_boxes(doc, _VOLUME)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    n, rows, cols = _VOLUME.canonical_array.shape
    for b in good:  # every accepted box is runnable
        c0, r0, c1, r1 = b.xyxy
        assert 0 <= b.slice < n and 0 <= c0 < c1 <= cols and 0 <= r0 < r1 <= rows and 1 <= b.label <= 11
    for where, why in bad:
        assert where and why


@FUZZ
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".nii", ".nii.gz", ".nrrd", ".mha"]))
def test_image_reader_never_crashes(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"img{suffix}"
    path.write_bytes(data)
    try:
        read_volume(path)
    except InputError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)


@FUZZ
@given(cut=st.integers(1, 347))
def test_truncated_real_header_is_refused(tmp_path_factory, cut):
    """A valid small NIfTI cut anywhere is refused with InputError (never read as garbage)."""
    import SimpleITK as sitk

    folder = tmp_path_factory.mktemp("trunc")
    good = folder / "good.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(60, dtype=np.float32).reshape(3, 4, 5) + 1), str(good))
    data = good.read_bytes()
    bad = folder / "bad.nii"
    bad.write_bytes(data[: max(1, len(data) - cut)])
    try:
        read_volume(bad)
    except InputError:
        return
    raise AssertionError(f"truncated file ({len(data) - cut} of {len(data)} bytes) was read")
