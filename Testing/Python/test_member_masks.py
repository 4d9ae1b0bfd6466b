"""member_masks.npz: each member's muscle masks survive the round trip exactly; wrong or broken files are refused."""

from __future__ import annotations

import numpy as np
import pytest

from MuscleSAMLib.errors import InputError
from MuscleSAMLib.outputs.member_masks import read_member_masks, write_member_masks


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    shape = (4, 30, 40)
    masks = {3: np.zeros((5, *shape), bool), 7: np.zeros((5, *shape), bool), 9: np.zeros((5, *shape), bool)}
    masks[3][:, 1:3, 5:20, 2:17] = rng.random((5, 2, 15, 15)) > 0.3
    masks[7][2, 3, 29, 39] = True  # one voxel in one member, at the far corner
    path = write_member_masks(tmp_path / "m.npz", masks, shape)
    back = read_member_masks(path, shape)
    assert set(back) == {3, 7}  # an all-empty muscle is not stored
    for label in back:
        np.testing.assert_array_equal(back[label], masks[label])


def test_wrong_shape_and_corrupt_files_are_refused(tmp_path):
    shape = (2, 8, 8)
    path = write_member_masks(tmp_path / "m.npz", {1: np.ones((2, *shape), bool)}, shape)
    with pytest.raises(InputError, match=r"for shape \(2, 8, 8\), the image is \(3, 8, 8\)"):
        read_member_masks(path, (3, 8, 8))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(InputError, match="member masks file is corrupt"):
        read_member_masks(path, shape)
